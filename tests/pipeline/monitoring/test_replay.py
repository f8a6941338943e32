"""Replay: the logged houses priced again by a registered version, against what was served."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

from housing_platform.artifact_store import LocalStore
from model_runtime import contract, prediction_records
from model_runtime.contract import FEATURES
from pipeline.cli import main
from pipeline.experiment_tracking import configure_mlflow
from pipeline.model import FeatureSpec, build_model
from pipeline.model_registry import Registry
from pipeline.monitoring import replay
from pipeline.settings import Settings, load_settings

UNTIL = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
UNTIL_TS = UNTIL.timestamp()


class Trained(NamedTuple):
    home: Path
    settings: Settings


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, housing_sample: pd.DataFrame) -> Trained:
    """A home whose MLflow registry holds version 1: a small model fitted on the sample and
    registered as the register step does (with its fast form), without a whole pipeline run."""
    home = tmp_path_factory.mktemp("replay-home")
    settings = load_settings(None, {"HOUSING_MLOPS_HOME": str(home)})
    X, y = housing_sample[list(FEATURES)], housing_sample[contract.TARGET]
    model = build_model(
        FeatureSpec(n_clusters=3),
        "hist_gradient_boosting",
        {"max_iter": 30, "target_transform": "log"},
    ).fit(X, y)
    import mlflow

    configure_mlflow(settings)
    registry = Registry(settings.register.model_name)
    with mlflow.start_run():
        uri, fast = registry.log_model(model, X.head(50))
    assert fast.startswith("onnx"), fast
    assert registry.register(uri, {"test_rmse": "1"}) == "1"
    return Trained(home, settings)


def write_log(store: LocalStore, houses: pd.DataFrame, prices, versions, times) -> None:
    """Logged rows as the service writes them, one object per served version."""
    rows = [
        (
            f"req-{i}",
            float(t),
            "housing-price",
            str(v),
            "rev-1",
            *(None if pd.isna(h[name]) else h[name] for name in FEATURES),
            float(p),
            "onnxruntime",
            200,
            1.0,
        )
        for i, (h, p, v, t) in enumerate(
            zip(houses.to_dict("records"), prices, versions, times, strict=True)
        )
    ]
    for n, version in enumerate(sorted(set(map(str, versions)))):
        mine = [r for r in rows if r[3] == version]
        day = datetime.fromtimestamp(float(mine[0][1] or 0), UTC).date().isoformat()
        key = prediction_records.object_key(day, version, "rev-1", "i0", n)
        store.write_bytes(key, prediction_records.encode(mine))


def own_prices(settings: Settings, houses: pd.DataFrame) -> np.ndarray:
    price, _ = replay.pricer(replay.load_version(settings, "1"))
    return price(replay.features_frame(houses))


def test_compare_reports_per_served_version_with_any_pricer():
    log = pd.DataFrame(
        {
            **{name: [1.0, 2.0, 3.0] for name in FEATURES[:-1]},
            "ocean_proximity": ["INLAND"] * 3,
            "price": [100.0, 200.0, 400.0],
            "model_version": ["1", "1", "2"],
        }
    )
    overall, per = replay.compare(log, lambda frame: frame["longitude"].to_numpy() * 100.0)
    assert overall.n == 3
    assert per["1"].mape == 0.0
    assert per["2"].mape == pytest.approx(0.25)  # 300 against 400 served


def test_replay_on_the_serving_version_agrees_and_another_shows_the_gap(trained, housing, tmp_path):
    """10,000 logged houses: those served by version 1 itself agree to the cent; those served by
    a version that priced 8% higher show exactly that gap."""
    houses = housing.sample(10_000, random_state=1, replace=True).reset_index(drop=True)
    mine = own_prices(trained.settings, houses)
    versions = np.where(np.arange(len(houses)) % 2 == 0, "1", "0")
    served = np.where(versions == "1", mine, mine * 1.08)
    times = UNTIL_TS - 3600 + np.arange(len(houses)) * 0.1
    store = LocalStore(tmp_path / "store")
    write_log(store, houses, served, versions, times)

    report, key = replay.replay(
        store, replay.load_version(trained.settings, "1"), UNTIL - timedelta(hours=2), UNTIL
    )

    assert report.rows == 10_000
    assert report.form == "onnxruntime"
    same, other = report.by_served_version["1"], report.by_served_version["0"]
    assert same.n == 5_000
    assert same.mape == pytest.approx(0.0, abs=1e-6)
    assert same.within_5pct == 1.0
    assert same.spearman == pytest.approx(1.0)
    assert other.mape == pytest.approx(0.08 / 1.08, rel=1e-6)
    assert other.within_5pct == 0.0
    assert other.within_10pct == 1.0
    assert other.mean_signed_difference is not None
    assert other.mean_signed_difference < 0  # version 1 prices lower than what was served
    written = json.loads(store.read_bytes(key))
    assert written["agreement"]["n"] == 10_000
    assert written["version"] == "1"


def test_houses_outside_the_window_are_not_replayed(trained, housing, tmp_path):
    houses = housing.head(4).reset_index(drop=True)
    prices = own_prices(trained.settings, houses)
    times = [
        UNTIL_TS - 7200 - 1,
        UNTIL_TS - 60,
        UNTIL_TS - 30,
        UNTIL_TS,
    ]  # first before, last at `until`
    store = LocalStore(tmp_path / "store")
    write_log(store, houses, prices, ["1"] * 4, times)
    report, _ = replay.replay(
        store, replay.load_version(trained.settings, "1"), UNTIL - timedelta(hours=2), UNTIL
    )
    assert report.rows == 2


def test_cli_replays_prints_a_summary_and_writes_the_report(trained, housing, tmp_path, capsys):
    houses = housing.head(50).reset_index(drop=True)
    prices = own_prices(trained.settings, houses) * 1.02
    store = LocalStore(tmp_path / "store")
    write_log(store, houses, prices, ["7"] * 50, [datetime.now(UTC).timestamp() - 10] * 50)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOUSING_MLOPS_HOME", str(trained.home))
        mp.setenv("ARTIFACT_URI", store.uri)
        assert main(["replay", "--version", "1", "--window", "1"]) == 0
    out = capsys.readouterr().out
    assert "replayed 50 logged houses" in out
    assert "version 1" in out
    reports = store.list(replay.REPORTS)
    assert len(reports) == 1
    report = json.loads(store.read_bytes(reports[0]))
    assert report["by_served_version"]["7"]["n"] == 50
    assert report["agreement"]["mape"] == pytest.approx(0.02 / 1.02, rel=1e-6)


def test_an_unknown_version_is_one_line_and_writes_nothing(trained, capsys):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOUSING_MLOPS_HOME", str(trained.home))
        assert main(["replay", "--version", "99", "--window", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: replay: version 99")
    assert "\n" not in err
    assert not LocalStore(trained.home / "artifacts").list(replay.REPORTS)


def test_an_empty_window_is_an_error_and_writes_nothing(trained, tmp_path):
    store = LocalStore(tmp_path / "store")
    with pytest.raises(replay.PipelineError, match="no logged houses"):
        replay.replay(
            store, replay.load_version(trained.settings, "1"), UNTIL - timedelta(hours=1), UNTIL
        )
    assert store.list() == []


@pytest.mark.parametrize(("text", "hours"), [("90m", 1.5), ("24h", 24.0), ("2d", 48.0), ("6", 6.0)])
def test_the_window_reads_as_the_monitor_reads_it(text, hours):
    assert replay.window_hours(text) == hours


@pytest.mark.parametrize("text", ["", "h", "-2h", "soon", "0d", "infh"])
def test_a_window_that_is_not_a_duration_is_refused(text):
    with pytest.raises(replay.PipelineError, match="not a duration"):
        replay.window_hours(text)
