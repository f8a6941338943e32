"""The prediction log: every priced house, kept in the artifact store for the drift monitor,
realised-error joins and replays.

Off the request's path and bounded. A request only appends its rows to an in-memory buffer (no
I/O, no system call: an uncontended lock and a list extend); a background thread writes them as
one parquet object per flush, when ``batch_rows`` are waiting or every ``interval_s``, whichever
comes first. A slow or failing store never slows or fails a prediction: the buffer holds at most
``capacity_rows``; rows that don't fit are dropped, and rows of a failed write are kept for the
next flush while they fit (after a failure the writer waits a whole interval before it tries
again). Written, dropped and failed writes are counted on ``/metrics`` and logged at most once
per interval, never silently.

A row is a flat tuple of the request's values, made as the request is answered: about a
microsecond a house, which the writer would otherwise spend on the same core in one burst.
Tuples of plain values are soon untracked by the garbage collector, so a full buffer costs it
little; a buffer holding the requests' own objects (their houses, their lists of prices) made
six times the young collections at 1,000 requests/s, on the event loop's thread.

The objects' format and names are ``model_runtime.prediction_records``'s, which the
readers (monitor, feedback, replay) share.
"""

from __future__ import annotations

import logging
import math
import operator
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from model_runtime.contract import EXAMPLE_HOUSE, FEATURES
from model_runtime.prediction_records import COLUMNS, encode, encode_table, object_key

if TYPE_CHECKING:
    from housing_platform.artifact_store import ArtifactStore

log = logging.getLogger("service.prediction_log")

ROWS_WRITTEN = Counter(
    "housing_prediction_log_rows_written", "Priced houses written to the prediction log"
)
ROWS_DROPPED = Counter(
    "housing_prediction_log_rows_dropped",
    "Priced houses not logged: the buffer was full (a slow or failing store), or left unwritten "
    "when the process stopped",
)
WRITE_FAILURES = Counter(
    "housing_prediction_log_write_failures", "Prediction-log objects the store failed to write"
)
ROWS_BUFFERED = Gauge(
    "housing_prediction_log_rows_buffered", "Priced houses in memory, waiting to be written"
)

Write = Callable[[str, bytes], None]
#: One priced house, in ``prediction_records.COLUMNS`` order.
Row = tuple[Any, ...]
DAY_S = 86_400

_features = operator.attrgetter(*FEATURES)
_TIME = COLUMNS.index("time")
_VERSION = COLUMNS.index("model_version")
#: The writer holds the interpreter's lock while it sorts rows and turns them into columns, and
#: the event loop waits for it meanwhile: about 2 ms for 1,000 rows in one stretch, added to
#: every request then in flight, which is what the log cost at p99. So the writer converts
#: columns in slices of ``SLICE_ROWS`` values and steps aside for ``PAUSE_S`` after about
#: ``PAUSE_EVERY`` values (a sleep gives the lock up, long enough for the waiting loop to take
#: it): the loop waits at most about 0.4 ms. Not after every slice: each hand-over of the lock
#: costs the loop's thread system calls (futex), and the request path has a budget of 4.
#: (pyarrow writes the parquet file without the lock.)
SLICE_ROWS = 1024
PAUSE_EVERY = 4 * SLICE_ROWS
PAUSE_S = 0.0002


def _pause() -> None:
    time.sleep(PAUSE_S)


def encode_in_slices(rows: Sequence[Row], pause: Callable[[], None] = _pause) -> bytes:
    """``prediction_records.encode(rows)``, built a column slice at a time with ``pause()``
    after every ``PAUSE_EVERY`` values; the same file (a slice's types are unified with the
    others', as one pass over the whole column would infer them)."""
    import pyarrow as pa

    if not rows:
        return encode(rows)
    pieces: list[list[Any]] = [[] for _ in COLUMNS]
    since_pause = 0
    for start in range(0, len(rows), SLICE_ROWS):
        part = rows[start : start + SLICE_ROWS]
        for i, column in enumerate(pieces):
            column.append(pa.array([row[i] for row in part]))
            since_pause += len(part)
            if since_pause >= PAUSE_EVERY:
                pause()
                since_pause = 0
    columns = {}
    for name, column in zip(COLUMNS, pieces, strict=True):
        schemas = [pa.schema([(name, piece.type)]) for piece in column]
        kind = pa.unify_schemas(schemas, promote_options="permissive").field(name).type
        columns[name] = pa.chunked_array([piece.cast(kind) for piece in column], type=kind)
    return encode_table(pa.table(columns))


def _values(house: Any) -> tuple[Any, ...]:
    """The nine inputs of a house: a decoded ``House`` (attributes) or a mapping."""
    if isinstance(house, dict):
        return tuple(house.get(name) for name in FEATURES)
    return tuple(_features(house))


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
        warm_up: Callable[[], object] | None = None,
        pause: Callable[[], None] = _pause,
    ):
        if batch_rows < 1 or capacity_rows < batch_rows or interval_s <= 0:
            raise ValueError("need 1 <= batch_rows <= capacity_rows and interval_s > 0")
        self._write = write
        self._warm_up = warm_up
        self.revision = revision or "local"
        self.instance = instance or uuid.uuid4().hex[:12]
        self.batch_rows = batch_rows
        self.interval_s = interval_s
        self.capacity_rows = capacity_rows
        self._clock = clock
        self._pause = pause
        self._rows: list[Row] = []
        self._writing = 0  # rows taken by a flush and not yet written or given back
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time, so object numbers never repeat
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._warm = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.written = 0
        self.dropped = 0
        self.failed_writes = 0
        self.last_error = ""
        self._reported = (0, 0)
        self._reported_at = -math.inf

    # --- the request side: no I/O -----------------------------------------------------------

    def record(
        self,
        *,
        request_id: str,
        model_name: str,
        model_version: str,
        houses: Sequence[Any],
        prices: Sequence[float],
        form: str,
        status: int,
        latency_ms: float,
    ) -> None:
        """Buffer one request's priced houses (inputs as received, after normalisation: decoded
        ``House`` structs, or mappings with the nine inputs), one price each. Never blocks on
        the store, never raises: houses without a price (or prices without a house) are
        dropped, and counted."""
        now = self._clock()
        if len(houses) != len(prices):
            lost = max(len(houses), len(prices))
            with self._lock:
                self.dropped += lost
            ROWS_DROPPED.inc(lost)
            return
        revision = self.revision
        rows = [
            (
                request_id,
                now,
                model_name,
                model_version,
                revision,
                *_values(house),
                price,
                form,
                status,
                latency_ms,
            )
            for house, price in zip(houses, prices, strict=True)
        ]
        with self._lock:
            room = self.capacity_rows - len(self._rows)
            if len(rows) > room:
                kept = rows[: max(room, 0)]
                lost = len(rows) - len(kept)
                self.dropped += lost
            else:
                kept, lost = rows, 0
            self._rows.extend(kept)
            full = len(self._rows) >= self.batch_rows
        if lost:
            ROWS_DROPPED.inc(lost)
        if full and not self._wake.is_set():
            self._wake.set()  # once per batch, not per request

    # --- the writer side ----------------------------------------------------------------------

    def flush(self) -> int:
        """Write what is buffered now, one object per (day, model version); returns the rows
        written. Never raises: a failed write is counted, and its rows go back to the buffer
        while they fit."""
        with self._flushing:
            with self._lock:
                rows, self._rows = self._rows, []
                self._writing = len(rows)
            if not rows:
                return 0
            groups: dict[tuple[int, str], list[Row]] = {}
            for start in range(0, len(rows), PAUSE_EVERY):
                # Days since the epoch: UTC days, as POSIX time has no leap seconds.
                for row in rows[start : start + PAUSE_EVERY]:
                    groups.setdefault((int(row[_TIME] // DAY_S), row[_VERSION]), []).append(row)
                self._pause()
            written = 0
            try:
                for (day, version), group in groups.items():
                    self._seq += 1
                    date = datetime.fromtimestamp(day * DAY_S, UTC).date().isoformat()
                    key = object_key(date, str(version), self.revision, self.instance, self._seq)
                    written += self._write_group(key, group)
            finally:
                self._writing = 0
            self.written += written
            ROWS_WRITTEN.inc(written)
            return written

    def _write_group(self, key: str, rows: list[Row]) -> int:
        try:
            data = encode_in_slices(rows, self._pause)
        except Exception as exc:  # rows that can't be encoded never will be: dropped
            self._failed(key, exc, dropped=len(rows))
        else:
            try:
                self._write(key, data)
            except Exception as exc:
                self._failed(key, exc)
                self._requeue(rows)
            else:
                return len(rows)
        finally:
            self._writing -= len(rows)
        return 0

    def _failed(self, key: str, exc: Exception, dropped: int = 0) -> None:
        self.failed_writes += 1
        WRITE_FAILURES.inc()
        self.last_error = f"writing {key} failed: {type(exc).__name__}: {exc}"
        log.debug("prediction log: %s", self.last_error)
        if dropped:
            with self._lock:
                self.dropped += dropped
            ROWS_DROPPED.inc(dropped)

    def _requeue(self, rows: list[Row]) -> None:
        """A failed write's rows back at the buffer's head, the oldest first, while they fit."""
        with self._lock:
            room = self.capacity_rows - len(self._rows)
            kept = rows[: max(room, 0)]
            self._rows[:0] = kept
            lost = len(rows) - len(kept)
            self.dropped += lost
        if lost:
            ROWS_DROPPED.inc(lost)

    def report(self, *, force: bool = False) -> None:
        """One log line when rows were dropped or writes failed since the last line, at most
        once per interval (``force``: now, as at shutdown)."""
        dropped, failed = self.dropped, self.failed_writes
        now = time.monotonic()
        if (dropped, failed) == self._reported:
            return
        if not force and now - self._reported_at < self.interval_s:
            return
        last = f" (last: {self.last_error})" if failed != self._reported[1] else ""
        log.warning(
            "prediction log: %d rows dropped and %d writes failed so far, %d rows written%s",
            dropped,
            failed,
            self.written,
            last,
        )
        self._reported = (dropped, failed)
        self._reported_at = now

    def _run(self) -> None:
        try:
            if self._warm_up is not None:
                self._warm_up()
            # The first table and parquet file pay for set-up that no flush should.
            example = (
                "", 0.0, "", "", self.revision, *_values(EXAMPLE_HOUSE), 0.0, "", 200, 0.0
            )  # fmt: skip
            encode_in_slices([example])
        except Exception as exc:  # the first write tries again, and counts a failure
            log.warning("prediction log: getting ready to write failed: %s", exc)
        self._warm.set()
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            failures = self.failed_writes
            self.flush()
            self.report()
            if self.failed_writes != failures:
                # A failing store is tried again after an interval, not at every full batch.
                self._stop.wait(self.interval_s)
        self.flush()  # the final flush: what was answered since the last one

    def start(self) -> PredictionLog:
        if self._thread is None:
            self._stop.clear()
            ROWS_BUFFERED.set_function(lambda: self.buffered)
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()
        return self

    def wait_warm(self, timeout_s: float) -> bool:
        """Wait until the writer has done its warm-up (imports, opening the store), so that it
        doesn't hold the interpreter while the first requests are served."""
        return self._warm.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> bool:
        """Stop the writer after its final flush, waiting at most ``timeout_s`` (the service's
        shutdown calls this after the drain). True when everything buffered was written; what
        wasn't is counted as dropped and logged."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is None:
            self.flush()
        else:
            thread.join(timeout_s)
            if not thread.is_alive():
                self._thread = None
        with self._lock:
            left = len(self._rows) + self._writing
        if left:
            with self._lock:
                self.dropped += left
            ROWS_DROPPED.inc(left)
            log.error(
                "prediction log: %d rows not written at shutdown (%s)",
                left,
                "the final flush failed"
                if self._thread is None
                else f"the final flush did not finish in {timeout_s:g} s",
            )
        self.report(force=True)
        log.info(
            "prediction log closed: %d rows written, %d dropped, %d writes failed",
            self.written,
            self.dropped,
            self.failed_writes,
        )
        return left == 0

    @property
    def buffered(self) -> int:
        return len(self._rows)


class StoreWriter:
    """Writes the log's objects through the artifact store at ``uri`` (a folder, or
    ``gs://bucket/prefix`` with ``gcs_client``, or Google's default client). The store is opened
    on the writer's thread, not at start-up: a store that can't be opened is a failed write,
    counted and tried again, never a service that doesn't start."""

    def __init__(self, uri: str, gcs_client: Any = None):
        self.uri = uri
        self._gcs_client = gcs_client
        self._store: ArtifactStore | None = None

    def open(self) -> ArtifactStore:
        """The store, opened once; the parquet writer is imported here too, so that neither is
        paid for by the first flush (which may be the final one, on a budget)."""
        if self._store is None:
            import pyarrow.parquet  # noqa: F401

            from housing_platform.artifact_store import open_store

            self._store = open_store(self.uri, self._gcs_client)
        return self._store

    def __call__(self, key: str, data: bytes) -> None:
        self.open().write_bytes(key, data)
