"""The UI's settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec


class UISettings(msgspec.Struct, frozen=True, kw_only=True):
    api_url: str = "http://127.0.0.1:8080"
    """API_URL: the inference service."""
    api_audience: str = ""
    """API_AUDIENCE: when set, every request carries a Google ID token for this audience."""
    timeout_s: float = 10.0
    """API_TIMEOUT_S: per-request timeout, so the page never freezes."""
    retries: int = 3
    """API_RETRIES: attempts for a request the service could not answer (with backoff)."""


def from_env(env: Mapping[str, str]) -> UISettings:
    raw = {
        "api_url": env.get("API_URL"),
        "api_audience": env.get("API_AUDIENCE"),
        "timeout_s": env.get("API_TIMEOUT_S"),
        "retries": env.get("API_RETRIES"),
    }
    try:
        return msgspec.convert({k: v for k, v in raw.items() if v}, UISettings, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"UI settings: {exc}") from None
