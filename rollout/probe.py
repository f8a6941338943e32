"""Probe traffic: the rollout's own requests to the two tag URLs.

- The **probe set** (``pipeline.probe_set``): held-out houses and the prices the model version
  gives them offline, read from the version's export in the artifact store.
- **Price probes**: the whole probe set in one request to each side's tag URL; the answers and
  the offline prices are the judge's price evidence.
- **Probe load** (``ProbeLoad``): ``rps`` single-house requests a second to *each* side's tag
  URL, open loop (sent on a clock, never waiting for the previous answer, at most ``MAX_IN_FLIGHT``
  at once per side), from one asyncio loop on a thread. Each side reaches the judge's
  ``min_requests`` in the same time whatever the step's percent: on one machine there are no
  users, and a 5% step fed only by a split of 20 requests a second would need minutes to show
  anything. Every answer is counted per side (ok, 5xx, injected, other failures), so a drill can
  say which failures were injected and that no other request failed.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from housing_platform.artifact_store import ArtifactStore, frame_from_parquet
from model_runtime.contract import FEATURES
from model_runtime.exports import Export, ExportError, export_prefix

#: Where ``pipeline.probe_set`` stores the probe set among a version's files.
PROBE_SET_PATH = "rollout/probe_set.parquet"
PREDICT_PATH = "/api/v1/predict"
SERVED_HEADER = "x-served-revision"
#: The body detail of an injected fault (``service.faults.INJECTED`` starts so).
INJECTED_MARK = "injected fault (HOUSING_FAULTS)"
MAX_IN_FLIGHT = 64
TIMEOUT_S = 10.0
KEEPALIVE_S = 2.0

Headers = Callable[[str], Mapping[str, str]]
"""Extra headers for a request to a URL (an ID token on Cloud Run; none locally)."""


class ProbeSetError(RuntimeError):
    """The version's probe set can't be read; the message names it and the fix."""


class ProbeSet(msgspec.Struct, frozen=True):
    houses: list[dict[str, Any]]
    """JSON-ready houses (a missing ``total_bedrooms`` is null)."""
    prices: tuple[float, ...]
    """The version's offline price of each."""


def read_probe_set(store: ArtifactStore, model_name: str, version: int) -> ProbeSet:
    prefix = export_prefix(model_name, str(version))
    try:
        export = Export(store, prefix)
        if not export.has(PROBE_SET_PATH):
            raise ProbeSetError(
                f"model {model_name} version {version} has no probe set ({store.uri}/{prefix}/"
                f"{PROBE_SET_PATH}): versions registered before rollouts lack one; register a "
                "new version with `nox -s pipeline`"
            )
        frame = frame_from_parquet(export.read(PROBE_SET_PATH))
    except ExportError as exc:
        raise ProbeSetError(str(exc)) from None
    houses = [
        {str(k): (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame[list(FEATURES)].to_dict(orient="records")
    ]
    return ProbeSet(houses, tuple(float(p) for p in frame["price"]))


@dataclass
class SideCounts:
    """One side's probe answers since the counts were last reset."""

    sent: int = 0
    ok: int = 0
    errors_5xx: int = 0
    injected: int = 0
    """5xx answers whose body says they were injected (a drill's faults)."""
    other_failures: int = 0
    """Anything else that failed: transport errors, timeouts, 4xx, a 5xx not injected."""
    skipped: int = 0
    """Sends not made because ``MAX_IN_FLIGHT`` were still waiting."""
    served_by: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    """The first few other failures, for the audit record."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "errors_5xx": self.errors_5xx,
            "injected": self.injected,
            "other_failures": self.other_failures,
            "skipped": self.skipped,
            "served_by": dict(self.served_by),
            "failures": list(self.failures[:5]),
        }


def classify(
    counts: SideCounts, status: int | None, body: bytes, revision: str, error: str
) -> None:
    """Counts one answer (``status`` None: no answer, ``error`` says why)."""
    if revision:
        counts.served_by[revision] = counts.served_by.get(revision, 0) + 1
    if status is not None and status < 400:
        counts.ok += 1
        return
    if status is not None and status >= 500:
        counts.errors_5xx += 1
        if INJECTED_MARK.encode() in body:
            counts.injected += 1
            return
    counts.other_failures += 1
    if len(counts.failures) < 5:
        counts.failures.append(error or f"{status}: {body[:200]!r}")


class ProbeLoad:
    """``rps`` requests a second to each side's URL (``{"stable": url, "canary": url}``), until
    stopped; ``retarget`` changes the URLs between steps, ``take`` returns and resets the
    counts."""

    def __init__(
        self, urls: Mapping[str, str], houses: list[dict[str, Any]], rps: float, headers: Headers
    ):
        self.urls = dict(urls)
        self.bodies = [msgspec.json.encode({"instances": [h]}) for h in houses]
        self.rps = rps
        self.headers = headers
        self._counts: dict[str, SideCounts] = {side: SideCounts() for side in self.urls}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def retarget(self, urls: Mapping[str, str]) -> None:
        with self._lock:
            self.urls = dict(urls)
            for side in self.urls:
                self._counts.setdefault(side, SideCounts())

    def take(self) -> dict[str, SideCounts]:
        """The counts since the last take, and zero again."""
        with self._lock:
            counts, self._counts = self._counts, {side: SideCounts() for side in self.urls}
        return counts

    def start(self) -> ProbeLoad:
        if self.rps > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="probe-load", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=TIMEOUT_S + 5)
            self._thread = None

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        # Idle connections are dropped before the server's keep-alive timeout (uvicorn: 5 s),
        # so no request goes out on a connection the server is closing.
        limits = httpx.Limits(max_connections=4 * MAX_IN_FLIGHT, keepalive_expiry=KEEPALIVE_S)
        async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as client:
            in_flight: dict[str, int] = {}
            tasks: set[asyncio.Task[None]] = set()
            began = time.monotonic()
            n = 0
            while not self._stop.is_set():
                due = began + n / self.rps
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                n += 1
                with self._lock:
                    urls = dict(self.urls)
                for side, url in urls.items():
                    body = self.bodies[n % len(self.bodies)]
                    if in_flight.get(side, 0) >= MAX_IN_FLIGHT:
                        with self._lock:
                            self._counts[side].skipped += 1
                        continue
                    in_flight[side] = in_flight.get(side, 0) + 1
                    task = asyncio.create_task(self._send(client, side, url, body, in_flight))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=TIMEOUT_S)

    async def _send(
        self,
        client: httpx.AsyncClient,
        side: str,
        url: str,
        body: bytes,
        in_flight: dict[str, int],
    ) -> None:
        status: int | None = None
        content, revision, error = b"", "", ""
        try:
            r = await client.post(
                url + PREDICT_PATH,
                content=body,
                headers={"content-type": "application/json", **self.headers(url)},
            )
            status, content = r.status_code, r.content
            revision = r.headers.get(SERVED_HEADER, "")
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            in_flight[side] -= 1
        with self._lock:
            counts = self._counts.setdefault(side, SideCounts())
            counts.sent += 1
            classify(counts, status, content, revision, error)


class PriceAnswer(msgspec.Struct, frozen=True):
    prices: tuple[float, ...] | None
    """None when the side did not answer with prices."""
    revision: str
    """The revision that answered (``X-Served-Revision``)."""
    detail: str = ""


def price_probe(url: str, probe: ProbeSet, headers: Headers) -> PriceAnswer:
    """The probe set in one request to ``url``."""
    body = msgspec.json.encode({"instances": probe.houses})
    try:
        r = httpx.post(
            url + PREDICT_PATH,
            content=body,
            headers={"content-type": "application/json", **headers(url)},
            timeout=TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        return PriceAnswer(None, "", f"{type(exc).__name__}: {exc}")
    revision = r.headers.get(SERVED_HEADER, "")
    if r.status_code != 200:
        return PriceAnswer(None, revision, f"{r.status_code}: {r.text[:200]}")
    prices = tuple(float(p["predicted_price"]) for p in r.json()["predictions"])
    return PriceAnswer(prices, revision)
