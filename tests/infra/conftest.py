"""Pulumi's own unit-test runtime: resources are recorded, nothing reaches a cloud."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest

from infra.config import StackConfig
from infra.plan import PlanMocks, Program, read_stack_config, run, set_mocks, settle

ROOT = Path(__file__).resolve().parents[2]
STACKS = ("dev", "prod")


@pytest.fixture
def mocks() -> PlanMocks:
    recording = PlanMocks(project="p", region="europe-west1")
    set_mocks(recording, project="housing-mlops", stack="dev", preview=False)
    return recording


@pytest.fixture
def deploy(mocks: PlanMocks) -> Callable[[Program], dict[str, Any]]:
    """Runs a program under the mocks until it settles; returns its outputs resolved."""
    return settle


def stack_config(name: str) -> StackConfig:
    """A committed stack file's config, read as `pulumi up` would."""
    return read_stack_config(ROOT / f"Pulumi.{name}.yaml", full_stack=True)


class Deployed:
    """What the program declared for one config: resources by type, and its exports."""

    def __init__(self, config: StackConfig):
        self.config = config
        self.mocks, self.exports = run(config)

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return self.mocks.of_type(typ)

    def one(self, typ: str, name: str) -> dict[str, Any]:
        (found,) = [r for r in self.of_type(typ) if r.name == name]
        return dict(found.inputs)


@pytest.fixture
def deployed() -> Callable[[StackConfig], Deployed]:
    return Deployed
