"""Fault-injection drills on a stack: ``service.faults`` reaches dev's new revisions as
HOUSING_FAULTS, a production stack refuses it at config time, and every revision says which
environment it is in, so the service itself refuses faults on prod."""

from __future__ import annotations

import msgspec
import pytest

from infra.config import ConfigError, StackConfig, parse
from tests.infra.conftest import STACKS, stack_config

BASE = {"gcp:project": "p", "gcp:region": "europe-west1"}
SERVICE = "gcp:cloudrunv2/service:Service"
SPEC = "error_rate=0.05,delay_ms=200"


def api_env(config: StackConfig, deployed) -> dict[str, str]:
    (api,) = [
        r.inputs for r in deployed(config).of_type(SERVICE) if r.inputs["name"] == "housing-api"
    ]
    (container,) = api["template"]["containers"]
    return {e["name"]: e.get("value") for e in container["envs"]}


def with_faults(config: StackConfig, faults: str) -> StackConfig:
    return msgspec.structs.replace(
        config, service=msgspec.structs.replace(config.service, faults=faults)
    )


def test_a_production_stack_refuses_faults_naming_the_key():
    values = BASE | {
        "housing-mlops:production": True,
        "housing-mlops:service": {"faults": "error_rate=0.05"},
    }
    with pytest.raises(ConfigError) as raised:
        parse(values, "prod")
    assert str(raised.value).startswith(
        "housing-mlops:service.faults is 'error_rate=0.05' on a production stack: fault "
        "injection is for drills on dev; remove service.faults"
    )


def test_a_dev_stack_takes_faults_and_none_is_the_default():
    values = BASE | {"housing-mlops:service": {"faults": SPEC}}
    assert parse(values, "dev").service.faults == SPEC
    assert parse(BASE, "dev").service.faults == ""


def test_dev_revisions_get_the_drills_faults(deployed):
    env = api_env(with_faults(stack_config("dev"), SPEC), deployed)
    assert (env["HOUSING_FAULTS"], env["ENVIRONMENT"]) == (SPEC, "dev")


@pytest.mark.parametrize("stack", STACKS)
def test_every_revision_names_its_environment_and_none_injects_by_default(stack, deployed):
    config = stack_config(stack)
    env = api_env(config, deployed)
    assert env["ENVIRONMENT"] == ("prod" if config.production else "dev")
    assert "HOUSING_FAULTS" not in env
