"""Same-model canary steps, simulated: both sides draw from the same error rate and latency
distribution, at the volume the local rollout probes with (20 requests/s to each side for a 30 s
step). Shared by the false-rollback test and ``nox -s bench -- rollout``."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from rollout.judge import (
    DEFAULT_LIMITS,
    FAIL,
    ErrorEvidence,
    Evidence,
    JudgeLimits,
    LatencyEvidence,
    PriceEvidence,
    judge,
)

PROBE_RPS = 20
STEP_SECONDS = 30
REQUESTS = PROBE_RPS * STEP_SECONDS
PROBE_HOUSES = 200
CHUNK = 1000


@dataclass(frozen=True)
class Outcome:
    decisions: int
    false_rollbacks: int
    failed_checks: Counter[str]
    judge_seconds: float

    @property
    def rate(self) -> float:
        return self.false_rollbacks / self.decisions

    @property
    def decisions_per_second(self) -> float:
        return self.decisions / self.judge_seconds


def latencies_ms(rng: np.random.Generator, median: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """A window of latencies per row: log-normal around ``median``, and 1% of requests caught
    behind something (a collection, a neighbour's burst) for 2 to 20 ms more."""
    rows = len(median)
    body = median[:, None] * np.exp(sigma[:, None] * rng.standard_normal((rows, REQUESTS)))
    stalled = rng.random((rows, REQUESTS)) < 0.01
    return body + stalled * rng.uniform(2.0, 20.0, (rows, REQUESTS))


def same_model(decisions: int, seed: int, limits: JudgeLimits = DEFAULT_LIMITS) -> Outcome:
    """``decisions`` steps of a canary serving the stable revision's own model."""
    rng = np.random.default_rng(seed)
    failed: Counter[str] = Counter()
    false_rollbacks = 0
    spent = 0.0
    for start in range(0, decisions, CHUNK):
        rows = min(CHUNK, decisions - start)
        error_rate = rng.uniform(0.0, 0.02, rows)  # the same on both sides of a step
        canary_errors = rng.binomial(REQUESTS, error_rate)
        stable_errors = rng.binomial(REQUESTS, error_rate)
        median = rng.uniform(1.0, 5.0, rows)
        sigma = rng.uniform(0.2, 0.8, rows)
        canary_p99 = np.quantile(latencies_ms(rng, median, sigma), 0.99, axis=1)
        stable_p99 = np.quantile(latencies_ms(rng, median, sigma), 0.99, axis=1)
        prices = rng.lognormal(np.log(200_000), 0.5, (rows, PROBE_HOUSES))
        # The same model answers: the same prices, but for what a JSON round trip may change.
        served = prices * (1 + rng.uniform(-1e-15, 1e-15, prices.shape))
        evidence = [
            Evidence(
                prices=PriceEvidence(
                    canary=tuple(served[i]), stable=tuple(prices[i]), expected=tuple(prices[i])
                ),
                errors=ErrorEvidence(
                    canary_requests=REQUESTS,
                    canary_errors=int(canary_errors[i]),
                    stable_requests=REQUESTS,
                    stable_errors=int(stable_errors[i]),
                ),
                latency=LatencyEvidence(
                    canary_p99_ms=float(canary_p99[i]),
                    stable_p99_ms=float(stable_p99[i]),
                    canary_requests=REQUESTS,
                    stable_requests=REQUESTS,
                ),
            )
            for i in range(rows)
        ]
        began = time.perf_counter()
        verdicts = [judge(e, limits) for e in evidence]
        spent += time.perf_counter() - began
        for verdict in verdicts:
            if verdict.outcome == FAIL:
                false_rollbacks += 1
                failed.update(c.name for c in verdict.checks if c.outcome == FAIL)
    return Outcome(decisions, false_rollbacks, failed, spent)
