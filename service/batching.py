"""Micro-batching: concurrent small requests priced in one model call.

One call of the fast form for a single house costs far more in the server than in a tight loop,
because walking ~500 trees through memory misses the caches that the rest of the request just
used. Houses from requests read in the same turn of the event loop share that walk when they are
priced together, so the batcher holds a request for one turn of the loop — no timer, so an idle
server adds no delay — and prices all that arrived in it with one call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Row = TypeVar("Row")
#: Requests with fewer rows are batched; a larger one is priced alone, at once, since its own
#: rows already share the walk.
SMALL_REQUEST = 16


class MicroBatcher(Generic[Row]):
    """Awaitable ``predict``: coalesces small calls made during one turn of the event loop;
    a large one is priced at once, alone."""

    def __init__(self, predict: Callable[[list[Row]], Sequence[float]]):
        self._predict = predict
        self._pending: list[tuple[Sequence[Row], asyncio.Future[list[float]]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, asked for once per loop: on Python 3.11 every
        ``asyncio.get_running_loop()`` is a ``getpid`` system call. A loop found running on
        this thread is the one running now (a thread runs one loop at a time)."""
        loop = self._loop
        if loop is None or self._thread != threading.get_ident() or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
            self._thread = threading.get_ident()
        return loop

    async def __call__(self, rows: Sequence[Row]) -> list[float]:
        if len(rows) >= SMALL_REQUEST:
            return list(self._predict(list(rows)))
        loop = self._running_loop()
        answer: asyncio.Future[list[float]] = loop.create_future()
        if not self._pending:
            # Two hops: the first runs before the next turn's reads, the second after them.
            loop.call_soon(loop.call_soon, self._flush)
        self._pending.append((rows, answer))
        return await answer

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            prices = list(self._predict([row for rows, _ in batch for row in rows]))
        except Exception as exc:
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            return
        start = 0
        for rows, answer in batch:
            if not answer.done():  # a client that went away leaves a cancelled future
                answer.set_result(prices[start : start + len(rows)])
            start += len(rows)
