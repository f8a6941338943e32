"""The service's typed settings, read once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from model_runtime.exports import DEFAULT_MODEL, export_prefix
from model_runtime.loader import ModelSource


class SettingsError(ValueError):
    """A variable is wrong; the message names it and how to fix it."""


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
    max_instances: int = 1000
    """Most houses in one request (MAX_INSTANCES)."""
    max_body_bytes: int = 1_048_576
    """Largest request body accepted (MAX_BODY_BYTES); larger answers 413."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS (CORS_ORIGINS, comma-separated); none by default."""
    log_level: str = "INFO"
    """LOG_LEVEL."""
    drain_seconds: int = 20
    """How long SIGTERM waits for in-flight requests (DRAIN_SECONDS); Cloud Run allows 10 s+."""

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
    def model_source(self) -> ModelSource:
        return ModelSource(
            model_uri=self.model_uri, tracking_uri=self.tracking_uri, fallback=self.fallback
        )


ENV = {
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
}


def from_env(env: Mapping[str, str]) -> ServiceSettings:
    raw: dict[str, object] = {}
    for var, field in ENV.items():
        value = env.get(var)
        if value is None or value == "":
            continue
        if field == "cors_origins":
            origins = tuple(o.strip() for o in value.split(",") if o.strip())
            if "*" in origins:
                raise SettingsError("CORS_ORIGINS: '*' is refused; list the allowed origins")
            raw[field] = origins
        else:
            raw[field] = value
    try:
        settings = msgspec.convert(raw, ServiceSettings, strict=False)
    except msgspec.ValidationError as exc:
        field = str(exc).rpartition("$.")[2].rstrip("`")
        var = next((k for k, v in ENV.items() if v == field), field)
        raise SettingsError(f"{var}: {str(exc).split(' - at')[0]}") from None
    if settings.max_instances < 1 or settings.max_body_bytes < 1024:
        raise SettingsError("MAX_INSTANCES must be >= 1 and MAX_BODY_BYTES >= 1024")
    return settings
