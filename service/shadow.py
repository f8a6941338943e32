"""The shadow mirror: the stable revision sends a share of the houses it priced to the shadow
revision, which serves nobody, and compares the answers.

What to mirror and where comes from the release feed (``housing_platform.release_feed``) in the
artifact store, read every ``SHADOW_FEED_SECONDS`` in a worker thread: a revision's template is
fixed, so the share can't be an environment variable. Only the revision the feed names as stable
mirrors (the shadow reads the same feed and must not mirror to itself).

A request never waits for the mirror. Once its answer is sent, the middleware hands its houses,
prices and latency to ``offer``: no I/O, a few list operations on the event loop. Every
``SHADOW_BATCH_MS`` the queued houses go out as one request (at most ``SHADOW_BATCH_HOUSES``),
at most ``SHADOW_CONCURRENCY`` at once, each with a ``SHADOW_TIMEOUT_SECONDS`` deadline; what
finds the queue full (``SHADOW_CAPACITY_HOUSES``) or the target gone is dropped. Each house ends
in exactly one outcome, so on ``/metrics``::

    housing_shadow_mirrored_houses_total
        = sum of housing_shadow_houses_total{outcome=answered|timed_out|dropped|failed}
          + housing_shadow_pending_houses

Answers are compared per window (``SHADOW_WINDOW_SECONDS``, aligned to the clock): once every
house of a window has its outcome, its report (``service.shadow_report``) is built, written to
the artifact store and logged to MLflow in a worker thread. On GCP the shadow tag URL needs an
ID token (``SHADOW_GOOGLE_AUTH``), minted for the service's own URL in the feed's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import Counter, Gauge

from housing_platform import release_feed
from housing_platform.release_feed import ReleaseFeed
from model_runtime.loader import parse_models_uri
from service import shadow_report
from service.observability import PRICED
from service.shadow_http import ShadowHttp
from service.shadow_report import Outcomes

if TYPE_CHECKING:
    from housing_platform.artifact_store import ArtifactStore
    from service.settings import ServiceSettings

log = logging.getLogger("service.shadow")

MIRRORED = Counter(
    "housing_shadow_mirrored_houses", "Priced houses chosen to be mirrored to the shadow revision"
)
OUTCOMES = Counter(
    "housing_shadow_houses",
    "Mirrored houses by outcome: answered by the shadow, timed out, dropped (queue full, every "
    "slot busy at shutdown, or the target gone) or failed (an error or a wrong answer)",
    ["outcome"],
)
PENDING = Gauge("housing_shadow_pending_houses", "Mirrored houses queued or in flight")
PERCENT = Gauge("housing_shadow_percent", "Share of prediction requests mirrored now, 0-100")
REPORTS = Counter("housing_shadow_reports", "Shadow reports written to the artifact store")
REPORT_FAILURES = Counter(
    "housing_shadow_report_failures", "Shadow reports that could not be written or logged"
)
OUTCOME_NAMES = ("answered", "timed_out", "dropped", "failed")
for _name in OUTCOME_NAMES:
    OUTCOMES.labels(_name)  # every outcome shows on /metrics from the start, at 0


class _Price(msgspec.Struct):
    predicted_price: float


class _Answer(msgspec.Struct):
    predictions: list[_Price]


_answer = msgspec.json.Decoder(_Answer)
_encoder = msgspec.json.Encoder()


def audience_for(url: str) -> str:
    """The ID-token audience of a Cloud Run URL: the service's own URL, which Cloud Run always
    accepts, also for a tag URL (``https://shadow---api-x.a.run.app`` → ``https://api-x.a.run.app``)."""
    parts = urlsplit(url)
    host = parts.netloc.split("---", 1)[-1]
    return f"{parts.scheme}://{host}"


@dataclass(frozen=True)
class Target:
    """Where mirrored houses go, from the feed."""

    url: str
    percent: int
    revision: str
    model_version: int
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.url, self.revision, self.model_version)


def target_of(
    feed: ReleaseFeed | None, revision: str, headers: dict[str, str] | None = None
) -> Target | None:
    """The target a revision named ``revision`` mirrors to under ``feed``, or None: no feed, a
    share of 0, no URL, or this revision is not the feed's stable revision (or is the shadow)."""
    if feed is None or not feed.mirroring or feed.stable_revision != revision:
        return None
    if feed.shadow_revision == revision:
        return None
    return Target(
        url=feed.shadow_url.rstrip("/") + "/api/v1/predict",
        percent=feed.shadow_percent,
        revision=feed.shadow_revision,
        model_version=feed.shadow_model_version,
        headers=headers or {},
    )


class Sampler:
    """Picks ``percent`` of the requests, evenly and without randomness: 25 picks every fourth."""

    def __init__(self) -> None:
        self._credit = 0

    def pick(self, percent: int) -> bool:
        self._credit += percent
        if self._credit >= 100:
            self._credit -= 100
            return True
        return False


@dataclass(eq=False)
class Window:
    """One window's mirrored houses: their outcomes, both sides' prices and latencies."""

    start: float
    target: Target
    end: float = math.nan
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOME_NAMES, 0))
    mirrored: int = 0
    pending: int = 0
    stable_prices: list[float] = field(default_factory=list)
    shadow_prices: list[float] = field(default_factory=list)
    stable_latency_ms: list[float] = field(default_factory=list)
    shadow_latency_ms: list[float] = field(default_factory=list)

    @property
    def closed(self) -> bool:
        return not math.isnan(self.end)

    def outcomes(self) -> Outcomes:
        return Outcomes(mirrored=self.mirrored, **self.counts)


#: One request's mirrored houses: its window, houses, the stable prices and latency (ms).
Entry = tuple[Window, list[Any], list[float], float]


class ShadowMirror:
    """Mirrors the stable revision's priced houses to the shadow; see the module's docstring.
    ``offer`` and everything after it run on the event loop, ``start``/``close`` in the
    lifespan."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        store: Callable[[], ArtifactStore],
        served_version: Callable[[], str],
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.revision = settings.revision_name
        self._store = store
        self._served_version = served_version
        self._clock = clock
        self.target: Target | None = None
        self._sampler = Sampler()
        self._queue: deque[Entry] = deque()
        self._queued = 0
        self._in_flight = 0
        self._window: Window | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._client: ShadowHttp | None = None
        self._tokens: dict[str, Callable[[], str]] = {}
        self._last_problem = ""

    # --- lifespan -----------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._client = ShadowHttp(s.shadow_timeout_seconds, s.shadow_concurrency)
        self._poller = asyncio.create_task(self._poll_forever(), name="shadow-feed")

    async def close(self) -> None:
        """Stops reading the feed, drops what is still queued, lets the requests in flight end
        (each within its timeout) and writes the last window's report."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._drop(list(self._queue))
        self._queue.clear()
        self._queued = 0
        self._close_window(self._clock())
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    # --- the feed -----------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        s = self.settings
        every = min(s.shadow_feed_seconds, s.shadow_window_seconds)
        while True:
            try:
                feed, headers = await anyio.to_thread.run_sync(self._read_feed)
                self._apply(target_of(feed, self.revision, headers))
                self._problem("")
            except Exception as exc:  # the store or the token: keep the last target, say why
                self._problem(f"{type(exc).__name__}: {str(exc)[:300]}")
            now = self._clock()
            window = self._window
            if window is not None and now >= window.start + s.shadow_window_seconds:
                self._close_window(window.start + s.shadow_window_seconds)
            await asyncio.sleep(every)

    def _read_feed(self) -> tuple[ReleaseFeed | None, dict[str, str]]:
        """In a worker thread: the feed, and an ID token's header when the settings ask for one
        (google-auth refreshes it only when it nears expiry)."""
        feed = release_feed.read(self._store())
        if feed is None or not feed.mirroring or not self.settings.shadow_google_auth:
            return feed, {}
        audience = audience_for(feed.shadow_url)
        token = self._tokens.get(audience)
        if token is None:
            from housing_platform.id_token import GoogleIdToken

            token = self._tokens[audience] = GoogleIdToken(audience)
        return feed, {"Authorization": f"Bearer {token()}"}

    def _problem(self, problem: str) -> None:
        if problem and problem != self._last_problem:
            log.warning("shadow mirror: reading the release feed failed: %s", problem)
        self._last_problem = problem

    def _apply(self, target: Target | None) -> None:
        old = self.target
        if old is not None and (target is None or target.key != old.key):
            self._close_window(self._clock())
        if (old is None) != (target is None) or (old and target and old.key != target.key):
            if target is None:
                log.info("shadow mirror: off")
            else:
                log.info(
                    "shadow mirror: %d%% of prediction requests to %s (revision %s, model "
                    "version %s)",
                    target.percent,
                    target.url,
                    target.revision,
                    target.model_version,
                )
        self.target = target
        PERCENT.set(target.percent if target is not None else 0)

    # --- the request side: no I/O --------------------------------------------------------------

    def offer(self, houses: list[Any], prices: list[float], latency_ms: float) -> None:
        """One answered request's houses and prices, after its answer was sent."""
        target = self.target
        if target is None or not self._sampler.pick(target.percent):
            return
        n = len(houses)
        window = self._current_window(target)
        MIRRORED.inc(n)
        window.mirrored += n
        if self._queued + n > self.settings.shadow_capacity_houses:
            self._count(window, "dropped", n)
            return
        self._queue.append((window, houses, prices, latency_ms))
        self._queued += n
        window.pending += n
        PENDING.inc(n)
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self.settings.shadow_batch_ms / 1000, self._flush)

    def _current_window(self, target: Target) -> Window:
        window = self._window
        if window is None:
            size = self.settings.shadow_window_seconds
            start = math.floor(self._clock() / size) * size
            window = self._window = Window(start, target)
        return window

    def _count(self, window: Window, outcome: str, n: int) -> None:
        OUTCOMES.labels(outcome).inc(n)
        window.counts[outcome] += n

    def _settle(self, entries: list[Entry], outcome: str) -> None:
        """Gives ``entries``' houses their outcome; a closed window whose houses all have one is
        reported."""
        for window, houses, _, _ in entries:
            n = len(houses)
            self._count(window, outcome, n)
            window.pending -= n
            PENDING.dec(n)
            if window.closed and window.pending == 0:
                self._report(window)

    def _drop(self, entries: list[Entry]) -> None:
        self._settle(entries, "dropped")

    # --- sending ------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_handle = None
        target = self.target
        if target is None:  # mirroring stopped while houses waited
            self._drop(list(self._queue))
            self._queue.clear()
            self._queued = 0
            return
        limit = self.settings.shadow_batch_houses
        while self._queue and self._in_flight < self.settings.shadow_concurrency:
            batch: list[Entry] = []
            size = 0
            stale: list[Entry] = []
            while self._queue and (not batch or size + len(self._queue[0][1]) <= limit):
                entry = self._queue.popleft()
                self._queued -= len(entry[1])
                if entry[0].target.key != target.key:  # queued for a shadow since replaced
                    stale.append(entry)
                    continue
                batch.append(entry)
                size += len(entry[1])
            self._drop(stale)
            if not batch:
                continue
            self._in_flight += 1
            task = asyncio.create_task(self._send(target, batch, size))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Whatever is left waits for a free slot: a finished request flushes again.

    async def _send(self, target: Target, batch: list[Entry], size: int) -> None:
        assert self._client is not None
        houses = [house for _, hs, _, _ in batch for house in hs]
        body = _encoder.encode({"instances": houses})
        headers = {"Content-Type": "application/json", **target.headers}
        began = time.perf_counter()
        outcome, prices = "failed", None
        try:
            status, content = await self._client.post(target.url, body, headers)
            if status == 200:
                answer = _answer.decode(content).predictions
                if len(answer) == size:
                    outcome, prices = "answered", [p.predicted_price for p in answer]
        except TimeoutError:
            outcome = "timed_out"
        except Exception as exc:  # refused, reset, a malformed answer: counted, never raised
            log.debug("shadow request failed: %s", exc)
        finally:
            self._in_flight -= 1
        if prices is not None:
            round_trip = (time.perf_counter() - began) * 1000
            at = 0
            for window, hs, stable, latency_ms in batch:
                window.stable_prices.extend(stable)
                window.shadow_prices.extend(prices[at : at + len(hs)])
                window.stable_latency_ms.append(latency_ms)
                at += len(hs)
            for window in {id(w): w for w, _, _, _ in batch}.values():
                window.shadow_latency_ms.append(round_trip)
        self._settle(batch, outcome)
        if self._queue and self._flush_handle is None:
            self._flush()

    # --- windows and reports ------------------------------------------------------------------

    def _close_window(self, end: float) -> None:
        window, self._window = self._window, None
        if window is None:
            return
        window.end = end
        if window.pending == 0:
            self._report(window)

    def _report(self, window: Window) -> None:
        if window.mirrored == 0:
            return
        task = asyncio.create_task(anyio.to_thread.run_sync(self._publish, window))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _publish(self, window: Window) -> None:
        """In a worker thread: the window's report to the artifact store, then to MLflow."""
        s = self.settings
        target = window.target
        try:
            report = shadow_report.build(
                start=window.start,
                end=window.end,
                stable_revision=self.revision,
                stable_model_version=self._served_version(),
                shadow_revision=target.revision,
                shadow_model_version=target.model_version,
                outcomes=window.outcomes(),
                stable_prices=window.stable_prices,
                shadow_prices=window.shadow_prices,
                stable_latency_ms=window.stable_latency_ms,
                shadow_latency_ms=window.shadow_latency_ms,
            )
            where = shadow_report.write(self._store(), report)
            REPORTS.inc()
            log.info(
                "shadow report %s: %d houses compared, MAPE %s",
                where,
                report.agreement.n,
                report.agreement.mape,
            )
            if s.mlflow_tracking_uri and target.model_version:
                model_name = parse_models_uri(s.model_uri)[0]
                shadow_report.log_to_mlflow(s.tracking_uri, model_name, report, where)
        except Exception:
            REPORT_FAILURES.inc()
            log.warning("shadow report of window %s failed", window.start, exc_info=True)


def mirror_middleware(mirror: ShadowMirror) -> Callable[[ASGIApp], ASGIApp]:
    """Hands each priced request to the mirror once its answer is sent; with mirroring off it
    costs a request one attribute check."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if mirror.target is None or scope["type"] != "http":
                await app(scope, receive, send)
                return
            began = time.perf_counter()
            await app(scope, receive, send)
            priced = scope.get("state", {}).get(PRICED)
            if priced is not None:
                mirror.offer(priced[3], priced[4], (time.perf_counter() - began) * 1000)

        return middleware

    return factory


def shadow_mirror(
    settings: ServiceSettings, gcs_client: Any, served_version: Callable[[], str]
) -> ShadowMirror | None:
    """The mirror the settings ask for (None when SHADOW_MIRROR is off); not started."""
    if not settings.shadow_mirror:
        return None
    from housing_platform.artifact_store import open_store

    opened: list[ArtifactStore] = []

    def store() -> ArtifactStore:
        if not opened:
            opened.append(open_store(settings.store_uri, gcs_client))
        return opened[0]

    return ShadowMirror(settings, store=store, served_version=served_version)
