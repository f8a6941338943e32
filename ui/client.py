"""HTTP client of the inference service: timeouts, retries with backoff, optional ID tokens,
and the limits the service publishes for one request."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import httpx
import msgspec
from msgspec import Meta

from housing_platform.id_token import GoogleIdToken
from ui.settings import UISettings

#: Statuses worth retrying: the service is starting, overloaded or being replaced.
RETRY_STATUSES = frozenset({502, 503, 504})


class ServiceError(RuntimeError):
    """The service could not do what the page asked; the message is the one line it shows."""


class ServiceUnavailableError(ServiceError):
    """The service did not answer, or not as the service does."""


class ServiceRefusedError(ServiceError):
    """The service answered with an error that asking again won't change (413, a 5xx, …)."""


class SourceDownError(ServiceError):
    """A source behind the service (the model registry, the artifact store) is down."""


class NotThereError(ServiceError):
    """What was asked for does not exist (yet): a version without reports, say."""


class ServiceLimits(msgspec.Struct):
    """What the service accepts in one request, as ``GET /api/v1/model`` publishes it."""

    max_instances: Annotated[int, Meta(ge=1)]
    """Houses in one request (the service's MAX_INSTANCES)."""
    max_body_bytes: Annotated[int, Meta(ge=1)] | None = None
    """Bytes in one request's body (its MAX_BODY_BYTES); None from a service that doesn't say."""


def predict_body(instances: Sequence[Mapping[str, Any]]) -> bytes:
    """The body of ``POST /api/v1/predict``, compact JSON (NaN is null): exactly the bytes the
    service counts against MAX_BODY_BYTES."""
    return msgspec.json.encode({"instances": instances})


class ServiceClient:
    def __init__(
        self,
        settings: UISettings,
        token: Callable[[], str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        http: httpx.Client | None = None,
    ):
        self.settings = settings
        self.token = (
            token
            if token is not None
            else (
                GoogleIdToken(
                    settings.api_audience, service_account=settings.id_token_service_account
                )
                if settings.api_audience
                else None
            )
        )
        self.sleep = sleep
        self.http = http or httpx.Client(
            base_url=settings.api_url.rstrip("/"), timeout=settings.timeout_s
        )

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The service's JSON answer, retried with exponential backoff while it can't give one.

        An answer that isn't JSON comes from something else at API_URL (the UI itself, a proxy's
        error page): it is not retried but raised at once, in one line, as the service being
        unavailable."""
        last = ""
        given = dict(kwargs.pop("headers", {}) or {})
        for attempt in range(max(1, self.settings.retries)):
            if attempt:
                self.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
            headers = dict(given) | self._auth()
            try:
                response = self.http.request(method, path, headers=headers, **kwargs)
            except httpx.TimeoutException:
                last = f"timed out after {self.settings.timeout_s:g}s"
                continue
            except httpx.TransportError as exc:
                last = f"cannot connect ({type(exc).__name__})"
                continue
            if (
                response.status_code in RETRY_STATUSES
                and path != "/ready"
                and not _names_source(response)
            ):
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

    def predict(self, instances: Sequence[Mapping[str, Any]]) -> httpx.Response:
        return self.request(
            "POST",
            "/api/v1/predict",
            content=predict_body(instances),
            headers={"content-type": "application/json"},
        )

    def model(self) -> dict[str, Any]:
        response = self.request("GET", "/api/v1/model")
        if response.status_code != 200:
            raise self.refused(response, "GET /api/v1/model")
        return dict(response.json())

    def limits(self) -> ServiceLimits:
        """Houses and bytes the service accepts in one request, as it publishes them."""
        try:
            return msgspec.convert(self.model(), ServiceLimits)
        except msgspec.ValidationError as exc:
            raise ServiceRefusedError(
                f"The prediction service at {self.settings.api_url} does not publish its limits "
                f"in GET /api/v1/model ({exc}); check API_URL."
            ) from None

    def refused(self, response: httpx.Response, asked: str) -> ServiceRefusedError:
        """One line for an error answer to ``asked``: the status, the service's detail, the fix."""
        status = response.status_code
        answered = f"answered {status} to {asked}: {_detail(response) or response.reason_phrase}"
        if status == 413:
            fix = (
                "check MAX_BODY_BYTES on the service (it accepts less than GET /api/v1/model "
                "publishes) and the body limit of any proxy in front of it"
            )
        elif status >= 500:
            fix = "see the service's logs, then try again"
        else:
            fix = "check API_URL"
        return ServiceRefusedError(
            f"The prediction service at {self.settings.api_url} {answered}; {fix}."
        )

    def operator(self, path: str, **params: Any) -> dict[str, Any]:
        """An operator endpoint's answer (``/api/v1/operator/<path>``). A source the service
        reads being down, or the service refusing, is one line naming which."""
        response = self.request("GET", f"/api/v1/operator/{path}", params=params or None)
        if response.status_code == 200:
            return dict(response.json())
        body = response.json() if _is_json(response) else {}
        if response.status_code == 503 and isinstance(body, dict) and body.get("source"):
            raise SourceDownError(f"The {body['source']} is down: {body.get('detail', '')}")
        if response.status_code == 404:
            raise NotThereError(str(body.get("detail", "not found")))
        raise self.refused(response, f"GET /api/v1/operator/{path}")

    def plot(self, key: str) -> bytes:
        """A PNG plot a report names, through the service."""
        response = self.http.get("/api/v1/operator/plot", params={"key": key}, headers=self._auth())
        if response.status_code != 200:
            raise self.refused(response, f"a plot ({key})")
        return response.content

    def _auth(self) -> dict[str, str]:
        """The ID token twice: Cloud Run's IAM reads ``X-Serverless-Authorization`` (and strips
        its signature), and passes ``Authorization`` on untouched for the service's own check
        of operator callers."""
        if self.token is None:
            return {}
        bearer = f"Bearer {self.token()}"
        return {"Authorization": bearer, "X-Serverless-Authorization": bearer}

    def health(self) -> tuple[bool, bool, str]:
        """(alive, ready, readiness detail)."""
        alive = self.request("GET", "/health").status_code == 200
        ready = self.request("GET", "/ready")
        return alive, ready.status_code == 200, str(ready.json().get("detail", ""))


def _names_source(response: httpx.Response) -> bool:
    """A 503 of the operator endpoints: the service answered, a source behind it is down
    (asking again at once won't change that)."""
    if response.status_code != 503 or not _is_json(response):
        return False
    body = response.json()
    return isinstance(body, dict) and bool(body.get("source"))


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
