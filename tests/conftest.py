"""Suite-wide fixtures. The environment lines run before any test module imports a client, so
nothing here can reach Google's metadata server, telemetry endpoints or W&B's cloud."""

from __future__ import annotations

import contextlib
import os
import signal

os.environ.update(
    {
        "NO_GCE_CHECK": "True",
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "WANDB_MODE": "offline",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
)
os.environ.pop("WANDB_API_KEY", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from local_platform import postgres as local_postgres
from pipeline.settings import IngestConfig
from pipeline.steps import ingest

free_port = local_postgres.free_port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen[bytes], group: bool = False) -> None:
    """SIGTERM, then SIGKILL after 10 s; with ``group`` (a process started in its own session,
    a server that forks workers) the whole group is killed after, so no child outlives it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; no test may inherit another's."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def housing() -> pd.DataFrame:
    """The full data set as ingest parses it from the packaged copy."""
    frame, _ = ingest.load(IngestConfig())
    return frame


@pytest.fixture(scope="session")
def housing_sample(housing: pd.DataFrame) -> pd.DataFrame:
    """3,000 rows, enough for every step to behave as on the full set, in a fraction of the time."""
    return housing.sample(3000, random_state=0).sort_values("row_id").reset_index(drop=True)


@pytest.fixture(scope="session")
def sample_csv(housing_sample: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "housing_sample.csv"
    housing_sample.drop(columns=["row_id"]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def gcs_client() -> Iterator[object]:
    """A google-cloud-storage client talking to gcp-storage-emulator on loopback."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    port = free_port()
    exe = Path(sys.executable).parent / "gcp-storage-emulator"
    proc = subprocess.Popen(
        [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield storage.Client(
            project="test",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": f"http://127.0.0.1:{port}"},
        )
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """One throwaway PostgreSQL cluster for the session: ``…@127.0.0.1:<port>``."""
    try:
        with local_postgres.cluster(("mlflow", "optuna")) as base:
            yield base
    except local_postgres.PostgresUnavailableError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def postgres_url(postgres_server: str) -> str:
    """The ``optuna`` database of the throwaway cluster."""
    return f"{postgres_server}/optuna"
