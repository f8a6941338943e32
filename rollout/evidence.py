"""A step's evidence, per revision, from what the revisions themselves report.

- **Requests and 5xx**: each revision's ``/metrics`` (``housing_requests_total`` of the predict
  route, by status), as the difference from a baseline read when the step's window opened (a
  counter that went down means the process restarted: it counts from zero). The prediction log
  can't count errors: it holds the houses a revision priced, and a request that failed priced
  none.
- **Latency**: the prediction log's ``latency_ms`` of the revision's rows in the window (every
  priced request, users' and probes' alike), as written by its writer every
  ``PREDICTION_LOG_INTERVAL_SECONDS``.
- **Prices**: the price probes' answers and the probe set's offline prices.

The pure part (``parse_metrics``, ``delta``, ``assemble``) is separate from the reads.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import httpx
import msgspec
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from housing_platform.artifact_store import ArtifactStore
from model_runtime.prediction_records import is_compacted, keys_in
from rollout import judge

REQUESTS_METRIC = "housing_requests"
PREDICT_ROUTE = "/api/v1/predict"


class EvidenceError(RuntimeError):
    """A revision's evidence can't be read; the message names the revision and the URL."""


class Counts(msgspec.Struct, frozen=True):
    """Prediction requests a revision answered, and how many of them with a 5xx."""

    requests: int = 0
    errors: int = 0


def parse_metrics(text: str) -> Counts:
    """The predict route's requests and 5xx in a Prometheus exposition."""
    requests = errors = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != REQUESTS_METRIC:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total") or sample.labels.get("path") != PREDICT_ROUTE:
                continue
            requests += sample.value
            if str(sample.labels.get("status_code", "")).startswith("5"):
                errors += sample.value
    return Counts(int(requests), int(errors))


def delta(now: Counts, baseline: Counts | None) -> Counts:
    """What happened since ``baseline`` (all of ``now`` when the counters restarted)."""
    if baseline is None or now.requests < baseline.requests or now.errors < baseline.errors:
        return now
    return Counts(now.requests - baseline.requests, now.errors - baseline.errors)


def scrape(revision: str, url: str, headers: Mapping[str, str] | None = None) -> Counts:
    try:
        r = httpx.get(url.rstrip("/") + "/metrics", headers=dict(headers or {}), timeout=10)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise EvidenceError(f"revision {revision}: /metrics at {url} failed: {exc}") from None
    return parse_metrics(r.text)


class LatencyReader:
    """Each revision's logged latencies (ms) of priced requests in a window, read incrementally:
    a prediction-log object is written once under a name of its own
    (``…/<revision>/<instance>/<seq>.parquet``), so each is read once, only for the revisions
    asked about, however often a step is judged."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self._read: dict[str, tuple[str, np.ndarray, np.ndarray, np.ndarray]] = {}

    def __call__(
        self, revisions: Sequence[str], since: float, until: float
    ) -> dict[str, np.ndarray]:
        import pyarrow.parquet as pq

        wanted = set(revisions)
        start, end = datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(until, UTC)
        for key in keys_in(self.store, start, end):
            parts = key.split("/")
            if key in self._read or is_compacted(key) or len(parts) < 6:
                continue
            if parts[3] not in wanted:
                continue
            table = pq.read_table(
                io.BytesIO(self.store.read_bytes(key)),
                columns=["request_id", "time", "latency_ms"],
            )
            self._read[key] = (
                parts[3],
                np.asarray(table.column("request_id").to_pylist(), dtype=object),
                table.column("time").to_numpy(),
                table.column("latency_ms").to_numpy(),
            )
        out = {}
        for revision in revisions:
            ids, times, lat = [], [], []
            for rev, i, tm, la in self._read.values():
                if rev == revision:
                    ids.append(i)
                    times.append(tm)
                    lat.append(la)
            if not ids:
                out[revision] = np.empty(0)
                continue
            i, tm, la = np.concatenate(ids), np.concatenate(times), np.concatenate(lat)
            inside = (tm >= since) & (tm < until)
            # One request of n houses is n rows with the same request id and latency.
            _, first = np.unique(i[inside].astype(str), return_index=True)
            out[revision] = la[inside][first].astype(float)
        return out


def latency_evidence(canary: np.ndarray, stable: np.ndarray) -> judge.LatencyEvidence:
    return judge.LatencyEvidence(
        canary_p99_ms=judge.p99_ms(canary) if len(canary) else 0.0,
        stable_p99_ms=judge.p99_ms(stable) if len(stable) else 0.0,
        canary_requests=len(canary),
        stable_requests=len(stable),
    )


def assemble(
    prices: judge.PriceEvidence,
    canary: Counts,
    stable: Counts,
    canary_latencies: np.ndarray,
    stable_latencies: np.ndarray,
) -> judge.Evidence:
    return judge.Evidence(
        prices=prices,
        errors=judge.ErrorEvidence(
            canary_requests=canary.requests,
            canary_errors=canary.errors,
            stable_requests=stable.requests,
            stable_errors=stable.errors,
        ),
        latency=latency_evidence(canary_latencies, stable_latencies),
    )


NO_PRICES = judge.PriceEvidence(canary=(), stable=(), expected=())
