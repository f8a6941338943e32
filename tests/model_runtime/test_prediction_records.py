"""The prediction log's readers find a window's rows by its date and version partitions, and a
damaged object is named, never skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from housing_platform.artifact_store import LocalStore
from model_runtime.contract import EXAMPLE_HOUSE, FEATURES
from model_runtime.prediction_records import (
    COLUMNS,
    PredictionLogError,
    encode,
    keys_in,
    object_key,
    partition,
    read_window,
)

START = datetime(2026, 11, 29, 22, tzinfo=UTC)


def row(when: datetime, version: str, price: float) -> tuple:
    house = [EXAMPLE_HOUSE[name] for name in FEATURES]
    return ("r", when.timestamp(), "housing-price", version, "rev", *house, price, "onnxruntime",
            200, 1.0)  # fmt: skip


def write(store: LocalStore, when: datetime, version: str, prices: list[float], seq: int) -> str:
    key = object_key(when.date().isoformat(), version, "rev", "i1", seq)
    store.write_bytes(key, encode([row(when, version, p) for p in prices]))
    return key


def test_a_window_reads_only_its_rows_across_midnight_and_by_version(tmp_path):
    store = LocalStore(tmp_path)
    write(store, START - timedelta(hours=3), "3", [1.0], 1)  # before the window
    write(store, START + timedelta(hours=1), "3", [2.0, 3.0], 2)  # in it, day one
    write(store, START + timedelta(hours=3), "3", [4.0], 3)  # in it, day two
    write(store, START + timedelta(hours=3), "4", [5.0], 4)  # in it, another version
    write(store, START + timedelta(hours=30), "3", [6.0], 5)  # after it
    until = START + timedelta(hours=24)
    frame = read_window(store, START, until)
    assert list(frame.columns) == list(COLUMNS)
    assert sorted(frame["price"]) == [2.0, 3.0, 4.0, 5.0]
    assert sorted(read_window(store, START, until, model_version="3")["price"]) == [2.0, 3.0, 4.0]
    # Only the window's two days are listed, and for one version only that version's folder.
    assert {partition(k) for k in keys_in(store, START, until, "4")} == {
        ((START + timedelta(hours=3)).date(), "4")
    }


def test_an_empty_window_is_an_empty_frame_with_the_columns(tmp_path):
    frame = read_window(LocalStore(tmp_path), START, START + timedelta(hours=1))
    assert frame.empty
    assert list(frame.columns) == list(COLUMNS)


def test_a_damaged_object_is_named(tmp_path):
    store = LocalStore(tmp_path)
    key = write(store, START + timedelta(minutes=5), "3", [1.0], 1)
    store.write_bytes(key, b"not parquet")
    with pytest.raises(PredictionLogError, match=key):
        read_window(store, START, START + timedelta(hours=1))


def test_only_log_objects_have_a_partition():
    assert partition("predictions/date=2026-11-30/model_version=7/r/i/00000001.parquet") == (
        datetime(2026, 11, 30).date(),
        "7",
    )
    assert partition("predictions/compacted/notes.txt") is None
