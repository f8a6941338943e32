"""Inference service: the Litestar service on Cloud Run v2, with canary traffic from config.

Each revision is pinned to one model version (``MODEL_URI=models:/housing-price/<version>``,
the bucket export as fallback) and named deterministically from its template, so traffic can
name it in stack config and an unchanged template never churns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from infra.components import cloud_run as cloudrun
from infra.options import child_options
from infra.release import traffic
from infra.release.traffic import Release

TYPE = "housing-mlops:index:InferenceService"
SERVICE = "housing-api"
MODEL_NAME = "housing-price"
PORT = 8080
#: gVisor (gen1) intercepts every system call, and serving a prediction is mostly system calls
#: (socket reads and writes, the log's thread hand-offs): measured there, the service kept 0.33
#: of the bare app's throughput. Gen2 runs the container on a full Linux kernel in a microVM.
EXECUTION_ENVIRONMENT = "EXECUTION_ENVIRONMENT_GEN2"


class InferenceArgs(cloudrun.WorkloadArgs, frozen=True, kw_only=True):
    release: Release
    bucket: pulumi.Input[str]
    tracking_url: pulumi.Input[str] | None
    public: bool = False
    invokers: Mapping[str, pulumi.Input[str]] = {}
    """Members allowed to call a private service, by a stable label."""
    min_instances: int = 0
    max_instances: int = 4
    cpu: str = "1"
    memory: str = "1Gi"
    concurrency: int = 40
    prediction_log: bool = True
    """Log every priced house under ``gs://<bucket>/artifacts/predictions/``."""
    prediction_log_batch_rows: int = 10_000
    prediction_log_interval_seconds: float = 10.0
    prediction_log_capacity_rows: int = 100_000
    faults: str = ""
    """HOUSING_FAULTS, for release drills (the config check refuses it on production)."""
    operator_audience: str = ""
    """A custom audience of the service (``custom_audiences``) and its OPERATOR_AUDIENCE: the
    console's ID tokens carry it, so Cloud Run's IAM and the service's operator check read the
    same token. Empty: no operator endpoints on GCP (a shared service refuses them)."""
    operators: tuple[str, ...] = ()
    """OPERATOR_ACCOUNTS: the emails whose tokens may read operator data (the UI's account),
    spelled out rather than taken from the account resources: known in a first preview, and
    the template's only account input stays its own (which the policy pack reads)."""
    shadowing: bool = False
    """Revisions made with CPU always allocated, mirroring with an ID token, and the API's own
    account an invoker of its service: what a stable revision needs to mirror a shadow phase
    (``service/shadow.py``). Off, the template is exactly as before (no revision churns)."""


Text = pulumi.Input[str]


def _join(*parts: Text) -> Text:
    """Plain text when every part is known now (the hash needs it), else an Output."""
    if all(isinstance(p, str) for p in parts):
        return "".join(parts)  # type: ignore[arg-type]
    return pulumi.Output.concat(*parts)


def model_env(version: int, bucket: Text, tracking_url: Text | None) -> list[dict[str, Any]]:
    envs = [
        cloudrun.env("MODEL_URI", f"models:/{MODEL_NAME}/{version}"),
        cloudrun.env(
            "MODEL_FALLBACK_URI",
            _join("gs://", bucket, f"/artifacts/models/{MODEL_NAME}/{version}"),
        ),
    ]
    if tracking_url is not None:
        envs += [
            cloudrun.env("MLFLOW_TRACKING_URI", tracking_url),
            cloudrun.env("MLFLOW_TRACKING_AUDIENCE", tracking_url),
        ]
    return envs


def prediction_log_env(args: InferenceArgs, bucket: Text) -> list[dict[str, Any]]:
    """The artifact store the log is written to, and the log's settings (service/settings.py
    reads them; ``K_REVISION``, which names the log's objects, Cloud Run sets itself)."""
    return [
        cloudrun.env("ARTIFACT_URI", _join("gs://", bucket, "/artifacts")),
        cloudrun.env("PREDICTION_LOG", "true" if args.prediction_log else "false"),
        cloudrun.env("PREDICTION_LOG_BATCH_ROWS", str(args.prediction_log_batch_rows)),
        cloudrun.env(
            "PREDICTION_LOG_INTERVAL_SECONDS", f"{args.prediction_log_interval_seconds:g}"
        ),
        cloudrun.env("PREDICTION_LOG_CAPACITY_ROWS", str(args.prediction_log_capacity_rows)),
    ]


def operator_audience(project: str, environment: str) -> str:
    """The service's audience for operator tokens: one per project and environment, so a
    token minted for one stack's console is refused by another's service."""
    return f"https://{SERVICE}.operators/{project}/{environment}"


def operator_env(args: InferenceArgs) -> list[dict[str, Any]]:
    """Who may read the console's data (``service/operator.py``): tokens for the service's
    operator audience, from these accounts."""
    if not args.operator_audience:
        return []
    return [
        cloudrun.env("OPERATOR_AUDIENCE", args.operator_audience),
        cloudrun.env("OPERATOR_ACCOUNTS", ",".join(args.operators)),
    ]


def revision_template(
    args: InferenceArgs, service_account: Text, bucket: Text, tracking_url: Text | None
) -> dict[str, Any]:
    """The revision template. Built from plain config with computed values only at its leaves,
    so the policy pack sees scaling, env names and secret references even in a first
    ``preview``, when the account email and the bucket are still unknown."""
    release = args.release
    return {
        "service_account": service_account,
        "execution_environment": EXECUTION_ENVIRONMENT,
        "scaling": {
            "min_instance_count": args.min_instances,
            "max_instance_count": args.max_instances,
        },
        "max_instance_request_concurrency": args.concurrency,
        "timeout": "60s",
        "containers": [
            {
                "image": release.image,
                "ports": {"container_port": PORT},
                "envs": [
                    *model_env(release.model_version, bucket, tracking_url),
                    *prediction_log_env(args, bucket),
                    *operator_env(args),
                    cloudrun.env("HOST", "0.0.0.0"),
                    cloudrun.env("DRAIN_SECONDS", "8"),
                    # prod refuses HOUSING_FAULTS at start, whoever sets it.
                    cloudrun.env("ENVIRONMENT", args.environment),
                    *([cloudrun.env("HOUSING_FAULTS", args.faults)] if args.faults else []),
                    *([cloudrun.env("SHADOW_GOOGLE_AUTH", "true")] if args.shadowing else []),
                ],
                # Mirroring runs after each answer is sent: with CPU only during requests it
                # would crawl (and time out) between them. Billed per instance while it lives.
                "resources": cloudrun.resources(args.cpu, args.memory, cpu_idle=not args.shadowing),
                "startup_probe": cloudrun.http_probe("/ready", period=2, failures=60),
                "liveness_probe": cloudrun.http_probe("/health", period=15, failures=3),
            }
        ],
    }


def newest_revision(args: InferenceArgs, service_account: str, bucket: str, url: str | None) -> str:
    """The revision's name: a hash of the template with every value resolved."""
    template = revision_template(args, service_account, bucket, url)
    return traffic.revision_name(SERVICE, args.release.model_version, template)


def traffic_args(release: Release, newest: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
            "revision": target.revision,
            "percent": target.percent,
            "tag": target.tag,
        }
        for target in traffic.split(release, newest)
    ]


def live_and_canary(release: Release, newest: str) -> tuple[str, str]:
    """The revision that serves users now, and the one on trial ("" when none is)."""
    targets = traffic.split(release, newest)
    if len(targets) == 1 or release.canary_percent == 100:
        return newest, ""
    return release.stable_revision, newest


class InferenceService(pulumi.ComponentResource):
    url: pulumi.Output[str]
    newest_revision: pulumi.Output[str]
    live_revision: pulumi.Output[str]
    canary_revision: pulumi.Output[str]
    tag_urls: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: InferenceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE, name, None, opts)
        child = child_options(self, opts)
        traffic.validate(args.release)
        self.newest_revision = pulumi.Output.all(
            args.service_account, args.bucket, args.tracking_url
        ).apply(lambda v: newest_revision(args, v[0], v[1], v[2]))
        template: Any = revision_template(
            args, args.service_account, args.bucket, args.tracking_url
        ) | {"revision": self.newest_revision}
        self.service = cloudrun.service(
            f"{name}-service",
            SERVICE,
            project=args.project,
            region=args.region,
            template=template,
            deletion_protection=args.deletion_protection,
            labels=args.labels(),
            opts=child,
            traffics=self.newest_revision.apply(lambda n: traffic_args(args.release, n)),
            custom_audiences=[args.operator_audience] if args.operator_audience else None,
        )
        members: dict[str, pulumi.Input[str]] = (
            {"public": "allUsers"} if args.public else dict(args.invokers)
        )
        if args.shadowing and not args.public:
            # The stable revision calls the shadow tag URL of its own service.
            members["shadow-mirror"] = pulumi.Output.concat("serviceAccount:", args.service_account)
        cloudrun.grant_invokers(
            name, self.service, members, project=args.project, region=args.region, opts=child
        )
        pair = self.newest_revision.apply(lambda n: live_and_canary(args.release, n))
        self.live_revision = pair.apply(lambda p: p[0])
        self.canary_revision = pair.apply(lambda p: p[1])
        self.url = self.service.uri
        self.tag_urls = self.service.traffic_statuses.apply(
            lambda statuses: {s.tag: s.uri for s in statuses or [] if s.tag and s.uri}
        )
        self.register_outputs(
            {
                "url": self.url,
                "live_revision": self.live_revision,
                "canary_revision": self.canary_revision,
            }
        )
