"""The operator's console data: registered versions, a version's evaluation, the release, the
rollout audit log, shadow reports and the monitor's reports, on read-only GET endpoints.

The service reads them for the UI, which talks to nothing else (MLflow is private on GCP): the
registry from MLflow, the rest from the artifact store. They are operator data, so every route
here passes :class:`OperatorAuth` first: on a service with ``OPERATOR_AUDIENCE`` set, a
Google-signed ID token for that audience from one of ``OPERATOR_ACCOUNTS``; without it, a caller
on loopback of a local service only. A source that fails answers 503 naming the source, never a
500, so each page can say in one line what is down.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import anyio
import httpx
import msgspec
from litestar import Request, Response, Router, get
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import FromPath, Parameter

from housing_platform import traffic_split
from housing_platform.artifact_store import ArtifactStore, open_store
from housing_platform.traffic_split import TrafficSplit
from model_runtime.exports import DEFAULT_MODEL, Export, export_prefix
from model_runtime.loader import metrics_of, parse_models_uri
from service.schemas import ErrorBody
from service.settings import ServiceSettings

PREFIX = "/api/v1/operator"
#: Where evaluate's reports sit in a version's export (pipeline/steps/register.py).
EVALUATION = "evaluation"
MONITOR_REPORTS = "reports/monitor/"
RELEASE_FEED = "releases/feed.json"
ROLLOUTS = "rollouts/"
SHADOW = "shadow/"
#: Most reports of one kind served at once, newest first.
MOST_REPORTS = 60
#: Google's ID-token issuers.
ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
#: How long fetched signing certificates are reused (Google rotates them over days).
CERTS_TTL_SECONDS = 3600.0


class SourceDownError(RuntimeError):
    """A source the console reads failed; answered 503 with the source named."""

    def __init__(self, source: str, detail: str):
        super().__init__(detail)
        self.source = source
        self.detail = detail


class SourceDown(msgspec.Struct):
    status_code: int
    detail: str
    """One line: the source, what failed, what to check."""
    source: str
    """``model registry``, ``artifact store`` or ``identity``."""


class VersionSummary(msgspec.Struct):
    version: str
    aliases: list[str]
    trained_at: str
    family: str
    test_metrics: dict[str, float]
    """Test-set metrics: rmse, mae (the typical error), mape, within_10pct, r2, wmape."""
    promotion: str
    """Why register did or did not promote it."""


class Models(msgspec.Struct):
    name: str
    served_version: str
    """The version this revision serves ("" when it serves none)."""
    versions: list[VersionSummary]
    """Newest first."""


class GroupErrors(msgspec.Struct):
    group: str
    rows: int
    mae: float
    rmse: float
    mape: float
    within_10pct: float


class Importance(msgspec.Struct):
    feature: str
    rmse_increase: float
    """Test RMSE lost (USD) when the input is shuffled."""
    std: float


class ScoredHouse(msgspec.Struct):
    longitude: float
    latitude: float
    median_income: float
    income_band: str
    ocean_proximity: str
    actual: float
    predicted: float


class Evaluation(msgspec.Struct):
    name: str
    version: str
    family: str
    test_rows: int
    test_metrics: dict[str, float]
    errors_by_income: list[GroupErrors]
    """Income bands 1-5 (median income below 1.5, 3, 4.5, 6, and above, in $10k)."""
    errors_by_ocean_proximity: list[GroupErrors]
    importances: list[Importance]
    sample: list[ScoredHouse]
    """Test-side houses with their actual and predicted prices."""
    plots: list[str]
    """Keys of the version's PNG plots, for ``GET /api/v1/operator/plot``."""


class Release(msgspec.Struct):
    published: bool
    """False: no release was ever published (no rollout yet)."""
    feed: dict[str, Any] | None
    """The release feed as published (``releases/feed.json``)."""
    key: str
    split: TrafficSplit | None = None
    """The live traffic split (``releases/split.json``): each serving or tagged revision, its
    model version, percent and tag URLs; None until a release tool publishes one."""


class Entries(msgspec.Struct):
    """Records of one kind from the artifact store, newest first, each with its key."""

    kind: str
    prefix: str
    entries: list[dict[str, Any]]


class MonitorReports(msgspec.Struct):
    reports: list[dict[str, Any]]
    """The monitor's reports as written (``reports/monitor/<window>.json``), newest window first."""
    retrains: list[dict[str, Any]]
    """Retrains the monitor started (``monitor/retrains/…json``), newest first."""


ERRORS = {
    401: ResponseSpec(ErrorBody, description="No ID token, or one that does not verify"),
    403: ResponseSpec(ErrorBody, description="A caller who is not an operator"),
    503: ResponseSpec(SourceDown, description="The source this data comes from is down, named"),
}


# --- who may call ------------------------------------------------------------------------------


def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bearer(header: str | None) -> str:
    scheme, _, token = (header or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class OperatorAuth:
    """Who may read operator data. With an audience: a Google-signed ID token for it, from one
    of ``accounts`` (email verified). Without one: loopback callers of a local service only."""

    def __init__(
        self,
        audience: str,
        accounts: tuple[str, ...],
        certs_url: str,
        local: bool,
        fetch: Callable[[str], dict[str, str]] | None = None,
    ):
        self.audience = audience
        self.accounts = frozenset(a.strip().lower() for a in accounts if a.strip())
        self.certs_url = certs_url
        self.local = local
        self._fetch = fetch or _fetch_certs
        self._certs: tuple[float, dict[str, str]] | None = None
        self._lock = threading.Lock()

    def certs(self) -> dict[str, str]:
        with self._lock:
            if self._certs is None or time.monotonic() - self._certs[0] > CERTS_TTL_SECONDS:
                self._certs = (time.monotonic(), self._fetch(self.certs_url))
            return self._certs[1]

    def caller(self, authorization: str | None, host: str | None) -> str:
        """The caller's identity, or an exception Litestar answers 401 or 403."""
        if not self.audience:
            if self.local and is_loopback(host):
                return "loopback"
            raise PermissionDeniedException(
                "operator endpoints answer loopback callers of a local service only; on a "
                "shared service set OPERATOR_AUDIENCE and OPERATOR_ACCOUNTS"
            )
        token = bearer(authorization)
        if not token:
            raise NotAuthorizedException(
                "operator endpoints need 'Authorization: Bearer <Google ID token>' for audience "
                f"{self.audience}"
            )
        from google.auth import exceptions, jwt

        try:
            certs = self.certs()
        except Exception as exc:
            raise SourceDownError(
                "identity", f"identity: cannot fetch token signing certificates ({exc})"
            ) from None
        try:
            claims = jwt.decode(
                token, certs=certs, audience=self.audience, clock_skew_in_seconds=10
            )
        except (ValueError, exceptions.GoogleAuthError) as exc:
            raise NotAuthorizedException(f"the ID token does not verify: {exc}") from None
        email = str(claims.get("email", "")).lower()
        if claims.get("iss") not in ISSUERS or not claims.get("email_verified") or not email:
            raise NotAuthorizedException("the ID token is not a Google ID token with an email")
        if email not in self.accounts:
            raise PermissionDeniedException(f"{email} is not an operator (OPERATOR_ACCOUNTS)")
        return email


def _fetch_certs(url: str) -> dict[str, str]:
    response = httpx.get(url, timeout=5.0)
    response.raise_for_status()
    return dict(response.json())


def operator_auth(settings: ServiceSettings) -> OperatorAuth:
    return OperatorAuth(
        settings.operator_audience,
        settings.operator_accounts,
        settings.operator_certs_url,
        local=settings.environment.strip().lower() == "local",
    )


async def operator_guard(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    auth: OperatorAuth = connection.app.state.operator_auth
    host = connection.client.host if connection.client else None
    header = connection.headers.get("authorization")
    await anyio.to_thread.run_sync(auth.caller, header, host)


# --- where the data comes from -----------------------------------------------------------------


def _rows(data: bytes, kind: type[Any]) -> list[Any]:
    """A CSV report's rows as ``kind``, numbers converted by msgspec."""
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    return [msgspec.convert(row, kind, strict=False) for row in rows]


class Console:
    """The sources: MLflow's registry for versions, the artifact store for everything else."""

    def __init__(
        self, settings: ServiceSettings, gcs_client: Any = None, served: Callable[[], str] = str
    ):
        self.settings = settings
        self.model_name = parse_models_uri(settings.model_uri)[0]
        self.gcs_client = gcs_client
        self.served = served
        self._store: ArtifactStore | None = None

    def store(self) -> ArtifactStore:
        if self._store is None:
            try:
                self._store = open_store(self.settings.store_uri, self.gcs_client)
            except Exception as exc:
                raise self.store_down(exc) from None
        return self._store

    def store_down(self, exc: Exception) -> SourceDownError:
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        return SourceDownError(
            "artifact store",
            f"artifact store ({self.settings.store_uri}) failed: {type(exc).__name__}: {first}; "
            "check ARTIFACT_URI and the service account's access to it",
        )

    def models(self) -> Models:
        from mlflow import MlflowClient

        uri = self.settings.tracking_uri
        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            aliases = client.get_registered_model(self.model_name).aliases
            found = client.search_model_versions(f"name = '{self.model_name}'")
        except Exception as exc:
            first = str(exc).splitlines()[0][:300] if str(exc) else ""
            raise SourceDownError(
                "model registry",
                f"model registry (MLflow at {uri}) failed: {type(exc).__name__}: {first}; check "
                "MLFLOW_TRACKING_URI and that the tracking server is up",
            ) from None
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        versions = [
            VersionSummary(
                version=str(mv.version),
                aliases=sorted(by_version.get(str(mv.version), [])),
                trained_at=mv.tags.get("trained_at", ""),
                family=mv.tags.get("family", ""),
                test_metrics=metrics_of(dict(mv.tags)),
                promotion=mv.tags.get("promotion", ""),
            )
            for mv in sorted(found, key=lambda mv: int(mv.version), reverse=True)
        ]
        return Models(self.model_name, self.served(), versions)

    def evaluation(self, version: int) -> Evaluation:
        prefix = export_prefix(self.model_name, str(version))
        try:
            store = self.store()
            if not store.exists(f"{prefix}/MLmodel"):
                raise _not_found(
                    f"version {version} of {self.model_name} has no export in the artifact store"
                )
            export = Export(store, prefix, where=f"{self.settings.store_uri}/{prefix}")
            ev = f"{EVALUATION}/"
            if not export.has(f"{ev}evaluate.json"):
                raise _not_found(
                    f"version {version} carries no evaluation reports (registered before register "
                    "attached them); run the pipeline again to register a version that does"
                )
            summary = json.loads(export.read(f"{ev}evaluate.json"))
            return Evaluation(
                name=self.model_name,
                version=str(version),
                family=str(summary.get("family", "")),
                test_rows=int(summary.get("test_rows", 0)),
                test_metrics={k: float(v) for k, v in summary.get("test_metrics", {}).items()},
                errors_by_income=_rows(export.read(f"{ev}errors_by_income.csv"), GroupErrors),
                errors_by_ocean_proximity=_rows(
                    export.read(f"{ev}errors_by_ocean_proximity.csv"), GroupErrors
                ),
                importances=_rows(export.read(f"{ev}feature_importance.csv"), Importance),
                sample=(
                    _rows(export.read(f"{ev}test_predictions.csv"), ScoredHouse)
                    if export.has(f"{ev}test_predictions.csv")
                    else []
                ),
                plots=[
                    f"{prefix}/{rel}"
                    for rel in export.files()
                    if rel.startswith(ev) and rel.endswith(".png")
                ],
            )
        except (SourceDownError, _NotFoundError):
            raise
        except Exception as exc:
            raise self.store_down(exc) from None

    def _json(self, key: str) -> Any:
        return json.loads(self.store().read_bytes(key))

    def release(self) -> Release:
        try:
            store = self.store()
            split = traffic_split.read(store)
            if not store.exists(RELEASE_FEED):
                return Release(False, None, RELEASE_FEED, split)
            return Release(True, self._json(RELEASE_FEED), RELEASE_FEED, split)
        except SourceDownError:
            raise
        except Exception as exc:
            raise self.store_down(exc) from None

    def entries(self, kind: str, prefix: str) -> Entries:
        """Every JSON object under ``prefix`` (``.json`` files, and each line of ``.jsonl``
        ones), newest key first, each with its ``key``."""
        try:
            keys = sorted(
                (k for k in self.store().list(prefix) if k.endswith((".json", ".jsonl"))),
                reverse=True,
            )[:MOST_REPORTS]
            entries: list[dict[str, Any]] = []
            for key in keys:
                data = self.store().read_bytes(key)
                if key.endswith(".jsonl"):
                    lines = [
                        json.loads(line) for line in data.decode().splitlines() if line.strip()
                    ]
                    entries += [
                        {"key": key, **obj} for obj in reversed(lines) if isinstance(obj, dict)
                    ]
                else:
                    obj = json.loads(data)
                    if isinstance(obj, dict):
                        entries.append({"key": key, **obj})
            return Entries(kind, prefix, entries)
        except SourceDownError:
            raise
        except Exception as exc:
            raise self.store_down(exc) from None

    def monitoring(self) -> MonitorReports:
        reports = self.entries("monitor report", MONITOR_REPORTS).entries
        retrains = self.entries("retrain", "monitor/retrains/").entries
        return MonitorReports(reports, retrains)

    def plot(self, key: str) -> bytes:
        allowed = (MONITOR_REPORTS, SHADOW, f"{export_prefix(self.model_name, '')}")
        if not key.endswith(".png") or ".." in key or not key.startswith(allowed):
            raise _not_found(
                f"{key} is not a plot the console serves (a .png under {', '.join(allowed)})"
            )
        try:
            store = self.store()
            if not store.exists(key):
                raise _not_found(f"no plot at {key}")
            return store.read_bytes(key)
        except (SourceDownError, _NotFoundError):
            raise
        except Exception as exc:
            raise self.store_down(exc) from None


class _NotFoundError(LookupError):
    pass


def _not_found(detail: str) -> _NotFoundError:
    return _NotFoundError(detail)


# --- routes --------------------------------------------------------------------------------------

_TAGS = ["operator"]


@get(
    "/models",
    operation_id="operatorModels",
    summary="Registered versions with their aliases and test metrics",
    responses=ERRORS,
    tags=_TAGS,
    sync_to_thread=True,
)
def list_models(console: NamedDependency[Console]) -> Models:
    return console.models()


@get(
    "/models/{version:int}/evaluation",
    operation_id="operatorEvaluation",
    summary="A version's evaluation: errors per group, importances, a test-side sample",
    responses={**ERRORS, 404: ResponseSpec(ErrorBody, description="No such version or report")},
    tags=_TAGS,
    sync_to_thread=True,
)
def evaluation(console: NamedDependency[Console], version: FromPath[int]) -> Evaluation:
    return console.evaluation(version)


@get(
    "/release",
    operation_id="operatorRelease",
    summary="The published release (live split, shadow phase)",
    responses=ERRORS,
    tags=_TAGS,
    sync_to_thread=True,
)
def release(console: NamedDependency[Console]) -> Release:
    return console.release()


@get(
    "/rollouts",
    operation_id="operatorRollouts",
    summary="The rollout audit log: each step's verdict and reasons, newest first",
    responses=ERRORS,
    tags=_TAGS,
    sync_to_thread=True,
)
def rollouts(console: NamedDependency[Console]) -> Entries:
    return console.entries("rollout", ROLLOUTS)


@get(
    "/shadow",
    operation_id="operatorShadow",
    summary="Shadow agreement reports, newest first",
    responses=ERRORS,
    tags=_TAGS,
    sync_to_thread=True,
)
def shadow(console: NamedDependency[Console]) -> Entries:
    return console.entries("shadow report", SHADOW)


@get(
    "/monitoring",
    operation_id="operatorMonitoring",
    summary="The monitor's reports (drift per input, realised error) and retrains started",
    responses=ERRORS,
    tags=_TAGS,
    sync_to_thread=True,
)
def monitoring(console: NamedDependency[Console]) -> MonitorReports:
    return console.monitoring()


#: A plot every registered version carries (the register step attaches evaluate's reports).
PLOT = "predicted_vs_actual.png"


@get(
    "/plot",
    operation_id="operatorPlot",
    summary="A PNG plot a report lists (monitor, shadow or a version's evaluation)",
    media_type="image/png",
    responses={**ERRORS, 404: ResponseSpec(ErrorBody, description="Not a plot served here")},
    tags=_TAGS,
    sync_to_thread=True,
)
def plot(
    console: NamedDependency[Console],
    key: Annotated[
        str,
        Parameter(
            description="The plot's key in the artifact store, as a report lists it",
            examples=[Example(value=f"{export_prefix(DEFAULT_MODEL, '1')}/evaluation/{PLOT}")],
        ),
    ],
) -> Response[bytes]:
    return Response(console.plot(key), media_type="image/png")


def _source_down(request: Request[Any, Any, Any], exc: SourceDownError) -> Response[Any]:
    return Response(msgspec.to_builtins(SourceDown(503, exc.detail, exc.source)), status_code=503)


def _missing(request: Request[Any, Any, Any], exc: _NotFoundError) -> Response[Any]:
    return Response(msgspec.to_builtins(ErrorBody(404, str(exc))), status_code=404)


def operator_router(console: Console) -> Router:
    """The operator routes under ``/api/v1/operator``, each behind :func:`operator_guard` (the
    app's state holds the :class:`OperatorAuth`)."""

    def the_console() -> Console:
        return console

    return Router(
        PREFIX,
        route_handlers=[list_models, evaluation, release, rollouts, shadow, monitoring, plot],
        guards=[operator_guard],
        dependencies={"console": Provide(the_console, use_cache=True, sync_to_thread=False)},
        exception_handlers={SourceDownError: _source_down, _NotFoundError: _missing},
    )
