"""`nox -s stack` end to end: MLflow, the champion, the service and the UI on loopback; one
prediction through the service; SIGINT stops everything, leaving no process behind."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import httpx
import pytest

from model_runtime.contract import EXAMPLE_HOUSE
from tests.helpers import free_port, log_says, running, wait_until
from tests.integration.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]


def processes_with(home: Path) -> list[int]:
    """PIDs whose environment points at this home: what the stack started, at any depth."""
    marker = f"HOUSING_MLOPS_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0"):
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("registered", [True, False], ids=["champion-registered", "fresh-home"])
def test_the_whole_platform_starts_serves_and_stops(registered, model_home, sample_csv, tmp_path):
    home = tmp_path / "home"
    pipeline_args: list[str] = []
    if registered:
        shutil.copytree(model_home, home)
    else:
        home.mkdir()
        (home / "tiny.toml").write_text(TINY)
        pipeline_args = ["--config", str(home / "tiny.toml"), "--source", str(sample_csv)]
    ports = {"mlflow": free_port(), "api": free_port(), "ui": free_port()}
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["HOUSING_MLOPS_HOME"] = str(home)
    log = tmp_path / "stack.log"
    args = [f"--{part}-port={port}" for part, port in ports.items()]
    argv = [sys.executable, "-m", "local_platform.stack", *args, *pipeline_args]
    try:
        with running(argv, log=log, env=env, cwd=ROOT) as stack:
            wait_until(
                log_says(log, "ready: Ctrl-C stops all three"),
                "the stack ready",
                600,  # a fresh home trains first: minutes on a busy machine
                process=stack,
                log=log,
            )
            output = log.read_text()
            for part, port in ports.items():
                assert f"http://127.0.0.1:{port}" in output, part
            if registered:
                assert "champion found in the registry" in output
            else:
                assert "no champion registered: training one" in output

            api = f"http://127.0.0.1:{ports['api']}"
            answer = httpx.post(
                api + "/api/v1/predict", json={"instances": [EXAMPLE_HOUSE]}, timeout=30
            )
            assert answer.status_code == 200
            assert answer.json()["predictions"][0]["predicted_price"] > 0
            assert (
                httpx.get(api + "/api/v1/model", timeout=10)
                .json()["source"]
                .startswith("mlflow:models:/")
            ), "served through the MLflow server"
            ui = httpx.get(f"http://127.0.0.1:{ports['ui']}/_stcore/health", timeout=10)
            assert ui.text == "ok"
            assert processes_with(home), "the stack's processes are found by their environment"

            stack.send_signal(signal.SIGINT)
            assert stack.wait(timeout=60) == 0
            assert "stopped" in log.read_text()
            # Exited processes may take a moment to be reaped.
            wait_until(lambda: not processes_with(home), "no process left behind", 30, log=log)
    finally:
        for pid in processes_with(home):
            os.kill(pid, signal.SIGKILL)
