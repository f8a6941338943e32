"""The loop from serving back to training, end to end on loopback: `nox -s stack` serves and logs
every priced house; `python -m pipeline monitor` (what `nox -s monitor` runs) finds no drift in
unshifted traffic, flags `median_income` when incomes shift, starts one retrain on a shifted
labelled source after two drifted windows in a row, and no second one on the third."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest

from housing_platform.artifact_store import LocalStore
from model_runtime import prediction_records
from model_runtime.contract import FEATURES
from pipeline import run_lock
from tests.helpers import free_port, log_says, running, wait_until
from tests.integration.test_local_stack import processes_with

ROOT = Path(__file__).resolve().parents[2]
HOUSES_PER_WINDOW = 1000


def price(api: str, houses: pd.DataFrame) -> None:
    """The houses through the service, 100 to a request, as a client would send them."""
    records = houses[list(FEATURES)].astype(object).where(houses[list(FEATURES)].notna(), None)
    rows = records.to_dict("records")
    for start in range(0, len(rows), 100):
        answer = httpx.post(
            api + "/api/v1/predict", json={"instances": rows[start : start + 100]}, timeout=60
        )
        assert answer.status_code == 200, answer.text


def logged(home: Path, since: datetime, until: datetime) -> int:
    return len(prediction_records.read_window(LocalStore(home / "artifacts"), since, until))


def monitor(home: Path, since: datetime, until: datetime, env: dict[str, str]) -> str:
    """`python -m pipeline monitor` over [since, until); its console output."""
    argv = [sys.executable, "-m", "pipeline", "monitor", "--config", str(home / "tiny.toml"),
            "--since", since.isoformat(), "--until", until.isoformat()]  # fmt: skip
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def versions(home: Path, env: dict[str, str]) -> dict[str, list[str]]:
    """Registered versions of the model and their aliases, read as a user would."""
    script = (
        "import json, mlflow\n"
        f"mlflow.set_tracking_uri('sqlite:///{home / 'mlflow.db'}')\n"
        "c = mlflow.MlflowClient()\n"
        "print(json.dumps({v.version: list(c.get_model_version('housing-price', v.version)"
        ".aliases) for v in c.search_model_versions(\"name='housing-price'\")}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    import json

    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.timeout(2400)  # a stack, four monitor runs and a whole retrain, on a busy machine
def test_drift_in_served_traffic_starts_one_retrain(model_home, housing, housing_sample, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(model_home, home)
    unshifted = housing.sample(n=4 * HOUSES_PER_WINDOW, random_state=11).reset_index(drop=True)
    shifted = unshifted.copy()
    shift = 0.5 * housing["median_income"].std()
    # Within the contract's range (the service refuses incomes above it, as it should).
    shifted["median_income"] = (shifted["median_income"] + shift).clip(upper=15.0)
    # The labelled data a retrain needs: the sample the champion learned from, incomes shifted.
    source = tmp_path / "refreshed.csv"
    relabelled = housing_sample.copy()
    relabelled["median_income"] = (relabelled["median_income"] + shift).clip(upper=15.0)
    relabelled.to_csv(source, index=False)

    ports = {"mlflow": free_port(), "api": free_port(), "ui": free_port()}
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {
        "HOUSING_MLOPS_HOME": str(home),
        "PREDICTION_LOG_INTERVAL_SECONDS": "1",  # so each window's houses are written at once
        "MONITOR_RETRAIN_SOURCE": str(source),
        "WANDB_MODE": "disabled",
    }
    log = tmp_path / "stack.log"
    argv = [sys.executable, "-m", "local_platform.stack",
            *[f"--{part}-port={port}" for part, port in ports.items()]]  # fmt: skip
    api = f"http://127.0.0.1:{ports['api']}"
    try:
        with running(argv, log=log, env=env, cwd=ROOT) as stack:
            wait_until(log_says(log, "ready: Ctrl-C stops all three"), "the stack ready", 600,
                       process=stack, log=log)  # fmt: skip
            before = versions(home, env)
            outputs = []
            windows = [unshifted.iloc[:HOUSES_PER_WINDOW]] + [
                shifted.iloc[i * HOUSES_PER_WINDOW : (i + 1) * HOUSES_PER_WINDOW] for i in (1, 2, 3)
            ]
            for n, houses in enumerate(windows):
                since = datetime.now(UTC)
                price(api, houses)
                # A house is logged as its answer goes out, so its time may be a moment after
                # the client has it: the window ends once all of them are in the log. A retrain
                # shares the machine during the last window.
                later = since + timedelta(hours=1)
                wait_until(
                    lambda s=since, u=later: logged(home, s, u) == HOUSES_PER_WINDOW,
                    f"window {n + 1}'s houses in the prediction log",
                    300,
                    log=log,
                )
                until = datetime.now(UTC)
                outputs.append(monitor(home, since, until, env))
                if n == 2:
                    assert run_lock.is_held(home) or len(versions(home, env)) > len(before)
            calm, first, second, third = outputs
            assert "no drift" in calm
            assert "no retrain" in calm
            for drifted in (first, second, third):
                assert ": drift (" in drifted
                assert "drifted: " in drifted
                assert "median_income" in drifted.split("drifted: ", 1)[1]
            assert "no retrain" in first
            assert "retrain started" in second
            assert "no retrain" in third
            # The retrain trains on the shifted source and registers a new version.
            wait_until(lambda: not run_lock.is_held(home), "the retrain to end", 1500, log=log)
            after = versions(home, env)
            assert len(after) == len(before) + 1, (before, after)
            new = max(after, key=int)
            assert {"challenger", "champion"} & set(after[new]), after
            retrains = LocalStore(home / "artifacts").list("monitor/retrains/")
            assert len(retrains) == 1
            stack.send_signal(signal.SIGINT)
            assert stack.wait(timeout=60) == 0
    finally:
        for pid in processes_with(home):
            os.kill(pid, signal.SIGKILL)
