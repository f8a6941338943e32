"""Fixtures that start real servers: a trained model home and the inference service process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.cli import main as pipeline_main
from tests.conftest import free_port, stop

TINY = """
[impute]
methods = ["knn", "median"]
[features]
cluster_candidates = [8]
[select]
families = ["hist_gradient_boosting"]
cv_folds = 2
[tune]
n_trials = 2
cv_folds = 2
[evaluate]
permutation_repeats = 1
"""


@pytest.fixture(scope="session")
def model_home(tmp_path_factory: pytest.TempPathFactory, sample_csv: Path) -> Path:
    """A pipeline home with a champion registered in its SQLite MLflow store and exported."""
    home = tmp_path_factory.mktemp("served")
    config = home / "tiny.toml"
    config.write_text(TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOUSING_MLOPS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert pipeline_main(["run", "--config", str(config), "--source", str(sample_csv)]) == 0
    return home


class Service:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path):
        self.proc = proc
        self.url = url
        self.log = log

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def logs(self) -> str:
        return self.log.read_text()


@contextlib.contextmanager
def run_server(
    module: str,
    env: dict[str, str],
    log: Path,
    ready_path: str,
    timeout: float = 90,
    python: str = sys.executable,
) -> Iterator[Service]:
    """``python -m <module>`` on a free loopback port (the image's CMD, outside Docker), until
    ``ready_path`` answers 200; always stopped."""
    port = free_port()
    # mlflow.set_tracking_uri in this process exports MLFLOW_TRACKING_URI; the server must
    # see only what the test gives it.
    inherited = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env = {**inherited, **env, "PORT": str(port), "HOST": "127.0.0.1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [python, "-m", module],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Service(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{module} exited early:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(server.url + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{module} not ready after {timeout} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield server
    finally:
        stop(proc, group=True)


def run_service(
    env: dict[str, str], log: Path, ready: bool = True
) -> contextlib.AbstractContextManager[Service]:
    return run_server("service", env, log, "/ready" if ready else "/health")


@pytest.fixture
def start_service(tmp_path: Path) -> Callable[..., contextlib.AbstractContextManager[Service]]:
    def start(
        env: dict[str, str], ready: bool = True
    ) -> contextlib.AbstractContextManager[Service]:
        return run_service(env, tmp_path / f"service-{time.monotonic_ns()}.log", ready)

    return start


@pytest.fixture(scope="module")
def service(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service serving the champion from the local store, as `nox -s serve` does."""
    log = tmp_path_factory.mktemp("svc") / "service.log"
    with run_service({"HOUSING_MLOPS_HOME": str(model_home)}, log) as svc:
        yield svc
