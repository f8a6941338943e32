"""The rollout controller: a release moved through shadow and canary steps, each judged.

A rollout is a plan (``Plan``: the model version, the steps, how long each lasts) turned into
phases: an optional shadow phase (the new revision serves no one; the stable one mirrors a share
of its requests to it), then one canary phase per step percent. For each phase the controller

1. records its **intent** in the audit log, shifts the release (``Target.shift``), records that
   it was **applied** (the step starts then);
2. opens a **window** (a baseline of each revision's counters), drives probe traffic and, every
   ``check_s``, gathers the evidence and records the judge's **verdict** with its decision:
   ``fail`` at once when a check fails, ``pass`` when every check passes and the window has lasted
   ``interval_s`` (a shadow phase: its duration), ``continue`` while inconclusive, and ``fail``
   when still inconclusive at the step's deadline — never a pass on too few requests;
3. on a failure: intent, rollback (canary 0%, no shadow), applied, **done** (rolled back, with
   the reason and the time from the step's start); after the last phase: intent, ``pipeline
   promote`` (champion alias and export), applied; intent, the release's promote
   (``stableRevision``), applied; done.

Where it is in that sequence is a pure fold of the audit log (``progress``), and what to do next
a pure function of it (``next_action``): a controller killed at any point and started again
reads the log and continues. An intent without its outcome is done again, and every action is
idempotent against the release (a shift already applied is not written again), so traffic never
shifts twice. A resumed judging phase opens a new window: its counters' baseline died with the
old process.

On GCP each step is also **cross-checked** by Cloud Monitoring's request counts per revision
(``cloud_monitoring``: users' requests too, minutes late): see ``judge.cross_checked``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import numpy as np

from housing_platform.artifact_store import ArtifactStore
from rollout import evidence, judge
from rollout.audit import AuditLog
from rollout.cloud_monitoring import RequestCounts
from rollout.lease import Lease
from rollout.probe import ProbeLoad, ProbeSet, SideCounts, price_probe
from rollout.targets import Shift, Snapshot, Target

#: How often the cross-check's counts are read: Cloud Run samples them once a minute.
CROSS_CHECK_EVERY_S = 30.0
#: How much longer a step may take while it waits for those counts: a minute's point, visible
#: up to 3 minutes after it closed, read every 30 s, and some margin.
CROSS_CHECK_WAIT_S = 360.0
SHADOW: Literal["shadow"] = "shadow"
CANARY: Literal["canary"] = "canary"


class Plan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a rollout was asked to do (its start record holds it)."""

    model_version: int
    steps: tuple[int, ...] = (5, 25, 50, 100)
    """Canary percents, in order; the last is normally 100."""
    shadow_s: float = 0.0
    """How long the shadow phase lasts (0: none)."""
    shadow_percent: int = 100
    """Share of the stable revision's requests mirrored during the shadow phase."""
    interval_s: float = 60.0
    """How long each canary step's window lasts at least before it may pass."""
    deadline_s: float = 300.0
    """A step still inconclusive this long after it started is rolled back."""
    check_s: float = 2.0
    """How often a step's evidence is gathered and judged."""
    probe_rps: float = 20.0
    """Probe requests a second to each side's tag URL (0: none, users' traffic only)."""
    faults: str = ""
    """HOUSING_FAULTS for the new revision (local drills only)."""
    model_name: str = "housing-price"
    monitoring: Literal["wait", "check", "off"] = "off"
    """A stack's cross-check by Cloud Monitoring's request counts: ``wait`` (they can fail a
    step, and a step passes only once they cover its window), ``check`` (they can only fail
    it), ``off`` (the default here, and in logs from before the cross-check; the CLI asks for
    ``wait`` on a stack). The local platform has none: each revision's own counters are read
    instead."""

    @property
    def least_s(self) -> float:
        """The longest any phase lasts at least: ``interval_s``, or the shadow phase's."""
        return max(self.interval_s, self.shadow_s)


class Phase(msgspec.Struct, frozen=True):
    index: int
    kind: Literal["shadow", "canary"]
    canary_percent: int
    shadow_percent: int
    least_s: float
    """How long its window lasts at least before it may pass."""

    @property
    def tag(self) -> str:
        return SHADOW if self.kind == SHADOW else CANARY

    def describe(self) -> str:
        if self.kind == SHADOW:
            return f"shadow ({self.shadow_percent}% mirrored)"
        return f"canary {self.canary_percent}%"


def phases(plan: Plan) -> list[Phase]:
    out = []
    if plan.shadow_s > 0:
        out.append(Phase(0, SHADOW, 0, plan.shadow_percent, plan.shadow_s))
    for percent in plan.steps:
        out.append(Phase(len(out), CANARY, percent, 0, plan.interval_s))
    return out


def check_plan(plan: Plan) -> list[str]:
    """What is wrong with a plan, each naming the option and its fix (empty: nothing)."""
    problems = []
    if plan.model_version < 1:
        problems.append("--model-version: a registered version, at least 1")
    if not plan.steps:
        problems.append("--steps: at least one percent, e.g. 5,25,50,100")
    if any(not 0 < p <= 100 for p in plan.steps):
        problems.append("--steps: percents between 1 and 100, e.g. 5,25,50,100")
    if list(plan.steps) != sorted(set(plan.steps)):
        problems.append("--steps: increasing percents, each once, e.g. 5,25,50,100")
    if not 0 <= plan.shadow_percent <= 100:
        problems.append("--shadow-percent: between 0 and 100")
    if plan.shadow_s > 0 and plan.shadow_percent == 0:
        problems.append("--shadow-percent: above 0 when --shadow is set")
    if plan.deadline_s < plan.least_s:
        problems.append("--deadline: at least --interval (and --shadow)")
    elif plan.monitoring == "wait" and plan.deadline_s < plan.least_s + CROSS_CHECK_WAIT_S:
        problems.append(
            f"--deadline: a step waits up to {CROSS_CHECK_WAIT_S / 60:.0f} min for Cloud "
            f"Monitoring's counts, so give at least --interval (and --shadow) + "
            f"{CROSS_CHECK_WAIT_S / 60:.0f}m ({plan.least_s + CROSS_CHECK_WAIT_S:.0f}s), or "
            "--monitoring check"
        )
    if plan.check_s <= 0:
        problems.append("--check-every: above 0")
    if plan.probe_rps < 0:
        problems.append("--probe-rps: 0 or more")
    return problems


# --- where a rollout is: a fold of its audit log ------------------------------------------------


@dataclass
class Progress:
    plan: Plan | None = None
    applied: int = -1
    """The last phase whose shift was applied."""
    applied_at: float = 0.0
    """When it was applied: the step's start."""
    pending: dict[str, Any] | None = None
    """An intent whose outcome was not recorded (the controller died in between)."""
    passed: set[int] = field(default_factory=set)
    failure: str = ""
    """Why the rollout is to be rolled back ("" while it isn't)."""
    rolled_back: bool = False
    model_promoted: bool = False
    release_promoted: bool = False
    done: dict[str, Any] | None = None


def progress(records: list[Any]) -> Progress:
    """Where the rollout stands after ``records`` (``audit.Record``s, in order)."""
    p = Progress()
    for r in records:
        d = r.data
        if r.kind == "start":
            p.plan = msgspec.convert(d["plan"], Plan)
        elif r.kind == "intent":
            p.pending = d
        elif r.kind == "applied":
            p.pending = None
            action = d["action"]
            if action == "shift":
                p.applied, p.applied_at = d["phase"], r.time
            elif action == "rollback":
                p.rolled_back = True
            elif action == "promote_model":
                p.model_promoted = True
            elif action == "promote_release":
                p.release_promoted = True
        elif r.kind == "verdict":
            if d["decision"] == "pass":
                p.passed.add(d["phase"])
            elif d["decision"] == "fail" and not p.failure:
                p.failure = f"{d['step']}: {d['reason']}"
        elif r.kind == "abort" and not p.failure:
            p.failure = d["reason"]
        elif r.kind == "done":
            p.done = d
    return p


Action = tuple[str, Any]


def next_action(p: Progress, plan_phases: list[Phase]) -> Action:
    """What to do next: ``("finish", outcome)``, ``("redo", intent)``, ``("rollback", reason)``,
    ``("promote_model", None)``, ``("promote_release", None)``, ``("shift", phase)`` or
    ``("judge", phase)``."""
    if p.done is not None:
        return ("finish", p.done["outcome"])
    if p.pending is not None:
        return ("redo", p.pending)
    if p.failure:
        return ("finish", "rolled_back") if p.rolled_back else ("rollback", p.failure)
    last = len(plan_phases) - 1
    if p.applied == last and last in p.passed:
        if not p.model_promoted:
            return ("promote_model", None)
        if not p.release_promoted:
            return ("promote_release", None)
        return ("finish", "promoted")
    if p.applied == -1 or p.applied in p.passed:
        return ("shift", plan_phases[p.applied + 1])
    return ("judge", plan_phases[p.applied])


def decide(
    verdict: judge.Verdict, window_s: float, step_s: float, phase: Phase, deadline_s: float
) -> tuple[str, str]:
    """The step's decision from one verdict: ``(pass|fail|continue, reason)``."""
    if verdict.outcome == judge.FAIL:
        return "fail", verdict.reason
    if verdict.outcome == judge.PASS and window_s >= phase.least_s:
        return "pass", verdict.reason
    if step_s >= deadline_s:
        return "fail", (
            f"still inconclusive {step_s:.0f} s after the step started (deadline "
            f"{deadline_s:.0f} s): {verdict.reason}"
        )
    if verdict.outcome == judge.PASS:
        return "continue", f"passing; the window lasts {phase.least_s:.0f} s ({window_s:.0f} s)"
    return "continue", verdict.reason


# --- running it ---------------------------------------------------------------------------------


class RolledBackError(RuntimeError):
    """The rollout was rolled back; the message is the reason."""


@dataclass
class Window:
    """A judging window: when it opened, each revision's counters then, and its probes."""

    started_at: float
    baseline: dict[str, evidence.Counts]
    probes: dict[str, SideCounts] = field(default_factory=dict)
    prices: judge.PriceEvidence = evidence.NO_PRICES
    monitoring: RequestCounts | None = None
    monitoring_read_at: float = 0.0
    monitoring_error: str = ""


class Controller:
    """Drives one rollout of one stack, writing every decision to ``log``."""

    def __init__(
        self,
        *,
        target: Target,
        store: ArtifactStore,
        log: AuditLog,
        lease: Lease,
        probe_set: ProbeSet,
        limits: judge.JudgeLimits,
        promote_model: Callable[[int], None],
        say: Callable[[str], None] = print,
        stopping: threading.Event | None = None,
        cross_check: Callable[[Sequence[str], float, float], RequestCounts] | None = None,
    ):
        self.target = target
        self.store = store
        self.log = log
        self.lease = lease
        self.probe_set = probe_set
        self.limits = limits
        self.promote_model = promote_model
        self.say = say
        self.stopping = stopping or threading.Event()
        self.probes: ProbeLoad | None = None
        self.latencies = evidence.LatencyReader(store)
        self.cross_check = cross_check
        """Per-revision request counts from a second source (Cloud Monitoring on GCP)."""
        self.cross_check_every_s = CROSS_CHECK_EVERY_S

    def record(self, kind: str, **data: Any) -> None:
        self.lease.renew_if_due()
        self.log.append(kind, self.lease.holder, **data)

    def run(self) -> str:
        """Runs the rollout to its end: ``"promoted"``, or raises ``RolledBackError``."""
        try:
            while True:
                p = progress(self.log.records())
                assert p.plan is not None, "a rollout's log starts with its plan"
                plan = p.plan
                action, arg = next_action(p, phases(plan))
                if action == "finish":
                    if arg == "promoted":
                        return "promoted"
                    raise RolledBackError(self._reason(p))
                self.lease.renew_if_due()
                if action == "redo":
                    self.say(f"resuming: {arg['action']} was begun and not recorded; again")
                    self._act(arg, p)
                elif action == "rollback":
                    self._intend(p, action="rollback", reason=arg)
                elif action in ("promote_model", "promote_release"):
                    self._intend(p, action=action)
                elif action == "shift":
                    self._intend(p, action="shift", phase=arg.index, step=arg.describe())
                else:
                    self._judge(plan, arg, p)
        finally:
            if self.probes is not None:
                self.probes.stop()

    def _reason(self, p: Progress) -> str:
        return str((p.done or {}).get("reason") or p.failure)

    def _intend(self, p: Progress, **intent: Any) -> None:
        self.record("intent", **intent)
        self._act(intent, p)

    def _act(self, intent: dict[str, Any], p: Progress) -> None:
        """Does what ``intent`` says (again, after a restart: each is idempotent) and records
        the outcome, and for a rollback or the last promote, the end."""
        plan = p.plan
        assert plan is not None
        action = intent["action"]
        if action == "shift":
            phase = phases(plan)[intent["phase"]]
            self.say(f"step {phase.index + 1}: {phase.describe()} of model {plan.model_version}")
            snap = self.target.shift(
                Shift(plan.model_version, phase.canary_percent, phase.shadow_percent, plan.faults)
            )
            self.record("applied", action="shift", phase=phase.index, **_describe(snap))
        elif action == "rollback":
            snap = self.target.rollback()  # first: the probes' own stop can wait
            took = time.time() - p.applied_at if p.applied_at else 0.0
            self.record("applied", action="rollback", **_describe(snap))
            if self.probes is not None:
                self.probes.stop()
                self.probes = None
            self.say(f"rolled back {took:.1f} s after the step started: {intent['reason']}")
            self.record("done", outcome="rolled_back", reason=intent["reason"], rollback_s=took)
        elif action == "promote_model":
            if self.probes is not None:
                self.probes.stop()
                self.probes = None
            self.promote_model(plan.model_version)
            self.record("applied", action="promote_model", model_version=plan.model_version)
        elif action == "promote_release":
            snap = self.target.promote()
            self.record("applied", action="promote_release", **_describe(snap))
            self.say(f"promoted: model {plan.model_version} is the champion, {snap.newest} stable")
            self.record("done", outcome="promoted", reason="every step passed")

    def _judge(self, plan: Plan, phase: Phase, p: Progress) -> None:
        """One phase's window, judged every ``check_s`` until it passes or fails."""
        snap = self.target.snapshot()
        sides = {"canary": str(snap.newest), "stable": str(snap.stable)}
        if not snap.stable:
            self.record("abort", reason=f"{phase.describe()}: the release has no stable revision")
            return
        urls = {"canary": snap.tag_urls[phase.tag], "stable": snap.tag_urls["stable"]}
        window = Window(time.time(), self._counters(snap, sides, None))
        resumed = any(
            r.kind == "window" and r.data.get("phase") == phase.index for r in self.log.records()
        )
        self.record(
            "window",
            phase=phase.index,
            started_at=window.started_at,
            resumed=resumed,
            revisions=sides,
            urls=urls,
        )
        if self.probes is None:
            self.probes = ProbeLoad(
                urls, self.probe_set.houses, plan.probe_rps, self.target.headers
            )
            self.probes.start()
        else:
            self.probes.retarget(urls)
            self.probes.take()
        while True:
            if self.stopping.wait(plan.check_s):
                raise KeyboardInterrupt
            ev = self._evidence(snap, sides, urls, window, time.time())
            verdict = self._cross_checked(judge.judge(ev, self.limits), plan, phase, sides, window)
            now = time.time()  # the decision's time, after the evidence was gathered
            step_s = now - p.applied_at
            decision, reason = decide(
                verdict, now - window.started_at, step_s, phase, plan.deadline_s
            )
            self.record(
                "verdict",
                phase=phase.index,
                step=phase.describe(),
                decision=decision,
                outcome=verdict.outcome,
                reason=reason,
                window_s=round(now - window.started_at, 3),
                step_s=round(step_s, 3),
                verdict=msgspec.to_builtins(verdict),
                probes={side: c.as_dict() for side, c in window.probes.items()},
                **self._monitoring_record(window),
            )
            if decision == "continue":
                continue
            self.say(f"step {phase.index + 1} ({phase.describe()}): {decision} — {reason}")
            return

    def _cross_checked(
        self,
        verdict: judge.Verdict,
        plan: Plan,
        phase: Phase,
        sides: dict[str, str],
        window: Window,
    ) -> judge.Verdict:
        """The verdict cross-checked by the second source's counts of the window, read every
        ``cross_check_every_s``; a failed read is recorded and read again, never a pass."""
        if self.cross_check is None or plan.monitoring == "off":
            return verdict
        now = time.time()
        if now - window.monitoring_read_at >= self.cross_check_every_s:
            window.monitoring_read_at = now
            try:
                window.monitoring = self.cross_check(list(sides.values()), window.started_at, now)
                window.monitoring_error = ""
            except evidence.EvidenceError as exc:
                if not window.monitoring_error:
                    self.say(f"cross-check: {exc}")
                window.monitoring_error = str(exc)
        counts = window.monitoring
        errors = None
        if counts is not None and counts.through > window.started_at:
            canary, stable = counts.of(sides["canary"]), counts.of(sides["stable"])
            errors = judge.ErrorEvidence(
                canary_requests=canary.requests,
                canary_errors=canary.errors,
                stable_requests=stable.requests,
                stable_errors=stable.errors,
            )
        covered = counts is not None and counts.covers(window.started_at + phase.least_s)
        return judge.cross_checked(verdict, errors, covered=covered, wait=plan.monitoring == "wait")

    def _monitoring_record(self, window: Window) -> dict[str, Any]:
        if self.cross_check is None:
            return {}
        counts = window.monitoring
        return {
            "monitoring": {
                "through": counts.through if counts is not None else 0.0,
                "error": window.monitoring_error,
            }
        }

    def _counters(
        self, snap: Snapshot, sides: dict[str, str], window: Window | None
    ) -> dict[str, evidence.Counts]:
        """Each side's counters now (revisions with their own URL: their /metrics)."""
        out = {}
        for side, revision in sides.items():
            url = snap.revision_urls.get(revision)
            if url is not None:
                out[side] = evidence.scrape(revision, url, self.target.headers(url))
        return out

    def _evidence(
        self,
        snap: Snapshot,
        sides: dict[str, str],
        urls: dict[str, str],
        window: Window,
        now: float,
    ) -> judge.Evidence:
        assert self.probes is not None
        for side, taken in self.probes.take().items():
            _add(window.probes.setdefault(side, SideCounts()), taken)
        if not window.prices.canary:  # a revision's prices don't change: once per window
            prices = self._prices(sides, urls)
            if prices is not None:
                window.prices = prices
        counters = self._counters(snap, sides, window)
        counts: dict[str, evidence.Counts] = {}
        for side in ("canary", "stable"):
            if side in counters:
                counts[side] = evidence.delta(counters[side], window.baseline.get(side))
            else:  # no per-revision counters (Cloud Run): the probes' own answers
                c = window.probes.get(side, SideCounts())
                counts[side] = evidence.Counts(c.sent, c.errors_5xx)
        lat = self.latencies(list(sides.values()), window.started_at, now + 1)
        return evidence.assemble(
            window.prices,
            counts["canary"],
            counts["stable"],
            lat.get(sides["canary"], np.empty(0)),
            lat.get(sides["stable"], np.empty(0)),
        )

    def _prices(self, sides: dict[str, str], urls: dict[str, str]) -> judge.PriceEvidence | None:
        """Both sides' prices of the probe set, once each answered from the right revision."""
        canary = price_probe(urls["canary"], self.probe_set, self.target.headers)
        stable = price_probe(urls["stable"], self.probe_set, self.target.headers)
        if canary.prices is None or stable.prices is None:
            return None
        if canary.revision != sides["canary"] or stable.revision != sides["stable"]:
            return None
        return judge.PriceEvidence(
            canary=canary.prices, stable=stable.prices, expected=self.probe_set.prices
        )


def _add(total: SideCounts, more: SideCounts) -> None:
    for name in ("sent", "ok", "errors_5xx", "injected", "other_failures", "skipped"):
        setattr(total, name, getattr(total, name) + getattr(more, name))
    for revision, n in more.served_by.items():
        total.served_by[revision] = total.served_by.get(revision, 0) + n
    total.failures.extend(more.failures[: max(0, 5 - len(total.failures))])


def _describe(snap: Snapshot) -> dict[str, Any]:
    r = snap.release
    return {
        "model_version": r.model_version,
        "canary_percent": r.canary_percent,
        "shadow_percent": r.shadow_percent,
        "stable_revision": str(snap.stable),
        "newest_revision": str(snap.newest),
        "faults": str(snap.faults),
    }
