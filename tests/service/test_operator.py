"""The operator endpoints in process: who may read them (loopback locally, a verified Google ID
token from an operator account otherwise), what they serve from the artifact store, and the one
clear 503 naming the source when a source is down. Tokens are signed with a key made here and
verified against certificates served from loopback, as Google's are from its certs URL."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt
from litestar import Litestar
from litestar.testing import TestClient

from housing_platform.artifact_store import LocalStore
from housing_platform.settings_reader import SettingsError
from model_runtime.exports import publish
from model_runtime.loader import ModelMeta
from service.app import create_app
from service.settings import ServiceSettings, from_env
from tests.helpers import free_port, serve_http, wait_until

AUDIENCE = "https://housing-api.example.run.app"
UI_ACCOUNT = "housing-ui@project.iam.gserviceaccount.com"
EVALUATION_FILES = {
    "evaluation/evaluate.json": json.dumps(
        {"family": "hist_gradient_boosting", "test_rows": 600, "test_metrics": {"mae": 25320.4}}
    ),
    "evaluation/errors_by_income.csv": "group,rows,rmse,mae,r2,mape,wmape,within_10pct\n"
    "1,40,30000,21000,0.5,0.3,0.2,0.3\n2,200,35000,24000,0.6,0.25,0.2,0.35\n",
    "evaluation/errors_by_ocean_proximity.csv": "group,rows,rmse,mae,r2,mape,wmape,within_10pct\n"
    "INLAND,190,30000,20000,0.7,0.2,0.2,0.4\n",
    "evaluation/feature_importance.csv": "feature,rmse_increase,std\nmedian_income,40000,900\n",
    "evaluation/test_predictions.csv": "longitude,latitude,median_income,income_band,"
    "ocean_proximity,actual,predicted\n-122.2,37.8,8.3,5,NEAR BAY,452600,430000\n",
    "evaluation/residuals.png": "png",
}


class OneDollar:
    meta = ModelMeta(name="housing-price", version="3", alias="champion", run_id="r")
    runtime = "stand-in"

    def predict(self, houses: list[object]) -> list[float]:
        return [1.0] * len(houses)


class Signer:
    """An RSA key standing in for Google's, and ID tokens signed with it."""

    def __init__(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.public = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        self.signer = crypt.RSASigner.from_string(private, key_id="k1")

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": "https://accounts.google.com",
            "aud": AUDIENCE,
            "email": UI_ACCOUNT,
            "email_verified": True,
            "iat": now,
            "exp": now + 600,
            **claims,
        }
        return jwt.encode(self.signer, payload).decode()


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture(scope="module")
def certs_url(signer: Signer) -> Iterator[str]:
    """Google's certificate endpoint, stood in on loopback with the test key's public half."""
    body = json.dumps({"k1": signer.public}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serve_http(Handler) as (_, url):
        yield url


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    """An artifact store with version 3 exported with its evaluation, and version 2 without."""
    store = LocalStore(tmp_path / "artifacts")
    files = [("MLmodel", b"flavors: {}\n"), *((k, v.encode()) for k, v in EVALUATION_FILES.items())]
    publish(store, "models/housing-price/3", files)
    publish(store, "models/housing-price/2", [("MLmodel", b"flavors: {}\n")])
    return store


def app(store: LocalStore, **settings: Any) -> Litestar:
    defaults: dict[str, Any] = {
        "prediction_log": False,
        "artifact_uri": store.uri,
        "home": str(Path(store.uri).parent),
    }
    return create_app(ServiceSettings(**(defaults | settings)), predictor=OneDollar())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def on_loopback(asgi: Litestar) -> Iterator[str]:
    """The app under uvicorn on a loopback port (the test client's peer is not loopback)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "uvicorn to start", timeout=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_local_service_answers_loopback_callers_without_a_token(store):
    import httpx

    with on_loopback(app(store)) as url:
        response = httpx.get(f"{url}/api/v1/operator/models/3/evaluation")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["test_metrics"] == {"mae": 25320.4}
    assert [g["group"] for g in body["errors_by_income"]] == ["1", "2"]
    assert body["errors_by_income"][1]["mae"] == 24000
    assert body["importances"][0] == {
        "feature": "median_income",
        "rmse_increase": 40000,
        "std": 900,
    }
    assert body["sample"][0]["actual"] == 452600
    assert body["sample"][0]["predicted"] == 430000
    assert body["plots"] == ["models/housing-price/3/evaluation/residuals.png"]


def test_a_shared_service_without_an_audience_refuses_even_loopback(store):
    import httpx

    with on_loopback(app(store, environment="dev")) as url:
        response = httpx.get(f"{url}/api/v1/operator/release")
    assert response.status_code == 403
    assert "OPERATOR_AUDIENCE" in response.json()["detail"]


def test_a_caller_off_loopback_is_refused_without_an_audience(store):
    with TestClient(app(store)) as client:
        response = client.get("/api/v1/operator/release")
    assert response.status_code == 403
    # The public routes stay public.
    assert client.get("/health").status_code == 200


@pytest.fixture
def guarded(store: LocalStore, certs_url: str) -> Iterator[TestClient[Litestar]]:
    asgi = app(
        store,
        operator_audience=AUDIENCE,
        operator_accounts=(UI_ACCOUNT,),
        operator_certs_url=certs_url,
        environment="dev",
    )
    with TestClient(asgi) as client:
        yield client


def test_the_ui_accounts_id_token_reads_operator_data(guarded, signer):
    response = guarded.get("/api/v1/operator/release", headers=bearer(signer.token()))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "published": False,
        "feed": None,
        "key": "releases/feed.json",
        "split": None,
    }


@pytest.mark.parametrize(
    ("claims", "status", "said"),
    [
        ({"aud": "https://someone-else.run.app"}, 401, "does not verify"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, 401, "does not verify"),
        ({"iss": "https://evil.example"}, 401, "not a Google ID token"),
        ({"email": "someone@example.com"}, 403, "someone@example.com is not an operator"),
    ],
    ids=["other audience", "expired", "other issuer", "not an operator"],
)
def test_a_token_that_is_not_an_operators_is_refused(guarded, signer, claims, status, said):
    response = guarded.get("/api/v1/operator/models", headers=bearer(signer.token(**claims)))
    assert response.status_code == status
    assert said in response.json()["detail"]


def test_no_token_or_a_forged_one_is_refused(guarded, signer):
    assert guarded.get("/api/v1/operator/models").status_code == 401
    other = Signer()
    forged = guarded.get("/api/v1/operator/models", headers=bearer(other.token()))
    assert forged.status_code == 401


def test_an_audience_without_accounts_is_one_clear_line():
    with pytest.raises(SettingsError, match="OPERATOR_ACCOUNTS"):
        from_env({"OPERATOR_AUDIENCE": AUDIENCE})


def test_a_registry_that_is_down_is_a_503_naming_it(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    import httpx

    closed = f"http://127.0.0.1:{free_port()}"
    with on_loopback(app(store, mlflow_tracking_uri=closed)) as url:
        response = httpx.get(f"{url}/api/v1/operator/models", timeout=30)
    assert response.status_code == 503
    body = response.json()
    assert body["source"] == "model registry"
    assert body["detail"].startswith(f"model registry (MLflow at {closed}) failed:")


def test_records_are_served_newest_first_and_absent_ones_say_so(store):
    store.write_bytes("rollouts/2026-11-30T10.json", json.dumps({"step": 1}).encode())
    store.write_bytes(
        "rollouts/2026-11-30T11.jsonl", b'{"step": 2, "verdict": "pass"}\n{"step": 3}\n'
    )
    store.write_bytes("reports/monitor/2026-11-29.json", json.dumps({"window": "a"}).encode())
    store.write_bytes("reports/monitor/2026-11-30.json", json.dumps({"window": "b"}).encode())
    store.write_bytes("reports/monitor/2026-11-30/v3-median_income.png", b"png")
    with on_loopback(app(store)) as url:
        import httpx

        get = lambda path: httpx.get(url + "/api/v1/operator" + path)  # noqa: E731
        rollouts = get("/rollouts").json()["entries"]
        monitor = get("/monitoring").json()
        shadow = get("/shadow").json()
        plot = get("/plot?key=reports/monitor/2026-11-30/v3-median_income.png")
        outside = get("/plot?key=data/train.parquet")
        no_eval = get("/models/2/evaluation")
    assert [e.get("step") for e in rollouts] == [3, 2, 1]
    assert [r["window"] for r in monitor["reports"]] == ["b", "a"]
    assert shadow["entries"] == []
    assert plot.status_code == 200
    assert plot.content == b"png"
    assert plot.headers["content-type"] == "image/png"
    assert outside.status_code == 404
    assert no_eval.status_code == 404
    assert "carries no evaluation reports" in no_eval.json()["detail"]


def test_every_operator_route_is_documented(store):
    with TestClient(app(store)) as client:
        spec = client.get("/docs/openapi.json").json()
    operations = {
        path: op
        for path, item in spec["paths"].items()
        if path.startswith("/api/v1/operator")
        for op in item.values()
    }
    assert set(operations) == {
        "/api/v1/operator/models",
        "/api/v1/operator/models/{version}/evaluation",
        "/api/v1/operator/release",
        "/api/v1/operator/rollouts",
        "/api/v1/operator/shadow",
        "/api/v1/operator/monitoring",
        "/api/v1/operator/plot",
    }
    for op in operations.values():
        assert op["operationId"].startswith("operator")
        assert op["summary"]
        assert {"401", "403", "503"} <= set(op["responses"])
