"""The monitor run: reads the window's log and each version's profile, writes the JSON and
Markdown reports and the plots, tracks the run, and refuses bad input with one line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from housing_platform.artifact_store import LocalStore
from model_runtime import contract, exports, prediction_records
from pipeline.cli import main
from pipeline.monitoring import monitor, profile
from pipeline.settings import Settings, load_settings

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
WINDOW = monitor.Window(since=NOW - timedelta(hours=24), until=NOW)
MODEL = exports.DEFAULT_MODEL


def price_of(houses: pd.DataFrame) -> np.ndarray:
    """A stand-in model: what the log's prices and the profile's test-side prices both are."""
    return houses["median_income"].to_numpy() * 40_000 + 20_000


@pytest.fixture(scope="module")
def halves(housing: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    shuffled = housing.sample(frac=1.0, random_state=3).reset_index(drop=True)
    return shuffled.iloc[:14000].reset_index(drop=True), shuffled.iloc[14000:].reset_index(
        drop=True
    )


@pytest.fixture(scope="module")
def reference(halves) -> profile.Profile:
    train, _ = halves
    importances = pd.DataFrame(
        {
            "feature": ["median_income", "ocean_proximity", "housing_median_age", "population"],
            "rmse_increase": [40_000.0, 15_000.0, 9_000.0, 5.0],
        }
    )
    return profile.build(
        train[list(contract.FEATURES)],
        price_of(train.iloc[:4000]),
        importances,
        [contract.CATEGORICAL],
    )


def settings_for(home: Path) -> Settings:
    return load_settings(None, {"HOUSING_MLOPS_HOME": str(home)})


def put_profile(store: LocalStore, version: str, reference: profile.Profile) -> None:
    data = profile.encode(reference.stamped(MODEL, version))
    exports.publish(store, exports.export_prefix(MODEL, version), [(profile.FILENAME, data)])


def put_log(
    store: LocalStore, houses: pd.DataFrame, version: str, start: datetime, flushes: int = 3
) -> None:
    """The houses as the service logs them: a few flushes, a minute apart per house."""
    prices = price_of(houses)
    rows = []
    for i, (house, price) in enumerate(zip(houses.to_dict("records"), prices, strict=True)):
        at = start + timedelta(seconds=30 * i)
        rows.append(
            (
                f"r{version}-{i}",
                at.timestamp(),
                MODEL,
                version,
                "rev-1",
                *[house[f] for f in contract.FEATURES],
                float(price),
                "onnxruntime",
                200,
                3.5,
            )
        )
    for n, chunk in enumerate(np.array_split(np.arange(len(rows)), flushes)):
        part = [rows[i] for i in chunk]
        day = datetime.fromtimestamp(part[0][1], UTC).date().isoformat()
        key = prediction_records.object_key(day, version, "rev-1", "inst-a", n)
        store.write_bytes(key, prediction_records.encode(part))


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def store(home) -> LocalStore:
    return LocalStore(home / "artifacts")


def run(home: Path, store: LocalStore, **kwargs):
    return monitor.run(settings_for(home), store, WINDOW, now=NOW, track=False, **kwargs)


def test_an_unshifted_window_reports_no_drift_with_an_entry_per_column(
    home, store, reference, halves
):
    _, held_out = halves
    put_profile(store, "1", reference)
    put_log(store, held_out.iloc[:1500], "1", WINDOW.since + timedelta(hours=1))
    _, key = run(home, store)
    assert key == f"reports/monitor/{WINDOW.name}.json"
    written = json.loads(store.read_bytes(key))
    (version,) = written["versions"]
    assert version["model_version"] == "1"
    assert version["status"] == "no drift"
    assert version["rows"] == 1500
    entries = {c["feature"]: c for c in version["columns"]}
    assert set(entries) == {*contract.FEATURES, "price"}
    for entry in entries.values():
        assert {"statistic", "value", "threshold", "drift"} <= set(entry)
        assert entry["drift"] is False
    assert entries["median_income"]["statistic"] == "wasserstein_distance_norm"
    assert entries["ocean_proximity"]["statistic"] == "jensenshannon_distance"
    assert store.exists(f"reports/monitor/{WINDOW.name}.md")
    assert written["plots"] == []


def test_a_shifted_input_drifts_the_window_with_a_plot_of_it(home, store, reference, halves):
    _, held_out = halves
    put_profile(store, "1", reference)
    houses = held_out.iloc[:1000].copy()
    houses["median_income"] += 0.5 * houses["median_income"].std()
    put_log(store, houses, "1", WINDOW.since + timedelta(hours=2))
    report, key = run(home, store)
    assert report.drifted
    written = json.loads(store.read_bytes(key))
    entries = {c["feature"]: c for c in written["versions"][0]["columns"]}
    assert entries["median_income"]["drift"] is True
    assert entries["price"]["drift"] is True
    plot = f"reports/monitor/{WINDOW.name}/v1-median_income.png"
    assert plot in written["plots"]
    assert store.read_bytes(plot).startswith(b"\x89PNG")
    markdown = store.read_bytes(f"reports/monitor/{WINDOW.name}.md").decode()
    assert "DRIFT" in markdown
    assert "median_income (top)" in markdown


def test_champion_and_canary_are_judged_apart(home, store, reference, halves):
    _, held_out = halves
    put_profile(store, "1", reference)
    put_profile(store, "2", reference)
    put_log(store, held_out.iloc[:1000], "1", WINDOW.since + timedelta(hours=1))
    inland = held_out.iloc[1000:1300].copy()
    inland[contract.CATEGORICAL] = "INLAND"
    put_log(store, inland, "2", WINDOW.since + timedelta(hours=1))
    report, _ = run(home, store)
    by_version = {v.model_version: v for v in report.versions}
    assert by_version["1"].status == "no drift"
    assert by_version["2"].status == "drift"
    assert "ocean_proximity" in by_version["2"].reason
    only, _ = monitor.run(
        settings_for(home), store, WINDOW, model_version="2", now=NOW, track=False, dry_run=True
    )
    assert [v.model_version for v in only.versions] == ["2"]


def test_a_window_under_the_minimum_is_not_enough_data(home, store, reference, halves):
    _, held_out = halves
    put_profile(store, "1", reference)
    houses = held_out.iloc[:120].copy()
    houses["median_income"] += 2.0
    put_log(store, houses, "1", WINDOW.since + timedelta(hours=1))
    report, _ = run(home, store)
    assert report.versions[0].status == "not enough data"
    assert not report.drifted


def test_a_dry_run_writes_nothing(home, store, reference, halves):
    _, held_out = halves
    put_profile(store, "1", reference)
    put_log(store, held_out.iloc[:500], "1", WINDOW.since + timedelta(hours=1))
    report, key = run(home, store, dry_run=True)
    assert key is None
    assert report.versions[0].rows == 500
    assert store.list("reports/") == []


def test_a_failure_while_publishing_leaves_no_report(home, store, reference, halves, monkeypatch):
    _, held_out = halves
    put_profile(store, "1", reference)
    houses = held_out.iloc[:1000].copy()
    houses["median_income"] += 3.0
    put_log(store, houses, "1", WINDOW.since + timedelta(hours=1))

    def unreachable(*args, **kwargs):
        raise ConnectionError("tracking server unreachable")

    monkeypatch.setattr(monitor, "tracked", unreachable)
    with pytest.raises(ConnectionError):
        monitor.run(settings_for(home), store, WINDOW, now=NOW, track=True)
    assert store.list("reports/") == []


def test_the_run_is_tracked_in_mlflows_monitoring_experiment_and_wandb(
    home, store, reference, halves
):
    import mlflow

    _, held_out = halves
    put_profile(store, "1", reference)
    houses = held_out.iloc[:1000].copy()
    houses["median_income"] += 0.5 * houses["median_income"].std()
    put_log(store, houses, "1", WINDOW.since + timedelta(hours=1))
    settings = settings_for(home)
    report, _ = monitor.run(settings, store, WINDOW, now=NOW, track=True)
    client = mlflow.MlflowClient(settings.mlflow_uri)
    experiment = client.get_experiment_by_name("monitoring")
    assert experiment is not None
    (tracked,) = client.search_runs([experiment.experiment_id])
    drifted = next(c for c in report.versions[0].columns if c.feature == "median_income")
    assert tracked.data.metrics["v1.median_income.value"] == pytest.approx(drifted.value)
    assert tracked.data.metrics["v1.drift"] == 1.0
    artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id)}
    assert {"monitor_report.json", "v1-median_income.png"} <= artifacts
    assert list((home / "wandb").glob("offline-run-*"))


def cli(home: Path) -> list[str]:
    return ["monitor", "--since", WINDOW.since.isoformat(), "--until", WINDOW.until.isoformat()]


@pytest.fixture
def env(home, monkeypatch):
    monkeypatch.setenv("HOUSING_MLOPS_HOME", str(home))
    monkeypatch.setenv("WANDB_MODE", "disabled")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_a_window_without_log_is_one_line_and_fails(home, store, env, capsys):
    assert main(cli(home)) == 1
    err = one_line_error(capsys)
    assert "no prediction log" in err
    assert "--window" in err
    assert store.list("reports/") == []


def test_a_corrupt_log_object_is_named_and_fails(home, store, reference, halves, env, capsys):
    _, held_out = halves
    put_profile(store, "1", reference)
    put_log(store, held_out.iloc[:300], "1", WINDOW.since + timedelta(hours=1))
    key = store.list(prediction_records.PREFIX)[0]
    store.write_bytes(key, b"PAR1 this is not parquet")
    assert main(cli(home)) == 1
    assert key in one_line_error(capsys)
    assert store.list("reports/") == []


def test_a_version_without_profile_names_the_backfill_and_fails(
    home, store, reference, halves, env, capsys
):
    _, held_out = halves
    put_profile(store, "1", reference)
    put_log(store, held_out.iloc[:300], "1", WINDOW.since + timedelta(hours=1))
    put_log(store, held_out.iloc[300:600], "7", WINDOW.since + timedelta(hours=1))
    assert main(cli(home)) == 1
    assert "python -m pipeline profile --version 7" in one_line_error(capsys)
    assert store.list("reports/") == []


def test_the_cli_writes_the_report_and_says_where(home, store, reference, halves, env, capsys):
    _, held_out = halves
    put_profile(store, "1", reference)
    put_log(store, held_out.iloc[:300], "1", WINDOW.since + timedelta(hours=1))
    assert main(cli(home)) == 0
    out = capsys.readouterr().out
    assert "version 1: no drift (300 rows)" in out
    assert store.exists(f"reports/monitor/{WINDOW.name}.json")


@pytest.mark.parametrize(("window", "hours"), [("24h", 24), ("90m", 1.5), ("2d", 48), ("6", 6)])
def test_window_lengths_read_as_durations(window, hours):
    w = monitor.resolve_window(settings_for(Path("/nonexistent")).monitor, NOW, window=window)
    assert w.until == NOW
    assert w.until - w.since == timedelta(hours=hours)


def test_a_bad_window_is_refused_with_the_fix():
    config = settings_for(Path("/nonexistent")).monitor
    with pytest.raises(monitor.MonitorError, match="24h"):
        monitor.resolve_window(config, NOW, window="yesterday")
    with pytest.raises(monitor.MonitorError, match="not both"):
        monitor.resolve_window(config, NOW, window="24h", since="2026-11-29T00:00Z")
    with pytest.raises(monitor.MonitorError, match="empty"):
        monitor.resolve_window(config, NOW, since="2026-12-01T00:00Z")


def test_what_runs_after_the_report_is_computed_sees_it_before_anything_is_written(
    home, store, reference, halves
):
    _, held_out = halves
    put_profile(store, "1", reference)
    put_log(store, held_out.iloc[:400], "1", WINDOW.since + timedelta(hours=1))
    seen: list[monitor.MonitorReport] = []

    def after(report: monitor.MonitorReport) -> monitor.MonitorReport:
        assert store.list("reports/") == []
        seen.append(report)
        return report

    report, key = run(home, store, after_report=after)
    assert seen == [msgspec_free(report)]
    assert key is not None
    assert store.exists(key)


def msgspec_free(report: monitor.MonitorReport) -> monitor.MonitorReport:
    """The report as computed: publishing adds only its plots and compactions."""
    import msgspec

    return msgspec.structs.replace(report, plots=[], compacted=[])


def test_an_input_missing_from_every_logged_house_is_drift_with_a_null_value(
    home, store, reference, halves
):
    _, held_out = halves
    put_profile(store, "1", reference)
    houses = held_out.iloc[:500].copy()
    houses["total_bedrooms"] = None
    put_log(store, houses, "1", WINDOW.since + timedelta(hours=1))
    _, key = run(home, store)
    entries = {c["feature"]: c for c in json.loads(store.read_bytes(key))["versions"][0]["columns"]}
    assert entries["total_bedrooms"]["value"] is None
    assert entries["total_bedrooms"]["drift"] is True
    assert entries["total_bedrooms"]["current_rows"] == 0


class RecordingStarter:
    """Starts nothing; records what the trigger asked to start."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []

    def running(self) -> bool:
        return False

    def start(self, source: str, sha: str):
        from pipeline.monitoring.retrain_trigger import Started

        self.started.append((source, sha))
        return Started(how="test", ref=f"retrain {len(self.started)}")


def test_two_drifted_windows_of_the_champion_start_one_retrain_with_realised_error_reported(
    home, store, reference, halves, tmp_path
):
    """The loop closed: the champion's drifted windows reach the trigger through the report,
    which carries the decision and each version's realised error beside its test figures."""
    from pipeline.monitoring import feedback

    _, held_out = halves
    source = tmp_path / "refreshed.csv"
    source.write_text("a,b\n1,2\n")
    settings = load_settings(
        None, {"HOUSING_MLOPS_HOME": str(home), "MONITOR_RETRAIN_SOURCE": str(source)}
    )
    put_profile(store, "1", reference)
    starter = RecordingStarter()
    shifted = held_out.copy()
    shifted["median_income"] += 0.5 * shifted["median_income"].std()
    decisions = []
    for day in range(3):
        window = monitor.Window(
            since=WINDOW.since + timedelta(days=day), until=NOW + timedelta(days=day)
        )
        houses = shifted.iloc[day * 1000 : (day + 1) * 1000]
        put_log(store, houses, "1", window.since + timedelta(hours=1))
        after = monitor.closing_the_loop(
            settings, store, window, window.until, dry_run=False, starter=starter,
            champion="1", test_side=lambda v: {"rmse": 48_000.0, "mape": 0.18},
        )  # fmt: skip
        report, key = monitor.run(
            settings, store, window, now=window.until, track=False, after_report=after
        )
        assert report.drifted
        decisions.append(report.retrain)
        written = json.loads(store.read_bytes(key))
        assert written["serving_version"] == "1"
        assert written["retrain"]["start"] is (day == 1)
        (realised,) = written["realised"]
        assert realised["realised"] is None  # no sold prices fed yet
        assert realised["test"] == {"rmse": 48_000.0, "mape": 0.18}
    assert [d.start for d in decisions] == [False, True, False]
    assert starter.started == [(str(source), feedback_sha(source))]
    assert "Retrain trigger" in store.read_bytes(f"reports/monitor/{window.name}.md").decode()
    del feedback


def feedback_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
