"""Batch prediction: the Cloud Run job ``housing-batch`` (``python -m pipeline batch`` in the
pipeline image), with an account that may do what a batch run does and nothing more, and the
members allowed to start it with per-execution overrides.

Each execution names its input and output (``--args``) and may change its task count
(``--tasks``); each task prices its share of the input by ``CLOUD_RUN_TASK_INDEX`` /
``CLOUD_RUN_TASK_COUNT``. The job's command is fixed to ``python -m pipeline batch``: an override
replaces the arguments, never the command, so whoever may run the job can run nothing else as
its account. The account reads the model as the service does (MLflow, whose invoker grant the
program declares beside MLflow, and the exports under ``artifacts/models/`` as the fallback) and
reads and writes only under ``batch/`` in the bucket (IAM conditions on the bucket's grants,
declared by the program beside the bucket). Runners get a custom role holding only what starting
an execution with overrides and following it takes, granted on this job alone.
"""

from __future__ import annotations

from typing import Any, cast

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

from infra.components import cloud_run as cloudrun
from infra.options import child_options

TYPE = "housing-mlops:index:Batch"
BATCH_JOB = "housing-batch"
#: The container's command: the image's entry point and the one subcommand this job may run.
COMMAND = ("python", "-m", "pipeline", "batch")
#: Prefixes of the bucket the job only reads: the model versions' exports (the fallback when
#: MLflow can't be reached, as for the service; ``champion/`` is the alias's export).
READS = ("artifacts/models/",)
#: Where inputs are read and outputs written (parts, done-markers, the manifest, which is written
#: under a generation precondition; ``--overwrite`` and ``--resume`` replace or delete objects).
DATA = ("batch/",)
#: Starting an execution with overrides (``run.jobs.run`` on the job, ``runWithOverrides`` on the
#: overrides: the Admin API checks both) and following it (``--wait``, ``executions list``).
#: ``roles/run.invoker`` can't override; ``roles/run.developer`` could change or delete the job.
RUNNER_PERMISSIONS = (
    "run.executions.get",
    "run.executions.list",
    "run.jobs.run",
    "run.jobs.runWithOverrides",
)
#: A custom role's id (letters, digits, underscores and dots), before its suffix.
RUNNER_ROLE_ID = "housingBatchRunner"


class BatchArgs(cloudrun.WorkloadArgs, frozen=True, kw_only=True):
    image: str
    """The pipeline image (batch prediction is its ``batch`` command)."""
    bucket: pulumi.Input[str]
    tracking_url: pulumi.Input[str] | None
    """MLflow's URL; None: the model comes from the bucket's export alone."""
    tasks: int = 4
    parallelism: int = 4
    cpu: str = "1"
    memory: str = "2Gi"
    timeout: str = "3600s"
    max_retries: int = 1
    runners: tuple[pulumi.Input[str], ...] = ()
    """Members allowed to run the job with overrides."""


def job_path(project: str, region: str) -> str:
    """The full name the Cloud Run Admin API runs the job by."""
    return f"projects/{project}/locations/{region}/jobs/{BATCH_JOB}"


def batch_env(args: BatchArgs) -> list[dict[str, Any]]:
    """The variables ``python -m pipeline batch`` reads (pipeline/settings.py): where the model's
    exports are (the artifact store) and the MLflow registry it loads the model from first.
    ``CLOUD_RUN_TASK_INDEX`` / ``CLOUD_RUN_TASK_COUNT`` Cloud Run sets itself."""
    envs = [
        cloudrun.env("HOUSING_MLOPS_HOME", "/tmp/housing-mlops"),
        cloudrun.env("ARTIFACT_URI", pulumi.Output.concat("gs://", args.bucket, "/artifacts")),
    ]
    if args.tracking_url is not None:
        # MLflow is private: the ID-token plugin in the image signs each call for this audience.
        envs += [
            cloudrun.env("MLFLOW_TRACKING_URI", args.tracking_url),
            cloudrun.env("MLFLOW_TRACKING_AUDIENCE", args.tracking_url),
        ]
    return envs


class Batch(pulumi.ComponentResource):
    job: gcp.cloudrunv2.Job
    runner_role: gcp.projects.IAMCustomRole | None
    job_name: pulumi.Output[str]

    def __init__(self, name: str, args: BatchArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE, name, None, opts)
        child = child_options(self, opts)
        self.job = self._job(name, args, child)
        self.job_name = self.job.name
        self.runner_role = None
        if args.runners:
            # A deleted custom role's id can't be reused for 37 days: a fresh suffix per stack
            # lifetime lets dev be destroyed and re-created at once (as the monitor's role).
            suffix = random.RandomString(
                f"{name}-runner-role-suffix", length=6, special=False, upper=False, opts=child
            )
            self.runner_role = gcp.projects.IAMCustomRole(
                f"{name}-runner-role",
                project=args.project,
                role_id=pulumi.Output.concat(RUNNER_ROLE_ID, "_", suffix.result),
                title="housing-mlops batch: run the batch job with overrides",
                description="Run housing-batch with overrides and read its executions",
                permissions=list(RUNNER_PERMISSIONS),
                opts=child,
            )
            # On the batch job only: the role runs whatever job it is granted on.
            for index, member in enumerate(args.runners):
                gcp.cloudrunv2.JobIamMember(
                    f"{name}-runner-{index}",
                    name=self.job.name,
                    project=args.project,
                    location=args.region,
                    role=self.runner_role.name,
                    member=member,
                    opts=child,
                )
        self.register_outputs({"job_name": self.job_name})

    @staticmethod
    def _job(name: str, args: BatchArgs, opts: pulumi.ResourceOptions) -> gcp.cloudrunv2.Job:
        container: Any = {
            "image": args.image,
            "commands": list(COMMAND),
            "envs": batch_env(args),
            "resources": {"limits": {"cpu": args.cpu, "memory": args.memory}},
        }
        return gcp.cloudrunv2.Job(
            f"{name}-job",
            name=BATCH_JOB,
            project=args.project,
            location=args.region,
            labels=args.labels(),
            deletion_protection=args.deletion_protection,
            template=cast(
                Any,
                {
                    "task_count": args.tasks,
                    "parallelism": args.parallelism,
                    "template": {
                        "service_account": args.service_account,
                        "timeout": args.timeout,
                        # A retried task rewrites its own part only; the manifest waits for all.
                        "max_retries": args.max_retries,
                        "containers": [container],
                    },
                },
            ),
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(ignore_changes=cloudrun.IGNORED_FIELDS)
            ),
        )
