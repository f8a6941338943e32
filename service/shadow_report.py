"""The shadow report: how the shadow's prices and speed compared with the stable revision's over
one window of mirrored requests.

Pure code builds it (``build``: the replay's agreement function, ``model_runtime.agreement``,
with the stable revision's prices as the reference, and each side's p50/p99); thin adapters
write it to the artifact store at ``shadow/<shadow version>/<window>.json`` and log it to MLflow
against the shadow version's run. The mirror calls them from a worker thread, never on a
request's path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import numpy as np

from housing_platform.artifact_store import ArtifactStore
from model_runtime.agreement import Agreement, agreement

log = logging.getLogger("service.shadow")

#: Reports live under this prefix of the artifact store.
PREFIX = "shadow"


class Latency(msgspec.Struct, frozen=True, kw_only=True):
    """Percentiles of one side's latency in milliseconds; None when nothing was measured."""

    n: int
    p50_ms: float | None
    p99_ms: float | None


class Outcomes(msgspec.Struct, frozen=True, kw_only=True):
    """What became of the houses mirrored in the window: ``mirrored`` is always the sum of the
    other four."""

    mirrored: int
    answered: int
    timed_out: int
    dropped: int
    failed: int


class ShadowReport(msgspec.Struct, frozen=True, kw_only=True):
    window: str
    """The window's start, ``20261130T180500Z`` (UTC): the report's name."""
    since: str
    until: str
    stable_revision: str
    stable_model_version: str
    shadow_revision: str
    shadow_model_version: int
    outcomes: Outcomes
    agreement: Agreement
    """The shadow's prices against the stable revision's, on the houses both priced."""
    stable_latency: Latency
    """The stable revision's own latency for the requests it mirrored (server side)."""
    shadow_latency: Latency
    """The round trip of each mirrored request (a batch of ``mean_batch_houses`` houses),
    seen from the stable revision."""
    mean_batch_houses: float | None


def window_name(start: float) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%Y%m%dT%H%M%SZ")


def latency(values_ms: Sequence[float]) -> Latency:
    if not values_ms:
        return Latency(n=0, p50_ms=None, p99_ms=None)
    p50, p99 = np.percentile(np.asarray(values_ms, dtype=np.float64), [50, 99])
    return Latency(n=len(values_ms), p50_ms=round(float(p50), 3), p99_ms=round(float(p99), 3))


def build(
    *,
    start: float,
    end: float,
    stable_revision: str,
    stable_model_version: str,
    shadow_revision: str,
    shadow_model_version: int,
    outcomes: Outcomes,
    stable_prices: Sequence[float],
    shadow_prices: Sequence[float],
    stable_latency_ms: Sequence[float],
    shadow_latency_ms: Sequence[float],
) -> ShadowReport:
    """One window's report; ``stable_prices`` and ``shadow_prices`` are the same houses, row for
    row."""
    batches = len(shadow_latency_ms)
    return ShadowReport(
        window=window_name(start),
        since=datetime.fromtimestamp(start, UTC).isoformat(),
        until=datetime.fromtimestamp(end, UTC).isoformat(),
        stable_revision=stable_revision,
        stable_model_version=stable_model_version,
        shadow_revision=shadow_revision,
        shadow_model_version=shadow_model_version,
        outcomes=outcomes,
        agreement=agreement(stable_prices, shadow_prices),
        stable_latency=latency(stable_latency_ms),
        shadow_latency=latency(shadow_latency_ms),
        mean_batch_houses=round(outcomes.answered / batches, 2) if batches else None,
    )


def key(report: ShadowReport) -> str:
    version = report.shadow_model_version or report.shadow_revision or "unknown"
    return f"{PREFIX}/{version}/{report.window}.json"


def write(store: ArtifactStore, report: ShadowReport) -> str:
    """Writes the report atomically; returns its key."""
    where = key(report)
    store.write_bytes(where, msgspec.json.format(msgspec.json.encode(report), indent=2))
    return where


def read(store: ArtifactStore, where: str) -> ShadowReport:
    return msgspec.json.decode(store.read_bytes(where), type=ShadowReport)


def metrics(report: ShadowReport) -> dict[str, float]:
    """The report's figures as MLflow metrics (``shadow_…``), those that exist."""
    a, o = report.agreement, report.outcomes
    figures: dict[str, float | None] = {
        "shadow_mape": a.mape,
        "shadow_within_5pct": a.within_5pct,
        "shadow_within_10pct": a.within_10pct,
        "shadow_mean_signed_difference": a.mean_signed_difference,
        "shadow_spearman": a.spearman,
        "shadow_houses_compared": a.n,
        "shadow_stable_p50_ms": report.stable_latency.p50_ms,
        "shadow_stable_p99_ms": report.stable_latency.p99_ms,
        "shadow_p50_ms": report.shadow_latency.p50_ms,
        "shadow_p99_ms": report.shadow_latency.p99_ms,
        "shadow_mirrored": o.mirrored,
        "shadow_timed_out": o.timed_out,
        "shadow_dropped": o.dropped,
        "shadow_failed": o.failed,
    }
    return {name: float(v) for name, v in figures.items() if v is not None}


def log_to_mlflow(tracking_uri: str, model_name: str, report: ShadowReport, where: str) -> str:
    """Logs the report's figures (step: the window's start, in seconds) and the report itself
    (``shadow/<window>.json``) to the run that registered the shadow version; returns the run
    id."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run_id = str(client.get_model_version(model_name, str(report.shadow_model_version)).run_id)
    start = datetime.fromisoformat(report.since)
    step, stamp = int(start.timestamp()), int(start.timestamp() * 1000)
    client.log_batch(
        run_id, metrics=[Metric(k, v, stamp, step) for k, v in metrics(report).items()]
    )
    client.log_dict(run_id, msgspec.to_builtins(report), f"{PREFIX}/{report.window}.json")
    client.set_tag(run_id, "shadow_last_report", where)
    return run_id
