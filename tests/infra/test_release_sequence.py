"""The README's release sequence, played on a stateful fake of Cloud Run across successive
``up``s: after each step, where every percent of traffic goes (model version and image)."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from infra import cli
from infra.plan import read_stack_config
from tests.infra.conftest import ROOT, STACKS
from tests.infra.fake_cloud import CloudError, FakeCloud

REGISTRY = "europe-west1-docker.pkg.dev/p/housing-mlops"


def digest(part: str, n: int) -> str:
    return f"{REGISTRY}/{part}@sha256:{str(n) * 64}"


class Operator:
    """Runs the nox sessions' commands (`--no-up`, revisions from the last up's outputs, as the
    CLI reads them from the stack) on a copy of a stack file, then `up` on the fake."""

    def __init__(self, stack: str, folder: Path, cloud: FakeCloud):
        shutil.copy(ROOT / f"Pulumi.{stack}.yaml", folder)
        self.stack, self.folder, self.cloud = stack, folder, cloud
        self.outputs: dict = {}

    def run(self, *args: str) -> None:
        assert cli.main([*args], root=self.folder) == 0

    def up(self) -> dict:
        config = read_stack_config(self.folder / f"Pulumi.{self.stack}.yaml")
        self.outputs = self.cloud.up(config)
        return self.outputs

    def pin(self, **refs: str) -> None:
        self.run("pin", self.stack, *(f"--image={p}={r}" for p, r in refs.items()))
        self.up()

    def canary(self, version: int, percent: int) -> None:
        args = ["canary", self.stack, "--model-version", str(version), "--percent", str(percent)]
        if self.outputs.get("live_revision"):
            args += ["--stable-revision", self.outputs["live_revision"]]
        self.run(*args, "--no-up")
        self.up()

    def promote(self) -> None:
        self.run("promote", self.stack, "--revision", self.outputs["canary_revision"], "--no-up")
        self.up()

    def rollback(self) -> None:
        self.run("rollback", self.stack, "--no-up")
        self.up()


@pytest.fixture
def operator(request, tmp_path) -> Operator:
    op = Operator(request.param, tmp_path, FakeCloud())
    op.pin(**{part: digest(part, 1) for part in ("mlflow", "pipeline", "ui", "service")})
    return op


I1, I2 = digest("service", 1), digest("service", 2)


@pytest.mark.parametrize("operator", STACKS, indirect=True)
def test_the_readme_release_sequence_sends_traffic_where_it_says(operator):
    cloud = operator.cloud
    assert "housing-api" not in cloud.services, "no release yet: no service"

    operator.canary(1, 100)  # first release
    assert cloud.served() == {(1, I1): 100}

    operator.canary(2, 10)
    assert cloud.served() == {(1, I1): 90, (2, I1): 10}
    assert {tag for _, p, tag in cloud.traffic() if p} == {"stable", "canary"}

    operator.promote()
    assert cloud.served() == {(2, I1): 100}
    promoted = operator.outputs["live_revision"]

    operator.pin(service=I2)  # a new service image: a new revision of the same model
    assert cloud.served() == {(2, I2): 100}

    operator.canary(3, 10)
    assert cloud.served() == {(2, I2): 90, (3, I2): 10}

    operator.rollback()
    assert cloud.served() == {(2, I2): 100}
    assert operator.outputs["live_revision"] != promoted
    assert len(cloud.services["housing-api"].revisions) == 4  # m1·I1, m2·I1, m2·I2, m3·I2


@pytest.mark.parametrize("operator", STACKS, indirect=True)
def test_a_rollback_after_promote_and_a_new_image_returns_to_the_promoted_release(operator):
    """The defect: promote left stableRevision on the first revision, so this rollback sent
    every user two releases back."""
    operator.canary(1, 100)
    operator.canary(2, 10)
    operator.promote()
    operator.pin(service=I2)
    operator.rollback()
    assert operator.cloud.served() == {(2, I1): 100}


@pytest.mark.parametrize("operator", ["dev"], indirect=True)
def test_moving_a_canary_keeps_the_same_stable_revision(operator):
    operator.canary(1, 100)
    operator.canary(2, 10)
    operator.canary(2, 50)
    assert operator.cloud.served() == {(1, I1): 50, (2, I1): 50}


def test_the_fake_refuses_what_cloud_run_refuses(tmp_path):
    cloud = FakeCloud()
    op = Operator("dev", tmp_path, cloud)
    op.pin(**{part: digest(part, 1) for part in ("mlflow", "pipeline", "ui", "service")})
    op.canary(1, 100)
    text = (tmp_path / "Pulumi.dev.yaml").read_text()
    # Traffic to a revision that was never created:
    (tmp_path / "Pulumi.dev.yaml").write_text(
        text.replace("canaryPercent: 100", "canaryPercent: 10\n    stableRevision: nowhere-m0")
    )
    with pytest.raises(CloudError, match="nowhere-m0, which does not exist"):
        op.up()


def test_dev_can_be_destroyed_and_created_again_at_once(tmp_path):
    cloud = FakeCloud()
    config = read_stack_config(ROOT / "Pulumi.dev.yaml", full_stack=True)
    first = cloud.up(config)
    cloud.destroy()
    cloud.advance(timedelta(hours=1))
    second = cloud.up(config)
    assert first["workload_identity_provider"] != second["workload_identity_provider"]


def test_the_fake_refuses_a_pool_id_deleted_less_than_30_days_ago(tmp_path):
    """What a fixed pool id met: the same id again after a destroy is a 409."""
    cloud = FakeCloud()
    config = read_stack_config(ROOT / "Pulumi.dev.yaml", full_stack=True)
    cloud.up(config)
    kept = dict(cloud.randoms)
    cloud.destroy()
    cloud.randoms = kept  # as if the suffix were fixed
    with pytest.raises(CloudError, match="can't be reused for 30 days"):
        cloud.up(config)
    cloud.advance(timedelta(days=31))
    cloud.up(config)


def test_destroy_is_not_blocked_by_the_database_user(tmp_path):
    cloud = FakeCloud()
    cloud.up(read_stack_config(ROOT / "Pulumi.dev.yaml", full_stack=True))
    assert set(cloud.sql_objects) == {"db-user", "db-mlflow", "db-optuna"}
    cloud.destroy()
    assert not cloud.sql_objects
