"""The README's deploy guide, replayed: every configuration it tells a user to write is parsed
and planned, and every `nox` command it shows runs on copies of the stack files — editing
commands with `--no-up`, then an `up` on a stateful fake of Cloud Run — in the guide's order."""

from __future__ import annotations

import re
import shlex
import shutil
import textwrap
from itertools import count
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from infra import cli
from infra.plan import config_from_text, read_stack_config, run
from tests.infra.conftest import ROOT, STACKS
from tests.infra.fake_cloud import FakeCloud

#: Commands of the guide that need a cloud account or a daemon, and why they can't run here.
NOT_RUNNABLE = {
    "gcloud services enable": "enables APIs on a real project (needs gcloud and an owner)",
    "gcloud run jobs execute": "runs the pipeline job on Cloud Run (needs the deployed job)",
    "docker build": "needs a Docker daemon (nox -s images builds the four images here)",
    "docker push": "pushes to Artifact Registry (needs the network and credentials)",
    "pulumi login": "logs in to a state backend (needs the Pulumi CLI and an account)",
    "pulumi stack init": "creates a stack in that backend (needs the Pulumi CLI)",
}


def guide() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Deploying to GCP, step by step")
    return readme[start : readme.index("\n## ", start + 1)]


def blocks(lang: str) -> list[str]:
    return [
        textwrap.dedent(b) for b in re.findall(rf"^ *```{lang}\n(.*?)^ *```", guide(), re.S | re.M)
    ]


def commands() -> list[str]:
    return [line.strip() for b in blocks("bash") for line in b.splitlines() if line.strip()]


def edits() -> dict[str, dict]:
    """The YAML the guide shows, by the stack file named on its first line."""
    out: dict[str, dict] = {}
    for block in blocks("yaml"):
        first = block.splitlines()[0]
        match = re.fullmatch(r"# Pulumi\.(\w+)\.yaml", first)
        assert match, f"a YAML block of the guide must name its stack file first: {first!r}"
        out[match[1]] = YAML(typ="safe").load(block)["config"]
    return out


def edited_stack_file(stack: str, folder: Path) -> Path:
    """The committed stack file with the guide's edits, written as a user would."""
    yaml = YAML()
    path = folder / f"Pulumi.{stack}.yaml"
    shutil.copy(ROOT / path.name, path)
    data = yaml.load(path.read_text())
    for key, value in edits().get(stack, {}).items():
        section = data["config"].get(key)
        if isinstance(value, dict) and section is not None:
            section.update(value)
        else:
            data["config"][key] = value
    with path.open("w") as out:
        yaml.dump(data, out)
    return path


def test_every_command_of_the_guide_is_replayed_or_says_why_not():
    for command in commands():
        if command.startswith("nox -s "):
            continue
        assert any(command.startswith(prefix) for prefix in NOT_RUNNABLE), (
            f"{command!r}: replay it in this test, or list it in NOT_RUNNABLE with why"
        )
    prose = guide()
    for prefix in ("pulumi login", "pulumi stack init"):
        assert prefix in prose
        assert prefix in NOT_RUNNABLE


@pytest.mark.parametrize("stack", STACKS)
def test_every_configuration_of_the_guide_parses_and_plans(stack, tmp_path):
    assert stack in edits(), f"the guide shows no configuration for {stack}"
    path = edited_stack_file(stack, tmp_path)
    committed = config_from_text(path.read_text(), stack)
    assert committed.images.refs() == {}, "step 3 runs before any image exists"
    for key, value in edits()[stack].items():
        if key.startswith("gcp:"):
            assert getattr(committed, key.split(":")[1]) == value
    mocks, _ = run(read_stack_config(path, full_stack=True))
    assert mocks.of_type("gcp:cloudrunv2/service:Service")


class Replay:
    def __init__(self, folder: Path):
        self.folder = folder
        self.clouds = {s: FakeCloud() for s in STACKS}
        self.outputs: dict[str, dict] = {s: {} for s in STACKS}
        self.digests = count(1)
        for stack in STACKS:
            edited_stack_file(stack, folder)

    def config(self, stack: str):
        return read_stack_config(self.folder / f"Pulumi.{stack}.yaml")

    def fill(self, stack: str, word: str) -> str:
        registry = f"europe-west1-docker.pkg.dev/{self.config(stack).project}/housing-mlops"
        word = word.replace("<registry>", registry)
        while "<digest>" in word:
            word = word.replace("<digest>", f"{next(self.digests):064x}", 1)
        return word

    def run(self, command: str) -> None:
        words = shlex.split(command)
        assert words[:2] == ["nox", "-s"], command
        assert words[3] == "--", command
        session, stack, *rest = words[2], words[4], *words[5:]
        rest = [self.fill(stack, w) for w in rest]
        outputs = self.outputs[stack]
        if session == "preview":
            run(self.config(stack))
            return
        if session == "up":
            self.up(stack)
            return
        if session == "canary" and outputs.get("live_revision"):
            rest += ["--stable-revision", outputs["live_revision"]]
        if session == "promote":
            rest += ["--revision", outputs["canary_revision"]]
        if session in ("canary", "promote", "rollback"):
            rest.append("--no-up")
        assert cli.main([session, stack, *rest], root=self.folder) == 0, command
        if session != "pin":  # the sessions run `up` after their edit
            self.up(stack)

    def up(self, stack: str) -> None:
        self.outputs[stack] = self.clouds[stack].up(self.config(stack))


def test_the_guide_deploys_dev_and_prod_on_the_fake_cloud(tmp_path):
    replay = Replay(tmp_path)
    for command in commands():
        if command.startswith("nox -s "):
            replay.run(command)
    dev, prod = replay.clouds["dev"], replay.clouds["prod"]
    # dev: v1, a canary of v2, promoted, a new image, a canary of v3, rolled back.
    served = dev.served()
    assert list(served.values()) == [100]
    ((version, image),) = served
    assert version == 2
    assert image == replay.config("dev").images.service
    assert len(dev.services["housing-api"].revisions) == 4
    assert prod.served() == {(1, replay.config("prod").images.service): 100}
    assert "housing-ui" in dev.services
    assert "housing-ui" not in prod.services
