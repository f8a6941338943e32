"""Suite-wide fixtures. The environment lines run before any test module imports a client, so
nothing here can reach Google's metadata server, telemetry endpoints or W&B's cloud."""

from __future__ import annotations

import os

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

import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from local_platform import postgres as local_postgres
from pipeline.settings import IngestConfig
from pipeline.steps import ingest
from tests.helpers import accepts_connections, free_port, running, wait_until


def _forget_tracking_uri() -> None:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri() -> Iterator[None]:
    """mlflow.set_tracking_uri keeps the URI in a module global and exports it as
    MLFLOW_TRACKING_URI: a test, or a fixture of a wider scope (the service loading its model
    in-process), that points MLflow somewhere leaves it pointing there for no other test. Not
    monkeypatch: it would restore the value a wider fixture had set."""
    _forget_tracking_uri()
    yield
    _forget_tracking_uri()


@pytest.fixture(autouse=True)
def _main_module_kept() -> Iterator[None]:
    """Streamlit's in-process script runner (AppTest) installs the app as ``__main__`` and never
    puts pytest's back: a process started later with multiprocessing's spawn (the parallel tune
    workers) then runs the UI's script as its own main before its target, and crashed, or hung
    the suite for 900 s in CI. Each test gets back the ``__main__`` it started with."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


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
def gcs_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A google-cloud-storage client talking to gcp-storage-emulator on loopback."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    port = free_port()
    exe = Path(sys.executable).parent / "gcp-storage-emulator"
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    argv = [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"]
    with running(argv, log=log) as proc:
        wait_until(lambda: accepts_connections(port), "the storage emulator", process=proc, log=log)
        yield storage.Client(
            project="test",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": f"http://127.0.0.1:{port}"},
        )


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
