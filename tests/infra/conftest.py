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


def readme_keys(section: str) -> dict[str, list[str]]:
    """The deploy guide's table of ``<section>.*`` stack keys: key → default, dev, prod cells."""
    rows: dict[str, list[str]] = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not line.startswith(f"| `{section}.") or len(cells) != 5:
            continue  # not a row of a keys' table (the layout table's `batch.py`)
        key, default, dev, prod, _ = cells
        names = key.replace("`", "").split(" / ")
        values = [c.replace("`", "").split(" / ") for c in (default, dev, prod)]
        for i, name in enumerate(names):
            rows[name.removeprefix(f"{section}.")] = [v[i] if len(v) > i else "" for v in values]
    return rows


def _as_cell(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value == ():
        return "empty"
    if isinstance(value, float):
        return f"{value:g}"  # 10.0 is written 10
    return str(value)


def assert_readme_documents(
    section: str, kind: type[Any], of_stack: Callable[[StackConfig], Any]
) -> None:
    """The README's table of ``section`` keys names every field of ``kind`` with its default and
    the value each committed stack sets, so a changed default can't leave the guide behind."""
    import msgspec

    rows = readme_keys(section)
    fields = msgspec.structs.fields(kind)
    assert set(rows) == {f.encode_name for f in fields}
    configs = [kind(), of_stack(stack_config("dev")), of_stack(stack_config("prod"))]
    for f in fields:
        for cell, config in zip(rows[f.encode_name], configs, strict=True):
            shown = cell.replace(",", "")
            assert shown == _as_cell(getattr(config, f.name)), (section, f.encode_name, cell)


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
