"""The canary judge: each check passes, fails or can't decide yet on clear cases; the drills'
faults (5% 5xx, 200 ms more, prices 10% higher) fail at the volume the local rollout probes
with; a canary of the same model passes, and is rolled back by chance in at most 1% of steps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from housing_platform.settings_reader import SettingsError
from rollout.judge import (
    ErrorEvidence,
    Evidence,
    JudgeLimits,
    LatencyEvidence,
    PriceEvidence,
    Verdict,
    judge,
    judge_errors,
    judge_latency,
    judge_prices,
    p99_ms,
    read_limits,
)
from tests.rollout.simulation import REQUESTS, same_model

LIMITS = JudgeLimits()


def probe_prices(seed: int = 0, houses: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(np.log(200_000), 0.5, houses)


def prices_of(canary: np.ndarray, stable: np.ndarray, expected: np.ndarray) -> PriceEvidence:
    return PriceEvidence(canary=tuple(canary), stable=tuple(stable), expected=tuple(expected))


def errors_of(canary: int, stable: int, requests: int = REQUESTS) -> ErrorEvidence:
    return ErrorEvidence(
        canary_requests=requests,
        canary_errors=canary,
        stable_requests=requests,
        stable_errors=stable,
    )


def latency_of(canary: float, stable: float, requests: int = REQUESTS) -> LatencyEvidence:
    return LatencyEvidence(
        canary_p99_ms=canary,
        stable_p99_ms=stable,
        canary_requests=requests,
        stable_requests=requests,
    )


def healthy() -> Evidence:
    p = probe_prices()
    return Evidence(prices=prices_of(p, p, p), errors=errors_of(2, 3), latency=latency_of(4.2, 4.0))


# -- prices -------------------------------------------------------------------------------------


def test_a_canary_of_the_same_model_passes_the_price_check():
    p = probe_prices()
    check = judge_prices(prices_of(p * (1 + 1e-9), p, p), LIMITS)
    assert check.outcome == "pass"
    assert check.figures["median_abs_log_ratio"] < 1e-8


def test_prices_10_percent_higher_fail_both_as_the_wrong_model_and_as_a_shift():
    p = probe_prices()
    check = judge_prices(prices_of(p * 1.1, p, p), LIMITS)
    assert check.outcome == "fail"
    assert "does not serve the model it claims: 200 of 200 probe houses" in check.reason
    assert "median |log(canary/stable)| 0.0953 is above 0.05" in check.reason


def test_a_new_model_that_serves_its_own_prices_passes_within_the_shift_limits():
    stable = probe_prices(0)
    canary = stable * np.exp(np.random.default_rng(1).normal(0, 0.03, len(stable)))
    assert judge_prices(prices_of(canary, stable, canary), LIMITS).outcome == "pass"


def test_a_new_model_that_moves_prices_too_far_fails_on_the_shift_alone():
    stable = probe_prices(0)
    canary = stable * np.exp(np.random.default_rng(1).normal(0, 0.3, len(stable)))
    check = judge_prices(prices_of(canary, stable, canary), LIMITS)
    assert check.outcome == "fail"
    assert "does not serve" not in check.reason
    assert "p95 |log(canary/stable)|" in check.reason


def test_one_house_off_by_more_than_the_tolerance_is_the_wrong_model():
    p = probe_prices()
    canary = p.copy()
    canary[17] *= 1 + 1e-5
    check = judge_prices(prices_of(canary, p, p), LIMITS)
    assert check.outcome == "fail"
    assert "1 of 200 probe houses" in check.reason
    assert "house 17: " in check.reason
    loose = JudgeLimits(price_tolerance=1e-4)
    assert judge_prices(prices_of(canary, p, p), loose).outcome == "pass"


def test_no_probe_prices_yet_is_inconclusive_and_a_non_positive_price_fails():
    assert judge_prices(prices_of(*(np.array([]),) * 3), LIMITS).outcome == "inconclusive"
    p = probe_prices(houses=3)
    bad = p.copy()
    bad[1] = 0.0
    check = judge_prices(prices_of(bad, p, p), LIMITS)
    assert (check.outcome, check.reason.split(":")[0]) == (
        "fail",
        "the canary price of probe house 1 is 0.0",
    )


def test_probe_prices_of_different_houses_are_refused():
    with pytest.raises(ValueError, match="same probe houses"):
        judge_prices(prices_of(probe_prices(houses=3), probe_prices(houses=2), probe_prices()))


# -- errors -------------------------------------------------------------------------------------


def test_a_canary_answering_5_percent_5xx_against_none_fails_at_20_probes_a_second():
    """At 20 requests/s to each side for 30 s, 5% is 30 errors against 0."""
    check = judge_errors(errors_of(30, 0), LIMITS)
    assert check.outcome == "fail"
    assert check.figures["p_value"] < 1e-6
    assert check.reason.startswith("canary 30/600 5xx (5.00%), stable 0/600 (0.00%)")


def test_a_5_percent_fault_fails_in_at_least_99_percent_of_random_steps():
    rng = np.random.default_rng(5)
    canary = rng.binomial(REQUESTS, 0.05, 500)
    stable = rng.binomial(REQUESTS, 0.0, 500)
    failed = [judge_errors(errors_of(int(c), int(s)), LIMITS).outcome == "fail" for c, s in
              zip(canary, stable, strict=True)]  # fmt: skip
    assert np.mean(failed) >= 0.99


def test_as_many_errors_as_stable_passes():
    assert judge_errors(errors_of(6, 6), LIMITS).outcome == "pass"
    assert judge_errors(errors_of(0, 9), LIMITS).outcome == "pass"


def test_too_few_requests_is_inconclusive_never_a_pass_or_a_fail():
    for canary_errors in (0, 100):
        check = judge_errors(
            ErrorEvidence(
                canary_requests=120,
                canary_errors=canary_errors,
                stable_requests=2000,
                stable_errors=0,
            ),
            LIMITS,
        )
        assert check.outcome == "inconclusive"
        assert check.reason == (
            "inconclusive, probing more: canary 120 of the 500 requests each side needs"
        )


def test_the_p_value_threshold_is_the_configured_one():
    evidence = errors_of(8, 1)  # p is about 0.02
    assert judge_errors(evidence, JudgeLimits(error_p_value=0.05)).outcome == "fail"
    assert judge_errors(evidence, JudgeLimits(error_p_value=0.001)).outcome == "pass"


# -- latency ------------------------------------------------------------------------------------


def test_200_ms_more_fails_the_latency_check():
    rng = np.random.default_rng(3)
    stable = rng.lognormal(np.log(3.0), 0.5, REQUESTS)
    canary = rng.lognormal(np.log(3.0), 0.5, REQUESTS) + 200
    check = judge_latency(latency_of(p99_ms(canary), p99_ms(stable)), LIMITS)
    assert check.outcome == "fail"
    assert "above 1.5x and 10 ms slower" in check.reason


def test_a_slower_p99_within_the_floor_passes_and_beyond_ratio_and_floor_fails():
    assert judge_latency(latency_of(3.0, 1.0), LIMITS).outcome == "pass"  # 3x but 2 ms
    assert judge_latency(latency_of(140.0, 100.0), LIMITS).outcome == "pass"  # 1.4x
    assert judge_latency(latency_of(160.0, 100.0), LIMITS).outcome == "fail"


def test_a_p99_of_too_few_requests_is_inconclusive():
    check = judge_latency(latency_of(900.0, 3.0, requests=40), LIMITS)
    assert check.outcome == "inconclusive"
    assert check.reason.startswith("inconclusive, probing more")


# -- the verdict --------------------------------------------------------------------------------


def test_the_same_model_passes_every_check():
    verdict = judge(healthy(), LIMITS)
    assert verdict.outcome == "pass"
    assert [c.outcome for c in verdict.checks] == ["pass"] * 3


def test_a_failed_check_fails_the_step_even_when_another_cannot_decide():
    p = probe_prices()
    evidence = Evidence(
        prices=prices_of(p * 1.1, p, p),
        errors=errors_of(0, 0, requests=10),
        latency=latency_of(4.0, 4.0),
    )
    verdict = judge(evidence, LIMITS)
    assert verdict.outcome == "fail"
    assert verdict.reason.startswith("prices: the canary does not serve the model it claims")
    assert "errors" not in verdict.reason


def test_an_undecided_check_makes_the_step_inconclusive():
    e = healthy()
    verdict = judge(Evidence(prices=e.prices, errors=errors_of(0, 0, 10), latency=e.latency))
    assert verdict.outcome == "inconclusive"
    assert verdict.reason.startswith("errors: inconclusive, probing more")


def test_a_verdict_is_one_json_record_with_reasons_figures_and_limits():
    verdict = judge(healthy(), JudgeLimits(latency_ratio=2.0))
    record = verdict.to_json()
    assert b"\n" not in record
    parsed = json.loads(record)
    assert parsed["outcome"] == "pass"
    assert [c["name"] for c in parsed["checks"]] == ["prices", "errors", "latency"]
    assert parsed["checks"][1]["figures"]["canary_errors"] == 2
    assert parsed["limits"]["latency_ratio"] == 2.0
    assert Verdict.from_json(record) == verdict


# -- the limits ---------------------------------------------------------------------------------


def test_limits_come_from_the_judge_table_of_a_file_and_rollout_variables(tmp_path):
    config = tmp_path / "rollout.toml"
    config.write_text("[judge]\nmin_requests = 800\nlatency_ratio = 2.0\n")
    limits = read_limits({"ROLLOUT_ERROR_P_VALUE": "0.01"}, config)
    assert (limits.min_requests, limits.latency_ratio, limits.error_p_value) == (800, 2.0, 0.01)
    assert read_limits({}) == JudgeLimits()


def test_a_wrong_limit_is_named_with_its_fix(tmp_path):
    with pytest.raises(SettingsError, match=r"^ROLLOUT_MIN_REQUESTS: expected an integer >= 1"):
        read_limits({"ROLLOUT_MIN_REQUESTS": "0"})
    config = tmp_path / "rollout.toml"
    config.write_text("[judge]\nlatency_ration = 2.0\n")
    with pytest.raises(SettingsError, match="did you mean `latency_ratio`"):
        read_limits({}, config)
    with pytest.raises(SettingsError, match="ROLLOUT_MAX_P95_SHIFT: expected at least"):
        read_limits({"ROLLOUT_MAX_P95_SHIFT": "0.01"})


# -- the false-rollback rate --------------------------------------------------------------------


def test_at_most_1_percent_of_same_model_steps_roll_back():
    """10,000 steps of a canary serving stable's own model, both sides drawing from the same
    error rate (0-2%) and latency distribution, 600 requests each: the judge's false rollbacks."""
    outcome = same_model(10_000, seed=20261130)
    print(
        f"\nfalse rollbacks: {outcome.false_rollbacks} of {outcome.decisions} "
        f"({outcome.rate:.2%}; {dict(outcome.failed_checks)}), "
        f"{outcome.decisions_per_second:,.0f} decisions/s"
    )
    assert outcome.rate <= 0.01
