"""From the offline plan to line items: read what each billed resource declares (CPU, memory,
scaling, concurrency, billing mode, tier, disk, …), take the usage the stack's ``cost`` section
assumes, and price it. Pure: resources are the plan's ``{"type", "name", "inputs"}`` records
(``infra.plan.resources``), so a plan made at another git ref is priced the same way."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from infra.config import NAMESPACE, ConfigError, CostConfig, JobUsage, ServiceUsage
from infra.cost import pricing
from infra.cost.line_items import LineItem
from infra.cost.prices import PriceSnapshot

SERVICE = "gcp:cloudrunv2/service:Service"
JOB = "gcp:cloudrunv2/job:Job"
SQL = "gcp:sql/databaseInstance:DatabaseInstance"
BUCKET = "gcp:storage/bucket:Bucket"
REGISTRY = "gcp:artifactregistry/repository:Repository"
SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
SCHEDULER_JOB = "gcp:cloudscheduler/job:Job"
PRICED = frozenset({SERVICE, JOB, SQL, BUCKET, REGISTRY, SECRET_VERSION, SCHEDULER_JOB})
#: Declared, never billed: grants, accounts, API enablement, identity pools, what lives inside
#: a billed instance, the program's own components, generated values.
FREE = frozenset(
    {
        "gcp:projects/service:Service",
        "gcp:serviceaccount/account:Account",
        "gcp:secretmanager/secret:Secret",
        "gcp:sql/database:Database",
        "gcp:sql/user:User",
        "gcp:iam/workloadIdentityPool:WorkloadIdentityPool",
        "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider",
    }
)
WEEKS_PER_MONTH = 52 / 12
#: Cloud Run's defaults for what a template leaves out.
DEFAULT_CPU, DEFAULT_MEMORY, DEFAULT_CONCURRENCY, DEFAULT_MAX_INSTANCES = "1", "512Mi", 80, 100


class Estimate(msgspec.Struct, frozen=True, kw_only=True):
    stack: str
    region: str
    items: tuple[LineItem, ...]
    free_resources: int
    """Resources declared that cost nothing (grants, accounts, APIs, …)."""
    unpriced: tuple[str, ...] = ()
    """``type name`` of resources this estimate doesn't know how to price."""
    budget: float = 0.0

    @property
    def total(self) -> float:
        return sum(item.monthly for item in self.items)


def is_free(typ: str) -> bool:
    return (
        typ in FREE
        or "iam" in typ.lower()
        or typ.startswith(("random:", "pulumi:", f"{NAMESPACE}:"))
    )


_QUANTITY = re.compile(r"^([0-9.]+)\s*(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_FACTORS = {
    None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def quantity(value: str | float) -> float:
    """A Kubernetes-style quantity as Cloud Run takes it: ``"1"``, ``"500m"``, ``"512Mi"``."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"cannot read the quantity {value!r}")
    return float(match.group(1)) * _FACTORS[match.group(2)]


def _limits(container: Mapping[str, Any]) -> tuple[float, float]:
    limits = (container.get("resources") or {}).get("limits") or {}
    cpu = quantity(limits.get("cpu", DEFAULT_CPU))
    return cpu, quantity(limits.get("memory", DEFAULT_MEMORY)) / pricing.GIB


def _first_container(template: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = template.get("containers") or [{}]
    return dict(containers[0])


def job_runs(usage: JobUsage) -> float:
    if usage.runs_per_month is not None:
        return usage.runs_per_month
    return (usage.runs_per_week or 0.0) * WEEKS_PER_MONTH


def job_task_seconds(usage: JobUsage, tasks: int) -> tuple[float, str]:
    """Task-seconds a month, and the usage in words."""
    runs = job_runs(usage)
    per = (
        f"{usage.runs_per_week:g} run(s)/week"
        if usage.runs_per_week is not None
        else f"{runs:g} run(s)/month"
    )
    if usage.rows_per_month is not None and usage.rows_per_second:
        seconds = usage.rows_per_month / usage.rows_per_second
        return seconds, (
            f"{pricing.count(usage.rows_per_month)} rows at {usage.rows_per_second:g}/s per task"
        )
    if usage.trials_per_run is not None and usage.trial_minutes is not None:
        seconds = runs * usage.trials_per_run * usage.trial_minutes * 60
        return seconds, (
            f"{per} x {usage.trials_per_run:g} trials x {usage.trial_minutes:g} min "
            f"over {tasks} task(s)"
        )
    minutes = usage.task_minutes or 0.0
    return runs * tasks * minutes * 60, f"{per} x {tasks} task(s) x {minutes:g} min"


class ServiceShape(msgspec.Struct, frozen=True, kw_only=True):
    """What a Cloud Run service's declaration fixes about its bill and its capacity."""

    name: str
    cpu: float
    memory_gib: float
    concurrency: int
    min_instances: int
    max_instances: int
    request_based: bool
    """``cpuIdle`` true (Cloud Run's default): CPU only during requests, request-based billing;
    false: CPU always allocated, instance-based billing."""


def service_shape(resource: Mapping[str, Any]) -> ServiceShape:
    inputs = resource["inputs"]
    template = inputs.get("template") or {}
    container = _first_container(template)
    cpu, memory = _limits(container)
    scaling = template.get("scaling") or {}
    return ServiceShape(
        name=str(inputs.get("name") or resource["name"]),
        cpu=cpu,
        memory_gib=memory,
        concurrency=int(template.get("maxInstanceRequestConcurrency") or DEFAULT_CONCURRENCY),
        min_instances=max(
            int(scaling.get("minInstanceCount") or 0),
            int((inputs.get("scaling") or {}).get("minInstanceCount") or 0),
        ),
        max_instances=int(scaling.get("maxInstanceCount") or DEFAULT_MAX_INSTANCES),
        request_based=bool((container.get("resources") or {}).get("cpuIdle", True)),
    )


def _service(resource: Mapping[str, Any], cost: CostConfig, prices: PriceSnapshot) -> LineItem:
    shape = service_shape(resource)
    usage = cost.services.get(shape.name)
    item = pricing.cloud_run_service(
        shape.name,
        cpu=shape.cpu,
        memory_gib=shape.memory_gib,
        concurrency=shape.concurrency,
        min_instances=shape.min_instances,
        request_based=shape.request_based,
        requests=(usage or ServiceUsage()).requests_per_month,
        latency_s=(usage or ServiceUsage()).mean_latency_ms / 1000,
        prices=prices,
    )
    if usage is None:
        note = f"(no traffic: cost.services.{shape.name} unset)"
        item = msgspec.structs.replace(item, usage=f"{item.usage} {note}")
    return item


def _job(resource: Mapping[str, Any], cost: CostConfig, prices: PriceSnapshot) -> LineItem:
    inputs = resource["inputs"]
    name = str(inputs.get("name") or resource["name"])
    outer = inputs.get("template") or {}
    tasks = int(outer.get("taskCount") or 1)
    cpu, memory = _limits(_first_container(outer.get("template") or {}))
    usage = cost.jobs.get(name)
    seconds, words = job_task_seconds(usage or cost.job_defaults, tasks)
    if usage is None:
        words += " (cost.jobDefaults)"
    return pricing.cloud_run_job(
        name, cpu=cpu, memory_gib=memory, task_seconds=seconds, usage=words, prices=prices
    )


def _sql(resource: Mapping[str, Any], cost: CostConfig, prices: PriceSnapshot) -> LineItem:
    settings = resource["inputs"].get("settings") or {}
    return pricing.cloud_sql(
        resource["name"],
        tier=str(settings.get("tier")),
        edition=str(settings.get("edition") or "ENTERPRISE"),
        regional=settings.get("availabilityType") == "REGIONAL",
        disk_gb=float(settings.get("diskSize") or 10),
        backups=bool((settings.get("backupConfiguration") or {}).get("enabled")),
        backup_gb=cost.database.backup_gb,
        prices=prices,
    )


def check_usage_names(resources: Iterable[Mapping[str, Any]], cost: CostConfig) -> None:
    """Usage for a service or job the plan doesn't have is a typo or a leftover: name it."""
    for key, typ, named in (("services", SERVICE, cost.services), ("jobs", JOB, cost.jobs)):
        declared = sorted(
            str(r["inputs"].get("name") or r["name"]) for r in resources if r["type"] == typ
        )
        for name in sorted(set(named) - set(declared)):
            raise ConfigError(
                f"{NAMESPACE}:cost.{key}.{name} names no Cloud Run {key[:-1]} of the plan "
                f"({', '.join(declared) or 'none'}): rename or remove it"
            )


def estimate(
    resources: list[dict[str, Any]],
    cost: CostConfig,
    prices: PriceSnapshot,
    *,
    stack: str,
    region: str,
) -> Estimate:
    """Price every resource of a plan that costs money, plus the logs its services write."""
    check_usage_names(resources, cost)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        by_type.setdefault(resource["type"], []).append(resource)
    items = [_service(r, cost, prices) for r in by_type.get(SERVICE, [])]
    items += [_job(r, cost, prices) for r in by_type.get(JOB, [])]
    items += [_sql(r, cost, prices) for r in by_type.get(SQL, [])]
    buckets = by_type.get(BUCKET, [])
    for resource in buckets:  # the cost section's figures are the buckets' together
        items.append(
            pricing.bucket(
                str(resource["inputs"].get("name") or resource["name"]),
                stored_gb=cost.storage.stored_gb / len(buckets),
                class_a=cost.storage.class_a_ops_per_month / len(buckets),
                class_b=cost.storage.class_b_ops_per_month / len(buckets),
                prices=prices,
            )
        )
    registries = by_type.get(REGISTRY, [])
    for resource in registries:
        name = str(resource["inputs"].get("repositoryId") or resource["name"])
        stored = cost.registry.stored_gb / len(registries)
        items.append(pricing.registry(name, stored_gb=stored, prices=prices))
    if versions := len(by_type.get(SECRET_VERSION, [])):
        items.append(
            pricing.secrets(
                versions=versions, accesses=cost.secrets.accesses_per_month, prices=prices
            )
        )
    if jobs := len(by_type.get(SCHEDULER_JOB, [])):
        items.append(pricing.scheduler(jobs=jobs, prices=prices))
    requests = sum(u.requests_per_month for u in cost.services.values())
    request_gib = requests * cost.logging.bytes_per_request / pricing.GIB
    items.append(
        pricing.logging(
            gib=cost.logging.gib_per_month + request_gib,
            usage=(
                f"{cost.logging.gib_per_month:g} GiB + {pricing.count(requests)} request lines "
                f"x {cost.logging.bytes_per_request:g} B"
            ),
            prices=prices,
        )
    )
    unpriced = sorted(
        f"{r['type']} {r['name']}"
        for r in resources
        if r["type"] not in PRICED and not is_free(r["type"])
    )
    free = sum(1 for r in resources if r["type"] not in PRICED and is_free(r["type"]))
    return Estimate(
        stack=stack,
        region=region,
        items=tuple(items),
        free_resources=free,
        unpriced=tuple(unpriced),
        budget=cost.monthly_budget,
    )
