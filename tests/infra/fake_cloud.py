"""A stateful fake of the parts of GCP that Pulumi's mocks can't judge, kept across successive
``up``s of the program (each run under Pulumi's mocks, as ``nox -s plan`` runs it).

Pulumi's mocks accept any value and forget everything between runs. This fake remembers what a
real project would: each Cloud Run service's revisions (Cloud Run refuses to reuse a revision name
for a different template, and refuses traffic to a revision that neither exists nor is created
by the same request), random values (kept until destroyed, as pulumi_random's state is),
workload identity pools and providers (a deleted id stays reserved for 30 days), custom IAM
roles (a deleted id can't be reused for 37 days), and Postgres'
refusal to drop a role or database that owns objects.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pulumi

from infra.config import StackConfig
from infra.plan import PlanMocks, run

SERVICE = "gcp:cloudrunv2/service:Service"
POOL = "gcp:iam/workloadIdentityPool:WorkloadIdentityPool"
PROVIDER = "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider"
RANDOM = "random:index/randomString:RandomString"
SQL_USER = "gcp:sql/user:User"
SQL_DATABASE = "gcp:sql/database:Database"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
#: How long GCP keeps a deleted pool's or provider's id reserved.
SOFT_DELETE = timedelta(days=30)
#: A deleted custom role: undeletable for 7 days, then purged over 30; its id is taken until then.
ROLE_SOFT_DELETE = timedelta(days=37)


class CloudError(RuntimeError):
    """What the GCP API would answer: the ``up`` fails."""


@dataclass
class Revision:
    name: str
    template: str
    """Canonical JSON of the template it was created from."""
    image: str
    model_version: int


@dataclass
class ServiceState:
    revisions: dict[str, Revision] = field(default_factory=dict)
    traffic: list[tuple[str, int, str]] = field(default_factory=list)
    """(revision, percent, tag) as the last successful ``up`` left it."""


def _canonical(template: dict[str, Any]) -> str:
    return json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)


class FakeCloud:
    """One GCP project across ``up``s and ``destroy``s."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime(2026, 1, 5, 9, 0)
        self.services: dict[str, ServiceState] = {}
        self.randoms: dict[str, str] = {}
        self.pools: set[str] = set()
        self.providers: set[str] = set()
        self.roles: set[str] = set()
        self.deleted_ids: dict[str, datetime] = {}
        self.sql_objects: dict[str, dict[str, Any]] = {}
        self._counter = 0
        self.last: PlanMocks | None = None

    # -- the engine's view ------------------------------------------------------------------
    def up(self, config: StackConfig) -> dict[str, Any]:
        """Run the program against this project; raises CloudError as the API would."""
        mocks = _FakeMocks(self, config.project, config.region)
        staged = _Staged()
        mocks.staged = staged
        _, exports = run(config, mocks)
        if staged.errors:
            raise CloudError("; ".join(staged.errors))
        # The request succeeded: commit what it created.
        for name, state in staged.services.items():
            self.services[name] = state
        self.pools |= staged.pools
        self.providers |= staged.providers
        self.roles |= staged.roles
        self.randoms |= staged.randoms
        self.sql_objects = staged.sql_objects
        self.last = mocks
        return exports

    def destroy(self) -> None:
        """``pulumi destroy``: every resource goes; ids of pools and providers stay reserved."""
        blockers = [
            name
            for name, inputs in self.sql_objects.items()
            if inputs.get("deletionPolicy") != "ABANDON"
        ]
        if blockers:
            raise CloudError(
                f'cannot drop {", ".join(sorted(blockers))}: role "housing" cannot be dropped '
                "because some objects depend on it (set deletion_policy ABANDON)"
            )
        for ident in self.pools | self.providers | self.roles:
            self.deleted_ids[ident] = self.now
        self.services.clear()
        self.randoms.clear()
        self.pools.clear()
        self.providers.clear()
        self.roles.clear()
        self.sql_objects.clear()

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    # -- what a test reads ---------------------------------------------------------------------
    def traffic(self, service: str = "housing-api") -> list[tuple[str, int, str]]:
        return list(self.services[service].traffic)

    def revision(self, name: str, service: str = "housing-api") -> Revision:
        return self.services[service].revisions[name]

    def served(self, service: str = "housing-api") -> dict[tuple[int, str], int]:
        """Percent of traffic per (model version, image) — what users actually get."""
        state = self.services[service]
        out: dict[tuple[int, str], int] = {}
        for revision, percent, _ in state.traffic:
            rev = state.revisions[revision]
            key = (rev.model_version, rev.image)
            out[key] = out.get(key, 0) + percent
        return {k: v for k, v in out.items() if v}

    def next_random(self, length: int) -> str:
        self._counter += 1
        digest = hashlib.sha256(f"{self.now.isoformat()}-{self._counter}".encode()).hexdigest()
        return re.sub(r"[^a-z0-9]", "", digest)[:length]


@dataclass
class _Staged:
    services: dict[str, ServiceState] = field(default_factory=dict)
    pools: set[str] = field(default_factory=set)
    providers: set[str] = field(default_factory=set)
    roles: set[str] = field(default_factory=set)
    randoms: dict[str, str] = field(default_factory=dict)
    sql_objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class _FakeMocks(PlanMocks):
    def __init__(self, cloud: FakeCloud, project: str, region: str):
        super().__init__(project, region)
        self.cloud = cloud
        self.staged = _Staged()

    def random_text(self, inputs: Any) -> str:  # called by PlanMocks for RandomString
        return "unused"

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        ident, out = super().new_resource(args)
        try:
            if args.typ == RANDOM:
                out["result"] = self._random(args.name, int(args.inputs["length"]))
            elif args.typ == SERVICE:
                self._service(args.inputs)
            elif args.typ in (POOL, PROVIDER):
                self._identity_pool(args.typ, args.inputs)
            elif args.typ == CUSTOM_ROLE:
                self._custom_role(args.inputs)
            elif args.typ in (SQL_USER, SQL_DATABASE):
                self.staged.sql_objects[args.name] = dict(args.inputs)
        except CloudError as exc:
            self.staged.errors.append(f"{args.name}: {exc}")
        return ident, out

    def _random(self, name: str, length: int) -> str:
        value = self.cloud.randoms.get(name) or self.cloud.next_random(length)
        self.staged.randoms[name] = value
        return value

    def _identity_pool(self, typ: str, inputs: dict[str, Any]) -> None:
        key = "workloadIdentityPoolId" if typ == POOL else "workloadIdentityPoolProviderId"
        ident = str(inputs[key])
        deleted = self.cloud.deleted_ids.get(ident)
        if deleted is not None and self.cloud.now - deleted < SOFT_DELETE:
            raise CloudError(
                f"409: {ident} was deleted on {deleted:%Y-%m-%d} and can't be reused for 30 days"
            )
        (self.staged.pools if typ == POOL else self.staged.providers).add(ident)

    def _custom_role(self, inputs: dict[str, Any]) -> None:
        ident = str(inputs["roleId"])
        deleted = self.cloud.deleted_ids.get(ident)
        if deleted is not None and self.cloud.now - deleted < ROLE_SOFT_DELETE:
            raise CloudError(
                f"400: You can't create a role_id ({ident}) which has been marked for deletion "
                f"(deleted on {deleted:%Y-%m-%d}; free again after 37 days)"
            )
        self.staged.roles.add(ident)

    def _service(self, inputs: dict[str, Any]) -> None:
        name = str(inputs["name"])
        before = self.cloud.services.get(name, ServiceState())
        state = ServiceState(revisions=dict(before.revisions))
        template = dict(inputs.get("template") or {})
        revision = template.get("revision")
        container = (template.get("containers") or [{}])[0]
        if revision:
            canonical = _canonical(template)
            known = state.revisions.get(revision)
            if known is not None and known.template != canonical:
                raise CloudError(
                    f"revision {revision} already exists with another template: names can't "
                    "be reused"
                )
            version = next(
                (
                    int(e["value"].rsplit("/", 1)[1])
                    for e in container.get("envs") or []
                    if e.get("name") == "MODEL_URI"
                ),
                0,
            )
            state.revisions[revision] = Revision(
                revision, canonical, str(container.get("image", "")), version
            )
        traffic = [
            (str(t["revision"]), int(t.get("percent", 0)), str(t.get("tag", "")))
            for t in inputs.get("traffics") or []
        ]
        for target, _, _ in traffic:
            if target not in state.revisions:
                raise CloudError(f"traffic names revision {target}, which does not exist")
        if traffic and sum(p for _, p, _ in traffic) != 100:
            raise CloudError(f"traffic percents sum to {sum(p for _, p, _ in traffic)}, not 100")
        state.traffic = traffic
        self.staged.services[name] = state
