"""The inference service: ``create_app(settings)`` assembles routes, dependencies, plugins and
lifespan. Routes are given the served model and the settings by Litestar's dependency injection."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from litestar import Litestar, Request, Response, get, post
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins.prometheus import PrometheusConfig

from model_runtime import loader
from model_runtime.contract import OCEAN_PROXIMITY
from service.faults import FaultInjector
from service.model_slot import LoadedModel, ModelSlot
from service.observability import (
    METRICS_MEDIA_TYPE,
    METRICS_PATH,
    PREDICTIONS,
    PRICED,
    exposition,
    in_flight_middleware,
    request_log,
)
from service.openapi import PredictOperation, openapi_config, predict_components, swagger_assets
from service.operator import Console, operator_auth, operator_router
from service.prediction_log import PredictionLog, StoreWriter
from service.predictor import Predictor
from service.schemas import (
    ErrorBody,
    FieldError,
    ModelInfo,
    ModelRef,
    Prediction,
    PredictResponse,
    RequestError,
    Status,
    error_json,
    input_ranges,
    parse_predict_request,
)
from service.settings import ServiceSettings
from service.shadow import mirror_middleware, shadow_mirror

log = logging.getLogger("service")
API_VERSION = "1.0.0"
#: Longest the start waits for the prediction log's writer to be ready (it then starts anyway).
WARM_UP_SECONDS = 30.0
ERRORS = {
    400: ResponseSpec(ErrorBody, description="Malformed JSON or invalid houses, each named"),
    413: ResponseSpec(ErrorBody, description="Body larger than MAX_BODY_BYTES"),
    415: ResponseSpec(ErrorBody, description="Content type is not application/json"),
    503: ResponseSpec(ErrorBody, description="No model is loaded"),
}


@post(
    "/api/v1/predict",
    status_code=200,
    operation_id="predict",
    summary="Price one house or a batch",
    operation_class=PredictOperation,
    responses=ERRORS,
    tags=["predict"],
)
async def predict(
    request: Request[Any, Any, Any],
    model: NamedDependency[LoadedModel],
    settings: NamedDependency[ServiceSettings],
) -> Response[PredictResponse]:
    media_type = request.content_type[0]
    if media_type != "application/json":
        raise RequestError(
            415, f"content type must be application/json, got {media_type or 'none'}"
        )
    houses = parse_predict_request(await request.body(), settings.max_instances)
    request.scope["state"]["batch_size"] = len(houses)
    faults: FaultInjector | None = request.app.state.faults if settings.faults else None
    if faults is not None:
        await faults.before()  # a drill (HOUSING_FAULTS): may sleep, may answer an error
    prices = await model.prices(houses)
    if faults is not None:
        prices = faults.prices(prices)
    meta = model.meta
    PREDICTIONS.labels(meta.version).inc(len(prices))
    # For the prediction log, which the request-log middleware feeds once the answer is sent.
    request.scope["state"][PRICED] = (meta.name, meta.version, model.form, houses, prices)
    body = PredictResponse(
        predictions=[Prediction(p) for p in prices],
        model=ModelRef(meta.name, meta.version, meta.alias, meta.run_id),
    )
    return Response(body, headers={"X-Model-Version": meta.version})


@get(
    "/api/v1/model",
    operation_id="model",
    summary="The model being served",
    responses={503: ERRORS[503]},
    tags=["model"],
)
async def model_info(
    model: NamedDependency[LoadedModel], settings: NamedDependency[ServiceSettings]
) -> ModelInfo:
    predictor = model.predictor
    meta = model.meta
    return ModelInfo(
        name=meta.name,
        version=meta.version,
        alias=meta.alias,
        run_id=meta.run_id,
        source=meta.source,
        trained_at=meta.trained_at,
        test_metrics=meta.test_metrics,
        runtime=predictor.runtime,
        warnings=predictor.warnings,
        load_seconds=model.load_seconds,
        input_ranges=input_ranges(),
        ocean_proximity=list(OCEAN_PROXIMITY),
        max_instances=settings.max_instances,
        max_body_bytes=settings.max_body_bytes,
        prediction_log=settings.prediction_log,
    )


@get("/health", operation_id="health", summary="Liveness: the process answers", tags=["ops"])
async def health() -> Status:
    return Status("ok")


@get(
    "/ready",
    operation_id="ready",
    summary="Readiness: a model is loaded",
    responses={503: ResponseSpec(Status, description="No model loaded")},
    tags=["ops"],
)
async def ready(slot: NamedDependency[ModelSlot]) -> Response[Status]:
    if slot.loaded is None:
        return Response(Status("not ready", "; ".join(slot.reasons)), status_code=503)
    return Response(Status("ready", f"{slot.loaded.meta.name} v{slot.loaded.meta.version}"))


@get(
    METRICS_PATH,
    operation_id="metrics",
    summary="Prometheus metrics, in its text format",
    media_type=METRICS_MEDIA_TYPE,
    tags=["ops"],
    sync_to_thread=False,
)
def metrics() -> Response[bytes]:
    return Response(exposition(), media_type=METRICS_MEDIA_TYPE)


def _request_error(request: Request[Any, Any, Any], exc: RequestError) -> Response[Any]:
    return Response(error_json(exc), status_code=exc.status)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    err = RequestError(exc.status_code, exc.detail)
    if isinstance(exc.extra, list):
        err.errors = [
            FieldError(str(e.get("key", "")), str(e.get("message", "")))
            for e in exc.extra
            if isinstance(e, dict)
        ]
    # The exception's headers are part of the answer: a 405's Allow (RFC 9110), for one.
    return Response(error_json(err), status_code=exc.status_code, headers=exc.headers)


def _server_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error", extra={"json_fields": {"path": request.url.path}})
    return Response(error_json(RequestError(500, "internal error")), status_code=500)


def prediction_log(settings: ServiceSettings, gcs_client: Any = None) -> PredictionLog | None:
    """The prediction log the settings ask for (None when PREDICTION_LOG is off), writing under
    ``predictions/`` of the artifact store; not started."""
    if not settings.prediction_log:
        return None
    writer = StoreWriter(settings.store_uri, gcs_client)
    return PredictionLog(
        writer,
        revision=settings.revision_name,
        batch_rows=settings.prediction_log_batch_rows,
        interval_s=settings.prediction_log_interval_seconds,
        capacity_rows=settings.prediction_log_capacity_rows,
        warm_up=writer.open,
    )


def fault_injector(settings: ServiceSettings) -> FaultInjector | None:
    """The drill's injector (HOUSING_FAULTS), or None. Production refuses it here too, for
    settings built in code rather than read (whose check refuses it first)."""
    if not settings.faults.strip():
        return None
    if settings.production:
        raise ValueError(
            f"HOUSING_FAULTS is set but ENVIRONMENT is {settings.environment!r}: fault injection "
            "is for drills on dev and local; unset HOUSING_FAULTS"
        )
    plan = settings.fault_plan
    if not plan.active:
        return None
    log.warning("fault injection on (HOUSING_FAULTS=%s): a drill, not for users", settings.faults)
    return FaultInjector(plan)


def create_app(
    settings: ServiceSettings, gcs_client: Any = None, predictor: Predictor | None = None
) -> Litestar:
    """The ASGI app. The model is loaded once, at start-up, by the loader's cascade — or is the
    ``predictor`` given (then nothing is loaded): routes get it as their ``model`` dependency.
    Every priced house goes to the prediction log (unless PREDICTION_LOG is off), whose writer
    runs from start-up to shutdown, when its final flush follows the drain."""
    slot = ModelSlot()
    faults = fault_injector(settings)
    plog = prediction_log(settings, gcs_client)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if plog is not None:
            # Its thread imports the parquet writer and opens the store while the model loads.
            plog.start()
        if predictor is None:
            began = time.perf_counter()
            loaded, reasons = await anyio.to_thread.run_sync(
                loader.load, settings.model_source, Predictor, gcs_client
            )
            slot.fill(loaded, reasons, round(time.perf_counter() - began, 3))
        if plog is not None:
            # Ready only once the writer is: its imports would otherwise hold the interpreter
            # while the first requests are served.
            await anyio.to_thread.run_sync(plog.wait_warm, WARM_UP_SECONDS)
            log.info(
                "prediction log: on, writing to %s/predictions/ (revision %s, instance %s)",
                settings.store_uri.rstrip("/"),
                plog.revision,
                plog.instance,
            )
        else:
            log.info("prediction log: off (PREDICTION_LOG=false)")
        if mirror is not None:
            await mirror.start()  # reads the release feed; mirrors while it names this revision
        if predictor is None:
            # What start-up made (modules, the model) lives as long as the process: frozen, it
            # is out of the collector's reach, so full collections stop pausing requests (p99
            # at concurrency 32 measured 126 ms before, 12 ms after).
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if mirror is not None:
                await mirror.close()  # after the drain: its last window's report is written
            if plog is not None:
                # uvicorn runs this after the drain: every answered house is in the buffer.
                await anyio.to_thread.run_sync(plog.close, settings.prediction_log_flush_seconds)

    prometheus = PrometheusConfig(
        app_name="housing_service", prefix="housing", group_path=True, exclude=[METRICS_PATH]
    )
    cors = (
        CORSConfig(allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"])
        if settings.cors_origins
        else None
    )
    if predictor is not None:
        slot.fill(predictor, [])

    def the_slot() -> ModelSlot:
        return slot

    def given_settings() -> ServiceSettings:
        return settings

    def served_model(settings: NamedDependency[ServiceSettings]) -> LoadedModel:
        """The served model (503 until there is one). It takes ``settings`` only so that a route
        needing both gets them one after the other: Litestar resolves the dependencies of one
        level concurrently, in an anyio task group, which costs a request two tasks and, on
        Python 3.11, a dozen ``getpid`` system calls (each ``asyncio.get_running_loop`` makes
        one)."""
        return slot.model()

    def served_version() -> str:
        return slot.loaded.meta.version if slot.loaded is not None else ""

    console = Console(settings, gcs_client, served_version)
    mirror = shadow_mirror(settings, gcs_client, served_version)
    app = Litestar(
        route_handlers=[
            predict,
            model_info,
            health,
            ready,
            metrics,
            swagger_assets(),
            operator_router(console),
        ],
        dependencies={
            "model": Provide(served_model, sync_to_thread=False),
            "slot": Provide(the_slot, use_cache=True, sync_to_thread=False),
            "settings": Provide(given_settings, use_cache=True, sync_to_thread=False),
        },
        lifespan=[lifespan],
        middleware=[
            request_log(plog),
            in_flight_middleware,
            prometheus.middleware,
            *([mirror_middleware(mirror)] if mirror is not None else []),
        ],
        openapi_config=openapi_config(API_VERSION),
        exception_handlers={
            RequestError: _request_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        cors_config=cors,
        state=State({"faults": faults, "operator_auth": operator_auth(settings)}),
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,
    )
    # Litestar replaces configured components with the ones it infers; add the hand-decoded body's.
    components = app.openapi_schema.components
    components.schemas = {
        **dict(components.schemas or {}),
        **predict_components(settings.max_instances),
    }
    return app
