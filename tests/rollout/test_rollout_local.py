"""``python -m rollout local`` against the local platform (real splitter, reconciler and service
revisions): the drills of issue 15 — a canary failing 5% of requests, one 200 ms slower, one
pricing 10% higher — each rolled back at its first step within 60 s of the step's start (a
functional deadline; the measured times are printed), with no failed request but the injected
ones; a shadow phase mirroring to the new revision while it serves nobody; a canary of the same
model passing every step and promoted; a controller killed with
SIGKILL mid-step resuming from its audit log without shifting traffic twice, while a second
controller is refused with the holder named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from model_runtime.contract import EXAMPLE_HOUSE
from rollout import audit
from rollout.audit import Record
from tests.helpers import running, wait_until
from tests.rollout.conftest import LocalStack
from tests.test_project import ROOT

#: The issue's functional deadline: a failing canary is rolled back within this of its step.
ROLLBACK_DEADLINE_S = 60.0
INJECTED = "injected fault (HOUSING_FAULTS)"
#: Short steps for the passing rollouts: 150 requests a side, and a latency floor above the p99
#: noise of a machine shared with other jobs (a p99 of 150 requests is their second slowest,
#: and moved by 70 ms between two revisions of the same model here); the drills keep the
#: defaults.
#: The drills' judge: 300 requests a side instead of 500, because this test machine, shared
#: with other jobs (load average 9-11 on 2 cores, the tests at nice 19), sustained only about
#: 8 probes a second a side of the 20 asked, and a 200 ms canary did not reach 500 in 55 s
#: once; at 300 a 5% error rate still fails with p < 1e-4 and a 200 ms delay is its whole p99.
DRILL_LIMITS = {"ROLLOUT_MIN_REQUESTS": "300"}
SHORT_STEPS = {"ROLLOUT_MIN_REQUESTS": "150", "ROLLOUT_LATENCY_FLOOR_MS": "100"}
HOUSE = dict(EXAMPLE_HOUSE)


def command(stack: LocalStack, *args: str) -> list[str]:
    return [sys.executable, "-m", "rollout", "local", "--api-url", stack.api, *args]


def environment(stack: LocalStack, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return env | {"HOUSING_MLOPS_HOME": str(stack.home)} | extra


def records_of(stack: LocalStack) -> list[Record]:
    log = audit.latest(stack.store, "local")
    assert log is not None
    return log.records()


@dataclass
class Users:
    """Users' traffic on the untagged URL, split by the release, sequential from one thread;
    every answer that is not a 200 is kept."""

    url: str
    answers: int = 0
    failures: list[tuple[int | None, str]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stopping.wait(0.05):
                try:
                    r = client.post(self.url + "/api/v1/predict", json={"instances": [HOUSE]})
                    if r.status_code != 200:
                        self.failures.append((r.status_code, r.text[:300]))
                except httpx.HTTPError as exc:
                    self.failures.append((None, repr(exc)))
                self.answers += 1

    def not_injected(self) -> list[tuple[int | None, str]]:
        return [f for f in self.failures if INJECTED not in f[1]]


@contextmanager
def users(stack: LocalStack) -> Iterator[Users]:
    load = Users(stack.api)
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    try:
        yield load
    finally:
        load.stopping.set()
        thread.join(timeout=60)


def applied(records: list[Record], action: str) -> list[Record]:
    return [r for r in records if r.kind == "applied" and r.data["action"] == action]


def probe_failures(records: list[Record]) -> dict[str, Any]:
    """Each side's probe failures that were not injected, over every window."""
    out: dict[str, Any] = {}
    for r in records:
        if r.kind == "verdict" and r.data.get("decision") != "continue":
            for side, counts in r.data["probes"].items():
                out[side] = (counts["other_failures"], counts["failures"])
    return out


@pytest.mark.parametrize(
    ("faults", "failing_check"),
    [
        ("price_factor=1.1", "prices"),
        ("error_rate=0.05", "errors"),
        ("delay_ms=200", "latency"),
    ],
    ids=["prices-10pct-higher", "errors-5pct", "latency-200ms"],
)
def test_a_faulty_canary_is_rolled_back_at_its_first_step_within_60_s(
    local_stack: LocalStack, faults: str, failing_check: str
):
    argv = command(
        local_stack,
        "--model-version", "2",
        "--steps", "5,50,100",
        "--interval", "20s",
        "--deadline", "55s",
        "--check-every", "1s",
        "--canary-faults", faults,
    )  # fmt: skip
    with users(local_stack) as load:
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env=environment(local_stack, **DRILL_LIMITS),
            capture_output=True,
            text=True,
            timeout=300,
        )
    print(done.stdout, done.stderr)
    assert done.returncode == 1, done.stderr
    assert "rolled back" in done.stderr
    records = records_of(local_stack)
    shift, rollback = applied(records, "shift"), applied(records, "rollback")
    assert [r.data["canary_percent"] for r in shift] == [5]  # the first step, never the next
    assert rollback[0].data["canary_percent"] == 0
    failed = next(r for r in records if r.kind == "verdict" and r.data["decision"] == "fail")
    checks = {c["name"]: c["outcome"] for c in failed.data["verdict"]["checks"]}
    assert checks[failing_check] == "fail", failed.data["reason"]
    took = rollback[0].time - shift[0].time
    done_record = records[-1]
    assert done_record.kind == "done"
    assert done_record.data["outcome"] == "rolled_back"
    print(f"\nMEASURED {faults}: rolled back {took:.1f} s after the step started "
          f"(decided at {failed.data['step_s']:.1f} s): {failed.data['reason'][:200]}")  # fmt: skip
    assert took < ROLLBACK_DEADLINE_S
    # The stable revision takes every request back; no request failed but the injected ones.
    state = local_stack.state()
    assert state.release.canary_percent == 0
    assert load.answers > 0
    assert load.not_injected() == []
    assert all(n == 0 for n, _ in probe_failures(records).values()), probe_failures(records)


def test_a_canary_of_the_same_model_passes_every_step_and_is_promoted(local_stack: LocalStack):
    argv = command(
        local_stack,
        "--model-version", "2",
        "--steps", "50,100",
        "--interval", "5s",
        "--deadline", "90s",
        "--check-every", "1s",
        "--probe-rps", "30",
    )  # fmt: skip
    env = environment(local_stack, **SHORT_STEPS)
    with users(local_stack) as load:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    records = records_of(local_stack)
    assert [r.data["canary_percent"] for r in applied(records, "shift")] == [50, 100]
    passes = [r for r in records if r.kind == "verdict" and r.data["decision"] == "pass"]
    assert [r.data["phase"] for r in passes] == [0, 1]
    state = local_stack.state()
    assert state.release.canary_percent == 100
    assert state.release.stable_revision == state.newest
    assert state.revisions[state.newest].model_version == 2
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{local_stack.home / 'mlflow.db'}")
    try:
        champion = MlflowClient().get_model_version_by_alias("housing-price", "champion")
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    assert str(champion.version) == "2"
    assert load.failures == []


def test_a_shadow_phase_mirrors_without_serving_then_the_canary_is_promoted(
    local_stack: LocalStack,
):
    """The whole shadow phase on the local platform: the stable revision mirrors every request
    to the new one while it serves nobody, the shadow reports show both answered alike, the
    console's split shows the new revision at 0% under its shadow tag, then a canary step passes
    and is promoted."""
    from housing_platform import traffic_split
    from service import shadow_report

    argv = command(
        local_stack,
        "--model-version", "2",
        "--shadow", "12s",
        "--shadow-percent", "100",
        "--steps", "100",
        "--interval", "5s",
        "--deadline", "90s",
        "--check-every", "1s",
        "--probe-rps", "30",
        # A revision of its own whatever the tests before left stable (a seed is no fault).
        "--canary-faults", "seed=7",
    )  # fmt: skip
    store = local_stack.store
    before = set(store.list(shadow_report.PREFIX))
    splits: list[list[tuple[str, int, list[str]]]] = []

    def watch_split() -> None:
        while not load.stopping.wait(0.2):
            found = traffic_split.read(store)
            if found is not None:
                rows = [(r.revision, r.percent, [t.tag for t in r.tags]) for r in found.revisions]
                if not splits or splits[-1] != rows:
                    splits.append(rows)

    env = environment(local_stack, **SHORT_STEPS)
    with users(local_stack) as load:
        watcher = threading.Thread(target=watch_split, daemon=True)
        watcher.start()
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    watcher.join(timeout=10)
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    records = records_of(local_stack)
    shifts = applied(records, "shift")
    assert [(r.data["canary_percent"], r.data["shadow_percent"]) for r in shifts] == [
        (0, 100),
        (100, 0),
    ]
    passes = [r for r in records if r.kind == "verdict" and r.data["decision"] == "pass"]
    assert [r.data["phase"] for r in passes] == [0, 1]
    assert records[-1].data["outcome"] == "promoted"
    # While it shadowed, the split showed the new revision serving nobody under its shadow tag.
    stable, newest = shifts[0].data["stable_revision"], shifts[0].data["newest_revision"]
    assert [(stable, 100, ["stable"]), (newest, 0, ["canary", "shadow"])] in splits, splits
    # The stable revision mirrored users' requests, and both answered alike (the same model).
    keys = [k for k in store.list(shadow_report.PREFIX) if k not in before]
    reports = [shadow_report.read(store, k) for k in keys]
    mirrored = [r for r in reports if r.outcomes.mirrored and r.shadow_revision == newest]
    assert mirrored, keys
    assert all(r.stable_revision == stable and r.shadow_model_version == 2 for r in mirrored)
    assert sum(r.outcomes.answered for r in mirrored) > 0
    assert sum(r.outcomes.failed for r in mirrored) == 0
    assert min(r.agreement.within_5pct for r in mirrored if r.agreement.n) == 1.0
    assert load.failures == []


def test_a_controller_killed_mid_step_resumes_without_shifting_twice_and_a_second_is_refused(
    local_stack: LocalStack,
):
    # A revision of the served version under another name (a seed is no fault).
    argv = command(
        local_stack,
        "--model-version", "2",
        "--steps", "100",
        "--interval", "25s",
        "--deadline", "120s",
        "--check-every", "1s",
        "--probe-rps", "30",
        "--canary-faults", "seed=1",
    )  # fmt: skip
    # This test is about resuming: the p99 of two revisions of one model on this shared machine
    # differed by up to 265 ms (stable's own was 287 ms), so latency is not what it judges here.
    env = environment(local_stack, **SHORT_STEPS | {"ROLLOUT_LATENCY_FLOOR_MS": "2000"})
    before = set(audit.rollout_ids(local_stack.store, "local"))
    with running(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as first:

        def judging() -> bool:
            ids = set(audit.rollout_ids(local_stack.store, "local")) - before
            if not ids:
                return False
            log = audit.AuditLog(local_stack.store, "local", ids.pop())
            return any(r.kind == "verdict" for r in log.records())

        wait_until(
            judging, "the first controller judging its first step", timeout=180, process=first
        )
        second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 3
        assert f"pid {first.pid}" in second.stderr
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = time.time()
    again = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    print(again.stdout, again.stderr)
    assert again.returncode == 0, again.stderr
    assert "resuming rollout" in again.stdout
    records = records_of(local_stack)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert [r.kind for r in records].count("start") == 1
    resumed = next(r for r in records if r.kind == "resumed")
    assert resumed.time >= killed_at
    # Each step's shift intended and applied once: the restart judged the step it found.
    shifts = [r for r in records if r.data.get("action") == "shift"]
    assert [(r.kind, r.data["phase"]) for r in shifts] == [("intent", 0), ("applied", 0)]
    assert shifts[1].time < killed_at  # killed mid-step: the restart judged it, never shifted
    windows = [r.data for r in records if r.kind == "window" and r.data["phase"] == 0]
    assert [w["resumed"] for w in windows] == [False, True]
    assert records[-1].data["outcome"] == "promoted"


def test_a_canary_whose_users_fail_in_cloud_monitorings_counts_is_rolled_back(
    local_stack: LocalStack,
):
    """The GCP cross-check, driven on the local platform: the probes and the revision's own
    counters see a healthy canary (a seed is no fault), but the per-revision request counts read
    from Cloud Monitoring (a stand-in on loopback, through the same reader) hold 5% of 5xx for
    it, as users' requests the probes never send would on GCP. The step is rolled back on those
    counts alone, at its first step, and no user request fails."""
    from rollout import judge
    from rollout.cli import open_log
    from rollout.cloud_monitoring import RequestCountReader
    from rollout.controller import Controller, Plan, RolledBackError
    from rollout.lease import Lease
    from rollout.probe import read_probe_set
    from rollout.targets import LocalTarget
    from tests.rollout.fake_monitoring import FakeMonitoring, serving

    plan = Plan(
        model_version=2,
        steps=(5, 100),
        interval_s=20,
        deadline_s=55,
        check_s=1,
        probe_rps=30,
        faults="seed=3",
        monitoring="check",
    )
    store = local_stack.store
    lease = Lease(store, "local")
    lease.acquire()
    with serving(FakeMonitoring()) as fake, users(local_stack) as load:
        reader = RequestCountReader("project", "housing-api", lambda: "token", api=fake.url)
        asked: list[list[str]] = []

        def cross_check(revisions, since, until):  # type: ignore[no-untyped-def]
            canary, stable = revisions  # the controller asks for [canary, stable]
            fake.counts = {canary: (2000, 100), stable: (6000, 0)}
            asked.append(list(revisions))
            return reader(revisions, since, until)

        try:
            log, _ = open_log(store, "local", plan, lease.holder)
            controller = Controller(
                target=LocalTarget(local_stack.home, local_stack.api),
                store=store,
                log=log,
                lease=lease,
                probe_set=read_probe_set(store, plan.model_name, plan.model_version),
                limits=judge.JudgeLimits(min_requests=150, latency_floor_ms=2000),
                promote_model=lambda version: pytest.fail("a failing canary was promoted"),
                say=print,
                cross_check=cross_check,
            )
            controller.cross_check_every_s = 0.5
            with pytest.raises(RolledBackError, match="monitoring: Cloud Monitoring: canary"):
                controller.run()
        finally:
            lease.release()
    records = log.records()
    shift, rollback = applied(records, "shift"), applied(records, "rollback")
    assert [r.data["canary_percent"] for r in shift] == [5]
    assert rollback[0].data["canary_percent"] == 0
    failed = next(r for r in records if r.kind == "verdict" and r.data["decision"] == "fail")
    checks = {c["name"]: c["outcome"] for c in failed.data["verdict"]["checks"]}
    assert checks["monitoring"] == "fail"
    assert checks["errors"] != "fail"  # the probes and /metrics saw nothing wrong
    assert failed.data["monitoring"]["through"] >= shift[0].time
    assert all(a[0] == shift[0].data["newest_revision"] for a in asked)
    assert rollback[0].time - shift[0].time < ROLLBACK_DEADLINE_S
    assert local_stack.state().release.canary_percent == 0
    assert load.failures == []
