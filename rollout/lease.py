"""One controller per stack: a lease in the artifact store.

The lease is a chain of create-only records, ``rollouts/<stack>/lease/<seq>.json``; the one with
the highest number says who holds it (holder, host, pid, when it was taken, last renewed, when
it expires, or that it was released). Taking, renewing and releasing it all write the next
number with ``store.create``, which succeeds for one writer only (a hard link locally,
``ifGenerationMatch=0`` on GCS): a compare-and-swap on the chain's head, with nothing but the
store's ``create``. So two controllers never both believe they hold it, and a holder whose
renewal fails has lost it and stops before it acts.

A lease is free when released, expired, or held by a process of this host that no longer
exists (a controller killed with SIGKILL, started again on the same machine, takes its own
lease back at once; on another machine it waits for the expiry). ``check_free`` is what a
hand-run ``canary`` calls to be refused with the holder named.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Callable

import msgspec

from housing_platform.artifact_store import ArtifactStore
from local_platform.processes import alive
from rollout.audit import stack_prefix

#: Seconds a lease lasts without a renewal.
TTL_S = 30.0


class LeaseHeldError(RuntimeError):
    """Another controller holds the stack's lease; the message names it."""


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    holder: str
    """``user@host pid N``, and the rollout it drives."""
    host: str
    pid: int
    rollout_id: str = ""
    acquired_at: float
    renewed_at: float
    expires_at: float
    released: bool = False

    def describe(self, now: float) -> str:
        if self.released:
            return f"released by {self.holder}"
        left = self.expires_at - now
        return (
            f"{self.holder} (rollout {self.rollout_id or '-'}, renewed "
            f"{now - self.renewed_at:.0f} s ago, expires in {max(left, 0):.0f} s)"
        )


def lease_prefix(stack: str) -> str:
    return f"{stack_prefix(stack)}lease/"


def current(store: ArtifactStore, stack: str) -> LeaseRecord | None:
    """The head of the stack's lease chain, or None when no lease was ever taken."""
    keys = sorted(k for k in store.list(lease_prefix(stack)) if k.endswith(".json"))
    if not keys:
        return None
    return msgspec.json.decode(store.read_bytes(keys[-1]), type=LeaseRecord)

    return True


def is_free(record: LeaseRecord | None, now: float, host: str) -> bool:
    """Whether a new holder may take the lease over ``record``."""
    if record is None or record.released or record.expires_at <= now:
        return True
    return record.host == host and not alive(record.pid)


def check_free(
    store: ArtifactStore, stack: str, now: Callable[[], float] = time.time
) -> LeaseRecord | None:
    """Raises ``LeaseHeldError`` naming the holder when a controller drives the stack; for commands
    that change a release by hand. Returns the head record (None or free)."""
    record = current(store, stack)
    at = now()
    if not is_free(record, at, socket.gethostname()):
        assert record is not None
        raise LeaseHeldError(
            f"stack {stack} is being rolled out by {record.describe(at)}: wait for it to end, "
            f"or stop it (its lease is {store.uri}/{lease_prefix(stack)})"
        )
    return record


class Lease:
    """This process's hold on a stack's lease."""

    def __init__(
        self,
        store: ArtifactStore,
        stack: str,
        rollout_id: str = "",
        ttl_s: float = TTL_S,
        now: Callable[[], float] = time.time,
    ):
        self.store = store
        self.stack = stack
        self.rollout_id = rollout_id
        self.ttl_s = ttl_s
        self.now = now
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.holder = f"{getpass.getuser()}@{self.host} pid {self.pid}"
        self.head: LeaseRecord | None = None

    def _write(self, after: LeaseRecord | None, *, released: bool = False) -> bool:
        at = self.now()
        record = LeaseRecord(
            seq=(after.seq if after else 0) + 1,
            holder=self.holder,
            host=self.host,
            pid=self.pid,
            rollout_id=self.rollout_id,
            acquired_at=self.head.acquired_at if self.head else at,
            renewed_at=at,
            expires_at=at + self.ttl_s,
            released=released,
        )
        key = f"{lease_prefix(self.stack)}{record.seq:08d}.json"
        if not self.store.create(key, msgspec.json.encode(record) + b"\n"):
            return False
        self.head = record
        return True

    def acquire(self) -> LeaseRecord:
        """Takes the lease, or raises ``LeaseHeldError`` naming who holds it."""
        for _ in range(3):
            record = current(self.store, self.stack)
            at = self.now()
            if not is_free(record, at, self.host):
                assert record is not None
                raise LeaseHeldError(
                    f"stack {self.stack} is held by {record.describe(at)}: one controller per "
                    "stack; wait for it to end or for its lease to expire"
                )
            if self._write(record):
                assert self.head is not None
                return self.head
        raise LeaseHeldError(f"stack {self.stack}: another controller took the lease first")

    def renew(self) -> None:
        """Extends the lease; ``LeaseHeldError`` when it was lost (expired and taken over)."""
        head = self.head
        if head is None:
            raise LeaseHeldError(f"stack {self.stack}: the lease was never taken")
        if not self._write(head):
            taker = current(self.store, self.stack)
            self.head = None
            raise LeaseHeldError(
                f"stack {self.stack}: lease lost to "
                f"{taker.describe(self.now()) if taker else 'another controller'}; stopping "
                "before acting"
            )

    def renew_if_due(self) -> None:
        """Renews once a third of the lease's time has passed (cheap to call often)."""
        if self.head is None or self.now() - self.head.renewed_at >= self.ttl_s / 3:
            self.renew()

    def release(self) -> None:
        """Frees the lease (a record saying so), if this process still holds it."""
        if self.head is not None and self._write(self.head, released=True):
            self.head = None
