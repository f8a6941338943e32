"""The program as the engine sees it, for the policy pack's tests: every resource registration
kept as sent (inputs on the wire, outputs, dependencies), in a first ``pulumi preview`` or with
values resolved.

In preview (``set_mocks(..., preview=True)``), :class:`PreviewMocks` answers as a provider does
for a resource it has yet to create: inputs echoed, ids and what GCP computes (emails, bucket
name and URL, Cloud Run URIs, the SQL connection name, WIF names, the random password) unknown.
An Output built from an unknown is unknown, so the program's inputs carry the engine's unknown
sentinel wherever a rule could be blind during a real first preview.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import msgspec
import pulumi
from google.protobuf import json_format, struct_pb2
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi.runtime.rpc import UNKNOWN

from infra.config import StackConfig
from infra.plan import ROOT, SECRET_SIG, PlanMocks, set_mocks, settle
from infra.policy import rules
from tests.helpers import running

PACK = ROOT / "infra" / "policy"
#: A W&B secret for the tests: the stack files leave ``pipeline.wandbSecret`` empty.
WANDB_SECRET = "wandb-api-key"

#: How the engine marks an unknown value on the wire (also the analyzer's "unknown string").
UNKNOWN_SENTINEL = UNKNOWN

#: Outputs GCP (or a provider) computes at create time, by type: unknown in a first preview.
#: (Any output that is not an input is unknown in preview anyway; these are the ones the program
#: reads, named so a reader sees them.) ``infra.plan.COMPUTED`` gives them values; a test keeps
#: the two in step.
COMPUTED: dict[str, tuple[str, ...]] = {
    "gcp:storage/bucket:Bucket": ("name", "url", "selfLink"),
    "random:index/randomPassword:RandomPassword": ("result",),
    "random:index/randomString:RandomString": ("result",),
    "gcp:sql/databaseInstance:DatabaseInstance": ("name", "connectionName"),
    "gcp:serviceaccount/account:Account": ("email", "member", "name", "uniqueId"),
    "gcp:cloudrunv2/service:Service": ("uri", "urls", "trafficStatuses"),
    "gcp:projects/iAMCustomRole:IAMCustomRole": ("name",),
    "gcp:iam/workloadIdentityPool:WorkloadIdentityPool": ("name",),
    "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider": ("name",),
}


def with_wandb(config: StackConfig) -> StackConfig:
    """The stack with W&B on: the jobs mount WANDB_API_KEY from Secret Manager."""
    pipeline = msgspec.structs.replace(config.pipeline, wandb_secret=WANDB_SECRET)
    return msgspec.structs.replace(config, pipeline=pipeline)


class PreviewMocks(PlanMocks):
    """PlanMocks as a first preview answers: inputs echoed, computed outputs and ids unknown."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        out = dict(args.inputs)
        out |= {key: UNKNOWN for key in COMPUTED.get(args.typ, ()) if key not in args.inputs}
        # An empty id is how a provider says "not created yet": the SDK makes it unknown.
        return "", out


@dataclass
class Registered:
    """One resource registration, as the engine received it."""

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    inputs: struct_pb2.Struct
    """What the program sent (the engine's Analyze sees these)."""
    outputs: struct_pb2.Struct
    """What the provider answered (the engine's AnalyzeStack sees these)."""
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)

    def analyze_request(self) -> analyzer_pb2.AnalyzeRequest:
        return analyzer_pb2.AnalyzeRequest(
            type=self.type, properties=self.inputs, urn=self.urn, name=self.name
        )

    def analyzer_resource(self) -> analyzer_pb2.AnalyzerResource:
        return analyzer_pb2.AnalyzerResource(
            type=self.type,
            properties=self.outputs,
            urn=self.urn,
            name=self.name,
            parent=self.parent,
            dependencies=self.dependencies,
            propertyDependencies={
                key: analyzer_pb2.AnalyzerPropertyDependencies(urns=urns)
                for key, urns in self.property_dependencies.items()
            },
        )

    def stack_resource(self) -> rules.StackResource:
        """What the pack's stack validation is given for this resource (its outputs, as plain
        values with unknowns as ``rules.UNKNOWN`` and secrets unwrapped)."""
        return rules.StackResource(
            type=self.type,
            urn=self.urn,
            name=self.name,
            props=_plain(json_format.MessageToDict(self.outputs)),
            property_dependencies=self.property_dependencies,
        )


def _plain(value: Any) -> Any:
    if value == UNKNOWN:
        return rules.UNKNOWN
    if isinstance(value, dict):
        if value.get(SECRET_SIG[0]) == SECRET_SIG[1]:
            return _plain(value.get("value"))
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


class RecordingMonitor(MockMonitor):
    """Pulumi's mock monitor, keeping each registration's wire form and dependencies by URN."""

    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.registered: dict[str, Registered] = {}

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC's spelling)
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        inputs, outputs = struct_pb2.Struct(), struct_pb2.Struct()
        inputs.CopyFrom(request.object)
        outputs.CopyFrom(response.object)
        self.registered[response.urn] = Registered(
            type=request.type,
            name=request.name,
            urn=response.urn,
            parent=request.parent,
            custom=request.custom,
            inputs=inputs,
            outputs=outputs,
            dependencies=list(request.dependencies),
            property_dependencies={
                key: list(deps.urns) for key, deps in request.propertyDependencies.items()
            },
        )
        return response


def record(config: StackConfig, *, preview: bool) -> list[Registered]:
    """Every resource the program registers for ``config``, in registration order."""
    from infra.program import build

    mocks = (PreviewMocks if preview else PlanMocks)(config.project, config.region)
    monitor = RecordingMonitor(mocks)
    set_mocks(mocks, project="housing-mlops", stack=config.stack, preview=preview, monitor=monitor)
    settle(lambda: build(config))
    return list(monitor.registered.values())


@contextmanager
def policy_pack() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """The pack as Pulumi runs it: ``python infra/policy/__main__.py`` serves the analyzer on
    loopback and prints its port. Stopped on exit, whatever happened."""
    argv = [sys.executable, str(PACK / "__main__.py")]
    with running(argv, stdout=subprocess.PIPE, text=True, cwd=PACK) as pack:
        assert pack.stdout is not None
        line = pack.stdout.readline().strip()  # its port, once it listens
        if not line.isdigit():
            raise RuntimeError(f"the policy pack didn't start (printed {line!r})")
        with grpc.insecure_channel(f"127.0.0.1:{line}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)


def analyze(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, resource: Registered
) -> list[analyzer_pb2.AnalyzeDiagnostic]:
    """What the engine hears back for one resource (its inputs)."""
    return list(analyzer.Analyze(resource.analyze_request(), timeout=60).diagnostics)


def analyze_stack(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, resources: Sequence[Registered]
) -> list[analyzer_pb2.AnalyzeDiagnostic]:
    """What the engine hears back for the whole stack (every resource's outputs)."""
    request = analyzer_pb2.AnalyzeStackRequest(resources=[r.analyzer_resource() for r in resources])
    return list(analyzer.AnalyzeStack(request, timeout=60).diagnostics)
