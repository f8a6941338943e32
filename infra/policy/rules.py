"""The guardrails, as pure functions of a resource's type and properties (camelCase, as the
engine sees them): each returns the violations it finds, so the rules are tested directly and
the policy pack only adapts them.

**Preview.** In a first ``pulumi preview`` the engine doesn't know what GCP computes (account
emails, the bucket's name, URLs): such values arrive as :data:`UNKNOWN`. A rule reads only what
it needs; when that is unknown it raises :class:`UnknownValue` (the pack turns it into Pulumi's
"can't run during preview" advisory, and the rule runs again in ``up``). So the program must
hand the rules known values for everything they decide on — scaling, env names, images, labels,
tiers — and the rules must not trip over unknowns they don't need.

``secrets_are_granted`` looks across resources (a stack validation): it is given every resource
with the resources each input came from (``propertyDependencies``), which is how it matches a
workload to its account's grants in preview, when both sides only say "the email of account X".
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.sql_tiers import tier_problem

BUCKET = "gcp:storage/bucket:Bucket"
SQL_INSTANCE = "gcp:sql/databaseInstance:DatabaseInstance"
RUN_SERVICE = "gcp:cloudrunv2/service:Service"
RUN_JOB = "gcp:cloudrunv2/job:Job"
SERVICE_IAM = (
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
    "gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding",
)
JOB_IAM = ("gcp:cloudrunv2/jobIamMember:JobIamMember", "gcp:cloudrunv2/jobIamBinding:JobIamBinding")
ACCOUNT = "gcp:serviceaccount/account:Account"
SECRET = "gcp:secretmanager/secret:Secret"
SECRET_IAM = (
    "gcp:secretmanager/secretIamMember:SecretIamMember",
    "gcp:secretmanager/secretIamBinding:SecretIamBinding",
)
PROJECT_IAM = ("gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding")
BUCKET_IAM = (
    "gcp:storage/bucketIAMMember:BucketIAMMember",
    "gcp:storage/bucketIAMBinding:BucketIAMBinding",
)
#: Bucket roles that can create, overwrite or delete objects.
BUCKET_WRITE_ROLES = {
    "roles/storage.objectCreator",
    "roles/storage.objectUser",
    "roles/storage.objectAdmin",
    "roles/storage.admin",
    "roles/storage.legacyBucketWriter",
    "roles/storage.legacyBucketOwner",
}
#: Services whose work is writing the bucket: MLflow's artifact proxy (never public).
BUCKET_WRITERS = {"housing-mlflow"}
_OBJECT_PREFIX = re.compile(
    r'^resource\.name\.startsWith\("projects/_/buckets/[^/"]+/objects/[^"]*[^/"]/"\)$'
)
_LIST_PREFIX = re.compile(
    r'^api\.getAttribute\("storage\.googleapis\.com/objectListPrefix", ""\)'
    r'\.startsWith\("[^"]*[^/"]/"\)$'
)
SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"
PUBLIC = {"allUsers", "allAuthenticatedUsers"}
#: Services that must never be public, whatever config says.
PRIVATE_SERVICES = {"housing-mlflow"}
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY|CREDENTIALS?)$")
#: An image pinned to its content; a tag can be re-pushed under the same template.
BY_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
ENVIRONMENTS = ("prod", "dev")


class Unknown:
    """A value the engine can't know yet (preview); ``sentinel`` is how the engine spelled it."""

    def __init__(self, sentinel: str = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"):
        self.sentinel = sentinel

    def __repr__(self) -> str:
        return "<unknown until up>"


UNKNOWN = Unknown()


class UnknownValueError(Exception):
    """A rule needs a value that is unknown until ``up``; ``path`` says which."""

    def __init__(self, value: Unknown, path: Sequence[str | int]):
        super().__init__(f"{'.'.join(map(str, path))} is unknown until up")
        self.value = value
        self.path = [str(p) for p in path]


Rule = Callable[[str, Mapping[str, Any]], list[str]]


def _at(value: Any, *path: str | int) -> Any:
    """The value at ``path`` (None when absent); raises UnknownValueError when it, or a step on
    the way to it, is unknown."""
    walked: list[str | int] = []
    for key in path:
        if isinstance(value, Unknown):
            raise UnknownValueError(value, walked)
        if isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(value, list) and isinstance(key, int) and key < len(value):
            value = value[key]
        else:
            return None
        walked.append(key)
    if isinstance(value, Unknown):
        raise UnknownValueError(value, walked)
    return value


def _peek(value: Any, *path: str | int) -> Any:
    """Like :func:`_at`, but an unknown value is returned (as is), not raised."""
    try:
        return _at(value, *path)
    except UnknownValueError as unknown:
        return unknown.value


def _each(value: Any, *path: str | int) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """(path, item) for each item of the list at ``path`` (none when absent); an unknown item
    raises UnknownValueError."""
    for index in range(len(_at(value, *path) or [])):
        item_path = (*path, index)
        yield item_path, _at(value, *item_path)


def _name(props: Mapping[str, Any]) -> Any:
    name = props.get("name")
    return "<unknown name>" if isinstance(name, Unknown) else name


def bucket_is_private(typ: str, props: Mapping[str, Any]) -> list[str]:
    if typ != BUCKET:
        return []
    found = []
    if _at(props, "publicAccessPrevention") != "enforced":
        found.append("bucket must set publicAccessPrevention to 'enforced'")
    if _at(props, "uniformBucketLevelAccess") is not True:
        found.append("bucket must enable uniformBucketLevelAccess (no per-object ACLs)")
    return found


def _members(props: Mapping[str, Any]) -> list[str]:
    """The grant's literal members. An unknown member is another resource's output (an account
    email), never the literal ``allUsers``; ``up`` checks again with it resolved."""
    members = props.get("members")
    listed = [] if isinstance(members, Unknown) else list(members or [])
    listed.append(props.get("member"))
    return [str(m) for m in listed if m and not isinstance(m, Unknown)]


def no_public_mlflow_or_jobs(typ: str, props: Mapping[str, Any]) -> list[str]:
    if typ not in JOB_IAM + SERVICE_IAM:
        return []
    public = PUBLIC.intersection(_members(props))
    if not public:
        return []
    if typ in JOB_IAM:
        return [f"Cloud Run job {_name(props)!r} grants {sorted(public)}: jobs are never public"]
    if _at(props, "name") in PRIVATE_SERVICES:
        return [f"{props.get('name')} grants {sorted(public)}: MLflow is never public"]
    return []


#: Predefined roles a grant on one Cloud Run job may carry: running it as it is. Starting it with
#: overrides takes a custom role of the project (``projects/<p>/roles/<id>``, whose name GCP
#: computes: unknown in a first preview); ``roles/run.developer`` and wider would also let the
#: member change the job's image, command or account, or delete it.
JOB_GRANT_ROLES = {"roles/run.invoker"}
_CUSTOM_ROLE = re.compile(r"^projects/[^/]+/roles/[A-Za-z0-9_.]+$")


def job_grants_are_narrow(typ: str, props: Mapping[str, Any]) -> list[str]:
    if typ not in JOB_IAM:
        return []
    role = _peek(props, "role")
    if isinstance(role, Unknown) or role in JOB_GRANT_ROLES or _CUSTOM_ROLE.match(str(role)):
        return []
    return [
        f"Cloud Run job {_name(props)!r} grants {role!r}: a job grant runs it "
        "(roles/run.invoker) or runs it with overrides (a custom role holding "
        "run.jobs.run and run.jobs.runWithOverrides); wider roles can change or delete the job"
    ]


def cloud_sql_is_closed(typ: str, props: Mapping[str, Any]) -> list[str]:
    if typ != SQL_INSTANCE:
        return []
    found = []
    for path, _ in _each(props, "settings", "ipConfiguration", "authorizedNetworks"):
        value = str(_at(props, *path, "value") or "")
        try:
            private = ipaddress.ip_network(value, strict=False).is_private
        except ValueError:
            private = False
        if not private:
            found.append(f"Cloud SQL authorizes public network {value!r}: use the connector")
    if _at(props, "settings", "userLabels", "environment") == "prod":
        backups = ("settings", "backupConfiguration")
        if not _at(props, *backups, "enabled") or not _at(
            props, *backups, "pointInTimeRecoveryEnabled"
        ):
            found.append("production Cloud SQL must enable backups with point-in-time recovery")
        if _at(props, "deletionProtection") is not True:
            found.append("production Cloud SQL must set deletionProtection")
    return found


def cloud_sql_edition_fits_tier(typ: str, props: Mapping[str, Any]) -> list[str]:
    """The instance names its edition, and the tier is one that edition accepts: PostgreSQL 16+
    defaults to ENTERPRISE_PLUS, which refuses shared-core and custom tiers at create time."""
    if typ != SQL_INSTANCE:
        return []
    tier = _at(props, "settings", "tier")
    problem = tier_problem(str(tier or ""), _at(props, "settings", "edition"))
    return [f"Cloud SQL settings: {problem}"] if problem else []


def services_have_max_instances(typ: str, props: Mapping[str, Any]) -> list[str]:
    if typ != RUN_SERVICE:
        return []
    if not _at(props, "template", "scaling", "maxInstanceCount"):
        return [f"Cloud Run service {_name(props)!r} must set template.scaling.maxInstanceCount"]
    return []


def _task_template(typ: str) -> tuple[str, ...]:
    """Where a workload's revision (service) or task (job) template sits."""
    return ("template",) if typ == RUN_SERVICE else ("template", "template")


def _containers(typ: str, props: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], Any]]:
    return list(_each(props, *_task_template(typ), "containers"))


def no_plaintext_secrets(typ: str, props: Mapping[str, Any]) -> list[str]:
    if typ not in (RUN_SERVICE, RUN_JOB):
        return []
    return [
        f"env var {name} looks like a secret but is plain text: use a Secret Manager "
        "reference (valueSource.secretKeyRef)"
        for container, _ in _containers(typ, props)
        for env_path, env in _each(props, *container, "envs")
        if SECRET_NAME.search(str(name := _at(props, *env_path, "name") or "").upper())
        and "value" in env
    ]


def prod_images_by_digest(typ: str, props: Mapping[str, Any]) -> list[str]:
    """On prod (``labels.environment``), every container image is pinned by digest: a re-pushed
    tag deploys nothing (the template doesn't change) and can't be rolled back to. A Cloud Run
    workload without the label is refused, or omitting it would bypass the rule."""
    if typ not in (RUN_SERVICE, RUN_JOB):
        return []
    kind = "service" if typ == RUN_SERVICE else "job"
    environment = _at(props, "labels", "environment")
    if environment not in ENVIRONMENTS:
        return [
            f"Cloud Run {kind} {_name(props)!r} must carry labels.environment 'prod' or 'dev' "
            f"(got {environment!r}): prod images must be pinned by digest"
        ]
    if environment != "prod":
        return []
    return [
        f"Cloud Run {kind} {_name(props)!r} on prod uses image {image!r}: pin it by digest "
        "(<image>@sha256:<64 hex>), the one that passed dev"
        for container, _ in _containers(typ, props)
        if not BY_DIGEST.search(image := str(_at(props, *container, "image") or ""))
    ]


RULES: dict[str, tuple[str, Rule]] = {
    "bucket-private": (
        "Buckets enforce public access prevention and uniform bucket-level access.",
        bucket_is_private,
    ),
    "no-public-mlflow-or-jobs": (
        "No allUsers/allAuthenticatedUsers invoker on MLflow or on Cloud Run jobs.",
        no_public_mlflow_or_jobs,
    ),
    "job-grants-are-narrow": (
        "A grant on a Cloud Run job runs it (roles/run.invoker) or runs it with overrides (a "
        "custom role), never a role that can change or delete it.",
        job_grants_are_narrow,
    ),
    "cloud-sql-closed": (
        "Cloud SQL has no public authorized networks; in production, backups with PITR and "
        "deletion protection.",
        cloud_sql_is_closed,
    ),
    "cloud-sql-edition-fits-tier": (
        "Cloud SQL sets its edition explicitly, and the tier is one that edition accepts.",
        cloud_sql_edition_fits_tier,
    ),
    "cloud-run-max-instances": (
        "Every Cloud Run service caps its instance count.",
        services_have_max_instances,
    ),
    "no-plaintext-secrets": (
        "No plain-text env var whose name looks like a secret.",
        no_plaintext_secrets,
    ),
    "prod-images-by-digest": (
        "Cloud Run services and jobs labelled environment=prod run images pinned by digest.",
        prod_images_by_digest,
    ),
}


def violations(typ: str, props: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every rule's findings for one resource (rules with none are left out)."""
    found = {name: rule(typ, props) for name, (_, rule) in RULES.items()}
    return {name: messages for name, messages in found.items() if messages}


# --- Across resources -------------------------------------------------------------------------


@dataclass(frozen=True)
class StackResource:
    """One resource of the stack, as a stack validation sees it."""

    type: str
    urn: str
    name: str
    props: Mapping[str, Any]
    property_dependencies: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """For each input, the URNs of the resources its value came from."""


StackRule = Callable[[Sequence[StackResource]], list[tuple[str, str]]]


def _secret_id(reference: str) -> str:
    """``projects/p/secrets/s[/versions/v]`` or ``s`` → ``s``."""
    parts = reference.split("/")
    return parts[parts.index("secrets") + 1] if "secrets" in parts[:-1] else reference


class _Stack:
    """Identities across resources: an account or secret is named by its value when known, and
    otherwise by the URN of the one resource that value comes from."""

    def __init__(self, resources: Sequence[StackResource]):
        self.by_urn = {r.urn: r for r in resources}

    def _source(self, resource: StackResource, prop: str, typ: str) -> StackResource | None:
        """The one resource of type ``typ`` that ``resource``'s input ``prop`` came from."""
        found = {
            urn
            for urn in resource.property_dependencies.get(prop, ())
            if urn in self.by_urn and self.by_urn[urn].type == typ
        }
        return self.by_urn[found.pop()] if len(found) == 1 else None

    def account(self, resource: StackResource, value: Any, prop: str) -> str | None:
        """``serviceAccount:<email>``; while the email is unknown, the one it will be (GCP names
        an account ``<accountId>@<project>.iam.gserviceaccount.com``) or ``account:<urn>``.
        None when it can't be told (several accounts feed the input)."""
        if isinstance(value, str):
            return value if ":" in value else f"serviceAccount:{value}"
        source = self._source(resource, prop, ACCOUNT)
        if source is None:
            return None
        email, account_id, project = (
            source.props.get(k) for k in ("email", "accountId", "project")
        )
        if isinstance(email, str):
            return f"serviceAccount:{email}"
        if isinstance(account_id, str) and isinstance(project, str):
            return f"serviceAccount:{account_id}@{project}.iam.gserviceaccount.com"
        return f"account:{source.urn}"

    def account_label(self, principal: str) -> str:
        if principal.startswith("account:"):
            return f"the account {self.by_urn[principal.removeprefix('account:')].name}"
        return principal.removeprefix("serviceAccount:")

    def secret(self, resource: StackResource, value: Any, prop: str) -> str | None:
        """``secret:<id>``, or ``secret-urn:<urn>`` while the id is unknown; None when it can't
        be told."""
        if isinstance(value, str):
            return f"secret:{_secret_id(value)}"
        source = self._source(resource, prop, SECRET)
        if source is None:
            return None
        secret_id = source.props.get("secretId")
        return f"secret:{secret_id}" if isinstance(secret_id, str) else f"secret-urn:{source.urn}"


def secrets_are_granted(resources: Sequence[StackResource]) -> list[tuple[str, str]]:
    """Every secret a Cloud Run service or job reads (``valueSource.secretKeyRef``, secret
    volumes) has ``roles/secretmanager.secretAccessor`` for the workload's own account: on that
    secret, or project-wide. Cloud Run refuses to start a revision or task whose account can't
    read a secret it mounts. Conditional grants don't count (their condition can't be read
    here). Returns (workload URN, message) pairs."""
    stack = _Stack(resources)
    grants: list[tuple[str | None, str | None]] = []  # (secret or None = project-wide, principal)
    for r in resources:
        if r.type not in SECRET_IAM + PROJECT_IAM or r.props.get("condition"):
            continue
        if _at(r.props, "role") != SECRET_ACCESSOR:
            continue
        secret = None
        if r.type in SECRET_IAM:
            secret = stack.secret(r, r.props.get("secretId"), "secretId")
            if secret is None:
                raise UnknownValueError(UNKNOWN, [r.name, "secretId"])
        if r.props.get("member") is not None:
            grants.append((secret, stack.account(r, r.props["member"], "member")))
        for _, member in _each(r.props, "members"):
            grants.append((secret, stack.account(r, member, "members")))

    found = []
    for r in resources:
        if r.type not in (RUN_SERVICE, RUN_JOB):
            continue
        template = _task_template(r.type)
        used: dict[str, str] = {}  # secret → how the workload reads it
        for container, _ in _containers(r.type, r.props):
            for env_path, env in _each(r.props, *container, "envs"):
                ref = _at(env, "valueSource", "secretKeyRef")
                if ref is not None:
                    secret = stack.secret(r, _peek(ref, "secret"), "template")
                    if secret is None:
                        raise UnknownValueError(UNKNOWN, [*env_path, "valueSource"])
                    used.setdefault(secret, f"env {_at(env, 'name')}")
        for volume_path, volume in _each(r.props, *template, "volumes"):
            ref = _at(volume, "secret")
            if ref is not None:
                secret = stack.secret(r, _peek(ref, "secret"), "template")
                if secret is None:
                    raise UnknownValueError(UNKNOWN, [*volume_path, "secret"])
                used.setdefault(secret, f"volume {_at(volume, 'name')}")
        if not used:
            continue
        account_value = _peek(r.props, *template, "serviceAccount")
        if account_value is None:
            principal: str | None = "the Compute Engine default service account"
        else:
            principal = stack.account(r, account_value, "template")
        if principal is None:
            raise UnknownValueError(UNKNOWN, [*template, "serviceAccount"])
        kind = "service" if r.type == RUN_SERVICE else "job"
        for secret, how in used.items():
            granted = [(s, p) for s, p in grants if s in (secret, None)]
            if any(p == principal for _, p in granted):
                continue
            if any(p is None for _, p in granted):
                # A grant whose member can't be told yet might be the one: decide in `up`.
                raise UnknownValueError(UNKNOWN, [r.name, "grants"])
            shown = secret.split(":", 1)[1]
            if secret.startswith("secret-urn:"):
                shown = stack.by_urn[shown].name
            found.append(
                (
                    r.urn,
                    f"Cloud Run {kind} {_name(r.props)!r} reads secret {shown!r} ({how}) as "
                    f"{stack.account_label(principal)}, which has no {SECRET_ACCESSOR} on it: "
                    "add a SecretIamMember on that secret for the account (Cloud Run refuses "
                    "to start without it)",
                )
            )
    return found


def prefix_only(expression: str) -> bool:
    """Whether an IAM condition admits only objects (and listings) under named prefixes: each
    ``||`` clause is one prefix test, and no prefix is empty (the whole bucket)."""
    clauses = expression.split(" || ")
    return all(_OBJECT_PREFIX.match(c) or _LIST_PREFIX.match(c) for c in clauses)


def service_writes_are_scoped(resources: Sequence[StackResource]) -> list[tuple[str, str]]:
    """A Cloud Run service's account may write to a bucket only under a prefix (an IAM
    condition): a service answers requests, and one that is compromised must not overwrite the
    models or the data it serves. MLflow, whose work is writing artifacts, is exempt. The
    condition must be there in a first preview; its expression names the bucket, unknown until
    ``up``, which checks it then."""
    stack = _Stack(resources)
    services: dict[str, Any] = {}  # principal → service name
    for r in resources:
        if r.type != RUN_SERVICE or _peek(r.props, "name") in BUCKET_WRITERS:
            continue
        value = _peek(r.props, "template", "serviceAccount")
        if value is None:
            continue  # the default compute account: no grant of this stack names it
        principal = stack.account(r, value, "template")
        if principal is None:
            raise UnknownValueError(UNKNOWN, ["template", "serviceAccount"])
        services[principal] = _name(r.props)
    found = []
    for g in resources:
        if g.type not in BUCKET_IAM or _at(g.props, "role") not in BUCKET_WRITE_ROLES:
            continue
        values = [(g.props.get("member"), "member")]
        values += [(m, "members") for _, m in _each(g.props, "members")]
        for value, prop in values:
            if value is None:
                continue
            principal = stack.account(g, value, prop)
            if principal is None:
                raise UnknownValueError(UNKNOWN, [g.name, prop])
            if principal not in services:
                continue
            condition = _at(g.props, "condition")
            expression = _peek(g.props, "condition", "expression")
            if condition and (isinstance(expression, Unknown) or prefix_only(str(expression))):
                continue
            found.append(
                (
                    g.urn,
                    f"{_at(g.props, 'role')} on the bucket for "
                    f"{stack.account_label(principal)}, the account of Cloud Run service "
                    f"{services[principal]!r}, must carry an IAM condition limiting it to "
                    'prefixes (resource.name.startsWith("projects/_/buckets/<bucket>/objects/'
                    '<prefix>/")): a service must not be able to overwrite models or data',
                )
            )
    return found


STACK_RULES: dict[str, tuple[str, StackRule]] = {
    "secrets-are-granted": (
        "Every secret a Cloud Run service or job reads is granted (secretAccessor) to the "
        "workload's own service account.",
        secrets_are_granted,
    ),
    "service-writes-by-prefix": (
        "A Cloud Run service's account (MLflow's aside) writes to a bucket only under a prefix "
        "(an IAM condition on the grant).",
        service_writes_are_scoped,
    ),
}
