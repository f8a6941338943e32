"""A step's evidence from what revisions report: the predict route's requests and 5xx in a real
Prometheus exposition (a restarted process counts from zero), and each revision's latencies in
a window, from prediction-log objects in the real local artifact store."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
from prometheus_client import CollectorRegistry, Counter, generate_latest

from housing_platform.artifact_store import LocalStore
from model_runtime.contract import EXAMPLE_HOUSE, FEATURES
from model_runtime.prediction_records import encode, object_key
from rollout.evidence import Counts, LatencyReader, delta, parse_metrics


def exposition(counts: dict[tuple[str, str], int]) -> str:
    """What Litestar's Prometheus middleware exposes, for (path, status) → requests."""
    registry = CollectorRegistry()
    requests = Counter(
        "housing_requests", "", ["app_name", "method", "path", "status_code"], registry=registry
    )
    for (path, status), n in counts.items():
        requests.labels("housing_service", "POST", path, status).inc(n)
    return generate_latest(registry).decode()


def test_the_predict_routes_requests_and_5xx_are_counted_and_nothing_else():
    text = exposition(
        {
            ("/api/v1/predict", "200"): 950,
            ("/api/v1/predict", "503"): 40,
            ("/api/v1/predict", "500"): 10,
            ("/api/v1/predict", "400"): 7,
            ("/health", "200"): 300,
        }
    )
    assert parse_metrics(text) == Counts(requests=1007, errors=50)


def test_a_window_counts_from_its_baseline_and_from_zero_after_a_restart():
    assert delta(Counts(1500, 60), Counts(1000, 10)) == Counts(500, 50)
    assert delta(Counts(40, 2), Counts(1000, 10)) == Counts(40, 2)  # the process restarted
    assert delta(Counts(40, 2), None) == Counts(40, 2)


def write(store: LocalStore, revision: str, seq: int, rows: list[tuple[str, float, float]]) -> None:
    values = [EXAMPLE_HOUSE[name] for name in FEATURES]
    records = [
        (rid, at, "housing-price", "2", revision, *values, 1.0, "onnxruntime", 200, ms)
        for rid, at, ms in rows
    ]
    day = datetime.fromtimestamp(rows[0][1], UTC).date().isoformat()
    store.write_bytes(object_key(day, "2", revision, "i1", seq), encode(records))


def test_latencies_are_per_revision_per_request_and_inside_the_window(tmp_path):
    store = LocalStore(tmp_path)
    now = time.time()
    write(store, "canary", 1, [("a", now - 100, 999.0), ("b", now - 5, 20.0), ("b", now - 5, 20.0)])
    write(store, "stable", 1, [("c", now - 4, 3.0), ("d", now - 3, 4.0)])
    write(store, "other", 1, [("e", now - 3, 500.0)])
    read = LatencyReader(store)
    got = read(["canary", "stable"], now - 10, now + 1)
    assert sorted(got["canary"]) == [20.0]  # one request of two houses; the old one is outside
    assert sorted(got["stable"]) == [3.0, 4.0]
    write(store, "stable", 2, [("f", now - 1, 7.0)])  # a later flush is read on the next call
    assert sorted(read(["canary", "stable"], now - 10, now + 1)["stable"]) == [3.0, 4.0, 7.0]
    assert np.array_equal(read(["none"], now - 10, now + 1)["none"], np.empty(0))
