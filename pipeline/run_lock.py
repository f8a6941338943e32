"""One pipeline run per home at a time: a run holds an exclusive ``flock`` on
``<home>/pipeline.lock`` while it lives, so two runs never write the same cache, registry and
artifacts at once, and the retrain trigger can see that a pipeline is running. The kernel drops
the lock when the process ends, however it ends: a crashed run never leaves a stale lock."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import PipelineError

LOCK_FILE = "pipeline.lock"


def lock_path(home: Path) -> Path:
    return home / LOCK_FILE


@contextmanager
def holding(home: Path) -> Iterator[None]:
    """Hold the home's pipeline lock for the block; a held lock is an error naming the fix."""
    home.mkdir(parents=True, exist_ok=True)
    path = lock_path(home)
    with path.open("a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(
                f"another pipeline run is using {home} (it holds {path}): wait for it to end, "
                "or give this run another HOUSING_MLOPS_HOME"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_held(home: Path) -> bool:
    """Whether a pipeline run holds the home's lock now."""
    path = lock_path(home)
    if not path.exists():
        return False
    with path.open("a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False
