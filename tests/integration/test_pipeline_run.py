"""The whole pipeline, end to end, on a sample: real MLflow (SQLite) store, W&B offline."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from model_runtime import contract
from pipeline.cli import main

SMALL = """
[features]
cluster_candidates = [0, 8]
[select]
families = ["ridge", "hist_gradient_boosting"]
cv_folds = 3
[tune]
n_trials = {n_trials}
# Every trial runs, however busy the machine: the tests count them.
timeout_s = 3600
cv_folds = 2
[evaluate]
permutation_repeats = 1
"""


def _config(path: Path, n_trials: int = 3) -> Path:
    path.write_text(SMALL.format(n_trials=n_trials))
    return path


def _statuses(out: str) -> dict[str, str]:
    table = out.split("step       status")[1]
    return {
        line.split()[0]: line.split()[1]
        for line in table.splitlines()[2:]
        if line and not line.startswith(("-", "total"))
    }


class FirstRun(NamedTuple):
    home: Path
    config: Path
    out: str


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, sample_csv) -> FirstRun:
    """One full run into a fresh home. Tests only read it; a test that changes a home gets its
    own copy (``home``), so no result depends on the order tests run in."""
    home = tmp_path_factory.mktemp("home")
    config = _config(home / "small.toml")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("HOUSING_MLOPS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main(["run", "--config", str(config), "--source", str(sample_csv)]) == 0
    return FirstRun(home, config, out.getvalue())


def copy_home(source: Path, target: Path) -> Path:
    """A copy of a pipeline home that stands alone: MLflow's SQLite store records absolute
    artifact paths, rewritten here to the copy's."""
    shutil.copytree(source, target)
    with sqlite3.connect(target / "mlflow.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for column in db.execute(f"PRAGMA table_info('{table}')").fetchall():
                if "CHAR" in column[2].upper() or "TEXT" in column[2].upper():
                    db.execute(
                        f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?)',
                        (str(source), str(target)),
                    )
    return target


def snapshot(home: Path) -> dict[str, tuple[int, int]]:
    """Every file of a home with its size and modification time, but W&B's own debug logs: its
    service process outlives the run and logs every later run of this process there."""
    return {
        str(path.relative_to(home)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(home.rglob("*"))
        if path.is_file() and not path.match("wandb/*/logs/*")
    }


@pytest.fixture
def unchanged(first_run) -> Iterator[FirstRun]:
    """The first run, which the test must leave as it found it (checked after the test)."""
    before = snapshot(first_run.home)
    yield first_run
    assert snapshot(first_run.home) == before, "a test changed the shared first run's home"


@pytest.fixture
def home(unchanged, tmp_path, monkeypatch) -> Path:
    """This test's own copy of the first run's home, as HOUSING_MLOPS_HOME: whatever the test
    changes, the first run's home (which other tests read) stays as it was."""
    copied = copy_home(unchanged.home, tmp_path / "home")
    monkeypatch.setenv("HOUSING_MLOPS_HOME", str(copied))
    return copied


@pytest.fixture
def trained(unchanged) -> Path:
    """The first run's home, to read only."""
    return unchanged.home


def test_first_run_trains_registers_and_promotes(unchanged):
    home = unchanged.home
    assert set(_statuses(unchanged.out).values()) == {"ran"}
    for key in (
        "data/raw.parquet",
        "reports/evaluate.json",
        "reports/residuals.png",
        "decisions/register.json",
    ):
        assert (home / "artifacts" / key).is_file(), key
    assert (home / "artifacts/models/housing-price/champion/MLmodel").is_file()
    assert (home / "artifacts/models/housing-price/champion/manifest.json").is_file()
    assert list((home / "wandb").glob("offline-run-*")), "W&B offline run missing"


def test_champion_loads_with_pyfunc_and_predicts_raw_rows(home, housing_sample):
    """On a copy: loading a registered model writes into its artifacts (registered_model_meta)."""
    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/housing-price@champion")
    rows = housing_sample[list(contract.FEATURES)].head(20).copy()
    rows.loc[rows.index[0], "total_bedrooms"] = np.nan
    predictions = np.asarray(model.predict(rows))
    assert predictions.shape == (20,)
    assert np.isfinite(predictions).all()
    version = mlflow.MlflowClient().get_model_version_by_alias("housing-price", "champion")
    assert version.tags["wandb_run"].startswith("housing-mlops/")
    assert {"git_sha", "data_sha256", "test_rmse", "test_r2", "test_mape", "wandb_run"} <= set(
        version.tags
    )


def test_every_step_and_trial_is_a_nested_mlflow_run(trained):
    import mlflow

    home = trained
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["housing-price"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    names = {r.info.run_name for r in runs}
    assert {
        "ingest",
        "validate",
        "split",
        "impute",
        "features",
        "select",
        "tune",
        "evaluate",
        "register",
    } <= names
    assert {"trial-0", "trial-1", "trial-2"} <= names


def test_second_run_skips_everything(home, first_run, sample_csv, capsys):
    config = home / first_run.config.name  # the copy's
    assert main(["run", "--config", str(config), "--source", str(sample_csv)]) == 0
    assert set(_statuses(capsys.readouterr().out).values()) == {"cached"}


def test_changing_tune_settings_reruns_tune_onward(home, sample_csv, capsys):
    config = _config(home / "more.toml", n_trials=4)
    assert main(["run", "--config", str(config), "--source", str(sample_csv)]) == 0
    statuses = _statuses(capsys.readouterr().out)
    assert [s for s, v in statuses.items() if v == "ran"] == ["tune", "evaluate", "register"]
    assert (home / "artifacts/models/housing-price/2/MLmodel").is_file()


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOUSING_MLOPS_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--steps", "ingest,validate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("make_source", "message"),
    [
        (lambda d: d / "nope.csv", "does not exist"),
        (
            lambda d: (d / "bad.csv").write_text('a,b\n1,2\n3,4,5\n"x\n') and d / "bad.csv",
            "is not a valid csv",
        ),
        (
            lambda d: (d / "cols.csv").write_text("longitude,latitude\n1,2\n") and d / "cols.csv",
            "lacks column",
        ),
        (lambda d: "http://127.0.0.1:9/housing.csv", "cannot download"),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, make_source, message):
    source = make_source(tmp_path)
    result = _cli(tmp_path / "home", "--source", str(source), "--sha256", "")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("error: ingest: ")
    assert message in result.stderr
    assert not (tmp_path / "home/artifacts/data").exists()


def test_wrong_checksum_and_failed_validation_leave_no_artifact(
    tmp_path, sample_csv, housing_sample
):
    result = _cli(tmp_path / "h1", "--source", str(sample_csv), "--sha256", "0" * 64)
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr
    assert not (tmp_path / "h1/artifacts/data").exists()

    bad = housing_sample.drop(columns=["row_id"]).copy()
    bad.loc[: len(bad) // 10, "ocean_proximity"] = "MARS"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    result = _cli(tmp_path / "h2", "--source", str(tmp_path / "bad.csv"))
    assert result.returncode == 1
    assert "validate.max_bad_share" in result.stderr
    assert "ocean_proximity: unknown category" in result.stderr
    artifacts = tmp_path / "h2/artifacts"
    assert (artifacts / "data/raw.parquet").is_file()  # ingest succeeded and committed
    assert not (artifacts / "data/validated.parquet").exists()
    assert not (artifacts / "data/quarantine.parquet").exists()
    assert not (artifacts / "state/validate.json").exists()


def test_promote_by_hand_moves_the_alias_and_the_export(home, sample_csv, capsys):
    import json

    import mlflow

    config = _config(home / "more.toml", n_trials=4)
    assert main(["run", "--config", str(config), "--source", str(sample_csv)]) == 0
    assert main(["promote", "--version", "1"]) == 0
    assert "version 1 is now @champion" in capsys.readouterr().out
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    champion = mlflow.MlflowClient().get_model_version_by_alias("housing-price", "champion")
    assert str(champion.version) == "1"
    exported = json.loads(
        (home / "artifacts/models/housing-price/champion/registry.json").read_text()
    )
    assert exported["version"] == "1"
    assert exported["tags"]["promotion"] == "promoted by hand"
    assert (home / "artifacts/models/housing-price/champion/MLmodel").is_file()
