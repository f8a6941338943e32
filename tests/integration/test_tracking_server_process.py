"""MLflow as deployed, on the local stand-in for Cloud SQL: the tracking server entrypoint (the
image's CMD, run outside Docker) on a throwaway PostgreSQL, the pipeline's register step logging
to it, and the inference service loading the champion from it."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model_runtime.contract import EXAMPLE_HOUSE
from pipeline.cli import main as pipeline_main
from tests.helpers import Server, serve_module


def start_tracking(
    base: str, artifacts: Path, log: Path
) -> contextlib.AbstractContextManager[Server]:
    env = {
        "BACKEND_STORE_URI": f"{base}/mlflow",
        "DB_PASSWORD": "not-in-any-url",  # trust auth accepts it; the URL built must be valid
        "ARTIFACTS_DESTINATION": str(artifacts),
        "ALLOWED_HOSTS": "127.0.0.1:*,localhost:*",
    }
    return serve_module("tracking_server.server", env, log, "/health", timeout=150)


@pytest.fixture(scope="module")
def tracking(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("tracking")
    with start_tracking(postgres_server, root / "artifacts", root / "mlflow.log") as server:
        yield server


def test_the_host_check_stays_on(tracking):
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(tracking.url + search, timeout=10).status_code == 200
    forged = httpx.get(tracking.url + search, headers={"Host": "evil.example"}, timeout=10)
    assert forged.status_code == 403


def test_register_then_serve_the_champion_through_the_server(
    tracking, model_home, tmp_path, start_service, monkeypatch
):
    import mlflow

    home = tmp_path / "home"
    shutil.copytree(model_home, home)
    monkeypatch.setenv("HOUSING_MLOPS_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.url)
    config = str(home / "tiny.toml")
    assert pipeline_main(["run", "--config", config, "--from", "register"]) == 0
    assert "password" not in tracking.logs().lower()

    client = mlflow.MlflowClient(tracking_uri=tracking.url)
    champion = client.get_model_version_by_alias("housing-price", "champion")
    assert champion.version == "1"
    assert champion.run_id

    empty_home = tmp_path / "empty"
    empty_home.mkdir()
    env = {"MLFLOW_TRACKING_URI": tracking.url, "HOUSING_MLOPS_HOME": str(empty_home)}
    with start_service(env) as svc, svc.client() as http:
        info = http.get("/api/v1/model").json()
        assert info["source"].startswith("mlflow:")
        assert (info["version"], info["alias"]) == ("1", "champion")
        # The fast form comes through the server's artifact proxy too.
        assert (info["runtime"], info["warnings"]) == ("onnxruntime", [])
        answer = http.post("/api/v1/predict", json={"instances": [EXAMPLE_HOUSE]})
        assert answer.status_code == 200
        assert answer.headers["X-Model-Version"] == "1"


def test_a_restart_on_an_existing_schema_starts_cleanly(tracking, postgres_server, tmp_path):
    """The second container on the same database: migrations are a no-op, not a failure, and
    it sees what the first stored."""
    name = f"restart-{tmp_path.name}"
    created = httpx.post(
        tracking.url + "/api/2.0/mlflow/experiments/create", json={"name": name}, timeout=10
    )
    assert created.status_code == 200, created.text
    with start_tracking(postgres_server, tmp_path / "a", tmp_path / "again.log") as again:
        found = httpx.get(
            again.url + "/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": name},
            timeout=10,
        )
        assert found.status_code == 200, found.text
        assert found.json()["experiment"]["experiment_id"] == created.json()["experiment_id"]
