"""The stack's typed configuration: the only place that reads ``pulumi.Config``.

Everything under the ``housing-mlops:`` namespace of ``Pulumi.<stack>.yaml`` is converted into
frozen Structs once, at the edge, and validated; an error names the key and the fix, so a typo
fails ``pulumi preview`` with one line instead of a half-applied stack.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from infra.release.traffic import Release, ReleaseError, validate
from infra.sql_tiers import ENTERPRISE, tier_problem

NAMESPACE = "housing-mlops"
#: Members that would make a private endpoint public.
PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
_MEMBER = re.compile(r"^(user|group|serviceAccount|domain|principal|principalSet):\S+$")
_REPOSITORY = re.compile(r"^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$")
#: An image reference pinned to its content: ``<registry path>@sha256:<64 hex>``.
DIGEST_REF = re.compile(r"^[a-z0-9][a-z0-9./_:-]*@sha256:[0-9a-f]{64}$")


class ConfigError(ValueError):
    """A stack setting is wrong; the message names the key and how to fix it."""


class _Section(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    pass


class DatabaseConfig(_Section, frozen=True):
    tier: str = "db-f1-micro"
    """Cloud SQL machine tier."""
    edition: str = ENTERPRISE
    """ENTERPRISE or ENTERPRISE_PLUS; must fit the tier (PostgreSQL 16+ would otherwise default
    to ENTERPRISE_PLUS, which refuses shared-core and custom tiers)."""
    deletion_protection: bool = True
    """Refuse to delete the instance; must stay true in production."""
    disk_size_gb: Annotated[int, msgspec.Meta(ge=10)] = 10
    """Provisioned SSD storage (GB, at least 10); billed whether used or not."""


class ImagesConfig(_Section, frozen=True):
    """Image references, by digest (``nox -s pin`` writes them; CI commits them back). Empty:
    that part is not deployed yet, so a first ``pulumi up`` can create the registry before any
    image exists."""

    mlflow: str = ""
    pipeline: str = ""
    ui: str = ""
    service: str = ""
    """The service image new releases use (``release.image`` defaults to it)."""

    def refs(self) -> dict[str, str]:
        return {p: v for p, v in msgspec.structs.asdict(self).items() if v}


class TrackingConfig(_Section, frozen=True):
    invokers: tuple[str, ...] = ()
    """Members (``user:…``, ``group:…``) allowed to open MLflow, beside the platform's accounts."""
    workers: int = 1
    cpu: str = "1"
    memory: str = "2Gi"
    max_instances: int = 2


class PipelineConfig(_Section, frozen=True):
    schedule: str = ""
    """Cron for scheduled retraining (Cloud Scheduler); empty: no schedule."""
    time_zone: str = "Etc/UTC"
    tune_tasks: int = 2
    """Tasks of the ``tune`` job, sharing one Optuna study."""
    tune_parallelism: int = 2
    """How many of those tasks run at once."""
    cpu: str = "2"
    memory: str = "4Gi"
    timeout: str = "3600s"
    wandb_secret: str = ""
    """Secret Manager secret holding ``WANDB_API_KEY``; empty: W&B stays offline."""


class ServiceConfig(_Section, frozen=True):
    public: bool = False
    """Grant ``allUsers`` the invoker role; otherwise callers need an ID token."""
    invokers: tuple[str, ...] = ()
    """Members (``user:…``, ``group:…``, ``serviceAccount:…``) allowed to call a private API,
    beside the UI and CI accounts."""
    min_instances: int = 0
    max_instances: int = 4
    cpu: str = "1"
    memory: str = "1Gi"
    concurrency: int = 40
    """Requests one instance takes at once."""
    faults: str = ""
    """HOUSING_FAULTS of new revisions, for release drills (``error_rate=0.05``,
    ``delay_ms=200``, ``price_factor=1.1``); refused on a production stack."""
    shadowing: bool = False
    """New revisions run with CPU always allocated and the API's account may invoke its own
    service, so that a revision, once stable, can mirror a later release's shadow phase
    (``release.shadowPercent``). A stack setting, not a function of shadowPercent: a revision's
    CPU allocation is fixed when it is made, and the revision that mirrors is the stable one."""


class PredictionLogConfig(_Section, frozen=True):
    """The service's prediction log (README: Monitoring): every priced house, written as parquet
    under ``artifacts/predictions/`` off the request path."""

    enabled: bool = True
    """PREDICTION_LOG: off stops the log (and so the drift monitor's input)."""
    batch_rows: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    """PREDICTION_LOG_BATCH_ROWS: rows that start a write."""
    interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """PREDICTION_LOG_INTERVAL_SECONDS: the longest a row waits to be written."""
    capacity_rows: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    """PREDICTION_LOG_CAPACITY_ROWS: rows buffered at most while the store is slow; more are
    dropped (and counted), never waited for."""


class MonitoringConfig(_Section, frozen=True):
    """The drift monitor on GCP: the ``housing-monitor`` job, its schedule, and how long the
    prediction log is kept."""

    enabled: bool = True
    """Declare the ``housing-monitor`` job and its schedule (needs ``images.pipeline``)."""
    schedule: str = "30 4 * * *"
    """Cron of the monitor's runs (Cloud Scheduler); empty: the job exists, nothing starts it."""
    time_zone: str = "Etc/UTC"
    window_hours: Annotated[float, msgspec.Meta(gt=0)] = 24.0
    """The window each run reads, ending now (``monitor --window``): the time between runs."""
    consecutive: Annotated[int, msgspec.Meta(ge=1)] = 2
    """Drifted windows in a row that start a retrain (MONITOR_CONSECUTIVE)."""
    max_mape: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """Realised MAPE (0.25 = 25%) above which a retrain starts (MONITOR_MAX_MAPE); unset: not
    used."""
    retrain_source: str = ""
    """Labelled data a retrain trains on (gs://…, https://…) (MONITOR_RETRAIN_SOURCE); empty: the
    monitor reports drift but starts no retrain, and gets no right to. Outside the stack's bucket
    the monitor (which checksums it) and the pipeline account need read access to it."""
    prediction_retention_days: Annotated[int, msgspec.Meta(ge=1)] = 90
    """Days the prediction log is kept: a lifecycle rule deletes ``artifacts/predictions/``
    objects older than this."""
    cpu: str = "1"
    memory: str = "2Gi"
    timeout: str = "1800s"


#: Cloud Run's limits on a job: tasks per execution, retries per task, a task's timeout (s).
MAX_TASKS, MAX_RETRIES, MAX_TASK_SECONDS = 10_000, 10, 168 * 3600
_SECONDS = re.compile(r"^[1-9][0-9]*s$")
#: A Kubernetes-style quantity as Cloud Run takes it: ``2``, ``500m``, ``2Gi``.
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|Ki|Mi|Gi)?$")


class BatchConfig(_Section, frozen=True):
    """Batch prediction on GCP (README: Batch predictions on GCP, in the deploy guide): the
    ``housing-batch`` Cloud Run job, ``python -m pipeline batch`` in the pipeline image. These
    are each execution's defaults; an execution names its input and output, and may change the
    task count, with overrides."""

    enabled: bool = True
    """Declare the ``housing-batch`` job and its grants (needs ``images.pipeline``)."""
    tasks: Annotated[int, msgspec.Meta(ge=1, le=MAX_TASKS)] = 4
    """Tasks of an execution (CLOUD_RUN_TASK_COUNT): each prices its share of the input."""
    parallelism: Annotated[int, msgspec.Meta(ge=1)] = 4
    """How many of those tasks run at once (at most ``tasks``)."""
    cpu: str = "1"
    """A task's vCPUs: one process per task; more tasks, not more CPUs, scale it out."""
    memory: str = "2Gi"
    """A task's memory: a task streams its share in chunks (about 1.5 GB at most)."""
    timeout: str = "3600s"
    """A task's timeout, in seconds (``3600s``; Cloud Run allows up to 168 h)."""
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=MAX_RETRIES)] = 1
    """Retries of a failed task (a retry rewrites only that task's part)."""
    runners: tuple[str, ...] = ()
    """Members (``user:…``, ``group:…``, ``serviceAccount:…``) allowed to run the job with
    overrides (a custom role on ``housing-batch`` alone); empty: only accounts with a
    project-wide Cloud Run role (CI's ``roles/run.admin``) can."""


class UIConfig(_Section, frozen=True):
    enabled: bool = False
    public: bool = False
    max_instances: int = 2


class GitHubConfig(_Section, frozen=True):
    repository: str = ""
    """``owner/name`` whose Actions may deploy through Workload Identity Federation."""
    repository_id: str = ""
    """The repository's numeric id (``gh api repos/OWNER/NAME --jq .id``): a name can be taken
    over after a rename or deletion, an id can't. Required on production stacks."""
    repository_owner_id: str = ""
    """The owner's numeric id (``gh api users/OWNER --jq .id``). Required on production."""
    ref: str = ""
    """The only git ref whose workflows may deploy; default ``refs/heads/main`` on production,
    any ref elsewhere."""
    environment: str = ""
    """The GitHub environment a deploying job must run in (``environment:`` in the workflow);
    empty: any."""


NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class ServiceUsage(_Section, frozen=True):
    """Traffic of one Cloud Run service."""

    requests_per_month: NonNegative = 0
    mean_latency_ms: NonNegative = 100
    """Mean time a request holds its instance (Cloud Run bills while one is in flight)."""


class JobUsage(_Section, frozen=True):
    """How often a Cloud Run job runs and how long its tasks take: runs (per month or per
    week) and one of taskMinutes, trialsPerRun with trialMinutes (shared by the job's tasks),
    or rowsPerMonth with rowsPerSecond (a batch job: no runs)."""

    runs_per_month: NonNegative | None = None
    runs_per_week: NonNegative | None = None
    task_minutes: NonNegative | None = None
    trials_per_run: NonNegative | None = None
    trial_minutes: NonNegative | None = None
    rows_per_month: NonNegative | None = None
    rows_per_second: Annotated[float, msgspec.Meta(gt=0)] | None = None


class DatabaseUsage(_Section, frozen=True):
    backup_gb: NonNegative = 0
    """Backup storage, billed when the plan turns backups on (production)."""


class StorageUsage(_Section, frozen=True):
    stored_gb: NonNegative = 0
    """Average GB in the bucket, old object versions included."""
    class_a_ops_per_month: NonNegative = 0
    """Writes and listings."""
    class_b_ops_per_month: NonNegative = 0
    """Reads."""


class RegistryUsage(_Section, frozen=True):
    stored_gb: NonNegative = 0
    """Image layers kept (the cleanup policy bounds them)."""


class SecretsUsage(_Section, frozen=True):
    accesses_per_month: NonNegative = 0
    """Secret reads: each Cloud Run instance or job task start reads its secrets."""


class LoggingUsage(_Section, frozen=True):
    gib_per_month: NonNegative = 0
    """Logs beyond the services' request lines (jobs, MLflow, audit)."""
    bytes_per_request: NonNegative = 300
    """One JSON line per request a service answers."""


class LoadTarget(_Section, frozen=True):
    """The load a service must carry; sized from ``nox -s bench``'s measured throughput."""

    service: str = "housing-api"
    peak_rps: NonNegative = 0
    """Peak requests per second (0: no sizing)."""
    p99_budget_ms: NonNegative = 0
    """Only bench rows whose p99 is within this count (0: any)."""
    target_cpu_utilization: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.6
    """Cloud Run scales out near 60% CPU: the share of a core an instance really gets."""


class CostConfig(_Section, frozen=True):
    """Usage assumptions for ``nox -s cost`` (nothing here is deployed)."""

    monthly_budget: NonNegative = 0
    """USD a month; ``nox -s cost`` fails above it (0: no gate)."""
    services: dict[str, ServiceUsage] = {}
    """By Cloud Run service name (``housing-api``, ``housing-mlflow``, ``housing-ui``)."""
    jobs: dict[str, JobUsage] = {}
    """By Cloud Run job name (``housing-pipeline``, ``housing-tune``, …)."""
    job_defaults: JobUsage = JobUsage(runs_per_month=4, task_minutes=10)
    """For a job of the plan that ``jobs`` doesn't name."""
    database: DatabaseUsage = DatabaseUsage()
    storage: StorageUsage = StorageUsage()
    registry: RegistryUsage = RegistryUsage()
    secrets: SecretsUsage = SecretsUsage()
    logging: LoggingUsage = LoggingUsage()
    load: LoadTarget = LoadTarget()


class Settings(_Section, frozen=True):
    """The ``housing-mlops:`` namespace, spelled as in the stack file."""

    production: bool = False
    registry_keep_images: int = 10
    database: DatabaseConfig = DatabaseConfig()
    images: ImagesConfig = ImagesConfig()
    tracking: TrackingConfig = TrackingConfig()
    pipeline: PipelineConfig = PipelineConfig()
    service: ServiceConfig = ServiceConfig()
    prediction_log: PredictionLogConfig = PredictionLogConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    batch: BatchConfig = BatchConfig()
    ui: UIConfig = UIConfig()
    github: GitHubConfig = GitHubConfig()
    release: Release | None = None
    cost: CostConfig = CostConfig()


class StackConfig(Settings, frozen=True, kw_only=True):
    stack: str
    project: str
    region: str


#: Keys of the ``housing-mlops:`` namespace, as spelled in the stack file.
SECTIONS = tuple(f.encode_name for f in msgspec.structs.fields(Settings))


def _key(path: str, raw: Mapping[str, Any] | None = None) -> str:
    """msgspec's ``$.release.canaryPercent`` → ``housing-mlops:release.canaryPercent``; an entry
    of a named mapping (``$.cost.jobs[...]``) is named by the first entry that fails alone."""
    if not path.startswith("$."):
        return NAMESPACE
    path = path.removeprefix("$.")
    named = {"cost.services": ServiceUsage, "cost.jobs": JobUsage}
    for prefix, typ in named.items():
        if raw is not None and path.startswith(f"{prefix}[...]"):
            entries = dict((raw.get("cost") or {}).get(prefix.split(".")[1]) or {})
            for name, value in entries.items():
                try:
                    msgspec.convert(value, typ, strict=False)
                except msgspec.ValidationError:
                    path = path.replace("[...]", f".{name}", 1)
                    break
    return f"{NAMESPACE}:{path}"


def parse(values: Mapping[str, Any], stack: str) -> StackConfig:
    """Build and validate the config from a stack file's ``config:`` mapping (full keys)."""
    unknown = sorted(
        k for k in values if k.startswith(f"{NAMESPACE}:") and k.split(":", 1)[1] not in SECTIONS
    )
    if unknown:
        raise ConfigError(f"{unknown[0]} is not a setting; known: {', '.join(sorted(SECTIONS))}")
    for key in ("gcp:project", "gcp:region"):
        if not values.get(key):
            raise ConfigError(f"{key} is not set: pulumi config set {key} <value>")
    raw = {k: v for k in SECTIONS if (v := values.get(f"{NAMESPACE}:{k}")) is not None}
    try:
        decoded = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).rpartition(" - at `")
        where = _key(path.rstrip("`"), raw) if path else NAMESPACE
        raise ConfigError(f"{where}: {message or exc}") from None
    fields = msgspec.structs.asdict(decoded)
    release = decoded.release
    if release is not None and not release.image and decoded.images.service:
        fields["release"] = msgspec.structs.replace(release, image=decoded.images.service)
    config = StackConfig(
        stack=stack,
        project=str(values["gcp:project"]),
        region=str(values["gcp:region"]),
        **fields,
    )
    check(config)
    return config


def check(config: StackConfig) -> None:
    """Rules across keys that types alone can't say."""
    ns = NAMESPACE
    if config.production and not config.database.deletion_protection:
        raise ConfigError(
            f"{ns}:database.deletionProtection is false on a production stack: set it to true "
            "(production data must survive a mistaken `pulumi destroy`)"
        )
    p = config.pipeline
    if p.tune_tasks < 1 or not 1 <= p.tune_parallelism <= p.tune_tasks:
        raise ConfigError(
            f"{ns}:pipeline.tuneParallelism must be between 1 and pipeline.tuneTasks "
            f"({p.tune_tasks}), got {p.tune_parallelism}"
        )
    if p.schedule and len(p.schedule.split()) != 5:
        raise ConfigError(
            f"{ns}:pipeline.schedule {p.schedule!r} is not a 5-field cron (e.g. '0 3 * * 1')"
        )
    _check_monitoring(config.monitoring)
    _check_batch(config.batch)
    for section, scaling in (("service", config.service), ("ui", config.ui)):
        if scaling.max_instances < 1:
            raise ConfigError(f"{ns}:{section}.maxInstances must be at least 1")
    if config.service.min_instances > config.service.max_instances:
        raise ConfigError(f"{ns}:service.minInstances exceeds service.maxInstances")
    if config.production and config.service.faults.strip():
        raise ConfigError(
            f"{ns}:service.faults is {config.service.faults!r} on a production stack: fault "
            "injection is for drills on dev; remove service.faults (the service refuses to "
            "start with it where ENVIRONMENT is prod)"
        )
    if (
        config.release is not None
        and config.release.shadow_percent
        and not config.service.shadowing
    ):
        raise ConfigError(
            f"{ns}:release.shadowPercent is {config.release.shadow_percent} but "
            "service.shadowing is off: the stable revision would mirror with its CPU throttled "
            "after each answer and no invoker grant on the shadow tag URL; set "
            "service.shadowing: true (`pulumi up`, then promote a revision made with it) first"
        )
    _check_members(
        "tracking.invokers",
        config.tracking.invokers,
        "'user:ada@example.com' or 'group:ml@example.com'; MLflow is never public",
    )
    _check_members(
        "service.invokers",
        config.service.invokers,
        "'serviceAccount:caller@p.iam.gserviceaccount.com' or 'group:ml@example.com'; to open "
        "the API to everyone set service.public: true",
    )
    repo = config.github.repository
    if repo and not _REPOSITORY.match(repo):
        raise ConfigError(f"{ns}:github.repository {repo!r} must be 'owner/name'")
    if config.release is not None:
        try:
            validate(config.release)
        except ReleaseError as exc:
            raise ConfigError(f"{ns}:{exc}") from None
    _check_cost(config.cost)
    problem = tier_problem(config.database.tier, config.database.edition)
    if problem:
        raise ConfigError(f"{ns}:database: {problem}")
    if config.production:
        pinned = {f"images.{part}": ref for part, ref in config.images.refs().items()}
        if config.release is not None and config.release.image:
            pinned["release.image"] = config.release.image
        for key, ref in sorted(pinned.items()):
            if not DIGEST_REF.match(ref):
                raise ConfigError(
                    f"{ns}:{key} is {ref!r}: a production stack deploys images by digest only "
                    "(<registry path>@sha256:<64 hex>); copy the digest that passed dev with "
                    "`nox -s pin -- prod --image PART=REF`"
                )
        g = config.github
        if g.repository and not (g.repository_id.isdigit() and g.repository_owner_id.isdigit()):
            raise ConfigError(
                f"{ns}:github.repositoryId and github.repositoryOwnerId must be set (numeric) on "
                "a production stack: a repository name can be re-registered by someone else; "
                "`gh api repos/OWNER/NAME --jq '.id, .owner.id'` prints both"
            )


def _check_monitoring(m: MonitoringConfig) -> None:
    """The monitor must be able to read the windows it is asked to compare."""
    ns = NAMESPACE
    if m.schedule and len(m.schedule.split()) != 5:
        raise ConfigError(
            f"{ns}:monitoring.schedule {m.schedule!r} is not a 5-field cron (e.g. '30 4 * * *')"
        )
    # A retrain needs `consecutive` drifted windows in a row: the log must still hold them all.
    needed_hours = m.window_hours * m.consecutive
    if m.prediction_retention_days * 24 < needed_hours:
        raise ConfigError(
            f"{ns}:monitoring.predictionRetentionDays is {m.prediction_retention_days}: the "
            f"monitor reads {m.consecutive} windows of {m.window_hours:g} h "
            f"(monitoring.consecutive times monitoring.windowHours); keep at least "
            f"{-(-needed_hours // 24):.0f} days"
        )
    source = m.retrain_source
    if source and not source.startswith(("gs://", "https://")):
        raise ConfigError(
            f"{ns}:monitoring.retrainSource {source!r} must be a gs:// or https:// URI: the job "
            "runs in the cloud, where a local path doesn't exist"
        )


def _check_batch(b: BatchConfig) -> None:
    """What Cloud Run would refuse only at ``up``, refused at ``preview`` with the key to fix."""
    ns = NAMESPACE
    if b.parallelism > b.tasks:
        raise ConfigError(
            f"{ns}:batch.parallelism must be between 1 and batch.tasks ({b.tasks}), got "
            f"{b.parallelism}: lower it, or raise batch.tasks"
        )
    if not _SECONDS.match(b.timeout) or int(b.timeout[:-1]) > MAX_TASK_SECONDS:
        raise ConfigError(
            f"{ns}:batch.timeout {b.timeout!r} must be whole seconds ending in 's', at most "
            f"{MAX_TASK_SECONDS}s (168 h, Cloud Run's limit), e.g. '3600s'"
        )
    for key, value, fix in (
        ("cpu", b.cpu, "'1', '2', '4' or '8'"),
        ("memory", b.memory, "'512Mi', '2Gi', …"),
    ):
        if not _QUANTITY.match(value):
            raise ConfigError(f"{ns}:batch.{key} {value!r} is not a quantity: use {fix}")
    _check_members(
        "batch.runners",
        b.runners,
        "'user:ada@example.com', 'group:ml@example.com' or "
        "'serviceAccount:caller@p.iam.gserviceaccount.com'; a job is never public",
    )


def _check_cost(cost: CostConfig) -> None:
    """Each job's usage said one way: runs and a duration, or, for a batch job, rows alone."""
    for key, job in [*((f"jobs.{n}", j) for n, j in cost.jobs.items()), ("jobDefaults", None)]:
        job = job or cost.job_defaults
        durations = {
            "taskMinutes": (job.task_minutes,),
            "trialsPerRun": (job.trials_per_run, job.trial_minutes),
            "rowsPerMonth": (job.rows_per_month, job.rows_per_second),
        }
        given = [name for name, values in durations.items() if values != (None,) * len(values)]
        runs = [r for r in (job.runs_per_month, job.runs_per_week) if r is not None]
        whole = len(given) == 1 and None not in durations[given[0]]
        if not whole or len(runs) != (0 if given == ["rowsPerMonth"] else 1):
            raise ConfigError(
                f"{NAMESPACE}:cost.{key}: give runsPerMonth or runsPerWeek, and taskMinutes or "
                "trialsPerRun with trialMinutes; or, for a batch job, rowsPerMonth with "
                "rowsPerSecond alone"
            )


def _check_members(key: str, members: tuple[str, ...], examples: str) -> None:
    """IAM members named in config: typed principals, never a public one."""
    for member in members:
        if member in PUBLIC_MEMBERS or not _MEMBER.match(member):
            raise ConfigError(f"{NAMESPACE}:{key} has {member!r}: list members such as {examples}")


def from_pulumi() -> StackConfig:
    """Read the running stack's configuration (inside a Pulumi program only)."""
    import pulumi

    gcp = pulumi.Config("gcp")
    ours = pulumi.Config(NAMESPACE)
    values: dict[str, Any] = {"gcp:project": gcp.get("project"), "gcp:region": gcp.get("region")}
    for key in SECTIONS:
        value = ours.get_object(key)
        if value is not None:
            values[f"{NAMESPACE}:{key}"] = value
    return parse(values, pulumi.get_stack())
