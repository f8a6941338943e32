"""The prediction log keeps every priced house, off the request's path and bounded: a slow or
failing store never blocks or fails a request, and what it couldn't keep is counted. The app
logs every house it prices, with its request, to the artifact store, unless told not to."""

from __future__ import annotations

import io
import logging
import math
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pyarrow.parquet as pq
import pytest
from litestar.testing import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from housing_platform.artifact_store import LocalStore
from model_runtime.contract import EXAMPLE_HOUSE, FEATURES
from model_runtime.loader import ModelMeta
from model_runtime.prediction_records import COLUMNS, decode, object_key, read_window
from service.app import create_app
from service.prediction_log import PredictionLog
from service.schemas import House
from service.settings import ServiceSettings

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
        self.attempts = 0

    def write(self, key: str, data: bytes) -> None:
        self.attempts += 1
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
    plog = PredictionLog(store.write, revision="rev", batch_rows=100, capacity_rows=1000)
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


def test_decoded_houses_are_logged_with_their_nine_inputs():
    store = Store()
    plog = PredictionLog(store.write, revision="rev", clock=lambda: NOV_30)
    house = House(**{**EXAMPLE_HOUSE, "total_bedrooms": None})
    plog.record(
        request_id="r1",
        model_name="housing-price",
        model_version="3",
        houses=[house],
        prices=[1.5],
        form="scikit-learn",
        status=200,
        latency_ms=2.0,
    )
    plog.flush()
    (row,) = store.rows()
    assert {name: row[name] for name in FEATURES} == {**EXAMPLE_HOUSE, "total_bedrooms": None}
    assert (row["price"], row["form"]) == (1.5, "scikit-learn")


def test_a_failing_store_is_tried_again_after_an_interval_not_at_every_batch():
    store = Store()
    store.failing = True
    plog = PredictionLog(
        store.write, revision="rev", batch_rows=1, capacity_rows=1000, interval_s=3600
    ).start()
    try:
        record(plog)
        assert store.writing.wait(DEADLINE_S)
        for _ in range(20):  # each one a full batch, which would wake a writer not backing off
            record(plog)
        assert store.attempts == 1
        assert plog.buffered == 21
    finally:
        store.failing = False
        plog.close()  # its final flush writes what waits
    assert plog.written == 21


def test_failures_are_logged_at_most_once_per_interval(caplog):
    store = Store()
    store.failing = True
    plog = PredictionLog(store.write, revision="rev", interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="service.prediction_log"):
        for _ in range(5):
            record(plog)
            plog.flush()
            plog.report()
    (line,) = caplog.messages
    assert "1 writes failed" in line
    assert "OSError: store unavailable" in line
    assert plog.failed_writes == 5


def test_close_gives_up_on_a_stuck_store_within_its_budget_and_counts_what_is_lost(caplog):
    store = Store()
    store.gate = threading.Event()  # never released before close returns
    plog = PredictionLog(store.write, revision="rev", batch_rows=5, interval_s=3600).start()
    try:
        record(plog, n=5)
        assert store.writing.wait(DEADLINE_S)
        record(plog, n=2)
        began = time.monotonic()
        assert plog.close(timeout_s=0.2) is False
        assert time.monotonic() - began < 5
        assert plog.dropped == 7
        assert "7 rows not written at shutdown" in caplog.text
        assert "did not finish in 0.2 s" in caplog.text
    finally:
        store.gate.set()


def test_a_final_flush_that_fails_counts_its_rows_as_dropped():
    store = Store()
    store.failing = True
    plog = PredictionLog(store.write, revision="rev", interval_s=3600).start()
    record(plog, n=3)
    assert plog.close() is False
    assert (plog.written, plog.dropped, plog.failed_writes) == (0, 3, 1)


# --- The service logs what it prices ----------------------------------------------------------


class Fixed:
    """A stand-in predictor pricing every house at 7."""

    meta = ModelMeta(name="housing-price", version="7", alias="champion", run_id="r")
    runtime = "onnxruntime"
    warnings: ClassVar[list[str]] = []

    def predict(self, houses: list) -> list[float]:
        return [7.0] * len(houses)


def logged(root) -> list[dict]:
    """Every row the service wrote under the artifact store at ``root``."""
    now = datetime.now(UTC)
    frame = read_window(LocalStore(root), now - timedelta(days=1), now + timedelta(days=1))
    return frame.to_dict("records")


def metric(client: TestClient, name: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not on /metrics")


def test_the_service_logs_each_priced_house_with_its_request(tmp_path):
    settings = ServiceSettings(artifact_uri=str(tmp_path / "store"), revision="housing-api-00042")
    spelled = {**EXAMPLE_HOUSE, "ocean_proximity": " near_bay ", "total_bedrooms": None}
    with TestClient(create_app(settings, predictor=Fixed())) as client:
        assert client.get("/api/v1/model").json()["prediction_log"] is True
        answer = client.post(
            "/api/v1/predict",
            json={"instances": [spelled, EXAMPLE_HOUSE]},
            headers={"x-request-id": "req-7"},
        )
        assert answer.status_code == 200
        other = client.post("/api/v1/predict", json={"instances": [EXAMPLE_HOUSE]})
        assert client.post("/api/v1/predict", json={"instances": [{}]}).status_code == 400
    rows = logged(tmp_path / "store")
    assert [r["request_id"] for r in rows] == ["req-7", "req-7", other.headers["x-request-id"]]
    first = rows[0]
    # The inputs as the model received them: the category normalised, the missing count null
    # (NaN in the reader's frame).
    assert {name: first[name] for name in FEATURES if name != "total_bedrooms"} == {
        name: value for name, value in EXAMPLE_HOUSE.items() if name != "total_bedrooms"
    }
    assert math.isnan(first["total_bedrooms"])
    assert rows[1]["total_bedrooms"] == EXAMPLE_HOUSE["total_bedrooms"]
    assert (first["model_name"], first["model_version"]) == ("housing-price", "7")
    assert (first["revision"], first["form"], first["status"]) == (
        "housing-api-00042",
        "onnxruntime",
        200,
    )
    assert first["price"] == 7.0
    assert first["latency_ms"] > 0
    assert abs(first["time"] - time.time()) < 600
    (key,) = LocalStore(tmp_path / "store").list("predictions/")
    day = datetime.now(UTC).date().isoformat()
    assert key.startswith(f"predictions/date={day}/model_version=7/housing-api-00042/")


def test_the_store_root_defaults_to_the_homes_artifacts_and_the_revision_to_local(tmp_path):
    settings = ServiceSettings(home=str(tmp_path))
    with TestClient(create_app(settings, predictor=Fixed())) as client:
        assert (
            client.post("/api/v1/predict", json={"instances": [EXAMPLE_HOUSE]}).status_code == 200
        )
    (row,) = logged(tmp_path / "artifacts")
    assert row["revision"] == "local"


def test_with_the_log_off_nothing_is_written(tmp_path):
    settings = ServiceSettings(artifact_uri=str(tmp_path), prediction_log=False)
    with TestClient(create_app(settings, predictor=Fixed())) as client:
        assert client.get("/api/v1/model").json()["prediction_log"] is False
        assert (
            client.post("/api/v1/predict", json={"instances": [EXAMPLE_HOUSE]}).status_code == 200
        )
    assert not (tmp_path / "predictions").exists()


def test_a_store_that_cannot_be_written_fails_no_prediction_and_is_counted(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # the store's root lies under a file: every write fails
    settings = ServiceSettings(
        artifact_uri=str(blocker / "store"),
        prediction_log_batch_rows=2,
        prediction_log_capacity_rows=2,
        prediction_log_interval_seconds=3600,
    )
    with TestClient(create_app(settings, predictor=Fixed())) as client:
        failed = metric(client, "housing_prediction_log_write_failures_total")
        dropped = metric(client, "housing_prediction_log_rows_dropped_total")
        for _ in range(3):
            answer = client.post("/api/v1/predict", json={"instances": [EXAMPLE_HOUSE] * 2})
            assert answer.status_code == 200
        # The buffer holds 2 rows: of the 6 priced, at least 2 were dropped at once.
        assert metric(client, "housing_prediction_log_rows_dropped_total") >= dropped + 2
    # Every write failed, and what was never written is counted and said.
    assert metric_now("housing_prediction_log_write_failures_total") >= failed + 1
    assert metric_now("housing_prediction_log_rows_dropped_total") == dropped + 6
    assert "rows not written at shutdown (the final flush failed)" in caplog.text
    assert not (blocker / "store").exists()


def metric_now(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None
    return value


def test_a_request_is_never_failed_by_its_record_even_a_malformed_one():
    store = Store()
    plog = PredictionLog(store.write, revision="rev")
    plog.record(
        request_id="r1",
        model_name="housing-price",
        model_version="3",
        houses=[dict(EXAMPLE_HOUSE)] * 2,
        prices=[1.0],  # a house without a price
        form="onnxruntime",
        status=200,
        latency_ms=1.0,
    )
    assert plog.dropped == 2
    record(plog, request_id="r2")
    assert plog.flush() == 1
    assert [r["request_id"] for r in store.rows()] == ["r2"]


def test_every_object_has_the_same_column_types_whatever_its_houses_hold():
    """Types are fixed, not inferred from a flush's rows: a flush whose houses all lack a
    bedroom count (nulls alone) or give their age as a whole number still writes float columns,
    so readers can concatenate any two objects."""
    store = Store()
    plog = PredictionLog(store.write, revision="rev-a", clock=lambda: NOV_30)
    for age, bedrooms in ((41, None), (41.5, 129.0)):
        house = {**EXAMPLE_HOUSE, "housing_median_age": age, "total_bedrooms": bedrooms}
        plog.record(
            request_id="r", model_name="housing-price", model_version="3", houses=[house],
            prices=[1.0], form="onnx", status=200, latency_ms=2.0,
        )  # fmt: skip
        assert plog.flush() == 1
    first, second = (pq.read_schema(io.BytesIO(data)) for data in store.objects.values())
    assert first == second
    assert str(first.field("total_bedrooms").type) == "double"
    assert str(first.field("housing_median_age").type) == "double"
    assert [r["total_bedrooms"] for r in store.rows()] == [None, 129.0]


def test_rows_are_grouped_by_utc_day_and_version_in_the_order_first_seen():
    from service.prediction_log import Rows

    def rows(*at_version: tuple[float, str]) -> Rows:
        found = Rows()
        for i, (at, version) in enumerate(at_version):
            one = Rows.of(
                [EXAMPLE_HOUSE], [float(i)], (at, 200, 1.0), ("r", "m", version, "x", "f")
            )
            found.extend(one)
        return found

    def prices(got: Rows) -> list[float]:
        return got.table().column("price").to_pylist()

    same = rows(*[(NOV_30 + i, "3") for i in range(5)])
    ((key, group),) = same.groups().items()
    assert key == (NOV_30 // 86_400, "3")
    assert group is same
    midnight = NOV_30 + 12 * 3600  # NOV_30 is noon UTC
    mixed = rows((midnight - 1, "3"), (midnight, "3"), (midnight - 2, "4"), (NOV_30, "3"))
    got = {key: prices(group) for key, group in mixed.groups().items()}
    assert list(got.items()) == [
        ((NOV_30 // 86_400, "3"), [0.0, 3.0]),
        ((NOV_30 // 86_400 + 1, "3"), [1.0]),
        ((NOV_30 // 86_400, "4"), [2.0]),
    ]
    assert Rows().groups() == {}


def test_a_house_with_an_input_that_is_no_number_is_dropped_and_counted_not_raised():
    store = Store()
    plog = PredictionLog(store.write, revision="rev")
    plog.record(
        request_id="r1", model_name="housing-price", model_version="3",
        houses=[{**EXAMPLE_HOUSE, "median_income": "high"}], prices=[1.0], form="onnx",
        status=200, latency_ms=1.0,
    )  # fmt: skip
    assert (plog.dropped, plog.buffered) == (1, 0)
    record(plog, request_id="r2")
    assert plog.flush() == 1
    assert [r["request_id"] for r in store.rows()] == ["r2"]
