"""A stack that can shadow (``service.shadowing``): revisions with CPU always allocated, an ID
token on mirrored requests and the API's account an invoker of its own service, under Pulumi's
mocks; off, nothing in the template or the grants changes."""

from __future__ import annotations

import msgspec
import pytest

from infra.config import ConfigError, StackConfig, check
from infra.policy import rules
from tests.infra.conftest import STACKS, stack_config
from tests.infra.preview import analyze, analyze_stack, policy_pack, record, with_wandb
from tests.infra.test_policy_preview import shown

SERVICE_IAM = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
INVOKER = "roles/run.invoker"


def shadow_phase(config: StackConfig, shadowing: bool = True) -> StackConfig:
    """``config`` in a shadow phase of version 2 against a stable revision of version 1."""
    assert config.release is not None
    release = msgspec.structs.replace(
        config.release,
        model_version=2,
        canary_percent=0,
        shadow_percent=50,
        stable_revision="housing-api-m1-aaaa1111",
    )
    service = msgspec.structs.replace(config.service, shadowing=shadowing)
    return msgspec.structs.replace(config, release=release, service=service)


def api(d) -> dict:
    (found,) = [
        r.inputs
        for r in d.of_type("gcp:cloudrunv2/service:Service")
        if r.inputs["name"] == "housing-api"
    ]
    return found


def api_invokers(d) -> set[str]:
    return {
        r.inputs["member"]
        for r in d.of_type(SERVICE_IAM)
        if r.inputs["name"] == "housing-api" and r.inputs["role"] == INVOKER
    }


def account(config: StackConfig) -> str:
    return f"serviceAccount:housing-api@{config.project}.iam.gserviceaccount.com"


@pytest.mark.parametrize("stack", STACKS)
def test_a_shadowing_stack_keeps_cpu_allocated_and_lets_the_api_call_its_shadow_tag(
    stack, deployed
):
    config = shadow_phase(stack_config(stack))
    check(config)
    d = deployed(config)
    (container,) = api(d)["template"]["containers"]
    assert container["resources"]["cpuIdle"] is False
    envs = {e["name"]: e.get("value") for e in container["envs"]}
    assert envs["SHADOW_GOOGLE_AUTH"] == "true"
    # A public API needs no grant (allUsers covers its own account); a private one gets one.
    assert account(config) in api_invokers(d) or config.service.public
    assert api_invokers(d) == {"allUsers"} if config.service.public else True
    # The shadow phase itself: all traffic on stable, the newest revision tagged and idle.
    traffic = {t["tag"]: t["percent"] for t in api(d)["traffics"]}
    assert traffic["stable"] == 100
    assert sum(traffic.values()) == 100
    if not config.service.public:  # the grant waits for the service it is on
        assert "api-service" in d.mocks.waits_for("api-invoker-shadow-mirror")


@pytest.mark.parametrize("stack", STACKS)
def test_shadowing_off_changes_neither_the_template_nor_the_grants(stack, deployed):
    config = stack_config(stack)
    assert config.service.shadowing is False
    d = deployed(config)
    (container,) = api(d)["template"]["containers"]
    assert container["resources"]["cpuIdle"] is True
    assert "SHADOW_GOOGLE_AUTH" not in {e["name"] for e in container["envs"]}
    assert account(config) not in api_invokers(d)


def test_the_same_release_makes_the_same_revision_in_a_shadow_phase_and_its_canary(deployed):
    """Shadowing is a stack setting, not a function of shadowPercent: moving from the shadow
    phase to the first canary step makes no new revision (the one judged is the one promoted)."""
    config = shadow_phase(stack_config("dev"))
    assert config.release is not None
    canary = msgspec.structs.replace(
        config, release=msgspec.structs.replace(config.release, shadow_percent=0, canary_percent=5)
    )
    assert (
        api(deployed(config))["template"]["revision"]
        == api(deployed(canary))["template"]["revision"]
    )


def test_a_shadow_phase_on_a_stack_that_cannot_shadow_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"release\.shadowPercent is 50 but service\.shadowing"):
        check(shadow_phase(stack_config("dev"), shadowing=False))


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
def test_the_policy_pack_has_nothing_to_say_about_a_shadowing_stack(preview):
    resources = record(with_wandb(shadow_phase(stack_config("prod"))), preview=preview)
    assert any(r.type == rules.RUN_SERVICE for r in resources)
    with policy_pack() as analyzer:
        found = {r.name: shown(analyze(analyzer, r)) for r in resources}
        assert {name: d for name, d in found.items() if d} == {}
        assert shown(analyze_stack(analyzer, resources)) == []
