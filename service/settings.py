"""The service's typed settings, read once from the environment at start-up
(``housing_platform.settings_reader``: a wrong variable is named, with its fix)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from housing_platform.settings_reader import Problem, read_settings
from model_runtime.exports import DEFAULT_MODEL, export_prefix
from model_runtime.loader import ModelSource
from service.faults import FaultPlan, FaultSpecError, parse

#: ENVIRONMENT values that mean production: no fault injection there.
PRODUCTION = frozenset({"prod", "production"})

#: What uvicorn itself spends between SIGTERM and the lifespan's shutdown, beyond the drain:
#: its main loop notices the signal within 0.1 s, then it waits 0.1 s for connections to close.
UVICORN_STOP_SECONDS = 0.5


class ServiceSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    """Interface to listen on (HOST); the container sets 0.0.0.0."""
    port: int = 8080
    """Port to listen on (PORT, as Cloud Run sets it)."""
    model_uri: str = "models:/housing-price@champion"
    """MLflow model URI (MODEL_URI): by alias, or pinned as models:/housing-price/<version>."""
    mlflow_tracking_uri: str = ""
    """MLflow tracking URI (MLFLOW_TRACKING_URI); empty = the pipeline's local SQLite store."""
    fallback_uri: str = ""
    """Exported model folder used when MLflow fails (MODEL_FALLBACK_URI): gs://… or a path;
    empty = the pipeline's local export of the champion."""
    home: str = ".housing-mlops"
    """The pipeline's home (HOUSING_MLOPS_HOME), for the local defaults above."""
    max_instances: Annotated[int, Meta(ge=1)] = 1000
    """Most houses in one request (MAX_INSTANCES); published in /api/v1/model."""
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 1_048_576
    """Largest request body accepted (MAX_BODY_BYTES); larger answers 413. Published in
    /api/v1/model."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS (CORS_ORIGINS, comma-separated); none by default."""
    log_level: str = "INFO"
    """LOG_LEVEL."""
    drain_seconds: Annotated[int, Meta(ge=0)] = 8
    """How long SIGTERM waits for requests in flight (DRAIN_SECONDS). With the prediction log's
    final flush and uvicorn's own stop it must fit SHUTDOWN_GRACE_SECONDS (checked at start)."""
    shutdown_grace_seconds: Annotated[float, Meta(gt=0)] = 10.0
    """How long the platform waits after SIGTERM before it kills the process
    (SHUTDOWN_GRACE_SECONDS): Cloud Run's is 10 s and can't be changed."""
    artifact_uri: str = ""
    """The artifact store's root (ARTIFACT_URI, as the pipeline's): empty = <home>/artifacts; on
    GCP gs://<bucket>/artifacts. The prediction log writes under its predictions/."""
    prediction_log: bool = True
    """Whether every priced house is logged to the artifact store (PREDICTION_LOG: true/false)."""
    prediction_log_batch_rows: Annotated[int, Meta(ge=1)] = 10_000
    """Rows that start a write at once, without waiting for the interval
    (PREDICTION_LOG_BATCH_ROWS)."""
    prediction_log_interval_seconds: Annotated[float, Meta(gt=0)] = 10.0
    """Longest a logged row waits in memory before it is written
    (PREDICTION_LOG_INTERVAL_SECONDS)."""
    prediction_log_capacity_rows: Annotated[int, Meta(ge=1)] = 100_000
    """Most rows held in memory while the store is slow or failing; more are dropped and
    counted (PREDICTION_LOG_CAPACITY_ROWS)."""
    prediction_log_flush_seconds: Annotated[float, Meta(gt=0)] = 1.5
    """The final flush's budget at shutdown, after the drain (PREDICTION_LOG_FLUSH_SECONDS)."""
    revision: str = ""
    """The serving revision (K_REVISION, which Cloud Run sets); empty = "local"."""
    environment: str = "local"
    """Where the service runs (ENVIRONMENT): infra sets its stack's (``dev``, or ``prod`` on a
    production stack); ``prod`` or ``production`` refuses HOUSING_FAULTS."""
    faults: str = ""
    """Fault injection for release drills (HOUSING_FAULTS), e.g. ``error_rate=0.05``,
    ``delay_ms=200``, ``price_factor=1.1`` (comma-separated); empty = none. Refused in
    production."""

    operator_audience: str = ""
    """The audience operator callers' Google ID tokens must carry (OPERATOR_AUDIENCE: on GCP
    the service's operator custom audience, which the Pulumi program sets). Empty: operator
    endpoints answer loopback callers of a local service only."""
    operator_accounts: tuple[str, ...] = ()
    """Emails whose ID tokens may read operator data (OPERATOR_ACCOUNTS, comma-separated: the
    UI's service account)."""
    operator_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    """Where Google's ID-token signing certificates are fetched (OPERATOR_CERTS_URL)."""

    shadow_mirror: bool = True
    """Whether this revision mirrors requests to a shadow when the release feed
    (``releases/feed.json`` in the artifact store) names it stable (SHADOW_MIRROR: true/false)."""
    shadow_feed_seconds: Annotated[float, Meta(gt=0)] = 5.0
    """How often the release feed is read again (SHADOW_FEED_SECONDS)."""
    shadow_batch_ms: Annotated[float, Meta(gt=0)] = 5.0
    """Mirrored houses wait this long to go out together in one request (SHADOW_BATCH_MS)."""
    shadow_batch_houses: Annotated[int, Meta(ge=1)] = 1000
    """Most houses in one mirrored request (SHADOW_BATCH_HOUSES): the shadow's MAX_INSTANCES."""
    shadow_concurrency: Annotated[int, Meta(ge=1)] = 4
    """Most mirrored requests in flight at once (SHADOW_CONCURRENCY)."""
    shadow_timeout_seconds: Annotated[float, Meta(gt=0)] = 1.0
    """A mirrored request's deadline (SHADOW_TIMEOUT_SECONDS); later is counted as timed out."""
    shadow_capacity_houses: Annotated[int, Meta(ge=1)] = 10_000
    """Most mirrored houses waiting; more are dropped and counted (SHADOW_CAPACITY_HOUSES)."""
    shadow_window_seconds: Annotated[float, Meta(gt=0)] = 300.0
    """Each shadow report covers this long (SHADOW_WINDOW_SECONDS), aligned to the clock."""
    shadow_google_auth: bool = False
    """Mirrored requests carry a Google ID token for the service's URL (SHADOW_GOOGLE_AUTH: infra
    sets it on GCP, where the shadow tag URL needs the invoker role)."""

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home_path / 'mlflow.db'}"

    @property
    def fallback(self) -> str:
        if self.fallback_uri:
            return self.fallback_uri
        return str(self.home_path / "artifacts" / export_prefix(DEFAULT_MODEL, "champion"))

    @property
    def store_uri(self) -> str:
        """The artifact store the prediction log writes to."""
        return self.artifact_uri or str(self.home_path / "artifacts")

    @property
    def revision_name(self) -> str:
        return self.revision or "local"

    @property
    def shutdown_seconds(self) -> float:
        """What a stop takes at most after SIGTERM: uvicorn's own steps, the drain and the
        prediction log's final flush."""
        flush = self.prediction_log_flush_seconds if self.prediction_log else 0.0
        return UVICORN_STOP_SECONDS + self.drain_seconds + flush

    @property
    def production(self) -> bool:
        return self.environment.strip().lower() in PRODUCTION

    @property
    def fault_plan(self) -> FaultPlan:
        """What HOUSING_FAULTS asks for (checked at start, so it parses)."""
        return parse(self.faults)

    @property
    def model_source(self) -> ModelSource:
        return ModelSource(
            model_uri=self.model_uri, tracking_uri=self.tracking_uri, fallback=self.fallback
        )


#: The variables the service reads, and the setting each one sets.
VARIABLES = {
    "HOST": "host",
    "PORT": "port",
    "MODEL_URI": "model_uri",
    "MLFLOW_TRACKING_URI": "mlflow_tracking_uri",
    "MODEL_FALLBACK_URI": "fallback_uri",
    "HOUSING_MLOPS_HOME": "home",
    "MAX_INSTANCES": "max_instances",
    "MAX_BODY_BYTES": "max_body_bytes",
    "CORS_ORIGINS": "cors_origins",
    "LOG_LEVEL": "log_level",
    "DRAIN_SECONDS": "drain_seconds",
    "SHUTDOWN_GRACE_SECONDS": "shutdown_grace_seconds",
    "ARTIFACT_URI": "artifact_uri",
    "PREDICTION_LOG": "prediction_log",
    "PREDICTION_LOG_BATCH_ROWS": "prediction_log_batch_rows",
    "PREDICTION_LOG_INTERVAL_SECONDS": "prediction_log_interval_seconds",
    "PREDICTION_LOG_CAPACITY_ROWS": "prediction_log_capacity_rows",
    "PREDICTION_LOG_FLUSH_SECONDS": "prediction_log_flush_seconds",
    "K_REVISION": "revision",
    "ENVIRONMENT": "environment",
    "HOUSING_FAULTS": "faults",
    "OPERATOR_AUDIENCE": "operator_audience",
    "OPERATOR_ACCOUNTS": "operator_accounts",
    "OPERATOR_CERTS_URL": "operator_certs_url",
    "SHADOW_MIRROR": "shadow_mirror",
    "SHADOW_FEED_SECONDS": "shadow_feed_seconds",
    "SHADOW_BATCH_MS": "shadow_batch_ms",
    "SHADOW_BATCH_HOUSES": "shadow_batch_houses",
    "SHADOW_CONCURRENCY": "shadow_concurrency",
    "SHADOW_TIMEOUT_SECONDS": "shadow_timeout_seconds",
    "SHADOW_CAPACITY_HOUSES": "shadow_capacity_houses",
    "SHADOW_WINDOW_SECONDS": "shadow_window_seconds",
    "SHADOW_GOOGLE_AUTH": "shadow_google_auth",
}


def from_env(
    env: Mapping[str, str], *, host: str | None = None, port: int | None = None
) -> ServiceSettings:
    """The settings from ``env``; ``host`` and ``port`` are the command line's ``--host`` and
    ``--port``, which win over HOST and PORT."""
    overrides = {"--host": ("host", host), "--port": ("port", port)}
    return read_settings(ServiceSettings, env, VARIABLES, overrides=overrides, check=_problems)


def _problems(s: ServiceSettings) -> Iterator[Problem]:
    if "*" in s.cors_origins:
        yield Problem("cors_origins", "the allowed origins, comma-separated ('*' is refused)")
    if s.shutdown_seconds > s.shutdown_grace_seconds:
        room = s.shutdown_grace_seconds - (s.shutdown_seconds - s.drain_seconds)
        flush = (
            f", the prediction log's final flush (PREDICTION_LOG_FLUSH_SECONDS="
            f"{s.prediction_log_flush_seconds:g})"
            if s.prediction_log
            else ""
        )
        yield Problem(
            "drain_seconds",
            f"at most {max(math.floor(room), 0)}, so that the drain{flush} and uvicorn's own "
            f"{UVICORN_STOP_SECONDS:g} s fit in the {s.shutdown_grace_seconds:g} s the platform "
            "allows after SIGTERM (SHUTDOWN_GRACE_SECONDS; Cloud Run allows 10)",
        )
    if s.faults.strip():
        try:
            parse(s.faults)
        except FaultSpecError as exc:
            yield Problem("faults", exc.expected)
        if s.production:
            yield Problem(
                "faults",
                f"no faults where ENVIRONMENT is {s.environment!r}: fault injection is for "
                "drills on dev and local, never on production",
            )
    if s.operator_audience and not s.operator_accounts:
        yield Problem(
            "operator_accounts",
            "the emails allowed to read operator data, comma-separated (the UI's service "
            "account), since OPERATOR_AUDIENCE is set",
        )
    if s.prediction_log_batch_rows > s.prediction_log_capacity_rows:
        yield Problem(
            "prediction_log_capacity_rows",
            f"at least PREDICTION_LOG_BATCH_ROWS ({s.prediction_log_batch_rows})",
        )
