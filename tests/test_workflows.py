"""The GitHub Actions workflows can't run here; what they call must exist, and every secret or
variable they read must be documented for whoever sets up the repository."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.test_project import IMAGES, ROOT, nox_sessions

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def load(path: Path) -> dict[str, Any]:
    return dict(YAML(typ="safe").load(path.read_text()))


def scripts(workflow: dict[str, Any]) -> list[str]:
    return [
        step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step
    ]


def test_the_three_workflows_exist_with_their_triggers():
    names = {p.stem: load(p) for p in WORKFLOWS}
    assert set(names) == {"ci", "deploy", "retrain"}
    triggers = {name: w.get("on", w.get(True)) for name, w in names.items()}
    assert "pull_request" in triggers["ci"]
    assert triggers["deploy"]["push"] == {"branches": ["main"]}
    assert "workflow_dispatch" in triggers["deploy"]
    assert "schedule" in triggers["retrain"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_nox_session_a_workflow_calls_exists(path):
    called = {m for s in scripts(load(path)) for m in re.findall(r"nox -s \"?\$?(\w+)", s)}
    called.discard("ACTION")  # deploy runs promote/rollback from the input, listed below
    assert called <= nox_sessions()
    if path.stem == "deploy":
        options = load(path)["on"]["workflow_dispatch"]["inputs"]["action"]["options"]
        assert set(options) <= nox_sessions()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_secret_and_variable_is_documented(path):
    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(r"\$\{\{\s*(?:secrets|vars)\.(\w+)\s*\}\}", path.read_text()))
    missing = sorted(name for name in used if f"`{name}`" not in readme)
    assert not missing, f"{path.name} uses {missing}, not listed in the README"


def test_deploys_authenticate_by_workload_identity_and_build_every_image():
    deploy = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    assert "credentials_json" not in deploy, "no key files"
    assert "workload_identity_provider" in deploy
    for dockerfile in IMAGES:
        assert dockerfile in deploy, f"{dockerfile} is not built"
    assert "RepoDigests" in deploy, "deployed by digest"


def test_ci_runs_the_projects_own_ci_script_and_keeps_the_plans():
    ci = load(ROOT / ".github" / "workflows" / "ci.yml")
    runs = "\n".join(scripts(ci))
    assert "bash .ci/run" in runs
    assert "nox -s plan -- dev --json" in runs
    assert "nox -s plan -- prod --json" in runs
