"""The rollout's audit log: every decision one JSON record in the artifact store.

``rollouts/<stack>/<rollout id>/<seq>.json``, each written create-only (``store.create``: a
hard link locally, generation precondition 0 on GCS), so a record once written is never
rewritten, and two writers can't both write record n: the second one's ``append`` raises
``AuditConflictError``. A controller records its intent before it acts and the outcome after, so a
restarted one (after a SIGKILL anywhere) reads what was done and what may be half done.
Rollout ids start with the UTC time, so the newest rollout of a stack sorts last.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from housing_platform.artifact_store import ArtifactStore

PREFIX = "rollouts"


class AuditConflictError(RuntimeError):
    """Another writer wrote the record this one meant to write."""


class Record(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    """Position in the rollout's log, from 1."""
    time: float
    """When it was written (Unix seconds)."""
    kind: str
    """``start``, ``intent``, ``applied``, ``window``, ``verdict``, ``done`` (see the
    controller)."""
    holder: str
    """The controller that wrote it (the lease's holder)."""
    data: dict[str, Any] = {}


def stack_prefix(stack: str) -> str:
    return f"{PREFIX}/{stack}/"


def new_rollout_id(now: float | None = None) -> str:
    """``20261130T180102Z-1a2b``: sorts by start time; the suffix keeps two starts apart."""
    at = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return f"{at:%Y%m%dT%H%M%SZ}-{os.urandom(2).hex()}"


class AuditLog:
    """One rollout's records, read and appended through the artifact store."""

    def __init__(self, store: ArtifactStore, stack: str, rollout_id: str):
        self.store = store
        self.stack = stack
        self.rollout_id = rollout_id
        self.prefix = f"{stack_prefix(stack)}{rollout_id}/"
        self._records: list[Record] | None = None

    def key(self, seq: int) -> str:
        return f"{self.prefix}{seq:06d}.json"

    def records(self) -> list[Record]:
        """Every record, in order (read from the store once, then kept as appended)."""
        if self._records is None:
            keys = sorted(k for k in self.store.list(self.prefix) if k.endswith(".json"))
            self._records = [
                msgspec.json.decode(self.store.read_bytes(k), type=Record) for k in keys
            ]
        return list(self._records)

    def append(self, kind: str, holder: str, **data: Any) -> Record:
        """Writes the next record; ``AuditConflictError`` when another writer took its place."""
        records = self.records()
        record = Record(seq=len(records) + 1, time=time.time(), kind=kind, holder=holder, data=data)
        if not self.store.create(self.key(record.seq), msgspec.json.encode(record) + b"\n"):
            self._records = None
            raise AuditConflictError(
                f"{self.key(record.seq)} was written by another controller: "
                "two controllers are driving this rollout"
            )
        assert self._records is not None
        self._records.append(record)
        return record


def rollout_ids(store: ArtifactStore, stack: str) -> list[str]:
    """The stack's rollouts, oldest first."""
    prefix = stack_prefix(stack)
    ids = {k[len(prefix) :].split("/", 1)[0] for k in store.list(prefix)}
    return sorted(i for i in ids if i and i[0].isdigit())


def latest(store: ArtifactStore, stack: str) -> AuditLog | None:
    """The stack's newest rollout, or None."""
    ids = rollout_ids(store, stack)
    return AuditLog(store, stack, ids[-1]) if ids else None
