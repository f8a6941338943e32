"""The controller's state machine: where a rollout stands after its audit log, and what it does
next (pure: a fold of records and a function of it), including after a restart."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from rollout import judge
from rollout.audit import Record
from rollout.controller import Plan, check_plan, decide, next_action, phases, progress

PLAN = Plan(model_version=7, steps=(5, 50, 100), interval_s=30, deadline_s=120)


class Log:
    """Records as a controller appends them."""

    def __init__(self, plan: Plan = PLAN):
        self.records: list[Record] = []
        self.add("start", plan=msgspec.to_builtins(plan))

    def add(self, kind: str, at: float | None = None, **data: Any) -> Log:
        seq = len(self.records) + 1
        self.records.append(
            Record(
                seq=seq, time=at if at is not None else float(seq), kind=kind, holder="t", data=data
            )
        )
        return self

    def shifted(self, phase: int, at: float | None = None) -> Log:
        self.add("intent", action="shift", phase=phase)
        return self.add("applied", at=at, action="shift", phase=phase)

    def verdict(self, phase: int, decision: str, reason: str = "r") -> Log:
        return self.add(
            "verdict", phase=phase, step=f"step {phase}", decision=decision, reason=reason
        )

    def next(self) -> tuple[str, Any]:
        return next_action(progress(self.records), phases(PLAN))


def test_a_new_rollout_shifts_to_its_first_step():
    action, phase = Log().next()
    assert action == "shift"
    assert phase.canary_percent == 5


def test_a_shadow_phase_comes_first_and_mirrors_without_serving():
    first = phases(Plan(model_version=7, shadow_s=60, shadow_percent=50))[0]
    assert (first.kind, first.canary_percent, first.shadow_percent, first.least_s) == (
        "shadow",
        0,
        50,
        60,
    )


def test_an_applied_step_is_judged_until_a_verdict_decides():
    log = Log().shifted(0).verdict(0, "continue").verdict(0, "continue")
    action, phase = log.next()
    assert action == "judge"
    assert phase.index == 0


def test_a_passed_step_moves_to_the_next_percent():
    action, phase = Log().shifted(0).verdict(0, "pass").next()
    assert action == "shift"
    assert phase.canary_percent == 50


def test_a_failed_step_rolls_back_with_its_reason_and_then_finishes():
    log = Log().shifted(0).verdict(0, "pass").shifted(1).verdict(1, "fail", "errors: p = 1e-9")
    action, reason = log.next()
    assert action == "rollback"
    assert "errors: p = 1e-9" in reason
    log.add("intent", action="rollback", reason=reason).add("applied", action="rollback")
    log.add("done", outcome="rolled_back", reason=reason)
    assert log.next() == ("finish", "rolled_back")


def test_after_the_last_step_the_model_then_the_release_is_promoted():
    log = Log()
    for phase in range(3):
        log.shifted(phase).verdict(phase, "pass")
    assert log.next()[0] == "promote_model"
    log.add("intent", action="promote_model").add("applied", action="promote_model")
    assert log.next()[0] == "promote_release"
    log.add("intent", action="promote_release").add("applied", action="promote_release")
    assert log.next() == ("finish", "promoted")


@pytest.mark.parametrize("action", ["shift", "rollback", "promote_model", "promote_release"])
def test_an_intent_without_its_outcome_is_done_again_not_skipped(action):
    """Killed between recording an intent and its outcome: the restart redoes that very intent
    (each is idempotent against the release), never the next one."""
    log = Log().shifted(0).verdict(0, "pass").add("intent", action=action, phase=1, reason="x")
    assert log.next() == ("redo", {"action": action, "phase": 1, "reason": "x"})


def test_a_restart_mid_step_judges_the_same_step_and_never_shifts_again():
    log = Log().shifted(0, at=100.0).add("window", phase=0).verdict(0, "continue")
    log.add("resumed")
    p = progress(log.records)
    assert p.applied == 0
    assert p.applied_at == 100.0
    action, phase = next_action(p, phases(PLAN))
    assert action == "judge"
    assert phase.index == 0


def test_the_step_deadline_turns_inconclusive_into_a_rollback_never_a_pass():
    phase = phases(PLAN)[0]
    inconclusive = judge.Verdict(
        outcome="inconclusive", reason="errors: probing more", checks=(), limits=judge.JudgeLimits()
    )
    assert decide(inconclusive, 50, 60, phase, 120)[0] == "continue"
    decision, reason = decide(inconclusive, 110, 121, phase, 120)
    assert decision == "fail"
    assert "deadline" in reason


def test_a_passing_step_waits_for_its_interval_and_a_failing_one_does_not():
    phase = phases(PLAN)[0]
    limits = judge.JudgeLimits()
    passing = judge.Verdict(outcome="pass", reason="ok", checks=(), limits=limits)
    failing = judge.Verdict(outcome="fail", reason="prices", checks=(), limits=limits)
    assert decide(passing, 10, 10, phase, 120)[0] == "continue"
    assert decide(passing, 30, 30, phase, 120)[0] == "pass"
    assert decide(failing, 1, 1, phase, 120) == ("fail", "prices")


def test_a_wrong_plan_names_each_option_and_its_fix():
    bad = Plan(model_version=0, steps=(50, 5, 101), deadline_s=10, interval_s=60)
    problems = " | ".join(check_plan(bad))
    for option in ("--model-version", "--steps", "--deadline"):
        assert option in problems
    assert check_plan(PLAN) == []
