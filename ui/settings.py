"""The UI's settings, read once from the environment (``housing_platform.settings_reader``)."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from housing_platform.settings_reader import read_settings


class UISettings(msgspec.Struct, frozen=True, kw_only=True):
    api_url: str = "http://127.0.0.1:8080"
    """API_URL: the inference service."""
    api_audience: str = ""
    """API_AUDIENCE: when set, every request carries a Google ID token for this audience."""
    id_token_service_account: str = ""
    """GOOGLE_ID_TOKEN_SERVICE_ACCOUNT: the account to mint ID tokens as under workload identity
    federation, when the credentials file names none."""
    timeout_s: float = 10.0
    """API_TIMEOUT_S: per-request timeout, so the page never freezes."""
    retries: int = 3
    """API_RETRIES: attempts for a request the service could not answer (with backoff)."""


#: The variables the UI reads, and the setting each one sets.
VARIABLES = {
    "API_URL": "api_url",
    "API_AUDIENCE": "api_audience",
    "GOOGLE_ID_TOKEN_SERVICE_ACCOUNT": "id_token_service_account",
    "API_TIMEOUT_S": "timeout_s",
    "API_RETRIES": "retries",
}


def from_env(env: Mapping[str, str]) -> UISettings:
    return read_settings(UISettings, env, VARIABLES)
