"""The MLflow tracking server, started the same way locally and in its container:
``python -m tracking_server``.

Settings come from the environment (the container's contract, set by
infra/components/mlflow_service.py):
``BACKEND_STORE_URI`` (+ ``DB_PASSWORD``), ``ARTIFACTS_DESTINATION``, ``HOST``, ``PORT``,
``ALLOWED_HOSTS``, ``MLFLOW_WORKERS``, ``DB_WAIT_SECONDS``. On a database backend it waits for
the database (bounded), brings the schema to MLflow's current version (``mlflow db upgrade``,
which creates it on an empty database), then execs ``mlflow server`` so signals reach it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping

import msgspec

from housing_platform.database_url import (
    DatabaseUnavailableError,
    redacted,
    wait_for,
    with_password,
)
from housing_platform.settings_reader import SettingsError, read_settings

log = logging.getLogger("tracking_server")


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True):
    backend_store_uri: str
    """BACKEND_STORE_URI: sqlite:///… locally, postgresql+psycopg2://user@/mlflow?host=… on GCP."""
    artifacts_destination: str
    """ARTIFACTS_DESTINATION: a folder or gs://bucket/mlflow; served through the server."""
    db_password: str = ""
    """DB_PASSWORD: joined to the backend URI in the server's environment only."""
    host: str = "127.0.0.1"
    port: int = 5000
    allowed_hosts: str = ""
    """ALLOWED_HOSTS: MLflow's host check (comma-separated, wildcards allowed); empty: MLflow's
    default of localhost and private addresses. Never switched off."""
    workers: int = 1
    db_wait_seconds: float = 60.0

    @property
    def backend(self) -> str:
        return with_password(self.backend_store_uri, self.db_password)

    @property
    def is_database(self) -> bool:
        return not self.backend_store_uri.startswith(("sqlite:", "file:", "/", "."))


#: The variables the server reads (the container's contract), and the setting each one sets.
VARIABLES = {
    "BACKEND_STORE_URI": "backend_store_uri",
    "ARTIFACTS_DESTINATION": "artifacts_destination",
    "DB_PASSWORD": "db_password",
    "HOST": "host",
    "PORT": "port",
    "ALLOWED_HOSTS": "allowed_hosts",
    "MLFLOW_WORKERS": "workers",
    "DB_WAIT_SECONDS": "db_wait_seconds",
}


def from_env(env: Mapping[str, str]) -> ServerSettings:
    return read_settings(ServerSettings, env, VARIABLES)


def command(settings: ServerSettings) -> list[str]:
    """``mlflow server`` arguments; the backend URI travels in the environment
    (MLFLOW_BACKEND_STORE_URI) so no password sits in a process list."""
    args = [
        "mlflow",
        "server",
        "--serve-artifacts",
        "--artifacts-destination",
        settings.artifacts_destination,
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.workers),
    ]
    if settings.allowed_hosts:
        args += ["--allowed-hosts", settings.allowed_hosts]
    return args


def server_env(settings: ServerSettings, env: Mapping[str, str]) -> dict[str, str]:
    out = {k: v for k, v in env.items() if k != "DB_PASSWORD"}
    out["MLFLOW_BACKEND_STORE_URI"] = settings.backend
    out.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return out


def prepare(settings: ServerSettings) -> None:
    """Wait for the database, then create or migrate MLflow's schema."""
    if not settings.is_database:
        return
    attempts = wait_for(settings.backend, settings.db_wait_seconds)
    log.info("database %s ready after %d attempt(s)", redacted(settings.backend), attempts)
    from mlflow.db import upgrade

    upgrade.callback(settings.backend)  # type: ignore[misc]
    log.info("MLflow schema is current")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracking_server", description=__doc__)
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        settings = from_env(os.environ)
        prepare(settings)
    except (SettingsError, DatabaseUnavailableError) as exc:
        print(f"tracking server: {exc}", file=sys.stderr)
        return 1
    args_ = command(settings)
    log.info("starting %s", " ".join(args_))
    # The interpreter of this environment runs MLflow's CLI: no reliance on PATH.
    os.execve(sys.executable, [sys.executable, "-m", *args_], server_env(settings, os.environ))
    return 0  # pragma: no cover - exec does not return


if __name__ == "__main__":
    raise SystemExit(main())
