"""The stack's typed configuration: the only place that reads ``pulumi.Config``.

Everything under the ``housing-mlops:`` namespace of ``Pulumi.<stack>.yaml`` is converted into
frozen Structs once, at the edge, and validated; an error names the key and the fix, so a typo
fails ``pulumi preview`` with one line instead of a half-applied stack.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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


class Settings(_Section, frozen=True):
    """The ``housing-mlops:`` namespace, spelled as in the stack file."""

    production: bool = False
    registry_keep_images: int = 10
    database: DatabaseConfig = DatabaseConfig()
    images: ImagesConfig = ImagesConfig()
    tracking: TrackingConfig = TrackingConfig()
    pipeline: PipelineConfig = PipelineConfig()
    service: ServiceConfig = ServiceConfig()
    ui: UIConfig = UIConfig()
    github: GitHubConfig = GitHubConfig()
    release: Release | None = None


class StackConfig(Settings, frozen=True, kw_only=True):
    stack: str
    project: str
    region: str


#: Keys of the ``housing-mlops:`` namespace, as spelled in the stack file.
SECTIONS = tuple(f.encode_name for f in msgspec.structs.fields(Settings))


def _key(path: str) -> str:
    """msgspec's ``$.release.canaryPercent`` → ``housing-mlops:release.canaryPercent``."""
    return f"{NAMESPACE}:{path.removeprefix('$.')}" if path.startswith("$.") else NAMESPACE


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
        where = _key(path.rstrip("`")) if path else NAMESPACE
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
    for section, scaling in (("service", config.service), ("ui", config.ui)):
        if scaling.max_instances < 1:
            raise ConfigError(f"{ns}:{section}.maxInstances must be at least 1")
    if config.service.min_instances > config.service.max_instances:
        raise ConfigError(f"{ns}:service.minInstances exceeds service.maxInstances")
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
