"""Feedback: sold prices joined to the logged predictions, and the realised error per version."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from housing_platform.artifact_store import LocalStore
from model_runtime import prediction_records
from model_runtime.contract import EXAMPLE_HOUSE, FEATURES
from pipeline.cli import main
from pipeline.monitoring import feedback

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = NOW.timestamp() - 3600


def house(i: int, **change: object) -> dict[str, object]:
    """A distinct house per ``i`` (its longitude moved by i/100 of a degree)."""
    h: dict[str, object] = {**EXAMPLE_HOUSE, "longitude": -122.23 + i / 100}
    h.update(change)
    return h


def logged(request_id: str, h: dict[str, object], price: float, version: str = "1", t=HOUR):
    return (
        request_id,
        float(t),
        "housing-price",
        version,
        "rev",
        *(h[name] for name in FEATURES),
        price,
        "onnxruntime",
        200,
        1.0,
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    """A log of five predictions: three single-house requests, one request of two houses
    (version 2), one with no bedroom count."""
    s = LocalStore(tmp_path / "artifacts")
    rows = [
        logged("r-0", house(0), 100_000.0),
        logged("r-1", house(1), 200_000.0),
        logged("r-2", house(2, total_bedrooms=None), 300_000.0),
    ]
    pair = [
        logged("r-pair", house(3), 400_000.0, "2"),
        logged("r-pair", house(4), 500_000.0, "2"),
    ]
    day = NOW.date().isoformat() if NOW.replace(hour=0).timestamp() <= HOUR else None
    day = datetime.fromtimestamp(HOUR, UTC).date().isoformat()
    s.write_bytes(
        prediction_records.object_key(day, "1", "rev", "i", 0), prediction_records.encode(rows)
    )
    s.write_bytes(
        prediction_records.object_key(day, "2", "rev", "i", 1), prediction_records.encode(pair)
    )
    return s


def write_csv(path: Path, rows: list[dict[Any, Any]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def run_feedback(store: LocalStore, labels: Path, *extra: str) -> int:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOUSING_MLOPS_HOME", str(Path(store.uri).parent))
        mp.setenv("ARTIFACT_URI", store.uri)
        return main(["feedback", "--labels", str(labels), *extra])


def test_labels_join_by_request_id_or_by_the_inputs_as_the_service_normalised_them(store):
    labels = pd.DataFrame(
        [
            {"request_id": "r-0", "actual_price": 110_000},
            # no id: the inputs, spelled differently and off by float noise
            {
                **house(1, ocean_proximity=" near_bay ", latitude=37.88 + 1e-9),
                "actual_price": 180_000,
            },
            # no bedroom count on either side
            {**house(2, total_bedrooms=math.nan), "actual_price": 330_000},
        ]
    )
    labels["request_id"] = labels["request_id"].fillna("")
    prepared = feedback.read_labels(
        write_csv(Path(store.uri).parent / "l.csv", labels.to_dict("records"))
    )
    result = feedback.join(
        prepared, prediction_records.read_window(store, NOW - timedelta(days=1), NOW)
    )
    assert (result.by_request_id, result.by_inputs, result.unmatched) == (1, 2, 0)
    joined = result.joined.set_index("request_id")
    assert joined.loc["r-0", "actual_price"] == 110_000
    assert joined.loc["r-1", "actual_price"] == 180_000
    assert joined.loc["r-2", "actual_price"] == 330_000


def test_an_id_of_several_houses_needs_the_inputs_to_tell_them_apart(store):
    log = prediction_records.read_window(store, NOW - timedelta(days=1), NOW)
    only_id = pd.DataFrame({"request_id": ["r-pair"], "actual_price": [1.0]})
    assert feedback.join(only_id, log).unmatched == 1
    with_inputs = pd.DataFrame([{"request_id": "r-pair", **house(4), "actual_price": 9.0}])
    result = feedback.join(with_inputs, log)
    assert result.joined["price"].tolist() == [500_000.0]


def test_feeding_stores_the_labels_and_the_same_file_twice_counts_once(store, capsys):
    labels = write_csv(
        Path(store.uri).parent / "sold.csv",
        [
            {"request_id": "r-0", "actual_price": 125_000},  # served 100,000: -20% of the truth
            {"request_id": "r-1", "actual_price": 200_000},  # exact
            {"request_id": "nobody", "actual_price": 1},
        ],
    )
    assert run_feedback(store, labels) == 0
    assert (
        "joined 2 of 3 label(s) (2 by request id, 0 by inputs; 1 unmatched)"
        in capsys.readouterr().out
    )
    assert run_feedback(store, labels) == 0
    assert len(store.list(feedback.PREFIX)) == 1
    err = feedback.realised_error(store, NOW - timedelta(days=1), NOW, "1")
    assert err is not None
    assert err.n == 2
    assert err.mape == pytest.approx((25_000 / 125_000 + 0) / 2)
    assert err.within_10pct == 0.5
    assert err.rmse == pytest.approx(math.sqrt(25_000**2 / 2))


def test_realised_error_is_per_version_and_window(store):
    labels = write_csv(
        Path(store.uri).parent / "sold.csv",
        [
            {"request_id": "r-1", "actual_price": 250_000},
            {"request_id": "r-pair", **house(3), "actual_price": 400_000},
        ],
    )
    assert run_feedback(store, labels) == 0
    assert feedback.realised_error(store, NOW - timedelta(days=1), NOW, "2").mape == 0.0  # type: ignore[union-attr]
    assert feedback.realised_error(store, NOW - timedelta(days=1), NOW, "1").n == 1  # type: ignore[union-attr]
    assert feedback.realised_error(store, NOW - timedelta(days=1), NOW, "3") is None
    assert feedback.realised_error(store, NOW - timedelta(minutes=30), NOW, "1") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("request_id,value\nr-0,1\n", "no price column"),
        ("actual_price,longitude\n1,2\n", "neither a request_id column nor the nine inputs"),
        ("request_id,actual_price\nr-0,abc\n", "no positive number in actual_price"),
        ("request_id,actual_price\nnobody,5\n", "matches a prediction"),
        (b"PAR1\x00garbage", "can't be read"),
    ],
)
def test_a_bad_labels_file_is_one_line_exits_non_zero_and_writes_nothing(
    store, capsys, content, message
):
    path = Path(store.uri).parent / (
        "labels.parquet" if isinstance(content, bytes) else "labels.csv"
    )
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert run_feedback(store, path) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: feedback:")
    assert message in err
    assert "\n" not in err
    assert store.list(feedback.PREFIX) == []


def test_labels_may_come_as_parquet_with_the_census_column_name(store, capsys):
    path = Path(store.uri).parent / "sold.parquet"
    pd.DataFrame([{**house(0), "median_house_value": 90_000.0}]).to_parquet(path)
    assert run_feedback(store, path) == 0
    assert "1 by inputs" in capsys.readouterr().out


def test_the_test_side_figures_are_the_versions_test_tags(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    client.create_registered_model("housing-price")
    client.create_model_version(
        "housing-price",
        str(tmp_path / "model"),
        tags={"test_rmse": "48000", "test_mape": "0.17", "family": "x"},
    )
    assert feedback.version_test_metrics("housing-price", "1") == {"rmse": 48000.0, "mape": 0.17}


def test_the_report_puts_each_versions_realised_error_beside_its_test_figures(store):
    labels = write_csv(
        Path(store.uri).parent / "sold.csv", [{"request_id": "r-0", "actual_price": 100_000}]
    )
    assert run_feedback(store, labels) == 0
    tests = {"1": {"mape": 0.17}, "2": {"mape": 0.2}}
    rows = feedback.realised_vs_test(
        store, NOW - timedelta(days=1), NOW, ["1", "2"], tests.__getitem__
    )
    assert rows[0].realised == feedback.RealisedError(n=1, rmse=0.0, mape=0.0, within_10pct=1.0)
    assert rows[0].test == {"mape": 0.17}
    assert rows[1].realised is None
