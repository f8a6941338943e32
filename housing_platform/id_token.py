"""Google ID tokens for Cloud Run IAM, and the MLflow plugin that puts one on every request.

Private MLflow on Cloud Run needs ``Authorization: Bearer <ID token>``; a static
``MLFLOW_TRACKING_TOKEN`` dies after an hour, in the middle of a long tuning job. The provider
below is registered under MLflow's ``mlflow.request_header_provider`` entry point and, when
``MLFLOW_TRACKING_AUDIENCE`` is set, adds a token refreshed before it expires.

Tokens come from a service-account key or impersonation file, the metadata server (Cloud Run, a
VM), or workload identity federation: an ``external_account`` file (GitHub Actions'
``google-github-actions/auth`` writes one) can't mint ID tokens itself, so its federated token
asks the IAM Credentials API for one as the service account it impersonates.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from housing_platform.settings_reader import read_settings

AUDIENCE_VAR = "MLFLOW_TRACKING_AUDIENCE"
#: The service account whose ID tokens external-account credentials mint, when their file doesn't
#: name one (``service_account_impersonation_url``).
SERVICE_ACCOUNT_VAR = "GOOGLE_ID_TOKEN_SERVICE_ACCOUNT"
_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
#: What an ``external_account`` file impersonates with; the federated token does it here instead.
_IMPERSONATION_KEYS = ("service_account_impersonation_url", "service_account_impersonation")


def _credentials_file() -> dict[str, Any] | None:
    """The parsed ``GOOGLE_APPLICATION_CREDENTIALS`` file, or None (no file, or not JSON: then
    google-auth's own lookup reports it). Not a setting of ours: google-auth reads the variable
    when it looks for credentials, so this reads it at the same moment, to see the same file."""
    path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if not path:
        return None
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _external_account_id_token(info: dict[str, Any], audience: str, service_account: str) -> Any:
    """ID-token credentials from workload identity federation: the federated token (no
    impersonation of its own) calls ``generateIdToken`` for the service account the file
    impersonates, or ``service_account`` (``$GOOGLE_ID_TOKEN_SERVICE_ACCOUNT``)."""
    from google.auth import exceptions, identity_pool, impersonated_credentials

    def load(config: dict[str, Any]) -> Any:
        try:
            return identity_pool.Credentials.from_info(config, scopes=[_CLOUD_PLATFORM])
        except ValueError as error:
            raise exceptions.DefaultCredentialsError(
                f"GOOGLE_APPLICATION_CREDENTIALS: unsupported external_account file: {error}"
            ) from error

    email = load(info).service_account_email or service_account
    if not email:
        raise exceptions.DefaultCredentialsError(
            "GOOGLE_APPLICATION_CREDENTIALS holds workload identity federation credentials "
            "(external_account) that impersonate no service account, and those can't mint ID "
            f"tokens: set {SERVICE_ACCOUNT_VAR} to the service account to mint them as (or give "
            "google-github-actions/auth a service_account)"
        )
    federated = load({k: v for k, v in info.items() if k not in _IMPERSONATION_KEYS})
    target = impersonated_credentials.Credentials(
        source_credentials=federated, target_principal=email, target_scopes=[_CLOUD_PLATFORM]
    )
    return impersonated_credentials.IDTokenCredentials(
        target, target_audience=audience, include_email=True
    )


def _google_credentials(audience: str, service_account: str = "") -> Any:
    import google.auth.transport.requests
    from google.oauth2 import id_token

    info = _credentials_file()
    if info is not None and info.get("type") == "external_account":
        return _external_account_id_token(info, audience, service_account)
    request = google.auth.transport.requests.Request()
    return id_token.fetch_id_token_credentials(audience, request=request)


class GoogleIdToken:
    """ID tokens from google-auth (service account key, metadata server, workload identity
    federation), refreshed ``refresh_margin`` before expiry; safe to share between threads.
    ``service_account``: whom to mint them as when federated credentials impersonate no one."""

    def __init__(
        self,
        audience: str,
        refresh_margin: timedelta = timedelta(minutes=5),
        credentials: Callable[[str], Any] | None = None,
        service_account: str = "",
    ):
        self.audience = audience
        self.refresh_margin = refresh_margin
        self._make = credentials or partial(_google_credentials, service_account=service_account)
        self._credentials: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> str:
        import google.auth.transport.requests

        with self._lock:
            if self._credentials is None:
                self._credentials = self._make(self.audience)
            creds = self._credentials
            expiry = getattr(creds, "expiry", None)
            soon = datetime.now(UTC).replace(tzinfo=None) + self.refresh_margin
            if not creds.valid or expiry is None or expiry <= soon:
                creds.refresh(google.auth.transport.requests.Request())
            return str(creds.token)


try:
    from mlflow.tracking.request_header.abstract_request_header_provider import (
        RequestHeaderProvider,
    )
except ImportError:  # pragma: no cover - only the UI image lacks MLflow
    RequestHeaderProvider = object  # type: ignore[misc,assignment]


class PluginSettings(msgspec.Struct, frozen=True, kw_only=True):
    audience: str = ""
    """MLFLOW_TRACKING_AUDIENCE: the MLflow server's URL; unset, no header is added."""
    service_account: str = ""
    """GOOGLE_ID_TOKEN_SERVICE_ACCOUNT: whom to mint tokens as under workload identity
    federation, when the credentials file names none."""


PLUGIN_VARIABLES = {AUDIENCE_VAR: "audience", SERVICE_ACCOUNT_VAR: "service_account"}


class IdTokenHeaderProvider(RequestHeaderProvider):
    """MLflow request-header provider: ``Authorization: Bearer <Google ID token>``.

    MLflow builds it with no arguments, once, when its registry loads: it is the edge, so it
    reads its settings from the environment on each request, and a variable set later counts."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self._env = env
        self._tokens: dict[tuple[str, str], GoogleIdToken] = {}

    def settings(self) -> PluginSettings:
        return read_settings(PluginSettings, self._env, PLUGIN_VARIABLES)

    def in_context(self) -> bool:
        return bool(self.settings().audience)

    def request_headers(self) -> dict[str, str]:
        settings = self.settings()
        if not settings.audience:
            return {}
        token = self._tokens.get((settings.audience, settings.service_account))
        if token is None:
            token = GoogleIdToken(settings.audience, service_account=settings.service_account)
            self._tokens[(settings.audience, settings.service_account)] = token
        return {"Authorization": f"Bearer {token()}"}
