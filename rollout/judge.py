"""The judge of one canary step: pure functions from evidence to a verdict.

Three checks, each ``pass``, ``fail`` or ``inconclusive`` with a reason an operator reads:

- **prices**: the canary must serve the model it claims (its prices on the probe houses equal
  what its registry version predicts offline, to ``price_tolerance``), and its prices may move
  from the stable revision's only so far (median and p95 of ``|log(canary / stable)|``);
- **errors**: canary against stable 5xx in the same window, a one-sided Fisher exact test (is
  the canary's error rate higher?); too few requests is "inconclusive, probing more", never a
  pass or a fail;
- **latency**: canary p99 against stable p99, a ratio with an absolute floor, so that noise of
  a few milliseconds never rolls back;
- **monitoring** (GCP): the errors test again on Cloud Monitoring's per-revision request counts,
  users' requests included (``cross_checked``): it can fail a step, and a step whose other checks
  pass waits for those counts to cover its window.

A step fails when any check fails, is inconclusive when none fails and one can't decide yet,
and passes otherwise. The verdict is one JSON record (``Verdict.to_json``) for the audit log.
The limits are a typed struct with documented defaults, read like every part's settings
(``read_limits``: a TOML file's ``[judge]`` table and ``ROLLOUT_*`` variables).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import numpy as np
from msgspec import Meta
from scipy.stats import fisher_exact

from housing_platform.settings_reader import Problem, read_settings

Outcome = Literal["pass", "fail", "inconclusive"]
PASS: Outcome = "pass"
FAIL: Outcome = "fail"
INCONCLUSIVE: Outcome = "inconclusive"


class JudgeLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a canary step may show and still pass."""

    price_tolerance: Annotated[float, Meta(ge=0)] = 1e-6
    """Largest relative difference between a canary's price and its registry version's offline
    price for the same house: the canary must serve the model it claims. The offline side must
    price with the runtime the service serves (the ONNX graph agrees with scikit-learn only to
    1e-5)."""
    max_median_shift: Annotated[float, Meta(ge=0)] = 0.05
    """Largest median of |log(canary / stable)| over the probe houses (0.05: about 5%); every
    price 10% higher is 0.095."""
    max_p95_shift: Annotated[float, Meta(ge=0)] = 0.25
    """Largest 95th percentile of |log(canary / stable)|: a few houses may move more than most
    when a retrained model takes the stable one's place."""
    error_p_value: Annotated[float, Meta(gt=0, lt=1)] = 0.001
    """The canary fails when the one-sided Fisher exact test of "its 5xx rate is higher than
    stable's" gives a p-value below this. Each step is one test, and a release takes several:
    0.001 keeps a same-model release's false rollbacks well under 1%."""
    min_requests: Annotated[int, Meta(ge=1)] = 500
    """Requests each side needs in the window before errors or latency are judged (fewer:
    inconclusive). At 500 each a canary failing 5% of requests against a clean stable fails
    with p < 1e-6; at 20 probes/s a side reaches it in 25 s."""
    latency_ratio: Annotated[float, Meta(gt=1)] = 1.5
    """Largest canary p99 / stable p99."""
    latency_floor_ms: Annotated[float, Meta(ge=0)] = 10.0
    """The canary's p99 fails only when it is also this much slower than stable's: the p99 of
    600 requests moves by several milliseconds when 1% of them stall behind a collection or a
    neighbour's burst, and at a p99 of 2 ms a ratio of 1.5 is one millisecond of noise."""


DEFAULT_LIMITS = JudgeLimits()


class PriceEvidence(msgspec.Struct, frozen=True, kw_only=True):
    """Prices of the same probe houses, in the same order."""

    canary: tuple[float, ...]
    """What the canary revision answered."""
    stable: tuple[float, ...]
    """What the stable revision answered."""
    expected: tuple[float, ...]
    """What the canary's registry version predicts offline."""


class ErrorEvidence(msgspec.Struct, frozen=True, kw_only=True):
    """Prediction requests and their 5xx answers per side, in the same window."""

    canary_requests: Annotated[int, Meta(ge=0)]
    canary_errors: Annotated[int, Meta(ge=0)]
    stable_requests: Annotated[int, Meta(ge=0)]
    stable_errors: Annotated[int, Meta(ge=0)]


class LatencyEvidence(msgspec.Struct, frozen=True, kw_only=True):
    """Each side's p99 of prediction latency in the window, and how many requests it is of."""

    canary_p99_ms: float
    stable_p99_ms: float
    canary_requests: Annotated[int, Meta(ge=0)]
    stable_requests: Annotated[int, Meta(ge=0)]


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    prices: PriceEvidence
    errors: ErrorEvidence
    latency: LatencyEvidence


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """One check's outcome, why, and the figures it decided on (for the audit record)."""

    name: Literal["prices", "errors", "latency", "monitoring"]
    outcome: Outcome
    reason: str
    figures: dict[str, float] = {}


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """A step's outcome, one line saying why, each check, and the limits it was judged by."""

    outcome: Outcome
    reason: str
    checks: tuple[Check, ...]
    limits: JudgeLimits

    def to_json(self) -> bytes:
        """One JSON record, as the audit log stores it."""
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> Verdict:
        return msgspec.json.decode(data, type=cls)


def judge(evidence: Evidence, limits: JudgeLimits = DEFAULT_LIMITS) -> Verdict:
    """The step's verdict: fail when any check fails, inconclusive when one can't decide yet."""
    checks = (
        judge_prices(evidence.prices, limits),
        judge_errors(evidence.errors, limits),
        judge_latency(evidence.latency, limits),
    )
    for outcome in (FAIL, INCONCLUSIVE):
        named = [c for c in checks if c.outcome == outcome]
        if named:
            reason = "; ".join(f"{c.name}: {c.reason}" for c in named)
            return Verdict(outcome=outcome, reason=reason, checks=checks, limits=limits)
    return Verdict(outcome=PASS, reason="every check passed", checks=checks, limits=limits)


def cross_checked(
    verdict: Verdict,
    errors: ErrorEvidence | None,
    *,
    covered: bool,
    source: str = "Cloud Monitoring",
    wait: bool = True,
) -> Verdict:
    """``verdict`` with a second, later source of request counts (every request each revision
    answered, not only the probes'): the errors test on them fails the step like any check;
    ``None`` is no counts yet. With ``wait``, a passing verdict stays inconclusive until the
    counts ``covered`` the window (the step's deadline still ends the wait, by a rollback)."""
    limits = verdict.limits
    checks = verdict.checks
    if errors is not None:
        check = judge_errors(errors, limits)
        check = Check(
            name="monitoring",
            outcome=check.outcome,
            reason=f"{source}: {check.reason}",
            figures=check.figures,
        )
        checks = (*checks, check)
        if check.outcome == FAIL:
            reason = f"monitoring: {check.reason}"
            if verdict.outcome == FAIL:
                reason = f"{verdict.reason}; {reason}"
            return Verdict(outcome=FAIL, reason=reason, checks=checks, limits=limits)
    if verdict.outcome == PASS and wait and not covered:
        return Verdict(
            outcome=INCONCLUSIVE,
            reason=f"every check passed; waiting for {source}'s request counts to cover the "
            "window (they arrive up to 3 minutes late)",
            checks=checks,
            limits=limits,
        )
    return Verdict(outcome=verdict.outcome, reason=verdict.reason, checks=checks, limits=limits)


def judge_prices(evidence: PriceEvidence, limits: JudgeLimits = DEFAULT_LIMITS) -> Check:
    """The canary serves the model it claims, and moves prices from stable's only so far."""
    canary = np.asarray(evidence.canary, dtype=float)
    stable = np.asarray(evidence.stable, dtype=float)
    expected = np.asarray(evidence.expected, dtype=float)
    if not len(canary) == len(stable) == len(expected):
        raise ValueError(
            f"price evidence of different lengths: canary {len(canary)}, stable {len(stable)}, "
            f"expected {len(expected)} (each must hold the same probe houses, in order)"
        )
    if len(canary) == 0:
        return Check(name="prices", outcome=INCONCLUSIVE, reason="no probe prices yet")
    for side, values in (("canary", canary), ("stable", stable), ("offline", expected)):
        bad = np.flatnonzero(~np.isfinite(values) | (values <= 0))
        if len(bad):
            i = int(bad[0])
            return Check(
                name="prices",
                outcome=FAIL,
                reason=f"the {side} price of probe house {i} is {float(values[i])!r}: prices "
                "must be positive and finite",
            )
    relative = np.abs(canary - expected) / expected
    worst = int(np.argmax(relative))
    log_ratio = np.abs(np.log(canary / stable))
    median, p95 = (float(q) for q in np.quantile(log_ratio, (0.5, 0.95)))
    figures = {
        "houses": float(len(canary)),
        "max_relative_difference_offline": float(relative[worst]),
        "median_abs_log_ratio": median,
        "p95_abs_log_ratio": p95,
    }
    problems = []
    if relative[worst] > limits.price_tolerance:
        off = int(np.count_nonzero(relative > limits.price_tolerance))
        problems.append(
            f"the canary does not serve the model it claims: {off} of {len(canary)} probe "
            f"houses differ from its version's offline prices by more than "
            f"{limits.price_tolerance:g} (house {worst}: {canary[worst]:,.2f} against "
            f"{expected[worst]:,.2f} offline, relative difference {relative[worst]:.3g})"
        )
    if median > limits.max_median_shift:
        problems.append(
            f"median |log(canary/stable)| {median:.4f} is above {limits.max_median_shift:g}"
        )
    if p95 > limits.max_p95_shift:
        problems.append(f"p95 |log(canary/stable)| {p95:.4f} is above {limits.max_p95_shift:g}")
    if problems:
        return Check(name="prices", outcome=FAIL, reason="; ".join(problems), figures=figures)
    return Check(
        name="prices",
        outcome=PASS,
        reason=f"serves its version's prices (within {limits.price_tolerance:g}) on "
        f"{len(canary)} probe houses; shift from stable: median {median:.4f}, p95 {p95:.4f}",
        figures=figures,
    )


def judge_errors(evidence: ErrorEvidence, limits: JudgeLimits = DEFAULT_LIMITS) -> Check:
    """Is the canary's 5xx rate higher than stable's? One-sided Fisher exact test."""
    e = evidence
    if e.canary_errors > e.canary_requests or e.stable_errors > e.stable_requests:
        raise ValueError(f"more errors than requests: {e}")
    figures = {
        "canary_requests": float(e.canary_requests),
        "canary_errors": float(e.canary_errors),
        "stable_requests": float(e.stable_requests),
        "stable_errors": float(e.stable_errors),
    }
    counts = too_few(e.canary_requests, e.stable_requests, limits)
    if counts:
        return Check(
            name="errors",
            outcome=INCONCLUSIVE,
            reason=f"inconclusive, probing more: {counts} of the {limits.min_requests} requests "
            "each side needs",
            figures=figures,
        )
    p = fisher_p_value(e)
    figures["p_value"] = p
    rates = (
        f"canary {e.canary_errors}/{e.canary_requests} 5xx "
        f"({e.canary_errors / e.canary_requests:.2%}), stable {e.stable_errors}/"
        f"{e.stable_requests} ({e.stable_errors / e.stable_requests:.2%})"
    )
    if p < limits.error_p_value:
        return Check(
            name="errors",
            outcome=FAIL,
            reason=f"{rates}: more errors than stable (one-sided Fisher p = {p:.2g} < "
            f"{limits.error_p_value:g})",
            figures=figures,
        )
    return Check(
        name="errors",
        outcome=PASS,
        reason=f"{rates}: not more than stable's (p = {p:.2g})",
        figures=figures,
    )


def too_few(canary_requests: int, stable_requests: int, limits: JudgeLimits) -> str:
    """The sides with fewer requests than a decision needs ("canary 120, stable 90"), or ""."""
    sides = (("canary", canary_requests), ("stable", stable_requests))
    return ", ".join(f"{side} {n}" for side, n in sides if n < limits.min_requests)


def fisher_p_value(e: ErrorEvidence) -> float:
    """One-sided Fisher exact p-value of "the canary's error odds are higher than stable's"."""
    if e.canary_errors == 0:
        return 1.0  # nothing on the canary's side can be more
    table = [
        [e.canary_errors, e.canary_requests - e.canary_errors],
        [e.stable_errors, e.stable_requests - e.stable_errors],
    ]
    return float(fisher_exact(table, alternative="greater").pvalue)


def judge_latency(evidence: LatencyEvidence, limits: JudgeLimits = DEFAULT_LIMITS) -> Check:
    """Canary p99 against stable p99: slower by the ratio and by the floor fails."""
    e = evidence
    figures = {
        "canary_p99_ms": e.canary_p99_ms,
        "stable_p99_ms": e.stable_p99_ms,
        "canary_requests": float(e.canary_requests),
        "stable_requests": float(e.stable_requests),
    }
    counts = too_few(e.canary_requests, e.stable_requests, limits)
    if counts:
        return Check(
            name="latency",
            outcome=INCONCLUSIVE,
            reason=f"inconclusive, probing more: a p99 of {counts} requests (each side needs "
            f"{limits.min_requests})",
            figures=figures,
        )
    if not (math.isfinite(e.canary_p99_ms) and math.isfinite(e.stable_p99_ms)):
        raise ValueError(f"p99 latencies must be finite: {e}")
    ratio = e.canary_p99_ms / e.stable_p99_ms if e.stable_p99_ms > 0 else math.inf
    figures["ratio"] = ratio
    said = f"canary p99 {e.canary_p99_ms:.1f} ms, stable {e.stable_p99_ms:.1f} ms"
    slower = e.canary_p99_ms - e.stable_p99_ms
    if ratio > limits.latency_ratio and slower > limits.latency_floor_ms:
        return Check(
            name="latency",
            outcome=FAIL,
            reason=f"{said}: {ratio:.2f}x, above {limits.latency_ratio:g}x and "
            f"{limits.latency_floor_ms:g} ms slower",
            figures=figures,
        )
    return Check(
        name="latency",
        outcome=PASS,
        reason=f"{said}: within {limits.latency_ratio:g}x or {limits.latency_floor_ms:g} ms",
        figures=figures,
    )


def p99_ms(latencies_ms: Sequence[float] | np.ndarray) -> float:
    """The 99th percentile of a window's latencies (numpy's linear interpolation)."""
    return float(np.quantile(np.asarray(latencies_ms, dtype=float), 0.99))


class RolloutConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The rollout's settings file; the judge's limits are its ``[judge]`` table."""

    judge: JudgeLimits = JudgeLimits()


#: Variables that set a limit, and the limit each sets.
VARIABLES = {
    "ROLLOUT_PRICE_TOLERANCE": "judge.price_tolerance",
    "ROLLOUT_MAX_MEDIAN_SHIFT": "judge.max_median_shift",
    "ROLLOUT_MAX_P95_SHIFT": "judge.max_p95_shift",
    "ROLLOUT_ERROR_P_VALUE": "judge.error_p_value",
    "ROLLOUT_MIN_REQUESTS": "judge.min_requests",
    "ROLLOUT_LATENCY_RATIO": "judge.latency_ratio",
    "ROLLOUT_LATENCY_FLOOR_MS": "judge.latency_floor_ms",
}


def read_limits(env: Mapping[str, str], file: str | Path | None = None) -> JudgeLimits:
    """The limits from their defaults, ``file``'s ``[judge]`` table and ``ROLLOUT_*``
    variables; a wrong one is a ``SettingsError`` naming it and the fix."""
    return read_settings(RolloutConfig, env, VARIABLES, file=file, check=_problems).judge


def _problems(config: RolloutConfig) -> list[Problem]:
    j = config.judge
    if j.max_p95_shift < j.max_median_shift:
        return [
            Problem("judge.max_p95_shift", f"at least max_median_shift ({j.max_median_shift:g})")
        ]
    return []
