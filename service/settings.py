"""The service's typed settings, read once from the environment at start-up
(``housing_platform.settings_reader``: a wrong variable is named, with its fix)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from housing_platform.settings_reader import Problem, read_settings
from model_runtime.exports import DEFAULT_MODEL, export_prefix
from model_runtime.loader import ModelSource


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
