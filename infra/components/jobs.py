"""Pipeline jobs: Cloud Run Jobs running the pipeline image.

``housing-pipeline`` runs the whole pipeline (cached steps are skipped, the artifact store being
the bucket); ``housing-tune`` runs the tune step as parallel tasks sharing one Optuna study in
the ``optuna`` database. An optional Cloud Scheduler trigger retrains on a cron.
"""

from __future__ import annotations

from typing import Any, cast

import pulumi
import pulumi_gcp as gcp

from infra.components import cloud_run as cloudrun
from infra.options import child_options

TYPE = "housing-mlops:index:PipelineJobs"
PIPELINE_JOB = "housing-pipeline"
TUNE_JOB = "housing-tune"


class PipelineJobsArgs(cloudrun.WorkloadArgs, frozen=True, kw_only=True):
    image: str
    service_account_member: pulumi.Input[str]
    connection_name: pulumi.Input[str]
    password_secret: pulumi.Input[str]
    bucket: pulumi.Input[str]
    tracking_url: pulumi.Input[str] | None
    """MLflow's URL; None: the pipeline tracks into a SQLite file on the task's disk."""
    tune_tasks: int
    tune_parallelism: int
    cpu: str = "2"
    memory: str = "4Gi"
    timeout: str = "3600s"
    schedule: str = ""
    time_zone: str = "Etc/UTC"
    wandb_secret: str = ""
    database_user: str = "housing"
    runners: tuple[pulumi.Input[str], ...] = ()
    """Members besides the scheduler allowed to start the pipeline job (CI's retrain)."""


def pipeline_env(args: PipelineJobsArgs) -> list[dict[str, Any]]:
    envs = [
        cloudrun.env("HOUSING_MLOPS_HOME", "/tmp/housing-mlops"),
        cloudrun.env("ARTIFACT_URI", pulumi.Output.concat("gs://", args.bucket, "/artifacts")),
        cloudrun.env(
            "OPTUNA_STORAGE",
            cloudrun.postgres_uri("optuna", args.database_user, args.connection_name),
        ),
        cloudrun.secret_env("DB_PASSWORD", args.password_secret),
    ]
    if args.tracking_url is not None:
        envs += [
            cloudrun.env("MLFLOW_TRACKING_URI", args.tracking_url),
            cloudrun.env("MLFLOW_TRACKING_AUDIENCE", args.tracking_url),
        ]
    if args.wandb_secret:
        envs.append(cloudrun.secret_env("WANDB_API_KEY", args.wandb_secret))
    return envs


class PipelineJobs(pulumi.ComponentResource):
    pipeline_job: gcp.cloudrunv2.Job
    tune_job: gcp.cloudrunv2.Job

    def __init__(
        self, name: str, args: PipelineJobsArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(TYPE, name, None, opts)
        child = child_options(self, opts)
        if args.wandb_secret:
            # The jobs mount WANDB_API_KEY from this secret: Cloud Run refuses to start a task
            # whose account can't read it, so the grant comes first.
            grant = gcp.secretmanager.SecretIamMember(
                f"{name}-wandb-accessor",
                project=args.project,
                secret_id=args.wandb_secret,
                role="roles/secretmanager.secretAccessor",
                member=args.service_account_member,
                opts=child,
            )
            child = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[grant]))
        self.pipeline_job = self._job(name, PIPELINE_JOB, args, ["run"], 1, 1, child)
        self.tune_job = self._job(
            name,
            TUNE_JOB,
            args,
            ["run", "--steps", "tune"],
            args.tune_tasks,
            args.tune_parallelism,
            child,
        )
        runners = {"scheduler": args.service_account_member} if args.schedule else {}
        runners |= {f"runner-{i}": member for i, member in enumerate(args.runners)}
        for label, member in runners.items():
            gcp.cloudrunv2.JobIamMember(
                f"{name}-{label}",
                name=self.pipeline_job.name,
                project=args.project,
                location=args.region,
                role=cloudrun.INVOKER,
                member=member,
                opts=child,
            )
        if args.schedule:
            gcp.cloudscheduler.Job(
                f"{name}-schedule",
                project=args.project,
                region=args.region,
                schedule=args.schedule,
                time_zone=args.time_zone,
                description="Scheduled retraining: runs the housing-pipeline Cloud Run Job",
                http_target={
                    "http_method": "POST",
                    "uri": (
                        f"https://run.googleapis.com/v2/projects/{args.project}/locations/"
                        f"{args.region}/jobs/{PIPELINE_JOB}:run"
                    ),
                    "oauth_token": {
                        "service_account_email": args.service_account,
                        "scope": "https://www.googleapis.com/auth/cloud-platform",
                    },
                },
                opts=child,
            )
        self.register_outputs({})

    @staticmethod
    def _job(
        name: str,
        job: str,
        args: PipelineJobsArgs,
        command: list[str],
        tasks: int,
        parallelism: int,
        child: pulumi.ResourceOptions,
    ) -> gcp.cloudrunv2.Job:
        container: Any = {
            "image": args.image,
            "args": command,
            "envs": pipeline_env(args),
            "resources": {"limits": {"cpu": args.cpu, "memory": args.memory}},
            "volume_mounts": [cloudrun.CLOUDSQL_MOUNT_SPEC],
        }
        return gcp.cloudrunv2.Job(
            f"{name}-{job.removeprefix('housing-')}",
            name=job,
            project=args.project,
            location=args.region,
            labels=args.labels(),
            deletion_protection=args.deletion_protection,
            template=cast(
                Any,
                {
                    "task_count": tasks,
                    "parallelism": parallelism,
                    "template": {
                        "service_account": args.service_account,
                        "timeout": args.timeout,
                        "max_retries": 1,
                        "containers": [container],
                        "volumes": [cloudrun.cloudsql_volume(args.connection_name)],
                    },
                },
            ),
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(ignore_changes=cloudrun.IGNORED_FIELDS)
            ),
        )
