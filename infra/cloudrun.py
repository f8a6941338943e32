"""Pieces of Cloud Run v2 specs that services and jobs share (plain input dicts, which
pulumi-gcp accepts for both)."""

from __future__ import annotations

from typing import Any

import pulumi

CLOUDSQL_VOLUME = "cloudsql"
CLOUDSQL_MOUNT = "/cloudsql"
INVOKER = "roles/run.invoker"


def env(name: str, value: pulumi.Input[str]) -> dict[str, Any]:
    return {"name": name, "value": value}


def secret_env(name: str, secret: pulumi.Input[str]) -> dict[str, Any]:
    """An env var read from Secret Manager at start-up: the value never sits in the spec."""
    return {
        "name": name,
        "value_source": {"secret_key_ref": {"secret": secret, "version": "latest"}},
    }


def cloudsql_volume(connection_name: pulumi.Input[str]) -> dict[str, Any]:
    """Cloud SQL's unix sockets under /cloudsql/<connection name>; declared in full, as Cloud
    Run stores it, so a second ``pulumi up`` shows no diff."""
    return {"name": CLOUDSQL_VOLUME, "cloud_sql_instance": {"instances": [connection_name]}}


CLOUDSQL_MOUNT_SPEC = {"name": CLOUDSQL_VOLUME, "mount_path": CLOUDSQL_MOUNT}


def postgres_uri(
    database: str, user: str, connection_name: pulumi.Input[str]
) -> pulumi.Output[str]:
    """SQLAlchemy URI over the Cloud SQL socket, without the password (DB_PASSWORD adds it)."""
    return pulumi.Output.concat(
        "postgresql+psycopg2://",
        user,
        "@/",
        database,
        "?host=",
        CLOUDSQL_MOUNT,
        "/",
        connection_name,
    )


def resources(cpu: str, memory: str, *, cpu_idle: bool = True) -> dict[str, Any]:
    return {
        "limits": {"cpu": cpu, "memory": memory},
        "cpu_idle": cpu_idle,
        "startup_cpu_boost": True,
    }


def http_probe(path: str, *, period: int, failures: int, timeout: int = 1) -> dict[str, Any]:
    return {
        "http_get": {"path": path},
        "period_seconds": period,
        "failure_threshold": failures,
        "timeout_seconds": timeout,
    }


#: Fields Cloud Run writes itself (the client that last deployed); ignoring them keeps a second
#: ``pulumi up`` with no change free of diffs.
IGNORED_FIELDS = ["client", "clientVersion"]
