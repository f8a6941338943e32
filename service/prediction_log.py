"""The prediction log: every priced house, kept in the artifact store for the drift monitor,
realised-error joins and replays.

Off the request's path and bounded. A request only appends its rows to an in-memory buffer (no
I/O, no system call: an uncontended lock and two extends); a background thread writes them as
one parquet object per flush, when ``batch_rows`` are waiting or every ``interval_s``, whichever
comes first. A slow or failing store never slows or fails a prediction: the buffer holds at most
``capacity_rows``; rows that don't fit are dropped, and rows of a failed write are kept for the
next flush while they fit (after a failure the writer waits a whole interval before it tries
again). Written, dropped and failed writes are counted on ``/metrics`` and logged at most once
per interval, never silently.

Rows are buffered the way the writer needs them, so that it holds the interpreter's lock (which
the event loop then waits for) as little as possible: each row's numbers go into one flat array
of doubles as the request appends them (a few microseconds a request), so the writer's numeric
columns are views of that memory, and only the six text values of each row are turned into
columns by the writer, in C: about 0.3 ms for 1,000 rows on the bench's machine, where tuples
of every value took 1.5 ms. The array holds no objects, and tuples of strings are untracked by
the garbage collector at its first look, so a full buffer costs it little (a buffer holding the
requests' own objects made six times the young collections at 1,000 requests/s, on the event
loop's thread).

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
from array import array
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from model_runtime.contract import CATEGORICAL, EXAMPLE_HOUSE, FEATURES, NUMERIC_FEATURES
from model_runtime.prediction_records import COLUMNS, encode_table, object_key, schema

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
DAY_S = 86_400

_features = operator.attrgetter(*FEATURES)
#: A row's numbers, in this order in ``Rows.numbers``; its texts, in this order in ``Rows.texts``.
NUMBERS = ("time", *NUMERIC_FEATURES, "price", "status", "latency_ms")
TEXTS = ("request_id", "model_name", "model_version", "revision", CATEGORICAL, "form")
_WIDTH = len(NUMBERS)
_TIME = NUMBERS.index("time")
_version = operator.itemgetter(TEXTS.index("model_version"))


def _values(house: Any) -> tuple[Any, ...]:
    """The nine inputs of a house: a decoded ``House`` (attributes) or a mapping."""
    if isinstance(house, dict):
        return tuple(house.get(name) for name in FEATURES)
    return tuple(_features(house))


class Rows:
    """Priced houses as the writer takes them: every row's numbers (:data:`NUMBERS`, NaN for a
    missing one) in one flat array of doubles, every row's :data:`TEXTS` in a tuple."""

    __slots__ = ("numbers", "texts")

    def __init__(
        self, numbers: array[float] | None = None, texts: list[tuple[str, ...]] | None = None
    ):
        self.numbers: array[float] = array("d") if numbers is None else numbers
        self.texts: list[tuple[str, ...]] = [] if texts is None else texts

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def of(
        cls, houses: Sequence[Any], prices: Sequence[float], numbers: tuple[float, float, float],
        texts: tuple[str, str, str, str, str],
    ) -> Rows:  # fmt: skip
        """One request's rows: ``numbers`` are its (time, status, latency), ``texts`` its
        (request id, model name, model version, revision, form); raises ValueError for an input
        that is neither a number nor missing where a number is due. Made on the event loop's
        thread, so a single house, the usual request, takes the shortest way."""
        at, status, latency = numbers
        request_id, name, version, revision, form = texts
        if len(houses) == 1:
            v = _values(houses[0])
            flat: Sequence[Any] = (at, *v[:-1], prices[0], status, latency)
            rows: list[tuple[str, ...]] = [(request_id, name, version, revision, v[-1], form)]
        else:
            values = [_values(house) for house in houses]
            flat = [
                x for v, price in zip(values, prices, strict=True)
                for x in (at, *v[:-1], price, status, latency)
            ]  # fmt: skip
            rows = [(request_id, name, version, revision, v[-1], form) for v in values]
        try:
            packed = array("d", flat)
        except TypeError:  # a missing input (a bedroom count left out): NaN, null when written
            try:
                packed = array("d", [math.nan if x is None else x for x in flat])
            except TypeError as exc:
                raise ValueError(f"a house has an input that is not a number: {exc}") from None
        return cls(packed, rows)

    def head(self, n: int) -> Rows:
        return Rows(self.numbers[: n * _WIDTH], self.texts[:n])

    def extend(self, other: Rows) -> None:
        self.numbers.extend(other.numbers)
        self.texts.extend(other.texts)

    def prepend(self, other: Rows) -> None:
        self.numbers[:0] = other.numbers
        self.texts[:0] = other.texts

    def take(self, rows: Sequence[int]) -> Rows:
        """The rows at these positions, in their order."""
        import numpy as np

        matrix = np.frombuffer(self.numbers, dtype=np.float64).reshape(-1, _WIDTH)
        picked = array("d", matrix[list(rows)].tobytes())
        return Rows(picked, [self.texts[i] for i in rows])

    def groups(self) -> dict[tuple[int, str], Rows]:
        """The rows by (UTC day, model version), as their objects are partitioned, in the order
        first seen. Nearly every flush is one group, found in C (numpy, ``map``, ``count``) without
        a pass in Python over its rows."""
        if not self.texts:
            return {}
        import numpy as np

        times = np.frombuffer(self.numbers, dtype=np.float64)[_TIME::_WIDTH]
        # Days since the epoch: UTC days, as POSIX time has no leap seconds.
        days = (times // DAY_S).astype(np.int64)
        versions = list(map(_version, self.texts))
        first = versions[0]
        if days.min() == days.max() and versions.count(first) == len(versions):
            return {(int(days[0]), first): self}
        found: dict[tuple[int, str], list[int]] = {}
        for i, key in enumerate(zip(days.tolist(), versions, strict=True)):
            found.setdefault(key, []).append(i)
        return {key: self.take(rows) for key, rows in found.items()}

    def table(self) -> Any:
        """The rows as a table of ``prediction_records.COLUMNS``, typed as its ``schema()``."""
        import numpy as np
        import pyarrow as pa

        kinds = schema()
        matrix = np.frombuffer(self.numbers, dtype=np.float64).reshape(-1, _WIDTH)
        columns: dict[str, Any] = {}
        for i, name in enumerate(NUMBERS):
            column = np.ascontiguousarray(matrix[:, i])
            kind = kinds.field(name).type
            columns[name] = pa.array(
                column if name != "status" else column.astype(np.int64),
                type=kind,
                from_pandas=name in NUMERIC_FEATURES,  # a missing input: null
            )
        for name, values in zip(TEXTS, zip(*self.texts, strict=True), strict=True):
            first = values[0]
            if values.count(first) == len(values):  # a request's, or a process's, constant
                columns[name] = pa.repeat(pa.scalar(first, pa.string()), len(values))
            else:
                columns[name] = pa.array(values, type=pa.string())
        return pa.Table.from_arrays([columns[name] for name in COLUMNS], schema=kinds)


class PredictionLog:
    """A bounded buffer of priced houses and the thread that writes it out."""

    def __init__(
        self,
        write: Write,
        *,
        revision: str,
        instance: str = "",
        batch_rows: int = 10_000,
        interval_s: float = 10.0,
        capacity_rows: int = 100_000,
        clock: Callable[[], float] = time.time,
        warm_up: Callable[[], object] | None = None,
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
        self._rows = Rows()
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
        try:
            rows = Rows.of(
                houses, prices, (now, status, latency_ms),
                (request_id, model_name, model_version, self.revision, form),
            )  # fmt: skip
        except ValueError:
            with self._lock:
                self.dropped += len(houses)
            ROWS_DROPPED.inc(len(houses))
            return
        with self._lock:
            room = self.capacity_rows - len(self._rows)
            lost = len(rows) - room
            if lost > 0:
                rows = rows.head(max(room, 0))
                self.dropped += lost
            self._rows.extend(rows)
            full = len(self._rows) >= self.batch_rows
        if lost > 0:
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
                rows, self._rows = self._rows, Rows()
                self._writing = len(rows)
            if not rows:
                return 0
            written = 0
            try:
                for (day, version), group in rows.groups().items():
                    self._seq += 1
                    date = datetime.fromtimestamp(day * DAY_S, UTC).date().isoformat()
                    key = object_key(date, str(version), self.revision, self.instance, self._seq)
                    written += self._write_group(key, group)
            finally:
                self._writing = 0
            self.written += written
            ROWS_WRITTEN.inc(written)
            return written

    def _write_group(self, key: str, rows: Rows) -> int:
        try:
            data = encode_table(rows.table())
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

    def _requeue(self, rows: Rows) -> None:
        """A failed write's rows back at the buffer's head, the oldest first, while they fit."""
        with self._lock:
            room = self.capacity_rows - len(self._rows)
            kept = rows.head(max(room, 0))
            self._rows.prepend(kept)
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
            example = Rows.of(
                [EXAMPLE_HOUSE], [0.0], (0.0, 200, 0.0), ("", "", "", self.revision, "")
            )
            encode_table(example.table())
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
