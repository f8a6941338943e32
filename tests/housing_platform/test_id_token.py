"""The MLflow request-header plugin, with real google-auth and a real MLflow client: only
Google's endpoints are stand-ins (loopback servers minting ID tokens for a throwaway key), for a
service-account key file and for workload identity federation as GitHub Actions sets it up."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, exceptions, jwt

from housing_platform.id_token import SERVICE_ACCOUNT_VAR, GoogleIdToken, IdTokenHeaderProvider
from tests.helpers import serve_http


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


def throwaway_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def token_server(tmp_path, monkeypatch):
    pem = throwaway_key()
    with serve_http(Handler, Recorder) as (server, url):
        server.signer = crypt.RSASigner.from_string(pem)
        server.authorizations = []
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
        yield server, url


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


# Workload identity federation, as google-github-actions/auth sets it up: GOOGLE_APPLICATION_
# CREDENTIALS names an external_account file whose subject token comes from GitHub's OIDC endpoint
# (credential_source.url), exchanged at Google's STS (token_url) for a federated token.

CI_ACCOUNT = "ci@p.iam.gserviceaccount.com"
PROVIDER = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/gh/providers/p"
ID_TOKEN_PATH = "/v1/projects/-/serviceAccounts/{}:generateIdToken"


class Federation(ThreadingHTTPServer):
    """GitHub's OIDC token endpoint, Google's STS and the IAM Credentials API, on loopback."""

    lifetime_s = 3600
    signer: Any
    calls: list[tuple[str, str, dict[str, Any]]]  # (path, Authorization, body)
    authorizations: list[str]  # MLflow's REST API

    def count(self, suffix: str) -> int:
        return sum(1 for path, _, _ in self.calls if urlsplit(path).path.endswith(suffix))


class FederationHandler(BaseHTTPRequestHandler):
    server: Federation

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, body: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # GitHub's OIDC endpoint: the job's request token gets a JWT
        authorization = self.headers.get("Authorization", "")
        self.server.calls.append((self.path, authorization, {}))
        if authorization != "Bearer gha-request-token":
            self._json({"message": "bad request token"}, 401)
            return
        self._json({"value": "github-oidc-jwt"})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        authorization = self.headers.get("Authorization", "")
        if self.path == "/sts/token":
            body = {k: v[0] for k, v in parse_qs(raw).items()}
            self.server.calls.append((self.path, authorization, body))
            self._json(
                {
                    "access_token": f"federated-{self.server.count('/sts/token')}",
                    "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }
            )
        elif self.path.endswith(":generateIdToken"):
            body = json.loads(raw)
            self.server.calls.append((self.path, authorization, body))
            now = int(time.time())
            minted = self.server.count(":generateIdToken")
            payload = {"aud": body["audience"], "iat": now, "exp": now + self.server.lifetime_s}
            payload |= {"email": self.path.split("/")[-1].split(":")[0], "n": minted}
            self._json({"token": jwt.encode(self.server.signer, payload).decode()})
        elif self.path.endswith(":generateAccessToken"):
            self.server.calls.append((self.path, authorization, json.loads(raw)))
            self._json({"accessToken": "sa-access-token", "expireTime": "2099-01-01T00:00:00Z"})
        else:  # MLflow's REST API, answering an empty search
            self.server.authorizations.append(authorization)
            self._json({"experiments": []})


def external_account(url: str, impersonate: str | None) -> dict[str, Any]:
    """An external_account file shaped as google-github-actions/auth writes it."""
    info: dict[str, Any] = {
        "type": "external_account",
        "audience": PROVIDER,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": f"{url}/sts/token",
        "credential_source": {
            "url": f"{url}/oidc?audience=https://iam.googleapis.com/gh",
            "headers": {"Authorization": "Bearer gha-request-token"},
            "format": {"type": "json", "subject_token_field_name": "value"},
        },
    }
    if impersonate:
        info["service_account_impersonation_url"] = (
            f"{url}/v1/projects/-/serviceAccounts/{impersonate}:generateAccessToken"
        )
    return info


@pytest.fixture
def federation(tmp_path, monkeypatch):
    """Yields (server, url, write) where write(impersonate) points GOOGLE_APPLICATION_CREDENTIALS
    at a fresh external_account file. google-auth builds the IAM Credentials URL from a constant
    and looks up regional access boundaries in the background: the first goes to loopback, the
    second is switched off, and any other request google-auth makes off loopback fails the test."""
    import google.auth.external_account
    import google.auth.iam
    import google.auth.transport.requests

    with serve_http(FederationHandler, Federation) as (server, url):
        server.signer = crypt.RSASigner.from_string(throwaway_key())
        server.calls, server.authorizations = [], []
        monkeypatch.setattr(google.auth.iam, "_IAM_IDTOKEN_ENDPOINT", url + ID_TOKEN_PATH)
        monkeypatch.setattr(
            google.auth.external_account.Credentials,
            "_is_regional_access_boundary_lookup_required",
            lambda self: False,
        )
        off_loopback: list[str] = []
        send = google.auth.transport.requests.Request.__call__

        def loopback_only(self: Any, url: str, *args: Any, **kwargs: Any) -> Any:
            if urlsplit(url).hostname != "127.0.0.1":
                off_loopback.append(url)
                raise exceptions.TransportError(f"the test refuses {url}")
            return send(self, url, *args, **kwargs)

        monkeypatch.setattr(google.auth.transport.requests.Request, "__call__", loopback_only)
        monkeypatch.delenv(SERVICE_ACCOUNT_VAR, raising=False)

        def write(impersonate: str | None = CI_ACCOUNT) -> None:
            path = tmp_path / "gha-creds.json"
            path.write_text(json.dumps(external_account(url, impersonate)))
            monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))

        yield server, url, write
    assert off_loopback == [], "google-auth tried to leave the machine"


def test_workload_identity_mints_id_tokens_as_the_impersonated_account(federation):
    server, _, write = federation
    write()
    tokens = GoogleIdToken("https://mlflow.example")
    token = tokens()
    claims = jwt.decode(token, verify=False)
    assert claims["aud"] == "https://mlflow.example"
    assert claims["email"] == CI_ACCOUNT
    assert tokens() == token
    assert server.count(":generateIdToken") == 1, "a valid token is reused"

    (oidc, oidc_auth, _), (sts, _, exchange), (mint, mint_auth, asked) = server.calls
    assert oidc.startswith("/oidc?")
    assert oidc_auth == "Bearer gha-request-token", "GitHub's OIDC endpoint, with the job's token"
    assert sts == "/sts/token"
    assert exchange["subject_token"] == "github-oidc-jwt"
    assert exchange["audience"] == PROVIDER
    # The federated token itself asks for the ID token (the auth action's own id_token route):
    # no access token of the account first, so the account needs no token role on itself.
    assert mint == ID_TOKEN_PATH.format(CI_ACCOUNT)
    assert mint_auth == "Bearer federated-1"
    assert asked == {"audience": "https://mlflow.example", "delegates": None, "includeEmail": True}
    assert server.count(":generateAccessToken") == 0


def test_workload_identity_tokens_are_refreshed_before_expiry(federation):
    server, _, write = federation
    write()
    server.lifetime_s = 120  # inside the 5-minute margin: a new token on every use
    tokens = GoogleIdToken("https://mlflow.example")
    first, second = tokens(), tokens()
    assert first != second
    assert server.count(":generateIdToken") == 2
    assert server.count("/sts/token") == 1, "the federated token lives an hour and is reused"


def test_mlflow_requests_carry_an_id_token_under_workload_identity(federation, monkeypatch):
    import mlflow

    server, url, write = federation
    write()
    monkeypatch.setenv("MLFLOW_TRACKING_AUDIENCE", url)
    client = mlflow.MlflowClient(tracking_uri=url)
    client.search_experiments()
    client.search_experiments()
    assert len(server.authorizations) == 2
    assert server.authorizations[0] == server.authorizations[1]
    bearer = server.authorizations[0].removeprefix("Bearer ")
    assert jwt.decode(bearer, verify=False)["aud"] == url
    assert server.count(":generateIdToken") == 1


def test_without_an_account_to_impersonate_the_error_names_the_variable(federation, monkeypatch):
    server, _, write = federation
    write(impersonate=None)  # the auth action given no service_account
    with pytest.raises(exceptions.DefaultCredentialsError, match=SERVICE_ACCOUNT_VAR):
        GoogleIdToken("https://mlflow.example")()
    # Read where settings are read: MLflow's plugin here (the UI's settings for the UI).
    monkeypatch.setenv(SERVICE_ACCOUNT_VAR, "reporter@p.iam.gserviceaccount.com")
    monkeypatch.setenv("MLFLOW_TRACKING_AUDIENCE", "https://mlflow.example")
    header = IdTokenHeaderProvider().request_headers()["Authorization"]
    token = header.removeprefix("Bearer ")
    assert jwt.decode(token, verify=False)["email"] == "reporter@p.iam.gserviceaccount.com"
    assert server.calls[-1][0] == ID_TOKEN_PATH.format("reporter@p.iam.gserviceaccount.com")
