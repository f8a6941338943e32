"""Drift monitor: the Cloud Run job ``housing-monitor`` (``python -m pipeline monitor`` in the
pipeline image) on a Cloud Scheduler cron, with an account that may do what the monitor does and
nothing more.

It reads the prediction log, the sold prices and the reference it compares against, writes its
reports and the retrain trigger's state, compacts the log, opens MLflow, and starts a retrain by
running ``housing-pipeline`` with overrides (the labelled data to train on). Bucket access is
granted by prefix (IAM conditions on the bucket's grants, declared by the program beside the
bucket); the right to start a retrain is a custom role holding only the four permissions that
takes, granted on the pipeline job alone, and only when ``monitoring.retrainSource`` gives it
something to retrain on.
"""

from __future__ import annotations

from typing import Any, cast

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

from infra.components import cloud_run as cloudrun
from infra.components.jobs import PIPELINE_JOB
from infra.options import child_options

TYPE = "housing-mlops:index:Monitor"
MONITOR_JOB = "housing-monitor"
#: Prefixes of the bucket the monitor only reads: the sold prices (feedback), the model
#: versions' exports (each carries its reference profile, what a window is compared with) and the
#: pipeline's reports (the ingest report's checksum of the data the last training read).
READS = ("artifacts/feedback/", "artifacts/models/", "artifacts/reports/")
#: Prefixes it writes and deletes in: the prediction log (compaction replaces many small objects
#: with one), the trigger's state (overwritten each run: an overwrite is a delete in GCS) and its
#: reports.
WRITES = ("artifacts/predictions/", "artifacts/monitor/", "artifacts/reports/monitor/")
#: Starting a retrain and seeing whether one is already running. ``roles/run.developer`` would
#: also let it change or delete every job and service; ``roles/run.invoker`` can't override.
RETRAIN_PERMISSIONS = (
    "run.executions.get",
    "run.executions.list",
    "run.jobs.run",
    "run.jobs.runWithOverrides",
)
#: A custom role's id (letters, digits, underscores and dots), before its suffix.
RETRAIN_ROLE_ID = "housingMonitorRetrain"


class MonitorArgs(cloudrun.WorkloadArgs, frozen=True, kw_only=True):
    image: str
    """The pipeline image (the monitor is its ``monitor`` command)."""
    service_account_member: pulumi.Input[str]
    bucket: pulumi.Input[str]
    tracking_url: pulumi.Input[str] | None
    pipeline_job: pulumi.Input[str]
    """The job a retrain runs (``housing-pipeline``'s name output: its grant waits for it)."""
    schedule: str = ""
    time_zone: str = "Etc/UTC"
    window_hours: float = 24.0
    consecutive: int = 2
    max_mape: float | None = None
    retrain_source: str = ""
    cpu: str = "1"
    memory: str = "2Gi"
    timeout: str = "1800s"
    wandb_secret: str = ""


def pipeline_job_path(project: str, region: str, job: str) -> str:
    """The full name the Cloud Run Admin API runs a job by."""
    return f"projects/{project}/locations/{region}/jobs/{job}"


def window_arg(hours: float) -> str:
    """``--window`` as ``python -m pipeline monitor`` reads it: ``24h``, or ``90m``."""
    return f"{hours:g}h" if float(hours).is_integer() else f"{round(hours * 60)}m"


def monitor_env(args: MonitorArgs) -> list[dict[str, Any]]:
    """The variables ``python -m pipeline monitor`` reads (pipeline/settings.py)."""
    envs = [
        cloudrun.env("HOUSING_MLOPS_HOME", "/tmp/housing-mlops"),
        cloudrun.env("ARTIFACT_URI", pulumi.Output.concat("gs://", args.bucket, "/artifacts")),
        cloudrun.env("MONITOR_CONSECUTIVE", str(args.consecutive)),
    ]
    if args.max_mape is not None:
        envs.append(cloudrun.env("MONITOR_MAX_MAPE", f"{args.max_mape:g}"))
    if args.retrain_source:
        # A retrain runs the pipeline job on GCP (never inside this task).
        envs += [
            cloudrun.env("MONITOR_RETRAIN_SOURCE", args.retrain_source),
            cloudrun.env(
                "MONITOR_PIPELINE_JOB", pipeline_job_path(args.project, args.region, PIPELINE_JOB)
            ),
        ]
    if args.tracking_url is not None:
        # MLflow is private: the ID-token plugin in the image signs each call for this audience.
        envs += [
            cloudrun.env("MLFLOW_TRACKING_URI", args.tracking_url),
            cloudrun.env("MLFLOW_TRACKING_AUDIENCE", args.tracking_url),
        ]
    if args.wandb_secret:
        envs.append(cloudrun.secret_env("WANDB_API_KEY", args.wandb_secret))
    return envs


class Monitor(pulumi.ComponentResource):
    job: gcp.cloudrunv2.Job
    retrain_role: gcp.projects.IAMCustomRole | None

    def __init__(self, name: str, args: MonitorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE, name, None, opts)
        child = child_options(self, opts)
        member = args.service_account_member
        grants: list[pulumi.Resource] = []
        if args.wandb_secret:
            grants.append(
                gcp.secretmanager.SecretIamMember(
                    f"{name}-wandb-accessor",
                    project=args.project,
                    secret_id=args.wandb_secret,
                    role="roles/secretmanager.secretAccessor",
                    member=member,
                    opts=child,
                )
            )
        self.retrain_role = None
        if args.retrain_source:
            # Without a retrain source the monitor only reports: it gets no right to retrain.
            # A deleted custom role's id can't be reused for 37 days: a fresh suffix per stack
            # lifetime lets dev be destroyed and re-created at once (as the WIF pool's).
            suffix = random.RandomString(
                f"{name}-retrain-role-suffix", length=6, special=False, upper=False, opts=child
            )
            self.retrain_role = gcp.projects.IAMCustomRole(
                f"{name}-retrain-role",
                project=args.project,
                role_id=pulumi.Output.concat(RETRAIN_ROLE_ID, "_", suffix.result),
                title="housing-mlops monitor: start a retrain",
                description="Run the pipeline job with overrides and read its executions",
                permissions=list(RETRAIN_PERMISSIONS),
                opts=child,
            )
            # On the pipeline job only: the role runs whatever job it is granted on.
            grants.append(
                gcp.cloudrunv2.JobIamMember(
                    f"{name}-starts-retrain",
                    name=args.pipeline_job,
                    project=args.project,
                    location=args.region,
                    role=self.retrain_role.name,
                    member=member,
                    opts=child,
                )
            )
        after_grants = pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(depends_on=grants)
        )
        self.job = self._job(name, args, after_grants)
        if args.schedule:
            # The scheduler starts the job as the monitor's own account, which may run it.
            runs = gcp.cloudrunv2.JobIamMember(
                f"{name}-scheduler",
                name=self.job.name,
                project=args.project,
                location=args.region,
                role=cloudrun.INVOKER,
                member=member,
                opts=child,
            )
            gcp.cloudscheduler.Job(
                f"{name}-schedule",
                project=args.project,
                region=args.region,
                schedule=args.schedule,
                time_zone=args.time_zone,
                description="Drift monitor: runs the housing-monitor Cloud Run Job",
                http_target={
                    "http_method": "POST",
                    "uri": (
                        f"https://run.googleapis.com/v2/"
                        f"{pipeline_job_path(args.project, args.region, MONITOR_JOB)}:run"
                    ),
                    "oauth_token": {
                        "service_account_email": args.service_account,
                        "scope": "https://www.googleapis.com/auth/cloud-platform",
                    },
                },
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[runs])),
            )
        self.register_outputs({})

    @staticmethod
    def _job(name: str, args: MonitorArgs, opts: pulumi.ResourceOptions) -> gcp.cloudrunv2.Job:
        container: Any = {
            "image": args.image,
            "args": ["monitor", "--window", window_arg(args.window_hours)],
            "envs": monitor_env(args),
            "resources": {"limits": {"cpu": args.cpu, "memory": args.memory}},
        }
        return gcp.cloudrunv2.Job(
            f"{name}-job",
            name=MONITOR_JOB,
            project=args.project,
            location=args.region,
            labels=args.labels(),
            deletion_protection=args.deletion_protection,
            template=cast(
                Any,
                {
                    "task_count": 1,
                    "parallelism": 1,
                    "template": {
                        "service_account": args.service_account,
                        "timeout": args.timeout,
                        # A failed run waits for the next scheduled one: a run that failed
                        # after starting a retrain must not be repeated at once.
                        "max_retries": 0,
                        "containers": [container],
                    },
                },
            ),
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(ignore_changes=cloudrun.IGNORED_FIELDS)
            ),
        )
