"""JSON logs that Cloud Logging understands, one line per request, and Prometheus metrics.

A request makes no system call of its own beyond reading its body and sending its answer: its
access line is written with others in one write (:class:`BatchedHandler`), log records don't ask
the kernel for the process id, request ids are a per-process random prefix and a counter (no
``getrandom``), and its priced houses go to the prediction log's buffer.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import REGISTRY, Counter, Gauge, generate_latest

if TYPE_CHECKING:
    from service.prediction_log import PredictionLog

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


ACCESS_LOGGER = "service.access"
access_log = logging.getLogger(ACCESS_LOGGER)


class BatchedHandler(logging.Handler):
    """Writes formatted records to ``stream``; the access lines (INFO records of ``batched``
    loggers) wait in memory and go out together, every ``interval_s`` or ``max_lines``, in one
    write, so a request makes no write of its own. Any other record is written at once, after
    the lines waiting before it (order kept): warnings, errors, start and stop."""

    def __init__(
        self,
        stream: IO[str],
        *,
        interval_s: float = 1.0,
        max_lines: int = 1000,
        batched: frozenset[str] = frozenset({ACCESS_LOGGER}),
    ):
        super().__init__()
        self.stream = stream
        self.interval_s = interval_s
        self.max_lines = max_lines
        self.batched = batched
        self._lines: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            self._lines.append(self.format(record) + "\n")
            if (
                record.levelno >= logging.WARNING
                or record.name not in self.batched
                or len(self._lines) >= self.max_lines
            ):
                self._write()
            elif self._thread is None:
                self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
                self._thread.start()
        except Exception:
            self.handleError(record)

    def _write(self) -> None:
        if self._lines:
            text, self._lines = "".join(self._lines), []
            self.stream.write(text)
            self.stream.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._write()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()


def configure_logging(level: str, stream: IO[str] | None = None) -> BatchedHandler:
    """JSON lines on stdout (or ``stream``) for the whole process. Records don't carry the
    process id (``logging.logProcesses``), which costs a ``getpid`` system call per record."""
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchedHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(CloudJsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = name != "uvicorn.access"
    return handler


class RequestIds:
    """Request ids without a system call: a random prefix drawn once per process (and again in
    a forked child) and a counter, as 32 hex digits, the shape of a UUID's."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self.prefix}{next(self._counter):016x}"


new_request_id = RequestIds()


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


#: What a predict handler leaves in the request's state for the prediction log: model name,
#: model version, the form that answered, the houses and their prices.
PRICED = "priced"
Priced = tuple[str, str, str, Any, Any]


def request_log(prediction_log: PredictionLog | None = None) -> Callable[[ASGIApp], ASGIApp]:
    """The middleware that gives each request its id and, once it is answered, writes its
    access line and hands its priced houses to ``prediction_log`` with the status and latency."""

    def request_log_middleware(app: ASGIApp) -> ASGIApp:
        """Logs each HTTP request once, with latency, status, batch size, request id and trace;
        records the houses it priced, if any, in the prediction log."""

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            began = time.perf_counter()
            request_id = _header(scope, b"x-request-id") or new_request_id()
            state = scope.setdefault("state", {})
            state["request_id"] = request_id
            status = 0

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
                latency_ms = round(latency * 1000, 3)
                priced: Priced | None = state.get(PRICED)
                if priced is not None and prediction_log is not None and status:
                    name, version, form, houses, prices = priced
                    prediction_log.record(
                        request_id=request_id,
                        model_name=name,
                        model_version=version,
                        houses=houses,
                        prices=prices,
                        form=form,
                        status=status,
                        latency_ms=latency_ms,
                    )
                shown = status or 500  # no answer began: the handler failed or was cancelled
                fields: dict[str, Any] = {
                    "httpRequest": {
                        "requestMethod": scope.get("method", ""),
                        "requestUrl": scope.get("path", ""),
                        "status": shown,
                        "latency": f"{latency:.6f}s",
                        "userAgent": _header(scope, b"user-agent"),
                    },
                    "request_id": request_id,
                    "latency_ms": latency_ms,
                }
                if "batch_size" in state:
                    fields["batch_size"] = state["batch_size"]
                trace = _header(scope, b"x-cloud-trace-context").split("/")[0]
                if trace:
                    fields["logging.googleapis.com/trace"] = trace
                access_log.log(
                    logging.ERROR if shown >= 500 else logging.INFO,
                    f"{scope.get('method', '')} {scope.get('path', '')} {shown}",
                    extra={"json_fields": fields},
                )

        return middleware

    return request_log_middleware


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
