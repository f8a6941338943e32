"""What a service can carry: the instances a target load needs, from the throughput
``nox -s bench`` measured here (``tests/bench/service_bench.py`` writes it as JSON).

One bench core is one Linux CPU of the measuring machine (a hyperthread on most hosts), as a
Cloud Run vCPU is one hyperthread of Google's host; the service runs one uvicorn worker, so an
instance uses at most one vCPU for Python however many it is given.
"""

from __future__ import annotations

import math
from pathlib import Path

import msgspec

from infra.config import NAMESPACE, LoadTarget
from infra.cost import pricing
from infra.cost.estimate import ServiceShape
from infra.cost.prices import PriceSnapshot

#: The service's worker processes per instance (service/__main__.py: one uvicorn worker).
SERVICE_WORKERS = 1


class BenchRow(msgspec.Struct, frozen=True, kw_only=True):
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float


class BenchResult(msgspec.Struct, frozen=True, kw_only=True):
    """What the service benchmark stores: single-row predictions under wrk."""

    date: str
    cores: int
    """CPUs of the machine it ran on (os.cpu_count())."""
    cpu_model: str = ""
    workers: int = 1
    """Server processes it measured (one uvicorn worker: one core)."""
    single_row: tuple[BenchRow, ...]
    throughput_per_core_rps: float
    """The best single-row rate, per server process."""
    p99_ms: float
    """p99 latency at that rate."""


class Sizing(msgspec.Struct, frozen=True, kw_only=True):
    service: str
    peak_rps: float
    per_instance_rps: float
    instances: int
    max_instances: int
    monthly_if_held: float
    """Those instances, busy all month, at the service's billing rates."""
    measured: str
    """Which bench row it used, in words."""

    @property
    def fits(self) -> bool:
        return self.instances <= self.max_instances


def read_bench(path: Path) -> BenchResult | None:
    """The stored bench result, or None when the bench hasn't run here."""
    if not path.is_file():
        return None
    return msgspec.json.decode(path.read_bytes(), type=BenchResult)


def size(
    load: LoadTarget, bench: BenchResult, service: ServiceShape, prices: PriceSnapshot
) -> Sizing | str:
    """Instances for ``load.peak_rps``: the best measured single-row rate whose p99 fits the
    budget at a concurrency the service allows, per core, times the cores an instance's one
    worker can use, times the CPU share Cloud Run scales out at. A string says why not."""
    rows = [
        r
        for r in bench.single_row
        if r.concurrency <= service.concurrency
        and (not load.p99_budget_ms or r.p99_ms <= load.p99_budget_ms)
    ]
    if not rows:
        return (
            f"no bench row has p99 within {NAMESPACE}:cost.load.p99BudgetMs "
            f"({load.p99_budget_ms:g} ms) at concurrency ≤ {service.concurrency}: sizing skipped"
        )
    best = max(rows, key=lambda r: r.rps)
    per_core = best.rps / max(bench.workers, 1)
    per_instance = per_core * min(service.cpu, SERVICE_WORKERS) * load.target_cpu_utilization
    instances = max(1, math.ceil(load.peak_rps / per_instance))
    prefix = "run.request" if service.request_based else "run.instance"
    per_second = (
        service.cpu * prices[f"{prefix}.cpu"] + service.memory_gib * prices[f"{prefix}.memory"]
    )
    return Sizing(
        service=service.name,
        peak_rps=load.peak_rps,
        per_instance_rps=per_instance,
        instances=instances,
        max_instances=service.max_instances,
        monthly_if_held=instances * pricing.SECONDS_PER_MONTH * per_second,
        measured=(
            f"{best.rps:.0f} req/s per core at concurrency {best.concurrency}, p99 "
            f"{best.p99_ms:.1f} ms ({bench.date}, {bench.cores}-CPU {bench.cpu_model or 'machine'})"
        ),
    )
