"""Progress of a run: one line redrawn in place on a terminal, a log line now and then
elsewhere (Cloud Logging, a CI log, a file), so a long run is never silent and never floods."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Rows done, rows/s and the time left, from how much of the share is read (rows of a
    parquet share, bytes of a CSV one)."""

    def __init__(
        self,
        total: int,
        label: str = "",
        stream: TextIO | None = None,
        tty: bool | None = None,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total = total
        self.label = f"{label}: " if label else ""
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every = 0.2 if self.tty else every
        self.clock = clock
        self.began = self.last = clock()

    def line(self, rows: int, done: int) -> str:
        elapsed = max(self.clock() - self.began, 1e-9)
        text = f"{self.label}{rows:,} rows · {rows / elapsed:,.0f} rows/s"
        if self.total and 0 < done < self.total:
            left = elapsed * (self.total - done) / done
            text += f" · {100 * done / self.total:.0f}% · ETA {_duration(left)}"
        return text

    def update(self, rows: int, done: int) -> None:
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        self._show(self.line(rows, done))

    def finish(self, rows: int) -> None:
        elapsed = self.clock() - self.began
        text = f"{self.label}{rows:,} rows in {_duration(elapsed)}"
        text += f" · {rows / max(elapsed, 1e-9):,.0f} rows/s"
        self._show(text)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _show(self, text: str) -> None:
        if self.tty:
            self.stream.write(f"\r\x1b[2K{text}")
        else:
            self.stream.write(f"{text}\n")
        self.stream.flush()
