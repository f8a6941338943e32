"""Usage and unit prices in, line items out: one pure function per billed product.

A month is 730 hours, as on Google's pricing pages. No free tier is taken off here (free tiers
are per billing account: ``free_tier`` applies them once across stacks).
"""

from __future__ import annotations

import math
import re

from infra.cost.line_items import Charge, LineItem
from infra.cost.prices import PriceSnapshot

HOURS_PER_MONTH = 730
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
#: Cloud Run rounds an instance's billed time up to the next 100 ms: a lone short request is
#: billed as 100 ms.
MIN_BILLED_SECONDS = 0.1
#: Under instance-based billing an idle instance may be kept (and billed) up to 15 minutes.
KEEP_WARM_SECONDS = 900
GIB = 2**30


def charge(prices: PriceSnapshot, key: str, quantity: float) -> Charge:
    entry = prices.entry(key)
    return Charge(key=key, quantity=quantity, unit=entry.unit, unit_price=entry.price)


def count(x: float) -> str:
    """1234567 → ``1.23M``; 45000 → ``45k``; 12.5 → ``12.5``."""
    if x >= 1e6:
        return f"{x / 1e6:.3g}M"
    if x >= 1e4:
        return f"{x / 1e3:.3g}k"
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:.3g}"


def duration(seconds: float) -> str:
    """0.025 → ``25 ms``; 600 → ``10 min``."""
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    return f"{seconds * 1000:.3g} ms"


def expected_instances(in_flight: float, concurrency: int) -> float:
    """E[⌈N/c⌉] for N ~ Poisson(``in_flight``): the mean number of instances busy when requests
    arrive at random and each instance takes ``concurrency`` of them at once."""
    if in_flight <= 0:
        return 0.0
    spread = 12 * math.sqrt(in_flight) + 12
    low, high = max(0, math.floor(in_flight - spread)), math.ceil(in_flight + spread)
    log_mean = math.log(in_flight)
    return sum(
        math.exp(n * log_mean - in_flight - math.lgamma(n + 1)) * math.ceil(n / concurrency)
        for n in range(low, high + 1)
    )


def busy_instance_seconds(
    requests: float, latency_s: float, concurrency: int, seconds: float = SECONDS_PER_MONTH
) -> float:
    """Instance-seconds a month with at least one request in flight, requests arriving at random
    at an even rate: ``requests x latency`` while they rarely overlap, tending to ``requests x
    latency / concurrency`` when many do. Each request counts at least MIN_BILLED_SECONDS."""
    if requests <= 0:
        return 0.0
    in_flight = requests * max(latency_s, MIN_BILLED_SECONDS) / seconds
    return seconds * expected_instances(in_flight, max(concurrency, 1))


def cloud_run_service(
    name: str,
    *,
    cpu: float,
    memory_gib: float,
    concurrency: int,
    min_instances: int,
    request_based: bool,
    requests: float,
    latency_s: float,
    prices: PriceSnapshot,
) -> LineItem:
    """Request-based billing (``cpuIdle: true``): CPU and memory while a request is in flight,
    a fee per request, and idle minimum instances at the idle rate. Instance-based: CPU and memory
    for as long as an instance lives (the minimum instances, and one kept warm while requests
    keep coming), no request fee."""
    busy = busy_instance_seconds(requests, latency_s, concurrency)
    if request_based:
        idle = max(0.0, min_instances * SECONDS_PER_MONTH - busy)
        charges = [
            charge(prices, "run.request.cpu", busy * cpu),
            charge(prices, "run.request.memory", busy * memory_gib),
            charge(prices, "run.request.requests", requests),
        ]
        if idle:
            charges += [
                charge(prices, "run.request.idle_cpu", idle * cpu),
                charge(prices, "run.request.idle_memory", idle * memory_gib),
            ]
        mode = "request-based"
    else:
        rate = requests / SECONDS_PER_MONTH
        warm = SECONDS_PER_MONTH * -math.expm1(-rate * KEEP_WARM_SECONDS)
        alive = max(min_instances * SECONDS_PER_MONTH, busy, warm)
        charges = [
            charge(prices, "run.instance.cpu", alive * cpu),
            charge(prices, "run.instance.memory", alive * memory_gib),
        ]
        mode = "instance-based"
    usage = (
        f"{count(requests)} req x {duration(latency_s)}, {cpu:g} vCPU/{memory_gib:g} GiB, "
        f"concurrency {concurrency}, min {min_instances}, {mode}"
    )
    return LineItem(resource=f"Cloud Run service {name}", usage=usage, charges=tuple(charges))


def cloud_run_job(
    name: str,
    *,
    cpu: float,
    memory_gib: float,
    task_seconds: float,
    usage: str,
    prices: PriceSnapshot,
) -> LineItem:
    """Tasks are billed like instance-based services: CPU and memory while a task runs."""
    return LineItem(
        resource=f"Cloud Run job {name}",
        usage=f"{usage}, {cpu:g} vCPU/{memory_gib:g} GiB",
        charges=(
            charge(prices, "run.instance.cpu", task_seconds * cpu),
            charge(prices, "run.instance.memory", task_seconds * memory_gib),
        ),
    )


_SHARED = {"db-f1-micro": "micro", "db-g1-small": "small"}
_CUSTOM = re.compile(r"^db-custom-(\d+)-(\d+)$")
_N1 = re.compile(r"^db-n1-(standard|highmem)-(\d+)$")
_PERF = re.compile(r"^db-perf-optimized-n-(\d+)$", re.IGNORECASE)


def tier_shape(tier: str) -> tuple[float, float]:
    """A dedicated-core tier's (vCPUs, memory GB)."""
    if match := _CUSTOM.match(tier):
        return float(match.group(1)), int(match.group(2)) / 1024
    if match := _N1.match(tier):
        cpus = int(match.group(2))
        return float(cpus), cpus * (3.75 if match.group(1) == "standard" else 6.5)
    if match := _PERF.match(tier):
        cpus = int(match.group(1))
        return float(cpus), cpus * 8.0
    raise ValueError(f"Cloud SQL tier {tier!r} has no known shape to price")


def cloud_sql(
    name: str,
    *,
    tier: str,
    edition: str,
    regional: bool,
    disk_gb: float,
    backups: bool,
    backup_gb: float,
    prices: PriceSnapshot,
) -> LineItem:
    """The instance for 730 hours (shared-core tiers by the instance, others by vCPU and
    memory; Enterprise Plus has its own rates), provisioned SSD, backups when on. High
    availability bills the standby too: the regional rates."""
    where = "regional" if regional else "zonal"
    plus = "plus." if edition == "ENTERPRISE_PLUS" else ""
    if tier in _SHARED:
        charges = [charge(prices, f"sql.{_SHARED[tier]}.{where}", HOURS_PER_MONTH)]
    else:
        cpus, memory = tier_shape(tier)
        charges = [
            charge(prices, f"sql.{plus}vcpu.{where}", cpus * HOURS_PER_MONTH),
            charge(prices, f"sql.{plus}memory.{where}", memory * HOURS_PER_MONTH),
        ]
    charges.append(charge(prices, f"sql.ssd.{where}", disk_gb))
    if backups:
        charges.append(charge(prices, "sql.backup", backup_gb))
    usage = (
        f"{tier} {edition.lower().replace('_', ' ')}, {'HA' if regional else 'one zone'}, "
        f"730 h, {disk_gb:g} GB SSD, " + (f"backups {backup_gb:g} GB" if backups else "no backups")
    )
    return LineItem(resource=f"Cloud SQL {name}", usage=usage, charges=tuple(charges))


def bucket(
    name: str, *, stored_gb: float, class_a: float, class_b: float, prices: PriceSnapshot
) -> LineItem:
    return LineItem(
        resource=f"Cloud Storage bucket {name}",
        usage=f"{stored_gb:g} GB standard, {count(class_a)} class A + {count(class_b)} class B ops",
        charges=(
            charge(prices, "gcs.standard", stored_gb),
            charge(prices, "gcs.class_a", class_a),
            charge(prices, "gcs.class_b", class_b),
        ),
    )


def registry(name: str, *, stored_gb: float, prices: PriceSnapshot) -> LineItem:
    return LineItem(
        resource=f"Artifact Registry {name}",
        usage=f"{stored_gb:g} GB of images",
        charges=(charge(prices, "ar.storage", stored_gb),),
    )


def secrets(*, versions: int, accesses: float, prices: PriceSnapshot) -> LineItem:
    return LineItem(
        resource="Secret Manager",
        usage=f"{versions} active version(s), {count(accesses)} accesses",
        charges=(
            charge(prices, "sm.versions", versions),
            charge(prices, "sm.accesses", accesses),
        ),
    )


def scheduler(*, jobs: int, prices: PriceSnapshot) -> LineItem:
    return LineItem(
        resource="Cloud Scheduler",
        usage=f"{jobs} job(s)",
        charges=(charge(prices, "scheduler.jobs", jobs),),
    )


def logging(*, gib: float, usage: str, prices: PriceSnapshot) -> LineItem:
    return LineItem(
        resource="Cloud Logging",
        usage=usage,
        charges=(charge(prices, "logging.storage", gib),),
    )
