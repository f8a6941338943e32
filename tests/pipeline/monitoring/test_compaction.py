"""Compaction of the prediction log: a day that is over becomes one object per version, and a
reader sees every row exactly once before, after, and after an interrupted compaction."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from housing_platform.artifact_store import LocalStore
from model_runtime import contract, prediction_records
from pipeline.monitoring import compaction

DAY = date(2026, 11, 28)
START = datetime(2026, 11, 28, tzinfo=UTC)
TODAY = date(2026, 11, 30)


def rows(version: str, first: int, count: int, day: date = DAY) -> list[tuple]:
    base = datetime(day.year, day.month, day.day, tzinfo=UTC)
    house = [contract.EXAMPLE_HOUSE[f] for f in contract.FEATURES]
    return [
        (
            f"req-{day}-{version}-{i}",
            (base + timedelta(minutes=i)).timestamp(),
            "housing-price",
            version,
            "rev-1",
            *house,
            float(100_000 + i),
            "onnxruntime",
            200,
            2.0,
        )
        for i in range(first, first + count)
    ]


@pytest.fixture
def store(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path / "artifacts")
    for version in ("1", "2"):
        for seq in range(4):
            for instance in ("a", "b"):
                first = seq * 100 + (50 if instance == "b" else 0)
                key = prediction_records.object_key(DAY.isoformat(), version, "rev", instance, seq)
                store.write_bytes(key, prediction_records.encode(rows(version, first, 50)))
    today = prediction_records.object_key(TODAY.isoformat(), "1", "rev", "a", 0)
    store.write_bytes(today, prediction_records.encode(rows("1", 0, 10, TODAY)))
    return store


def everything(store: LocalStore) -> pd.DataFrame:
    frame = prediction_records.read_window(
        store, START, datetime(2026, 12, 1, tzinfo=UTC), model_version=None
    )
    return frame.sort_values(["model_version", "request_id"]).reset_index(drop=True)


def test_a_day_that_is_over_becomes_one_object_per_version_with_every_row_once(store):
    before = everything(store)
    done = compaction.compact_days(store, [DAY, TODAY], TODAY)
    assert sorted((c.model_version, c.sources, c.rows) for c in done) == [
        ("1", 8, 400),
        ("2", 8, 400),
    ]
    for version in ("1", "2"):
        (only,) = store.list(compaction.partition_prefix(DAY, version))
        assert "/compacted/" in only
    pd.testing.assert_frame_equal(everything(store), before)
    assert before["request_id"].is_unique


def test_today_is_left_alone(store):
    compaction.compact_days(store, [TODAY], TODAY)
    assert len(store.list(compaction.partition_prefix(TODAY, "1"))) == 1
    assert len(store.list(compaction.partition_prefix(DAY, "1"))) == 8


def test_compacting_again_changes_nothing(store):
    compaction.compact_days(store, [DAY], TODAY)
    keys = store.list(prediction_records.PREFIX)
    assert compaction.compact_days(store, [DAY], TODAY) == []
    assert store.list(prediction_records.PREFIX) == keys


def test_late_objects_join_the_compacted_one(store):
    compaction.compact_days(store, [DAY], TODAY)
    late = prediction_records.object_key(DAY.isoformat(), "1", "rev", "c", 9)
    store.write_bytes(late, prediction_records.encode(rows("1", 1000, 5)))
    (done,) = compaction.compact_days(store, [DAY], TODAY)
    assert done.rows == 405
    (only,) = store.list(compaction.partition_prefix(DAY, "1"))
    assert "/compacted/" in only
    assert len(everything(store)) == 800 + 5 + 10


def test_an_interrupted_compaction_is_finished_by_the_next_run(store, monkeypatch):
    before = everything(store)
    prefix = compaction.partition_prefix(DAY, "1")
    real_delete = store.delete

    def crash(key: str) -> None:
        raise OSError("the job was stopped")

    monkeypatch.setattr(store, "delete", crash)
    with pytest.raises(OSError, match="stopped"):
        compaction.compact_partition(store, DAY, "1")
    monkeypatch.setattr(store, "delete", real_delete)
    left = store.list(prefix)
    # The compacted object and its sources: a reader that honours the metadata counts once.
    assert len(left) == 9
    assert compaction.superseded(store, left) == {k for k in left if "/compacted/" not in k}
    # Every reader (read_window) skips the sources a compacted object holds: each row once.
    pd.testing.assert_frame_equal(everything(store), before)
    compaction.compact_partition(store, DAY, "1")
    (only,) = store.list(prefix)
    assert "/compacted/" in only
    pd.testing.assert_frame_equal(everything(store), before)


def test_a_damaged_object_stops_its_partition_and_deletes_nothing(store):
    prefix = compaction.partition_prefix(DAY, "2")
    damaged = store.list(prefix)[0]
    store.write_bytes(damaged, b"not parquet")
    with pytest.raises(prediction_records.PredictionLogError, match=damaged):
        compaction.compact_partition(store, DAY, "2")
    assert len(store.list(prefix)) == 8


def test_the_monitor_finishes_an_interrupted_compaction_before_it_reads(store, monkeypatch):
    before = everything(store)
    real_delete = store.delete

    def crash(key: str) -> None:
        raise OSError("the job was stopped")

    monkeypatch.setattr(store, "delete", crash)
    with pytest.raises(OSError, match="stopped"):
        compaction.compact_partition(store, DAY, "1")
    monkeypatch.setattr(store, "delete", real_delete)
    # The compacted copy and its sources are both there, and still every row is read once.
    assert len(store.list(compaction.partition_prefix(DAY, "1"))) == 9
    pd.testing.assert_frame_equal(everything(store), before)
    deleted = compaction.finish_interrupted(store, [DAY, TODAY])
    assert len(deleted) == 8
    pd.testing.assert_frame_equal(everything(store), before)
