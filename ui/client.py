"""HTTP client of the inference service: timeouts, retries with backoff, optional ID tokens."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from pipeline.id_token import GoogleIdToken
from ui.settings import UISettings

#: Statuses worth retrying: the service is starting, overloaded or being replaced.
RETRY_STATUSES = frozenset({502, 503, 504})


class ServiceUnavailableError(RuntimeError):
    """The service did not answer; the message is the one line the page shows."""


class ServiceClient:
    def __init__(
        self,
        settings: UISettings,
        token: Callable[[], str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = settings
        self.token = (
            token
            if token is not None
            else (GoogleIdToken(settings.api_audience) if settings.api_audience else None)
        )
        self.sleep = sleep
        self.http = httpx.Client(base_url=settings.api_url.rstrip("/"), timeout=settings.timeout_s)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The service's answer, retried with exponential backoff while it can't give one."""
        last = ""
        for attempt in range(max(1, self.settings.retries)):
            if attempt:
                self.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
            headers = dict(kwargs.pop("headers", {}) or {})
            if self.token is not None:
                headers["Authorization"] = f"Bearer {self.token()}"
            try:
                response = self.http.request(method, path, headers=headers, **kwargs)
            except httpx.TimeoutException:
                last = f"timed out after {self.settings.timeout_s:g}s"
                continue
            except httpx.TransportError as exc:
                last = f"cannot connect ({type(exc).__name__})"
                continue
            if response.status_code in RETRY_STATUSES and path != "/ready":
                last = f"answered {response.status_code}: {_detail(response)}"
                continue
            return response
        raise ServiceUnavailableError(
            f"The prediction service at {self.settings.api_url} {last}; check API_URL and that "
            "the service is running."
        )

    def predict(self, instances: list[dict[str, Any]]) -> httpx.Response:
        return self.request("POST", "/api/v1/predict", json={"instances": instances})

    def model(self) -> dict[str, Any]:
        response = self.request("GET", "/api/v1/model")
        response.raise_for_status()
        return dict(response.json())

    def health(self) -> tuple[bool, bool, str]:
        """(alive, ready, readiness detail)."""
        alive = self.request("GET", "/health").status_code == 200
        ready = self.request("GET", "/ready")
        return alive, ready.status_code == 200, str(ready.json().get("detail", ""))


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))[:200]
    except ValueError:
        return response.text[:200]
