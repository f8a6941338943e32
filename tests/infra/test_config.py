"""Stack config: typed, validated, errors that name the key and the fix."""

from __future__ import annotations

import json

import pulumi
import pytest
from ruamel.yaml import YAML

from infra.config import ConfigError, from_pulumi, parse
from infra.plan import PlanMocks, set_mocks
from tests.infra.conftest import ROOT, STACKS

BASE = {"gcp:project": "p", "gcp:region": "europe-west1"}
RELEASE = {"modelVersion": 2, "image": "img", "canaryPercent": 10, "stableRevision": "api-m1-a"}


def with_keys(**sections: object) -> dict[str, object]:
    return BASE | {f"housing-mlops:{k}": v for k, v in sections.items()}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            with_keys(release=RELEASE | {"canaryPercent": 120}),
            "housing-mlops:release.canaryPercent must be between 0 and 100, got 120",
        ),
        (
            with_keys(release=RELEASE | {"stableRevision": ""}),
            "housing-mlops:release.canaryPercent is 10 but release.stableRevision is empty",
        ),
        (
            with_keys(production=True, database={"deletionProtection": False}),
            "housing-mlops:database.deletionProtection is false on a production stack: set it "
            "to true",
        ),
        (
            with_keys(service={"maxInstance": 3}),
            "housing-mlops:service: Object contains unknown field `maxInstance`",
        ),
        (
            with_keys(service={"maxInstances": "many"}),
            "housing-mlops:service.maxInstances: Expected `int`, got `str`",
        ),
        (with_keys(servce={}), "housing-mlops:servce is not a setting"),
        (
            with_keys(release={"image": "img"}),
            "housing-mlops:release: Object missing required field `modelVersion`",
        ),
        (
            with_keys(tracking={"invokers": ["allUsers"]}),
            "housing-mlops:tracking.invokers has 'allUsers'",
        ),
        (
            with_keys(pipeline={"tuneTasks": 2, "tuneParallelism": 3}),
            "housing-mlops:pipeline.tuneParallelism must be between 1 and pipeline.tuneTasks",
        ),
        (with_keys(pipeline={"schedule": "daily"}), "housing-mlops:pipeline.schedule 'daily'"),
        (
            with_keys(github={"repository": "no-owner"}),
            "housing-mlops:github.repository 'no-owner'",
        ),
        ({"gcp:region": "europe-west1"}, "gcp:project is not set: pulumi config set gcp:project"),
    ],
)
def test_a_wrong_setting_is_named_with_its_fix(values, message):
    with pytest.raises(ConfigError) as caught:
        parse(values, "prod")
    assert str(caught.value).startswith(message)


def test_a_first_stack_needs_only_project_and_region():
    config = parse(BASE, "dev")
    assert config.release is None
    assert config.database.deletion_protection is True
    assert config.service.public is False, "private unless config says public"


@pytest.mark.parametrize("stack", STACKS)
def test_pulumi_config_is_read_the_way_the_cli_passes_it(stack):
    """The CLI hands the program each key as a string (objects as JSON); from_pulumi must
    arrive at the same config as reading the file."""
    values = YAML(typ="safe").load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    as_cli = {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    set_mocks(PlanMocks(), project="housing-mlops", stack=stack)
    pulumi.runtime.set_all_config(as_cli)
    try:
        assert from_pulumi() == parse(values, stack)
    finally:
        pulumi.runtime.set_all_config({})
