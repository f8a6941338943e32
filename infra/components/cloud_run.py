"""Pieces of Cloud Run v2 specs that services and jobs share (plain input dicts, which
pulumi-gcp accepts for both)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import pulumi


class WorkloadArgs(msgspec.Struct, frozen=True, kw_only=True):
    """What every Cloud Run workload of the platform is given."""

    project: str
    region: str
    service_account: pulumi.Input[str]
    """The workload's own service account (email)."""
    deletion_protection: bool = False
    environment: str = "dev"
    """``prod`` or ``dev``: a label the policy pack reads (prod deploys images by digest)."""

    def labels(self) -> dict[str, str]:
        return {"environment": self.environment}


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


def service(
    resource_name: str,
    name: str,
    *,
    project: str,
    region: str,
    template: Any,
    deletion_protection: bool,
    opts: pulumi.ResourceOptions,
    labels: Mapping[str, str],
    traffics: Any = None,
    custom_audiences: list[str] | None = None,
) -> Any:
    """A Cloud Run v2 service declared the way every part of the platform needs it: public
    ingress guarded by IAM, service-level scaling stated explicitly (the API writes it anyway),
    and the fields Cloud Run writes itself ignored, so a re-run shows no diff."""
    import pulumi_gcp as gcp

    return gcp.cloudrunv2.Service(
        resource_name,
        name=name,
        project=project,
        location=region,
        ingress="INGRESS_TRAFFIC_ALL",
        labels=dict(labels),
        deletion_protection=deletion_protection,
        invoker_iam_disabled=False,
        scaling={"min_instance_count": 0},
        template=template,
        traffics=traffics,
        custom_audiences=custom_audiences,
        opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(ignore_changes=IGNORED_FIELDS)
        ),
    )


def grant_invokers(
    prefix: str,
    target: Any,
    members: Mapping[str, pulumi.Input[str]],
    *,
    project: str,
    region: str,
    opts: pulumi.ResourceOptions,
) -> None:
    """``roles/run.invoker`` on one service for each member, named by a stable label."""
    import pulumi_gcp as gcp

    for label, member in members.items():
        gcp.cloudrunv2.ServiceIamMember(
            f"{prefix}-invoker-{label}",
            name=target.name,
            project=project,
            location=region,
            role=INVOKER,
            member=member,
            opts=opts,
        )
