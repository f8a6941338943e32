"""Tracking: the MLflow server on Cloud Run, backed by Cloud SQL and the bucket.

Private: only the platform's accounts and the members listed in config may invoke it; the
host check of MLflow's security middleware stays on, allowing only this service's own hosts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from infra.components import cloud_run as cloudrun
from infra.options import child_options

TYPE = "housing-mlops:index:Tracking"
SERVICE = "housing-mlflow"
PORT = 5000


class TrackingArgs(cloudrun.WorkloadArgs, frozen=True, kw_only=True):
    image: str
    connection_name: pulumi.Input[str]
    password_secret: pulumi.Input[str]
    bucket: pulumi.Input[str]
    invokers: Mapping[str, pulumi.Input[str]]
    """Members allowed to call MLflow, by a stable label (the resource name's suffix)."""
    database_user: str = "housing"
    workers: int = 1
    cpu: str = "1"
    memory: str = "2Gi"
    max_instances: int = 2


def allowed_hosts(service: str) -> str:
    """Both URL forms Cloud Run gives a service: ``<name>-<number>.<region>.run.app`` and
    ``<name>-<hash>-<region code>.a.run.app``."""
    return f"{service}-*.run.app"


class Tracking(pulumi.ComponentResource):
    url: pulumi.Output[str]

    def __init__(self, name: str, args: TrackingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE, name, None, opts)
        child = child_options(self, opts)
        container: Any = {
            "image": args.image,
            "ports": {"container_port": PORT},
            "envs": [
                cloudrun.env(
                    "BACKEND_STORE_URI",
                    cloudrun.postgres_uri("mlflow", args.database_user, args.connection_name),
                ),
                cloudrun.secret_env("DB_PASSWORD", args.password_secret),
                cloudrun.env(
                    "ARTIFACTS_DESTINATION", pulumi.Output.concat("gs://", args.bucket, "/mlflow")
                ),
                cloudrun.env("ALLOWED_HOSTS", allowed_hosts(SERVICE)),
                cloudrun.env("MLFLOW_WORKERS", str(args.workers)),
                cloudrun.env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
            ],
            "resources": cloudrun.resources(args.cpu, args.memory),
            "volume_mounts": [cloudrun.CLOUDSQL_MOUNT_SPEC],
            # TCP: probes carry the instance's address as Host, which the host check refuses.
            "startup_probe": {
                "tcp_socket": {"port": PORT},
                "period_seconds": 5,
                "failure_threshold": 24,
                "timeout_seconds": 3,
            },
        }
        template: Any = {
            "service_account": args.service_account,
            "scaling": {"min_instance_count": 0, "max_instance_count": args.max_instances},
            "max_instance_request_concurrency": 20,
            "timeout": "300s",
            "containers": [container],
            "volumes": [cloudrun.cloudsql_volume(args.connection_name)],
        }
        self.service = cloudrun.service(
            f"{name}-service",
            SERVICE,
            project=args.project,
            region=args.region,
            template=template,
            deletion_protection=args.deletion_protection,
            labels=args.labels(),
            opts=child,
        )
        cloudrun.grant_invokers(
            name, self.service, args.invokers, project=args.project, region=args.region, opts=child
        )
        self.url = self.service.uri
        self.register_outputs({"url": self.url})
