"""The prediction log keeps every priced house, off the request's path and bounded: a slow or
failing store never blocks or fails a request, and what it couldn't keep is counted."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from model_runtime.contract import EXAMPLE_HOUSE, FEATURES
from model_runtime.prediction_records import COLUMNS, decode, object_key
from service.prediction_log import PredictionLog

NOV_30 = datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()
DEADLINE_S = 30


class Store:
    """Collects written objects; can be told to fail or to block until released."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.failing = False
        self.gate: threading.Event | None = None
        self.wrote = threading.Event()
        self.writing = threading.Event()

    def write(self, key: str, data: bytes) -> None:
        self.writing.set()
        if self.gate is not None:
            self.gate.wait(DEADLINE_S)
        if self.failing:
            raise OSError("store unavailable")
        self.objects[key] = data
        self.wrote.set()

    def rows(self) -> list[dict]:
        return [row for data in self.objects.values() for row in decode(data)]


def record(plog: PredictionLog, n: int = 1, version: str = "3", request_id: str = "r1") -> None:
    plog.record(
        request_id=request_id,
        model_name="housing-price",
        model_version=version,
        houses=[dict(EXAMPLE_HOUSE)] * n,
        prices=[200_000.0 + i for i in range(n)],
        form="onnx",
        status=200,
        latency_ms=1.5,
    )


def test_each_priced_house_becomes_a_row_with_its_inputs_price_and_request():
    store = Store()
    plog = PredictionLog(
        store.write, revision="housing-api-00007", instance="i1", clock=lambda: NOV_30
    )
    record(plog, n=3)
    assert plog.flush() == 3
    assert list(store.objects) == [
        "predictions/date=2026-11-30/model_version=3/housing-api-00007/i1/00000001.parquet"
    ]
    rows = store.rows()
    assert [r["price"] for r in rows] == [200_000.0, 200_001.0, 200_002.0]
    assert set(rows[0]) == set(COLUMNS)
    first = rows[0]
    assert {name: first[name] for name in FEATURES} == dict(EXAMPLE_HOUSE)
    assert (first["request_id"], first["form"], first["status"]) == ("r1", "onnx", 200)
    assert (first["model_version"], first["revision"]) == ("3", "housing-api-00007")


def test_a_flush_splits_by_day_and_version_so_readers_can_prune():
    store = Store()
    times = iter([NOV_30, NOV_30, NOV_30 + 86_400])
    plog = PredictionLog(store.write, revision="rev", instance="i1", clock=lambda: next(times))
    record(plog, version="3")
    record(plog, version="4")
    record(plog, version="3")
    assert plog.flush() == 3
    assert sorted(store.objects) == [
        object_key("2026-11-30", "3", "rev", "i1", 1),
        object_key("2026-11-30", "4", "rev", "i1", 2),
        object_key("2026-12-01", "3", "rev", "i1", 3),
    ]


def test_a_full_batch_is_written_without_waiting_for_the_interval():
    store = Store()
    plog = PredictionLog(store.write, revision="rev", batch_rows=10, interval_s=3600).start()
    try:
        record(plog, n=9)
        record(plog, n=1)
        assert store.wrote.wait(DEADLINE_S)
        assert len(store.rows()) == 10
    finally:
        plog.close()


def test_a_partial_batch_is_written_after_the_interval():
    store = Store()
    plog = PredictionLog(store.write, revision="rev", batch_rows=1000, interval_s=0.05).start()
    try:
        record(plog, n=2)
        assert store.wrote.wait(DEADLINE_S)
        assert len(store.rows()) == 2
    finally:
        plog.close()


def test_a_blocked_store_never_blocks_a_request_and_the_overflow_is_counted(caplog):
    store = Store()
    store.gate = threading.Event()  # every write waits until released
    plog = PredictionLog(
        store.write, revision="rev", batch_rows=10, capacity_rows=50, interval_s=3600
    ).start()
    try:
        record(plog, n=10)  # wakes the writer, which then hangs in the store
        assert store.writing.wait(DEADLINE_S)  # the writer took the batch and is stuck
        for _ in range(6):
            record(plog, n=10)  # returns at once although the store is stuck
        assert plog.buffered == 50
        assert plog.dropped == 10
    finally:
        store.gate.set()
        plog.close()
    assert len(store.rows()) == 60
    assert plog.written == 60
    assert "10 rows dropped" in caplog.text


def test_a_failing_store_fails_no_request_and_its_rows_are_kept_for_the_next_flush(caplog):
    store = Store()
    plog = PredictionLog(store.write, revision="rev", capacity_rows=1000)
    store.failing = True
    record(plog, n=5)
    assert plog.flush() == 0
    assert (plog.failed_writes, plog.buffered, plog.dropped) == (1, 5, 0)
    plog.report()
    assert "1 writes failed" in caplog.text
    store.failing = False
    record(plog, n=1, request_id="r2")
    assert plog.flush() == 6
    assert [r["request_id"] for r in store.rows()] == ["r1"] * 5 + ["r2"]


def test_close_writes_what_is_left():
    store = Store()
    plog = PredictionLog(store.write, revision="rev", interval_s=3600).start()
    record(plog, n=4)
    plog.close()
    assert len(store.rows()) == 4


@pytest.mark.parametrize(
    ("batch_rows", "capacity_rows", "interval_s"), [(0, 10, 1.0), (20, 10, 1.0), (1, 10, 0.0)]
)
def test_impossible_bounds_are_refused(batch_rows, capacity_rows, interval_s):
    with pytest.raises(ValueError, match="batch_rows"):
        PredictionLog(
            Store().write,
            revision="rev",
            batch_rows=batch_rows,
            capacity_rows=capacity_rows,
            interval_s=interval_s,
        )
