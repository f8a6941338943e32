"""Which share of the input a task prices: a run of parquet row groups, or a byte range of a CSV
that starts and ends on line boundaries. Shares cover the input exactly once, whatever the task
count, so parts from the tasks of one run hold every row once, in the input's order."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import IO

import msgspec

from batch_prediction.errors import BatchError


class Task(msgspec.Struct, frozen=True):
    index: int
    count: int


def task_from_env(env: Mapping[str, str] = os.environ) -> Task | None:
    """The task Cloud Run Jobs names in CLOUD_RUN_TASK_INDEX / CLOUD_RUN_TASK_COUNT, if any."""
    if "CLOUD_RUN_TASK_COUNT" not in env:
        return None
    try:
        count = int(env["CLOUD_RUN_TASK_COUNT"])
        index = int(env.get("CLOUD_RUN_TASK_INDEX", "0"))
    except ValueError:
        raise BatchError(
            "CLOUD_RUN_TASK_INDEX / CLOUD_RUN_TASK_COUNT must be integers, got "
            f"{env.get('CLOUD_RUN_TASK_INDEX')!r} / {env.get('CLOUD_RUN_TASK_COUNT')!r}"
        ) from None
    if count < 1 or not 0 <= index < count:
        raise BatchError(f"CLOUD_RUN_TASK_INDEX {index} is not a task of {count}")
    return Task(index, count)


def row_groups(n_groups: int, task: Task) -> list[int]:
    """The task's contiguous run of row groups (none when there are fewer groups than tasks)."""
    return list(
        range(n_groups * task.index // task.count, n_groups * (task.index + 1) // task.count)
    )


def _line_start(fh: IO[bytes], offset: int, data_start: int, size: int) -> int:
    """The first line start at or after ``offset``: ``offset`` itself if a line ends just before
    it, else the byte after the next newline (``size`` when there is none)."""
    if offset <= data_start:
        return data_start
    if offset >= size:
        return size
    fh.seek(offset - 1)
    position = offset - 1
    while True:
        block = fh.read(1 << 16)
        if not block:
            return size
        found = block.find(b"\n")
        if found >= 0:
            return position + found + 1
        position += len(block)


def byte_range(fh: IO[bytes], data_start: int, size: int, task: Task) -> tuple[int, int]:
    """The task's bytes of a CSV after its header: ``[start, end)``, each a line start.

    Fields with a newline inside quotes are not split safely: such a CSV needs one task."""
    span = size - data_start
    begin = data_start + span * task.index // task.count
    end = data_start + span * (task.index + 1) // task.count
    return _line_start(fh, begin, data_start, size), _line_start(fh, end, data_start, size)
