"""HTTP client of the inference service: timeouts, retries with backoff, optional ID tokens."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from housing_platform.id_token import GoogleIdToken
from ui.settings import UISettings

#: Statuses worth retrying: the service is starting, overloaded or being replaced.
RETRY_STATUSES = frozenset({502, 503, 504})


class ServiceUnavailableError(RuntimeError):
    """The service did not answer, or not as the service does; the message is the one line the
    page shows."""


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
        """The service's JSON answer, retried with exponential backoff while it can't give one.

        An answer that isn't JSON comes from something else at API_URL (the UI itself, a proxy's
        error page): it is not retried but raised at once, in one line, as the service being
        unavailable."""
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
            if not _is_json(response):
                content_type = response.headers.get("content-type") or "no content type"
                raise ServiceUnavailableError(
                    f"The prediction service at {self.settings.api_url} did not answer JSON "
                    f"({response.status_code}, {content_type}); check API_URL."
                )
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


def _is_json(response: httpx.Response) -> bool:
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        return False
    try:
        response.json()
    except ValueError:
        return False
    return True


def _detail(response: httpx.Response) -> str:
    """The answer's ``detail``, or its text on one line (a proxy's error page is HTML)."""
    try:
        return str(response.json().get("detail", ""))[:200]
    except (ValueError, AttributeError):
        return " ".join(response.text.split())[:200]
