"""The MLflow request-header plugin, with real google-auth and a real MLflow client: only the
token endpoint is a stand-in (a loopback server minting ID tokens for a throwaway key)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

from pipeline.id_token import GoogleIdToken


class Recorder(ThreadingHTTPServer):
    lifetime_s = 3600
    minted = 0
    authorizations: list[str]
    signer: Any


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/token":  # MLflow's REST API, answering an empty search
            self.server.authorizations.append(self.headers.get("Authorization", ""))
            self._json({"experiments": []})
            return
        # the token endpoint named in the service-account key file
        self.server.minted += 1
        now = int(time.time())
        payload = {
            "aud": "x",
            "iat": now,
            "exp": now + self.server.lifetime_s,
            "n": self.server.minted,
        }
        self._json({"id_token": jwt.encode(self.server.signer, payload).decode()})


@pytest.fixture
def token_server(tmp_path, monkeypatch):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    server = Recorder(("127.0.0.1", 0), Handler)
    server.signer = crypt.RSASigner.from_string(pem)
    server.authorizations = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    keyfile = tmp_path / "sa.json"
    keyfile.write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "ci@p.iam.gserviceaccount.com",
                "private_key": pem,
                "private_key_id": "1",
                "token_uri": f"{url}/token",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(keyfile))
    try:
        yield server, url
    finally:
        server.shutdown()
        server.server_close()


def test_tokens_are_reused_until_close_to_expiry(token_server):
    server, _ = token_server
    tokens = GoogleIdToken("https://mlflow.example")
    first = tokens()
    assert tokens() == first
    assert server.minted == 1, "a valid token is not fetched again"
    server.lifetime_s = 120  # inside the 5-minute margin: refreshed on every use
    expiring = GoogleIdToken("https://mlflow.example")
    a, b = expiring(), expiring()
    assert a != b
    assert server.minted == 3


def test_mlflow_requests_carry_a_fresh_id_token(token_server, monkeypatch):
    import mlflow
    from mlflow.tracking.request_header.registry import resolve_request_headers

    server, url = token_server
    monkeypatch.setenv("MLFLOW_TRACKING_AUDIENCE", url)
    headers = resolve_request_headers()
    assert headers["Authorization"].startswith("Bearer ")
    client = mlflow.MlflowClient(tracking_uri=url)
    client.search_experiments()
    client.search_experiments()
    assert len(server.authorizations) == 2
    assert all(a == headers["Authorization"] for a in server.authorizations)
    assert server.minted == 1, "one token for all three requests"


def test_without_an_audience_no_header_is_added(monkeypatch):
    from mlflow.tracking.request_header.registry import resolve_request_headers

    monkeypatch.delenv("MLFLOW_TRACKING_AUDIENCE", raising=False)
    assert "Authorization" not in resolve_request_headers()
