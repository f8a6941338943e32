"""The audit log and the lease on the real local artifact store: records are create-only and
numbered without gaps; one controller per stack, a second refused with the holder named, a
dead holder's lease taken back, a lost lease noticed before acting."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from housing_platform.artifact_store import LocalStore
from rollout import audit, lease
from rollout.audit import AuditConflictError, AuditLog
from rollout.lease import Lease, LeaseHeldError
from tests.helpers import running
from tests.test_project import ROOT


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "artifacts")


def test_records_are_numbered_in_order_and_read_back_by_a_new_reader(store):
    log = AuditLog(store, "local", audit.new_rollout_id())
    log.append("start", "me", plan={"model_version": 2})
    log.append("intent", "me", action="shift", phase=0)
    again = audit.latest(store, "local")
    assert again is not None
    assert again.rollout_id == log.rollout_id
    assert [(r.seq, r.kind) for r in again.records()] == [(1, "start"), (2, "intent")]
    assert again.records()[1].data == {"action": "shift", "phase": 0}


def test_a_record_is_never_overwritten_by_a_second_writer(store):
    rollout_id = audit.new_rollout_id()
    first, second = AuditLog(store, "local", rollout_id), AuditLog(store, "local", rollout_id)
    first.append("start", "a")
    assert len(second.records()) == 1
    first.append("intent", "a")
    with pytest.raises(AuditConflictError, match="another controller"):
        second.append("intent", "b")  # it read before the first one's record 2
    assert [r.holder for r in AuditLog(store, "local", rollout_id).records()] == ["a", "a"]


def test_the_newest_rollout_of_a_stack_is_the_latest(store):
    old = AuditLog(store, "dev", audit.new_rollout_id(now=1_000_000))
    old.append("start", "me")
    new = AuditLog(store, "dev", audit.new_rollout_id(now=2_000_000))
    new.append("start", "me")
    Lease(store, "dev").acquire()  # the lease lives beside the rollouts, and is none of them
    assert audit.rollout_ids(store, "dev") == [old.rollout_id, new.rollout_id]
    latest = audit.latest(store, "dev")
    assert latest is not None
    assert latest.rollout_id == new.rollout_id
    assert audit.latest(store, "prod") is None


def test_a_second_controller_is_refused_with_the_holder_named(store):
    first = Lease(store, "local", rollout_id="r1")
    first.acquire()
    second = Lease(store, "local")
    second.holder = "someone-else pid 1"
    second.host = "another-host"  # on another machine a live-looking holder can't be checked
    with pytest.raises(LeaseHeldError, match=f"held by {first.holder}.*rollout r1"):
        second.acquire()
    # A hand-run release command asks the same question and gets the same answer.
    with pytest.raises(LeaseHeldError, match=first.holder):
        lease.check_free(store, "local")
    first.release()
    assert lease.check_free(store, "local") is not None  # released: free
    second.acquire()


def test_an_expired_lease_is_taken_over_and_its_old_holder_stops_before_acting(store):
    clock = [1000.0]
    old = Lease(store, "dev", ttl_s=30, now=lambda: clock[0])
    old.acquire()
    new = Lease(store, "dev", ttl_s=30, now=lambda: clock[0])
    new.host = "another-host"
    new.holder = "other@another-host pid 2"
    clock[0] += 10
    with pytest.raises(LeaseHeldError):
        new.acquire()
    clock[0] += 25  # 35 s without a renewal: expired
    new.acquire()
    with pytest.raises(LeaseHeldError, match="lease lost to other@another-host"):
        old.renew()


def test_renewals_keep_a_lease_past_its_first_expiry(store):
    clock = [0.0]
    held = Lease(store, "dev", ttl_s=30, now=lambda: clock[0])
    held.acquire()
    for _ in range(5):
        clock[0] += 11
        held.renew_if_due()
    other = Lease(store, "dev", now=lambda: clock[0])
    other.host = "another-host"
    with pytest.raises(LeaseHeldError):
        other.acquire()


def test_a_holder_killed_on_this_machine_gives_its_lease_back_at_once(store, tmp_path):
    """A controller killed with SIGKILL and started again on the same machine needn't wait for
    the expiry: its process is gone."""
    code = (
        "import signal; from housing_platform.artifact_store import LocalStore; "
        "from rollout.lease import Lease; "
        f"Lease(LocalStore({str(store.root)!r}), 'local', ttl_s=3600).acquire(); "
        "print('held', flush=True); signal.pause()"
    )
    argv = [sys.executable, "-c", code]
    with running(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeldError, match=f"pid {proc.pid}"):
            Lease(store, "local").acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    taken = Lease(store, "local").acquire()
    assert taken.pid != proc.pid


@pytest.mark.parametrize("stack", ["local", "dev"])
def test_a_hand_run_release_change_is_refused_while_a_rollout_holds_the_stack(
    stack, store, tmp_path, monkeypatch, capsys
):
    """`nox -s canary|promote|rollback` would shift traffic under the controller: refused, with
    the holder named, and the stack file (dev's copy here) left as it was."""
    from infra import cli

    for name in ("Pulumi.yaml", "Pulumi.dev.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    monkeypatch.setenv("HOUSING_MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ARTIFACT_URI", str(tmp_path / "artifacts"))
    held = Lease(store, stack)
    held.acquire()
    before = (tmp_path / "Pulumi.dev.yaml").read_text()
    for argv in (
        ["canary", stack, "--model-version", "3", "--percent", "10", "--no-up"],
        ["rollback", stack, "--no-up"],
    ):
        assert cli.main(argv, root=tmp_path) == 1
        err = capsys.readouterr().err
        assert f"stack {stack} is being rolled out by {held.holder}" in err
    assert (tmp_path / "Pulumi.dev.yaml").read_text() == before
    held.release()
    capsys.readouterr()
    assert cli.main(["rollback", "dev", "--no-up"], root=tmp_path) in (0, 1)
    assert "being rolled out" not in capsys.readouterr().err
