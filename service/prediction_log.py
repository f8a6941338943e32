"""The prediction log: every priced house, kept in the artifact store for the drift monitor,
realised-error joins and replays.

Off the request's path and bounded. A request only appends rows to an in-memory buffer (no I/O,
no system call: an uncontended lock and a list extend); a background thread writes them as one
parquet object per flush, when ``batch_rows`` are waiting or every ``interval_s``, whichever comes
first. A slow or failing store never slows or fails a prediction: the buffer holds at most
``capacity_rows``; rows that don't fit are dropped, and rows of a failed write are kept for the
next flush while they fit. Written, dropped and failed writes are counted on ``/metrics`` and
logged once per interval, never silently.

The objects' format and names are ``model_runtime.prediction_records``'s, which the
readers (monitor, feedback, replay) share.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from model_runtime.contract import FEATURES
from model_runtime.prediction_records import COLUMNS, encode, object_key

log = logging.getLogger("service.prediction_log")

ROWS_WRITTEN = Counter(
    "housing_prediction_log_rows_written", "Priced houses written to the prediction log"
)
ROWS_DROPPED = Counter(
    "housing_prediction_log_rows_dropped",
    "Priced houses not logged: the buffer was full (a slow or failing store)",
)
WRITE_FAILURES = Counter(
    "housing_prediction_log_write_failures", "Prediction-log objects the store failed to write"
)

Row = tuple[Any, ...]
Write = Callable[[str, bytes], None]


class PredictionLog:
    """A bounded buffer of priced houses and the thread that writes it out."""

    def __init__(
        self,
        write: Write,
        *,
        revision: str,
        instance: str = "",
        batch_rows: int = 1000,
        interval_s: float = 10.0,
        capacity_rows: int = 100_000,
        clock: Callable[[], float] = time.time,
    ):
        if batch_rows < 1 or capacity_rows < batch_rows or interval_s <= 0:
            raise ValueError("need 1 <= batch_rows <= capacity_rows and interval_s > 0")
        self._write = write
        self.revision = revision or "local"
        self.instance = instance or uuid.uuid4().hex[:12]
        self.batch_rows = batch_rows
        self.interval_s = interval_s
        self.capacity_rows = capacity_rows
        self._clock = clock
        self._rows: list[Row] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.written = 0
        self.dropped = 0
        self.failed_writes = 0
        self._reported = (0, 0)

    # --- the request side: no I/O -----------------------------------------------------------

    def record(
        self,
        *,
        request_id: str,
        model_name: str,
        model_version: str,
        houses: Iterable[Mapping[str, Any]],
        prices: Sequence[float],
        form: str,
        status: int,
        latency_ms: float,
    ) -> None:
        """Buffer one request's priced houses (inputs as received, after normalisation)."""
        now = self._clock()
        rows = [
            (
                request_id,
                now,
                model_name,
                model_version,
                self.revision,
                *(house.get(name) for name in FEATURES),
                float(price),
                form,
                status,
                latency_ms,
            )
            for house, price in zip(houses, prices, strict=True)
        ]
        with self._lock:
            room = self.capacity_rows - len(self._rows)
            kept = rows[: max(room, 0)]
            self._rows.extend(kept)
            lost = len(rows) - len(kept)
            self.dropped += lost
            full = len(self._rows) >= self.batch_rows
        if lost:
            ROWS_DROPPED.inc(lost)
        if full and not self._wake.is_set():
            self._wake.set()  # once per batch, not per request

    # --- the writer side ----------------------------------------------------------------------

    def flush(self) -> int:
        """Write what is buffered now; returns the rows written. Never raises: a failed write
        is counted, and its rows go back to the buffer while they fit."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        groups: dict[tuple[str, str], list[Row]] = {}
        version_at = COLUMNS.index("model_version")
        for row in rows:
            day = datetime.fromtimestamp(row[1], UTC).date().isoformat()
            groups.setdefault((day, str(row[version_at])), []).append(row)
        written = 0
        for (day, version), group in groups.items():
            self._seq += 1
            key = object_key(day, version, self.revision, self.instance, self._seq)
            try:
                self._write(key, encode(group))
            except Exception as exc:
                self.failed_writes += 1
                WRITE_FAILURES.inc()
                log.warning("prediction log: writing %s failed: %s", key, exc)
                self._requeue(group)
                continue
            written += len(group)
        self.written += written
        ROWS_WRITTEN.inc(written)
        return written

    def _requeue(self, rows: list[Row]) -> None:
        with self._lock:
            room = self.capacity_rows - len(self._rows)
            kept = rows[: max(room, 0)]
            self._rows[:0] = kept
            lost = len(rows) - len(kept)
            self.dropped += lost
        if lost:
            ROWS_DROPPED.inc(lost)

    def report(self) -> None:
        """One log line when rows were dropped or writes failed since the last report."""
        dropped, failed = self.dropped, self.failed_writes
        if (dropped, failed) != self._reported:
            log.warning(
                "prediction log: %d rows dropped and %d writes failed so far (written %d)",
                dropped,
                failed,
                self.written,
            )
            self._reported = (dropped, failed)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self.flush()
            self.report()

    def start(self) -> PredictionLog:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the writer and write what is left (the service's shutdown calls this)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.flush()
        self.report()

    @property
    def buffered(self) -> int:
        return len(self._rows)
