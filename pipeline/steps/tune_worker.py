"""One process of a parallel search (``tune.workers``), started by ``tune.run_workers``.

A spawned process imports its target's module, and unpickles its arguments, before any of its
code runs. So this module imports nothing heavy and takes only bytes and paths: the watchdog is
armed first, and a worker that hangs anywhere, its start-up imports included, prints every
thread's stack and exits instead of holding the step (and the run's lock) for ever.
"""

from __future__ import annotations

import faulthandler
import sys


def deadline_s(timeout_s: float) -> float:
    """How long a worker may live: the search's budget, plus room for start-up and for the trial
    running when the budget ends (Optuna checks it between trials, never inside one)."""
    return max(2 * timeout_s, timeout_s + 600)


def main(
    deadline: float,
    settings_json: bytes,
    storage: str,
    name: str,
    train_path: str,
    spec_json: bytes,
    family: str,
    parent_run_id: str | None,
) -> None:
    """Search ``name``'s share of trials; exit with every thread's stack after ``deadline`` s."""
    faulthandler.dump_traceback_later(deadline, exit=True, file=sys.stderr)
    try:
        import msgspec
        import pandas as pd

        from pipeline.model import FeatureSpec
        from pipeline.settings import Settings
        from pipeline.steps import tune

        settings = msgspec.json.decode(settings_json, type=Settings)
        spec = msgspec.json.decode(spec_json, type=FeatureSpec)
        tune.work(settings, storage, name, pd.read_parquet(train_path), spec, family, parent_run_id)
    finally:
        faulthandler.cancel_dump_traceback_later()
