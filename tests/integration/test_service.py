"""The inference service as a real uvicorn process on loopback, driven over HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import signal
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import schema
from tests.conftest import free_port
from tests.service.test_schemas import HOUSE


def rows(frame: pd.DataFrame, n: int) -> list[dict]:
    records = frame[list(schema.FEATURES)].head(n).to_dict("records")
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in records
    ]


def test_predictions_equal_the_models_own(service, model_home, housing_sample):
    import mlflow

    houses = rows(housing_sample, 100)
    houses[0]["ocean_proximity"] = houses[0]["ocean_proximity"].lower()
    houses[1]["total_bedrooms"] = None
    with service.client() as client:
        response = client.post("/api/v1/predict", json={"instances": houses})
    assert response.status_code == 200
    body = response.json()
    mlflow.set_tracking_uri(f"sqlite:///{model_home / 'mlflow.db'}")
    version = mlflow.MlflowClient().get_model_version_by_alias("housing-price", "champion")
    model = mlflow.sklearn.load_model(f"models:/housing-price/{version.version}")
    frame = housing_sample[list(schema.FEATURES)].head(100).copy()
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


def test_client_mistakes_are_4xx_with_the_field_named(service):
    with service.client() as client:
        bad = client.post(
            "/api/v1/predict",
            json={"instances": [HOUSE, {**HOUSE, "latitude": "x"}, {**HOUSE, "median_income": 99}]},
        )
        assert bad.status_code == 400
        assert [e["loc"] for e in bad.json()["errors"]] == [
            "instances[1].latitude",
            "instances[2].median_income",
        ]
        assert client.post("/api/v1/predict", json={"instances": []}).status_code == 400
        assert client.post("/api/v1/predict", json={"instances": [HOUSE] * 1001}).status_code == 400
        malformed = client.post(
            "/api/v1/predict",
            content=b'{"instances": [',
            headers={"content-type": "application/json"},
        )
        assert malformed.status_code == 400
        assert "malformed JSON" in malformed.json()["detail"]
        nan = client.post(
            "/api/v1/predict",
            content=json.dumps({"instances": [{**HOUSE, "population": float("nan")}]}),
            headers={"content-type": "application/json"},
        )
        assert nan.status_code == 400
        assert (
            client.post(
                "/api/v1/predict", content=b"x", headers={"content-type": "text/csv"}
            ).status_code
            == 415
        )
        huge = client.post(
            "/api/v1/predict",
            content=b" " * 2_000_000,
            headers={"content-type": "application/json"},
        )
        assert huge.status_code == 413
        assert client.get("/api/v1/nothing").status_code == 404


def test_model_metadata_health_metrics_and_offline_docs(service):
    with service.client() as client:
        info = client.get("/api/v1/model").json()
        assert info["alias"] == "champion"
        assert info["source"].startswith("mlflow:")
        assert (info["runtime"], info["warnings"]) == ("onnxruntime", [])
        assert {"rmse", "r2", "mape"} <= set(info["test_metrics"])
        assert info["input_ranges"]["latitude"] == {
            "min": 32.4,
            "max": 42.1,
            "description": info["input_ranges"]["latitude"]["description"],
            "nullable": False,
        }
        assert client.get("/health").json() == {"status": "ok", "detail": ""}
        assert client.get("/ready").status_code == 200
        client.post("/api/v1/predict", json={"instances": [HOUSE, HOUSE]})
        metrics = client.get("/metrics").text
        assert "housing_predictions_total" in metrics
        assert f"housing_model_version {float(info['version'])}" in metrics
        assert 'path="/api/v1/predict"' in metrics
        page = client.get("/docs").text
        assert "cdn" not in page
        assert "unpkg" not in page
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"):
            assert f"/static/swagger/{asset}" in page
            assert client.get(f"/static/swagger/{asset}").status_code == 200
        spec = client.get("/docs/openapi.json").json()
        assert spec["paths"]["/api/v1/predict"]["post"]["operationId"] == "predict"
        assert "House" in spec["components"]["schemas"]
    lines = [json.loads(line) for line in service.logs().splitlines() if line.startswith("{")]
    access = [
        entry
        for entry in lines
        if entry.get("logger") == "service.access"
        and entry["httpRequest"]["requestUrl"] == "/api/v1/predict"
    ]
    assert access
    assert {"severity", "message", "request_id", "latency_ms"} <= set(access[-1])
    assert any(entry.get("batch_size") == 2 for entry in access)


def test_falls_back_to_the_export_when_mlflow_is_unreachable(model_home, start_service):
    from tests.conftest import free_port

    env = {
        "HOUSING_MLOPS_HOME": str(model_home),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
    }
    with start_service(env) as svc, svc.client() as client:
        info = client.get("/api/v1/model").json()
        assert info["source"].startswith("export:")
        assert info["version"] == "1"
        assert client.post("/api/v1/predict", json={"instances": [HOUSE]}).status_code == 200
    assert "model source failed" in svc.logs()


def test_a_broken_fast_form_falls_back_to_scikit_learn_and_says_so(
    model_home, tmp_path, start_service
):
    export = tmp_path / "export"
    shutil.copytree(model_home / "artifacts" / "models" / "housing-price" / "champion", export)
    assert (export / "model.onnx").is_file(), "the register step exported the fast form"
    (export / "model.onnx").write_bytes(b"not an onnx graph")
    env = {
        "HOUSING_MLOPS_HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "MODEL_FALLBACK_URI": str(export),
    }
    with start_service(env) as svc, svc.client() as client:
        info = client.get("/api/v1/model").json()
        assert info["runtime"] == "scikit-learn"
        (warning,) = info["warnings"]
        assert warning.startswith("fast form not used, serving scikit-learn:")
        assert client.post("/api/v1/predict", json={"instances": [HOUSE]}).status_code == 200
    assert "fast form not used" in svc.logs()


def test_without_a_model_it_lives_but_is_not_ready(tmp_path, start_service):
    with (
        start_service({"HOUSING_MLOPS_HOME": str(tmp_path / "empty")}, ready=False) as svc,
        svc.client() as client,
    ):
        assert client.get("/health").status_code == 200
        not_ready = client.get("/ready")
        assert not_ready.status_code == 503
        assert "mlflow:" in not_ready.json()["detail"]
        response = client.post("/api/v1/predict", json={"instances": [HOUSE]})
        assert response.status_code == 503
        assert response.json()["detail"].startswith("no model loaded")


def test_sigterm_drains_requests_in_flight(model_home, start_service, housing_sample):
    batch = {"instances": rows(housing_sample, 1000)}
    with start_service({"HOUSING_MLOPS_HOME": str(model_home)}) as svc:

        def call() -> int:
            return httpx.post(svc.url + "/api/v1/predict", json=batch, timeout=60).status_code

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(call) for _ in range(12)]
            time.sleep(0.3)
            svc.proc.send_signal(signal.SIGTERM)
            statuses = [f.result() for f in futures]
        # uvicorn shuts down gracefully, then re-raises the signal: exit status -SIGTERM
        assert svc.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert statuses == [200] * 12
    assert "Finished server process" in svc.logs()


HOUSE_FIELDS = list(HOUSE)
json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)
mutated_house = st.fixed_dictionaries({}).flatmap(
    lambda _: st.dictionaries(
        st.sampled_from([*HOUSE_FIELDS, "extra"]), json_values, max_size=4
    ).map(lambda d: {**HOUSE, **d})
)
bodies = st.one_of(
    json_values.map(lambda v: {"instances": v}),
    st.lists(mutated_house, max_size=4).map(lambda v: {"instances": v}),
    json_values,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_no_body_makes_a_5xx_and_every_answer_keeps_its_schema(service, body):
    response = httpx.post(
        service.url + "/api/v1/predict",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code in (200, 400), response.text
    payload = response.json()
    if response.status_code == 200:
        assert len(payload["predictions"]) == len(body["instances"])
        assert all(np.isfinite(p["predicted_price"]) for p in payload["predictions"])
    else:
        assert set(payload) == {"status_code", "detail", "errors"}
        assert all(set(e) == {"loc", "msg"} for e in payload["errors"])


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
    from service.loader import from_export
    from service.predictor import Predictor, to_frame
    from service.schemas import parse_predict_request
    from service.settings import ServiceSettings

    loaded = from_export(ServiceSettings(fallback_uri=gcs_export), gcs_client)
    assert loaded.meta.source == f"export:{gcs_export}"
    assert loaded.meta.version == "1"
    houses = parse_predict_request(json.dumps({"instances": rows(housing_sample, 5)}).encode(), 10)
    prices = Predictor(loaded).predict(houses)
    np.testing.assert_allclose(prices, loaded.model.predict(to_frame(houses)))
