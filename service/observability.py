"""JSON logs that Cloud Logging understands, one line per request, and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import REGISTRY, Counter, Gauge, generate_latest

PREDICTIONS = Counter(
    "housing_predictions_total", "Houses priced, by model version", ["model_version"]
)
MODEL_VERSION = Gauge("housing_model_version", "Version of the loaded model (0 = none loaded)")
IN_FLIGHT = Gauge(
    "http_requests_in_flight",
    "HTTP requests the app has begun and not yet answered (scrapes of /metrics not counted)",
)

METRICS_PATH = "/metrics"
#: The Prometheus text format, version 0.0.4: what prometheus_client serves by default and every
#: Prometheus server reads. Litestar adds ``; charset=utf-8`` to a text type it sends.
METRICS_MEDIA_TYPE = "text/plain; version=0.0.4"

_SEVERITY = {"WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "CRITICAL", "DEBUG": "DEBUG"}


class CloudJsonFormatter(logging.Formatter):
    """``severity``, ``message``, ``time`` and any ``json_fields`` passed in ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, "INFO"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        entry.update(getattr(record, "json_fields", {}) or {})
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(CloudJsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = name != "uvicorn.access"


access_log = logging.getLogger("service.access")


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def request_log_middleware(app: ASGIApp) -> ASGIApp:
    """Logs each HTTP request once, with latency, status, batch size, request id and trace."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        began = time.perf_counter()
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            latency = time.perf_counter() - began
            fields: dict[str, Any] = {
                "httpRequest": {
                    "requestMethod": scope.get("method", ""),
                    "requestUrl": scope.get("path", ""),
                    "status": status,
                    "latency": f"{latency:.6f}s",
                    "userAgent": _header(scope, b"user-agent"),
                },
                "request_id": request_id,
                "latency_ms": round(latency * 1000, 3),
            }
            if "batch_size" in state:
                fields["batch_size"] = state["batch_size"]
            trace = _header(scope, b"x-cloud-trace-context").split("/")[0]
            if trace:
                fields["logging.googleapis.com/trace"] = trace
            access_log.info(
                f"{scope.get('method', '')} {scope.get('path', '')} {status}",
                extra={"json_fields": fields},
            )

    return middleware


def in_flight_middleware(app: ASGIApp) -> ASGIApp:
    """Keeps ``http_requests_in_flight``: up when the app receives a request's head (its body
    may still be arriving), down when the request is done, whatever the outcome."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") == METRICS_PATH:
            await app(scope, receive, send)
            return
        IN_FLIGHT.inc()
        try:
            await app(scope, receive, send)
        finally:
            IN_FLIGHT.dec()

    return middleware


def exposition() -> bytes:
    """Every metric of this process in the Prometheus text format (``METRICS_MEDIA_TYPE``)."""
    return generate_latest(REGISTRY)
