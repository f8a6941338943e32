"""The whole platform, composed from the components: one function from config to exports.

``infra/__main__.py`` runs it with the stack's config; ``infra/plan.py`` and the tests run it
under Pulumi's mocks with a stack file's config.
"""

from __future__ import annotations

import re
from typing import Any

import pulumi

from infra.components import apis
from infra.components import batch as batch_prediction
from infra.components.artifact_registry import Registry, RegistryArgs, deployed_digests
from infra.components.bucket import PREDICTIONS, Storage, StorageArgs
from infra.components.cloud_sql import Database, DatabaseArgs
from infra.components.identity import DEFAULT_PRODUCTION_REF, Identity, IdentityArgs
from infra.components.inference_service import InferenceArgs, InferenceService, operator_audience
from infra.components.jobs import PipelineJobs, PipelineJobsArgs
from infra.components.mlflow_service import Tracking, TrackingArgs
from infra.components.monitor import READS, WRITES, Monitor, MonitorArgs
from infra.components.ui_service import UI, UIArgs
from infra.config import StackConfig


def _label(member: str) -> str:
    """A resource-name suffix for a config member: ``user:ada@x.com`` → ``user-ada-x-com``."""
    return re.sub(r"[^a-z0-9]+", "-", member.lower()).strip("-")


def build(config: StackConfig) -> dict[str, Any]:
    """Declare every resource of the stack; returns the stack's exports."""
    project, region, prod = config.project, config.region, config.production
    enabled = apis.enable(project)
    after_apis = pulumi.ResourceOptions(depends_on=enabled)

    def after(*resources: pulumi.Resource) -> pulumi.ResourceOptions:
        """Wait for the APIs and for what a workload needs before its first revision starts."""
        return pulumi.ResourceOptions(depends_on=[*enabled, *resources])

    github = config.github
    identity = Identity(
        "identity",
        IdentityArgs(
            project=project,
            github_repository=github.repository,
            github_repository_id=github.repository_id,
            github_repository_owner_id=github.repository_owner_id,
            github_ref=github.ref or (DEFAULT_PRODUCTION_REF if prod else ""),
            github_environment=github.environment,
        ),
        opts=after_apis,
    )
    storage = Storage(
        "data",
        StorageArgs(
            location=region,
            force_destroy=not prod,
            prediction_retention_days=config.monitoring.prediction_retention_days,
        ),
    )
    pinned = list(config.images.refs().values())
    if config.release is not None:
        pinned += [config.release.image, config.release.stable_image]
    registry = Registry(
        "images",
        RegistryArgs(
            project=project,
            location=region,
            keep_images=config.registry_keep_images,
            keep_digests=deployed_digests(pinned),
        ),
        opts=after_apis,
    )
    database = Database(
        "db",
        DatabaseArgs(
            project=project,
            region=region,
            production=prod,
            deletion_protection=config.database.deletion_protection,
            tier=config.database.tier,
            edition=config.database.edition,
            disk_size_gb=config.database.disk_size_gb,
        ),
        opts=after_apis,
    )
    member = identity.member
    pipeline_objects = storage.grant(
        "pipeline-objects", "roles/storage.objectAdmin", member("pipeline")
    )
    mlflow_objects = storage.grant("mlflow-objects", "roles/storage.objectAdmin", member("mlflow"))
    api_objects = storage.grant("api-objects", "roles/storage.objectViewer", member("api"))
    # The prediction log: create only (its object names are unique, nothing is overwritten),
    # and only under its prefix, so a compromised API can't touch models or data.
    api_predictions = storage.grant(
        "api-predictions", "roles/storage.objectCreator", member("api"), prefixes=[PREDICTIONS]
    )
    pipeline_password = database.grant_password("pipeline", member("pipeline"))
    mlflow_password = database.grant_password("mlflow", member("mlflow"))
    environment = "prod" if prod else "dev"

    exports: dict[str, Any] = {
        "bucket": storage.bucket_name,
        "registry": registry.path,
        "database_connection": database.connection_name,
    }
    if identity.workload_identity_provider is not None and identity.ci is not None:
        exports["workload_identity_provider"] = identity.workload_identity_provider
        exports["ci_service_account"] = identity.ci.email

    tracking_url: pulumi.Output[str] | None = None
    #: MLflow with its invoker grants: the monitor reads it from its first run.
    tracking_ready: list[pulumi.Resource] = []
    if config.images.mlflow:
        members: dict[str, pulumi.Input[str]] = {
            "pipeline": identity.member("pipeline"),
            "api": identity.member("api"),
        }
        if config.images.pipeline and config.monitoring.enabled:
            members["monitor"] = identity.member("monitor")
        if config.images.pipeline and config.batch.enabled:
            members["batch"] = identity.member("batch")
        if identity.ci is not None:
            members["ci"] = identity.ci.member
        members |= {_label(m): m for m in config.tracking.invokers}
        tracking = Tracking(
            "tracking",
            TrackingArgs(
                project=project,
                region=region,
                image=config.images.mlflow,
                service_account=identity.email("mlflow"),
                connection_name=database.connection_name,
                password_secret=database.password_secret_id,
                bucket=storage.bucket_name,
                invokers=members,
                workers=config.tracking.workers,
                cpu=config.tracking.cpu,
                memory=config.tracking.memory,
                max_instances=config.tracking.max_instances,
                deletion_protection=prod,
                environment=environment,
            ),
            opts=after(
                *database.ready_for(mlflow_password),
                *identity.project_grants["mlflow"],
                mlflow_objects,
            ),
        )
        tracking_url = tracking.url
        tracking_ready.append(tracking)
        exports["mlflow_url"] = tracking_url

    if config.images.pipeline:
        p = config.pipeline
        jobs = PipelineJobs(
            "jobs",
            PipelineJobsArgs(
                project=project,
                region=region,
                image=config.images.pipeline,
                service_account=identity.email("pipeline"),
                service_account_member=identity.member("pipeline"),
                connection_name=database.connection_name,
                password_secret=database.password_secret_id,
                bucket=storage.bucket_name,
                tracking_url=tracking_url,
                tune_tasks=p.tune_tasks,
                tune_parallelism=p.tune_parallelism,
                cpu=p.cpu,
                memory=p.memory,
                timeout=p.timeout,
                schedule=p.schedule,
                time_zone=p.time_zone,
                wandb_secret=p.wandb_secret,
                deletion_protection=prod,
                environment=environment,
                runners=tuple(identity.platform_members()),
            ),
            opts=after(
                *database.ready_for(pipeline_password),
                *identity.project_grants["pipeline"],
                pipeline_objects,
            ),
        )
        if config.monitoring.enabled:
            m = config.monitoring
            monitor_reads = storage.grant(
                "monitor-reads", "roles/storage.objectViewer", member("monitor"), prefixes=READS
            )
            monitor_writes = storage.grant(
                "monitor-writes", "roles/storage.objectUser", member("monitor"), prefixes=WRITES
            )
            Monitor(
                "monitor",
                MonitorArgs(
                    project=project,
                    region=region,
                    image=config.images.pipeline,
                    service_account=identity.email("monitor"),
                    service_account_member=identity.member("monitor"),
                    bucket=storage.bucket_name,
                    tracking_url=tracking_url,
                    pipeline_job=jobs.pipeline_job.name,
                    schedule=m.schedule,
                    time_zone=m.time_zone,
                    window_hours=m.window_hours,
                    consecutive=m.consecutive,
                    max_mape=m.max_mape,
                    retrain_source=m.retrain_source,
                    cpu=m.cpu,
                    memory=m.memory,
                    timeout=m.timeout,
                    wandb_secret=p.wandb_secret,
                    deletion_protection=prod,
                    environment=environment,
                ),
                opts=after(monitor_reads, monitor_writes, *tracking_ready),
            )
        if config.batch.enabled:
            b = config.batch
            # The model's exports (read only), and inputs and outputs under batch/ alone.
            batch_models = storage.grant(
                "batch-models",
                "roles/storage.objectViewer",
                member("batch"),
                prefixes=batch_prediction.READS,
            )
            batch_data = storage.grant(
                "batch-data",
                "roles/storage.objectUser",
                member("batch"),
                prefixes=batch_prediction.DATA,
            )
            batch = batch_prediction.Batch(
                "batch",
                batch_prediction.BatchArgs(
                    project=project,
                    region=region,
                    image=config.images.pipeline,
                    service_account=identity.email("batch"),
                    bucket=storage.bucket_name,
                    tracking_url=tracking_url,
                    tasks=b.tasks,
                    parallelism=b.parallelism,
                    cpu=b.cpu,
                    memory=b.memory,
                    timeout=b.timeout,
                    max_retries=b.max_retries,
                    runners=b.runners,
                    deletion_protection=prod,
                    environment=environment,
                ),
                opts=after(batch_models, batch_data, *tracking_ready),
            )
            exports["batch_job"] = batch.job_name

    if config.release is not None:
        s = config.service
        invokers: dict[str, pulumi.Input[str]] = {}
        if config.ui.enabled and config.images.ui:
            invokers["ui"] = identity.member("ui")
        if identity.ci is not None:
            invokers["ci"] = identity.ci.member
        invokers |= {_label(m): m for m in s.invokers}
        # The console reads operator data with its own account's ID token, minted for a custom
        # audience of the service: Cloud Run's IAM accepts it, and the service checks it again.
        console = config.ui.enabled and bool(config.images.ui)
        audience = operator_audience(project, environment) if console else ""
        api = InferenceService(
            "api",
            InferenceArgs(
                project=project,
                region=region,
                release=config.release,
                service_account=identity.email("api"),
                bucket=storage.bucket_name,
                tracking_url=tracking_url,
                public=s.public,
                invokers=invokers,
                min_instances=s.min_instances,
                max_instances=s.max_instances,
                cpu=s.cpu,
                memory=s.memory,
                concurrency=s.concurrency,
                faults=s.faults,
                shadowing=s.shadowing,
                operator_audience=audience,
                operators=(identity.spelled_email(project, "ui"),) if console else (),
                prediction_log=config.prediction_log.enabled,
                prediction_log_batch_rows=config.prediction_log.batch_rows,
                prediction_log_interval_seconds=config.prediction_log.interval_seconds,
                prediction_log_capacity_rows=config.prediction_log.capacity_rows,
                deletion_protection=prod,
                environment=environment,
            ),
            opts=after(api_objects, api_predictions),
        )
        exports |= {
            "service_url": api.url,
            "live_revision": api.live_revision,
            "canary_revision": api.canary_revision,
            "tag_urls": api.tag_urls,
        }
        # The UI needs the service and its image; without either it is left out, like any
        # part without an image, so a first `up` of a bare stack passes with ui.enabled set.
        if console and config.images.ui:
            ui = UI(
                "ui",
                UIArgs(
                    project=project,
                    region=region,
                    image=config.images.ui,
                    service_account=identity.email("ui"),
                    api_url=api.url,
                    api_audience=audience,
                    public=config.ui.public,
                    max_instances=config.ui.max_instances,
                    deletion_protection=prod,
                    environment=environment,
                ),
                opts=after_apis,
            )
            exports["ui_url"] = ui.url
    return exports


def main() -> None:
    from infra.config import from_pulumi

    for key, value in build(from_pulumi()).items():
        pulumi.export(key, value)
