"""Rollout benchmark: the canary judge over 10,000 simulated same-model steps (both sides drawing
from the same error rate and latency distribution, 600 requests each, 200 probe houses): how many
decisions it makes a second, and how many of them roll back a sound canary (the false-rollback
rate, at most 1% by the test in tests/rollout/test_judge.py). $BENCH_ROLLOUT_DECISIONS changes the
10,000."""

from __future__ import annotations

import os
import time

from tests.rollout.simulation import same_model

DECISIONS = int(os.environ.get("BENCH_ROLLOUT_DECISIONS", "10000"))


def main() -> None:
    began = time.perf_counter()
    outcome = same_model(DECISIONS, seed=20261130)
    total = time.perf_counter() - began
    print(f"judge: {outcome.decisions:,} same-model steps in {total:.1f} s (simulation included)")
    print(
        f"judge: {outcome.decisions_per_second:,.0f} decisions/s "
        f"({outcome.judge_seconds / outcome.decisions * 1e3:.2f} ms a decision)"
    )
    print(
        f"judge: false rollbacks {outcome.false_rollbacks} ({outcome.rate:.2%}); by check: "
        f"{dict(outcome.failed_checks) or 'none'}"
    )


if __name__ == "__main__":
    main()
