"""Pulumi's own unit-test runtime: resources are recorded, nothing reaches a cloud."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pulumi
import pytest


class RecordingMocks(pulumi.runtime.Mocks):
    """Echoes inputs as outputs (plus an id and a URL), and remembers every resource."""

    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        outputs = dict(args.inputs)
        outputs.setdefault("name", args.name)
        if args.typ == "gcp:storage/bucket:Bucket":
            outputs["url"] = f"gs://{outputs['name']}"
        if args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = "x" * int(args.inputs["length"])
        if args.typ == "gcp:sql/databaseInstance:DatabaseInstance":
            outputs["connectionName"] = f"p:europe-west1:{args.name}"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ == typ]


Program = Callable[[], Mapping[str, Any] | None]


@pytest.fixture
def mocks() -> RecordingMocks:
    recording = RecordingMocks()
    pulumi.runtime.set_mocks(recording, project="housing-mlops", stack="dev", preview=False)
    return recording


@pytest.fixture
def deploy(mocks: RecordingMocks) -> Callable[[Program], dict[str, Any]]:
    """Runs a program until every resource is registered; returns its outputs resolved.

    Checking inside an ``apply`` races resources still waiting on their inputs; this waits for
    the engine's own quiescence first, so assertions see the whole program.
    """

    def run(program: Program) -> dict[str, Any]:
        resolved: dict[str, Any] = {}

        def body() -> pulumi.Output[Any]:
            outputs = program() or {}
            return pulumi.Output.all(**outputs).apply(resolved.update)

        pulumi.runtime.test(body)()
        return resolved

    return run
