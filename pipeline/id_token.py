"""Google ID tokens for Cloud Run IAM, and the MLflow plugin that puts one on every request.

Private MLflow on Cloud Run needs ``Authorization: Bearer <ID token>``; a static
``MLFLOW_TRACKING_TOKEN`` dies after an hour, in the middle of a long tuning job. The provider
below is registered under MLflow's ``mlflow.request_header_provider`` entry point and, when
``MLFLOW_TRACKING_AUDIENCE`` is set, adds a token refreshed before it expires.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

AUDIENCE_VAR = "MLFLOW_TRACKING_AUDIENCE"


def _google_credentials(audience: str) -> Any:
    import google.auth.transport.requests
    from google.oauth2 import id_token

    request = google.auth.transport.requests.Request()
    return id_token.fetch_id_token_credentials(audience, request=request)


class GoogleIdToken:
    """ID tokens from google-auth (service account key, metadata server or gcloud user),
    refreshed ``refresh_margin`` before expiry; safe to share between threads."""

    def __init__(
        self,
        audience: str,
        refresh_margin: timedelta = timedelta(minutes=5),
        credentials: Callable[[str], Any] = _google_credentials,
    ):
        self.audience = audience
        self.refresh_margin = refresh_margin
        self._make = credentials
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


class IdTokenHeaderProvider(RequestHeaderProvider):
    """MLflow request-header provider: ``Authorization: Bearer <Google ID token>``."""

    def __init__(self) -> None:
        self._tokens: dict[str, GoogleIdToken] = {}

    def in_context(self) -> bool:
        return bool(os.environ.get(AUDIENCE_VAR))

    def request_headers(self) -> dict[str, str]:
        audience = os.environ.get(AUDIENCE_VAR, "")
        if not audience:
            return {}
        token = self._tokens.setdefault(audience, GoogleIdToken(audience))
        return {"Authorization": f"Bearer {token()}"}
