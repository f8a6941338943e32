"""`nox -s plan` and the canary/promote/rollback sessions' edit-only path, without the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra import cli
from infra.plan import read_stack_config
from tests.infra.conftest import ROOT, STACKS


def run_module(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("stack", STACKS)
def test_plan_lists_every_resource_and_writes_json(stack, tmp_path):
    out = tmp_path / "plan.json"
    done = run_module("infra.plan", stack, "--json", str(out))
    assert done.returncode == 0, done.stderr
    plan = json.loads(out.read_text())
    assert plan["stack"] == stack
    types = {r["type"] for r in plan["resources"]}
    assert {"gcp:storage/bucket:Bucket", "gcp:cloudrunv2/service:Service"} <= types
    assert all(set(r) == {"type", "name", "inputs"} for r in plan["resources"])
    for r in plan["resources"]:
        assert f"+ {r['type']}  {r['name']}" in done.stdout
    assert f"{len(plan['resources'])} resources for stack {stack}" in done.stdout
    assert "x" * 32 not in out.read_text() + done.stdout, "the password never shows"
    assert '"[secret]"' in out.read_text()


def test_plan_names_a_wrong_key(tmp_path):
    done = run_module("infra.plan", "staging")
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == "plan: Pulumi.staging.yaml not found: create it with `pulumi stack init`"
    )


@pytest.fixture
def stacks(tmp_path):
    for stack in STACKS:
        shutil.copy(ROOT / f"Pulumi.{stack}.yaml", tmp_path)
    return tmp_path


def comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if "#" in line]


SERVICE_IMAGE = "europe-west1-docker.pkg.dev/p/housing-mlops/service@sha256:" + "a" * 64


@pytest.mark.parametrize("stack", STACKS)
def test_pin_canary_promote_rollback_edit_only_what_they_say(stack, stacks, capsys):
    path = stacks / f"Pulumi.{stack}.yaml"
    original = path.read_text()
    assert cli.main(["pin", stack, "--image", f"service={SERVICE_IMAGE}"], root=stacks) == 0
    pinned = path.read_text()
    assert changed(original, pinned) == [f'    service: "{SERVICE_IMAGE}"']  # quoting kept
    assert cli.main(["canary", stack, "--model-version", "1", "--percent", "100", "--no-up"],
                    root=stacks) == 0  # fmt: skip
    first = read_stack_config(path).release
    assert (first.model_version, first.image, first.canary_percent) == (1, SERVICE_IMAGE, 100)

    live = "housing-api-m1-0123abcd"
    args = ["canary", stack, "--model-version", "2", "--percent", "10", "--no-up"]
    before = path.read_text()
    assert cli.main([*args, "--stable-revision", live], root=stacks) == 0
    canaried = path.read_text()
    assert changed(before, canaried) == [
        "    modelVersion: 2",
        "    canaryPercent: 10",
        f"    stableRevision: {live}",
        f"    stableImage: {SERVICE_IMAGE}",
    ]
    assert comments(original) == comments(canaried)
    assert "+    canaryPercent: 10" in capsys.readouterr().out, "the diff is shown"

    assert cli.main(["rollback", stack, "--no-up"], root=stacks) == 0
    assert read_stack_config(path).release.canary_percent == 0
    canary_revision = "housing-api-m2-89abcdef"
    assert cli.main(["promote", stack, "--revision", canary_revision, "--no-up"], root=stacks) == 0
    promoted = read_stack_config(path).release
    assert (promoted.canary_percent, promoted.model_version, promoted.stable_revision) == (
        100,
        2,
        canary_revision,
    )


def changed(before: str, after: str) -> list[str]:
    return [line for line in after.splitlines() if line not in before.splitlines()]


def test_a_first_release_must_take_all_traffic(stacks, capsys):
    args = ["canary", "dev", "--model-version", "1", "--percent", "10", "--no-up"]
    assert cli.main(args, root=stacks) == 1
    assert "the first release takes all traffic, use --percent 100" in capsys.readouterr().err


def test_prod_refuses_an_image_by_tag(stacks, capsys):
    before = (stacks / "Pulumi.prod.yaml").read_text()
    args = ["pin", "prod", "--image", "service=europe-west1-docker.pkg.dev/p/r/service:latest"]
    assert cli.main(args, root=stacks) == 1
    assert (stacks / "Pulumi.prod.yaml").read_text() == before
    err = capsys.readouterr().err
    assert "housing-mlops:images.service is 'europe-west1-docker.pkg.dev/p/r/service:latest'" in err
    assert "by digest only" in err


def test_a_refused_edit_leaves_the_file_as_it_was(stacks, capsys):
    path = stacks / "Pulumi.prod.yaml"
    args = ["canary", "prod", "--model-version", "2", "--percent", "120", "--no-up"]
    assert cli.main(["pin", "prod", "--image", f"service={SERVICE_IMAGE}"], root=stacks) == 0
    assert cli.main(["canary", "prod", "--model-version", "1", "--percent", "100", "--no-up"],
                    root=stacks) == 0  # fmt: skip
    before = path.read_text()
    assert cli.main([*args, "--stable-revision", "r"], root=stacks) == 1
    assert path.read_text() == before
    assert "canaryPercent must be between 0 and 100, got 120" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("pulumi") is not None, reason="needs a machine without Pulumi")
def test_without_the_pulumi_cli_each_session_says_how_to_install_it(stacks):
    for args in (
        ["preview", "dev"],
        ["up", "dev"],
        ["promote", "dev", "--no-up"],  # the canary's name is a stack output
    ):
        done = run_module("infra.cli", *args, path=str(Path(sys.executable).parent))
        assert done.returncode == 1
        (line,) = done.stderr.strip().splitlines()
        assert "curl -fsSL https://get.pulumi.com | sh" in line


def test_an_up_publishes_the_release_feed_and_the_live_split(stacks, tmp_path, capsys):
    """What `infra.cli up` publishes from the stack file and the outputs of the up that
    applied it: a shadow phase (canary at 0%, mirrored to through its tag URL), then a canary."""
    from housing_platform import release_feed, traffic_split
    from housing_platform.artifact_store import LocalStore

    stable, newest = "housing-api-m1-0123abcd", "housing-api-m2-89abcdef"
    urls = {"stable": "https://stable---api.a.run.app", "canary": "https://canary---api.a.run.app"}
    outputs = {"live_revision": stable, "canary_revision": newest, "tag_urls": urls}
    assert cli.main(["pin", "dev", "--image", f"service={SERVICE_IMAGE}"], root=stacks) == 0
    env = {"ARTIFACT_URI": str(tmp_path / "artifacts")}
    cli.publish_release("dev", outputs, env, root=stacks)
    assert not (tmp_path / "artifacts").exists(), "no release: nothing to publish"

    cli.main(["canary", "dev", "--model-version", "1", "--percent", "100", "--no-up"], root=stacks)
    cli.main(["canary", "dev", "--model-version", "2", "--percent", "0", "--no-up",
              "--stable-revision", stable], root=stacks)  # fmt: skip
    path = stacks / "Pulumi.dev.yaml"
    shadowing = path.read_text().replace("public: true", "public: true\n    shadowing: true", 1)
    path.write_text(
        shadowing.replace("canaryPercent: 0", "canaryPercent: 0\n    shadowPercent: 50")
    )
    cli.publish_release("dev", outputs, env, root=stacks)
    store = LocalStore(tmp_path / "artifacts")
    feed = release_feed.read(store)
    assert feed is not None
    assert (feed.stable_revision, feed.shadow_revision, feed.shadow_model_version) == (
        stable,
        newest,
        2,
    )
    assert (feed.shadow_percent, feed.shadow_url) == (50, urls["canary"])
    split = traffic_split.read(store)
    assert split is not None
    assert [(r.revision, r.model_version, r.percent) for r in split.revisions] == [
        (stable, 1, 100),
        (newest, 2, 0),
    ]
    assert {t.tag: t.url for t in split.revisions[1].tags} == {
        "canary": urls["canary"],
        "shadow": urls["canary"],
    }
    assert "published the release feed and traffic split" in capsys.readouterr().out

    cli.main(["canary", "dev", "--model-version", "2", "--percent", "10", "--no-up",
              "--stable-revision", stable], root=stacks)  # fmt: skip
    path.write_text(path.read_text().replace("shadowPercent: 50", "shadowPercent: 0"))
    cli.publish_release("dev", outputs, env, root=stacks)
    assert not release_feed.read(store).mirroring
    split = traffic_split.read(store)
    assert [(r.revision, r.percent) for r in split.revisions] == [(stable, 90), (newest, 10)]
