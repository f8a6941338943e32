"""The inference service with a trained champion. In process (Litestar's TestClient, entering
it runs the lifespan, which loads the model as start-up does) for what the model and its loader
decide; as a real uvicorn process on loopback only for what needs one: concurrent connections
priced in shared model calls, a SIGTERM drain, start-up from the service group's own venv and
the process's JSON log. What the HTTP layer decides alone is in tests/service/test_app.py."""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from model_runtime import contract
from service.app import create_app
from service.settings import from_env
from tests.helpers import free_port, serve_module, wait_until
from tests.service.test_schemas import HOUSE

ROOT = Path(__file__).parents[2]
TRAINING_ONLY = ("streamlit", "pulumi", "wandb", "optuna", "flask", "onnx")


def rows(frame: pd.DataFrame, n: int) -> list[dict]:
    records = frame[list(contract.FEATURES)].head(n).to_dict("records")
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in records
    ]


def champion(model_home):
    """The champion's registry entry and its scikit-learn pipeline."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{model_home / 'mlflow.db'}")
    version = mlflow.MlflowClient().get_model_version_by_alias("housing-price", "champion")
    return version, mlflow.sklearn.load_model(f"models:/housing-price/{version.version}")


#: What ``python -m service`` sets before it loads anything: MLflow fails fast instead of
#: retrying for minutes, so the loader can fall back to the export.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


@contextlib.contextmanager
def in_process(env: dict[str, str]) -> Iterator[TestClient[Litestar]]:
    """The app ``python -m service`` would build from ``env``, in this process; the model is
    loaded (or not) by the lifespan when the client is entered."""
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in FAIL_FAST.items():
                mp.setenv(name, value)
            with TestClient(create_app(from_env(env))) as client:
                yield client
    finally:
        gc.unfreeze()  # the lifespan freezes what start-up made, for a server process's life


@pytest.fixture(scope="module")
def served(model_home) -> Iterator[TestClient[Litestar]]:
    """The champion from the local registry, served in process."""
    with in_process({"HOUSING_MLOPS_HOME": str(model_home)}) as client:
        yield client


def test_predictions_equal_the_models_own(served, model_home, housing_sample):
    houses = rows(housing_sample, 100)
    houses[0]["ocean_proximity"] = houses[0]["ocean_proximity"].lower()
    houses[1]["total_bedrooms"] = None
    response = served.post("/api/v1/predict", json={"instances": houses})
    assert response.status_code == 200
    body = response.json()
    version, model = champion(model_home)
    frame = housing_sample[list(contract.FEATURES)].head(100).copy()
    frame.loc[frame.index[1], "total_bedrooms"] = np.nan
    expected = model.predict(frame)
    got = [p["predicted_price"] for p in body["predictions"]]
    # Served by the fast form, which must agree within its load-time tolerance.
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert body["model"] == {
        "name": "housing-price",
        "version": str(version.version),
        "alias": "champion",
        "run_id": version.run_id,
    }
    assert response.headers["x-model-version"] == str(version.version)


def predictions_counted(client: TestClient[Litestar], version: str) -> float:
    """``housing_predictions_total`` of ``version`` (a counter of the whole process)."""
    samples = [
        sample
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "housing_predictions_total"
        and sample.labels == {"model_version": version}
    ]
    return samples[0].value if samples else 0.0


def test_the_model_page_describes_the_champion_and_its_prices_are_counted(served, model_home):
    version, _ = champion(model_home)
    info = served.get("/api/v1/model").json()
    assert (info["version"], info["alias"]) == (str(version.version), "champion")
    assert info["source"] == "mlflow:models:/housing-price@champion"
    assert (info["runtime"], info["warnings"]) == ("onnxruntime", [])
    assert {"rmse", "r2", "mape"} <= set(info["test_metrics"])
    assert info["test_metrics"]["rmse"] == pytest.approx(float(version.tags["test_rmse"]))
    assert served.get("/ready").json()["detail"] == f"housing-price v{version.version}"
    before = predictions_counted(served, info["version"])
    assert served.post("/api/v1/predict", json={"instances": [HOUSE, HOUSE]}).status_code == 200
    assert predictions_counted(served, info["version"]) == before + 2


def test_concurrent_small_requests_each_get_their_own_prices(service, model_home, housing_sample):
    """Small requests in flight together on real connections are priced in shared model calls;
    each answer must still be its own houses' prices, in order."""
    houses = rows(housing_sample, 60)
    requests = [houses[i : i + n] for i, n in zip(range(0, 60, 3), [1, 2, 3] * 20, strict=False)]

    def ask(instances: list[dict]) -> list[float]:
        answer = httpx.post(service.url + "/api/v1/predict", json={"instances": instances})
        assert answer.status_code == 200
        return [p["predicted_price"] for p in answer.json()["predictions"]]

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, requests))
    _, model = champion(model_home)
    for instances, got in zip(requests, answers, strict=True):
        frame = pd.DataFrame(instances)[list(contract.FEATURES)].astype(
            dict.fromkeys(contract.NUMERIC_FEATURES, float)
        )
        np.testing.assert_allclose(got, model.predict(frame), rtol=1e-5)


def test_the_process_logs_json_lines_and_gauges_its_model(service):
    """What start-up sets (service/__main__.py) and a process holds once: JSON lines Cloud
    Logging reads, on stdout, one per request; the version it loaded, as a gauge."""
    request_id = uuid.uuid4().hex
    answer = httpx.post(
        service.url + "/api/v1/predict",
        json={"instances": [HOUSE, HOUSE]},
        headers={"x-request-id": request_id},
    )
    assert answer.headers["x-request-id"] == request_id

    def logged() -> list[dict]:
        lines = [json.loads(line) for line in service.logs().splitlines() if line[:1] == "{"]
        return [entry for entry in lines if entry.get("request_id") == request_id]

    (entry,) = wait_until(logged, "the request's access log line", log=service.log)
    assert (entry["logger"], entry["severity"]) == ("service.access", "INFO")
    assert entry["httpRequest"]["requestUrl"] == "/api/v1/predict"
    assert entry["httpRequest"]["status"] == 200
    assert entry["batch_size"] == 2
    assert entry["latency_ms"] > 0
    version = answer.headers["x-model-version"]
    metrics = httpx.get(service.url + "/metrics").text
    assert f"housing_model_version {float(version)}" in metrics.splitlines()


def test_falls_back_to_the_export_when_mlflow_is_unreachable(model_home, caplog):
    env = {
        "HOUSING_MLOPS_HOME": str(model_home),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
    }
    with caplog.at_level(logging.WARNING), in_process(env) as client:
        info = client.get("/api/v1/model").json()
        assert info["source"].startswith("export:")
        assert info["version"] == "1"
        assert client.post("/api/v1/predict", json={"instances": [HOUSE]}).status_code == 200
    assert "model source failed" in caplog.messages


def republish(export: Path) -> None:
    """The export folder published again as it now is, manifest included: a version registered
    with these files (the loader refuses files that don't match their manifest)."""
    from housing_platform.artifact_store import LocalStore
    from model_runtime.exports import MANIFEST, publish

    files = [
        (str(path.relative_to(export)), path.read_bytes())
        for path in sorted(export.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    ]
    publish(LocalStore(export), "", files)


def test_a_broken_fast_form_falls_back_to_scikit_learn_and_says_so(model_home, tmp_path, caplog):
    export = tmp_path / "export"
    shutil.copytree(model_home / "artifacts" / "models" / "housing-price" / "champion", export)
    assert (export / "model.onnx").is_file(), "the register step exported the fast form"
    (export / "model.onnx").write_bytes(b"not an onnx graph")
    republish(export)
    env = {
        "HOUSING_MLOPS_HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "MODEL_FALLBACK_URI": str(export),
    }
    with caplog.at_level(logging.WARNING), in_process(env) as client:
        info = client.get("/api/v1/model").json()
        assert info["runtime"] == "scikit-learn"
        (warning,) = info["warnings"]
        assert warning.startswith("fast form not used, serving scikit-learn:")
        assert client.post("/api/v1/predict", json={"instances": [HOUSE]}).status_code == 200
    assert any(m.startswith("fast form not used") for m in caplog.messages)


def _edit_reference(graph_file, edit) -> None:
    import onnx

    from model_runtime import onnx_runtime

    graph = onnx.load(graph_file)
    (entry,) = [e for e in graph.metadata_props if e.key == onnx_runtime.REFERENCE_KEY]
    kept = [e for e in graph.metadata_props if e.key != onnx_runtime.REFERENCE_KEY]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    value = edit(json.loads(entry.value))
    if value is not None:
        graph.metadata_props.add(key=onnx_runtime.REFERENCE_KEY, value=json.dumps(value))
    onnx.save(graph, graph_file)


def _off_by_a_percent(reference: dict) -> dict:
    return {**reference, "prices": [p * 1.01 for p in reference["prices"]]}


@pytest.mark.parametrize(
    ("change", "runtime", "warning"),
    [
        # The graph checks itself against the prices it carries: scikit-learn is never loaded.
        ("no sklearn file", "onnxruntime", None),
        # A graph from before references: checked against scikit-learn on the logged example.
        ("no reference", "onnxruntime", None),
        ("wrong reference", "scikit-learn", "differs from scikit-learn by 0.0099"),
    ],
)
def test_the_fast_form_serves_only_once_it_reproduces_scikit_learn(
    model_home, tmp_path, housing_sample, change, runtime, warning
):
    from model_runtime.loader import from_export
    from service.predictor import Predictor
    from service.schemas import parse_predict_request
    from service.settings import ServiceSettings

    export = tmp_path / "export"
    shutil.copytree(model_home / "artifacts" / "models" / "housing-price" / "champion", export)
    if change == "no sklearn file":
        (export / "model.skops").unlink()
    else:
        edit = (lambda r: None) if change == "no reference" else _off_by_a_percent
        _edit_reference(export / "model.onnx", edit)
    republish(export)
    predictor = Predictor(from_export(ServiceSettings(fallback_uri=str(export))))
    assert predictor.runtime == runtime
    assert (predictor.model is not None) == (change != "no sklearn file")
    if warning is None:
        assert predictor.warnings == []
    else:
        (message,) = predictor.warnings
        assert warning in message
    houses = parse_predict_request(json.dumps({"instances": rows(housing_sample, 3)}).encode(), 10)
    assert all(p > 0 for p in predictor.predict(houses))


def test_the_service_group_alone_serves_the_champion_from_the_local_registry(model_home, tmp_path):
    """What `nox -s serve` installs — the service group and nothing else — reads the
    pipeline's SQLite registry (not the export fallback) and carries no training stack."""
    venv = tmp_path / "venv"
    uv = shutil.which("uv")
    assert uv, "uv is on PATH wherever the suite runs (.ci/run installs it)"
    subprocess.run(
        [uv, "sync", "--locked", "--no-default-groups", "--group", "service", "--quiet"],
        cwd=ROOT,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)},
        check=True,
    )
    python = str(venv / "bin" / "python")
    found = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u; print([m for m in "
            + repr(TRAINING_ONLY)
            + " if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found == "[]"
    env = {"HOUSING_MLOPS_HOME": str(model_home)}
    with serve_module("service", env, tmp_path / "service.log", "/ready", python=python) as svc:
        info = httpx.get(svc.url + "/api/v1/model").json()
        assert info["source"] == "mlflow:models:/housing-price@champion"
        assert (info["runtime"], info["warnings"]) == ("onnxruntime", [])
        answer = httpx.post(svc.url + "/api/v1/predict", json={"instances": [HOUSE]})
        assert answer.status_code == 200
    assert "model source failed" not in svc.logs()


def test_without_a_model_it_lives_but_is_not_ready(tmp_path):
    with in_process({"HOUSING_MLOPS_HOME": str(tmp_path / "empty")}) as client:
        assert client.get("/health").status_code == 200
        not_ready = client.get("/ready")
        assert not_ready.status_code == 503
        assert "mlflow:" in not_ready.json()["detail"]
        for answer in (
            client.post("/api/v1/predict", json={"instances": [HOUSE]}),
            client.get("/api/v1/model"),
        ):
            assert answer.status_code == 503
            assert answer.json()["detail"].startswith("no model loaded: mlflow:")


def in_flight(url: str) -> float:
    """The server's ``http_requests_in_flight`` gauge (its own scrapes not counted)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    (family,) = [
        f for f in text_string_to_metric_families(text) if f.name == "http_requests_in_flight"
    ]
    return family.samples[0].value


def test_sigterm_drains_requests_in_flight(model_home, start_service, housing_sample):
    """Twelve 1,000-house uploads are in the server (their heads read, half of each body sent)
    when SIGTERM comes; the server stops taking connections and still answers all twelve."""
    body = json.dumps({"instances": rows(housing_sample, 1000)}).encode()
    release = threading.Event()

    def upload():
        yield body[: len(body) // 2]
        release.wait(timeout=300)
        yield body[len(body) // 2 :]

    # A slow machine needs more than the default 8 s to price 12,000 houses after the signal;
    # the drain must fit the time the platform allows after SIGTERM (Cloud Run's 10 s).
    env = {
        "HOUSING_MLOPS_HOME": str(model_home),
        "DRAIN_SECONDS": "120",
        "SHUTDOWN_GRACE_SECONDS": "130",
    }
    with start_service(env) as svc:

        def call() -> int:
            return httpx.post(
                svc.url + "/api/v1/predict",
                content=upload(),
                headers={"content-type": "application/json"},
                timeout=120,
            ).status_code

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            try:
                futures = [pool.submit(call) for _ in range(12)]
                wait_until(lambda: in_flight(svc.url) == 12, "12 requests in flight", log=svc.log)
                svc.proc.send_signal(signal.SIGTERM)
                wait_until(
                    lambda: "Waiting for connections to close" in svc.logs(),
                    "the server draining after SIGTERM",
                    log=svc.log,
                )
                with pytest.raises(httpx.ConnectError):
                    httpx.get(svc.url + "/health", timeout=10)
            finally:
                release.set()
            statuses = [f.result() for f in futures]
        # uvicorn shuts down gracefully, then re-raises the signal: exit status -SIGTERM
        assert svc.proc.wait(timeout=120) in (0, -signal.SIGTERM)
    assert statuses == [200] * 12
    assert "Finished server process" in svc.logs()


@pytest.fixture(scope="module")
def gcs_export(gcs_client, model_home):
    bucket = gcs_client.create_bucket("serving")
    root = model_home / "artifacts/models/housing-price/champion"
    for path in root.rglob("*"):
        if path.is_file():
            bucket.blob(
                f"models/housing-price/champion/{path.relative_to(root)}"
            ).upload_from_filename(path)
    return "gs://serving/models/housing-price/champion"


def test_loads_the_export_from_gcs(gcs_client, gcs_export, housing_sample):
    from model_runtime.loader import from_export
    from service.predictor import Predictor, to_frame
    from service.schemas import parse_predict_request
    from service.settings import ServiceSettings

    loaded = from_export(ServiceSettings(fallback_uri=gcs_export), gcs_client)
    assert loaded.meta.source == f"export:{gcs_export}"
    assert loaded.meta.version == "1"
    houses = parse_predict_request(json.dumps({"instances": rows(housing_sample, 5)}).encode(), 10)
    prices = Predictor(loaded).predict(houses)
    model, _ = loaded.sklearn()  # fetched from the bucket only when asked for
    np.testing.assert_allclose(prices, model.predict(to_frame(houses)), rtol=1e-5)
