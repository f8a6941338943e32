"""The policy pack blocks a bad stack in a first ``pulumi preview``, not halfway through ``up``.

The program runs under Pulumi's mocks in preview mode, with what GCP computes (emails, the
bucket's name, URLs, the connection name) unknown, as in a real first preview; each resource goes
through the pack's gRPC analyzer as the engine sends it (unknowns as the engine's sentinel), and
the whole stack through ``AnalyzeStack`` with each resource's property dependencies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from infra.plan import COMPUTED as RESOLVED_BY_PLAN
from infra.policy import rules
from tests.infra.conftest import STACKS, stack_config
from tests.infra.preview import (
    COMPUTED,
    UNKNOWN_SENTINEL,
    WANDB_SECRET,
    Registered,
    analyze,
    analyze_stack,
    policy_pack,
    record,
    with_wandb,
)

#: How pulumi_policy words a rule that met an unknown value: "can't run policy '<name>' from
#: policy pack '<pack>@v<version>' during preview: <what> can't be known during preview".
CANT_RUN = "during preview"
MANDATORY = analyzer_pb2.MANDATORY


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    with policy_pack() as stub:
        yield stub


@pytest.fixture(scope="module")
def recorded() -> Callable[[str, bool], list[Registered]]:
    """The program's resources for a stack (with W&B on), in preview or in `up`; each recorded
    once per module. Tests edit copies, never these."""
    cache: dict[tuple[str, bool], list[Registered]] = {}

    def get(stack: str, preview: bool) -> list[Registered]:
        if (stack, preview) not in cache:
            cache[stack, preview] = record(with_wandb(stack_config(stack)), preview=preview)
        return cache[stack, preview]

    return get


def shown(diagnostics: list[analyzer_pb2.AnalyzeDiagnostic]) -> list[tuple[str, int, str]]:
    return [(d.policyName, d.enforcementLevel, d.message) for d in diagnostics]


def props(resource: Registered) -> dict[str, Any]:
    return json_format.MessageToDict(resource.inputs)


def with_props(resource: Registered, change: Callable[[dict[str, Any]], None]) -> Registered:
    """A copy of ``resource`` whose inputs ``change`` has edited."""
    edited = props(resource)
    change(edited)
    inputs = struct_pb2.Struct()
    inputs.update(edited)
    return dataclasses.replace(resource, inputs=inputs)


def one(resources: list[Registered], typ: str, name: str | None = None) -> Registered:
    (found,) = [
        r for r in resources if r.type == typ and (name is None or props(r).get("name") == name)
    ]
    return found


def test_the_preview_is_as_blind_as_a_real_first_one(recorded):
    """What GCP computes is unknown on the wire: otherwise these tests would prove nothing."""
    assert set(RESOLVED_BY_PLAN) <= set(COMPUTED), "an output plan.py computes is known here"
    resources = recorded("prod", True)
    api = props(one(resources, rules.RUN_SERVICE, "housing-api"))
    assert isinstance(api["template"], dict), "housing-api's template is unknown as a whole"
    assert api["template"]["serviceAccount"] == UNKNOWN_SENTINEL
    envs = {e["name"]: e.get("value") for e in api["template"]["containers"][0]["envs"]}
    assert envs["MODEL_FALLBACK_URI"] == UNKNOWN_SENTINEL  # the bucket's name
    assert envs["MLFLOW_TRACKING_URI"] == UNKNOWN_SENTINEL  # MLflow's URL
    (grant, *_) = [r for r in resources if r.type in rules.SECRET_IAM]
    assert props(grant)["member"] == UNKNOWN_SENTINEL


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
@pytest.mark.parametrize("stack", STACKS)
def test_the_programs_own_resources_draw_no_diagnostic(stack, preview, analyzer, recorded):
    """Not a violation, and not a "can't run during preview" advisory either: every rule sees
    the values it decides on, in a first preview as in `up`."""
    resources = recorded(stack, preview)
    assert {r.type for r in resources} >= {rules.RUN_SERVICE, rules.RUN_JOB, rules.SQL_INSTANCE}
    found = {r.name: shown(analyze(analyzer, r)) for r in resources}
    assert {name: d for name, d in found.items() if d} == {}
    assert shown(analyze_stack(analyzer, resources)) == []


def _drop_max_instances(p: dict[str, Any]) -> None:
    del p["template"]["scaling"]["maxInstanceCount"]


def _plaintext_password(p: dict[str, Any]) -> None:
    p["template"]["containers"][0]["envs"].append({"name": "DB_PASSWORD", "value": "hunter2"})


def _image_by_tag(p: dict[str, Any]) -> None:
    image = p["template"]["containers"][0]["image"]
    p["template"]["containers"][0]["image"] = image.split("@", 1)[0] + ":latest"


def _enterprise_plus(p: dict[str, Any]) -> None:
    p["settings"]["edition"] = "ENTERPRISE_PLUS"  # refuses db-custom-* and db-f1-micro


def _no_edition(p: dict[str, Any]) -> None:
    del p["settings"]["edition"]  # PostgreSQL 16 would default to ENTERPRISE_PLUS


BROKEN = {
    # name: (type, resource name, the break, the mandatory policy it must draw)
    "api-without-max-instances": (
        rules.RUN_SERVICE,
        "housing-api",
        _drop_max_instances,
        "cloud-run-max-instances",
    ),
    "api-with-plaintext-password": (
        rules.RUN_SERVICE,
        "housing-api",
        _plaintext_password,
        "no-plaintext-secrets",
    ),
    "api-image-by-tag": (rules.RUN_SERVICE, "housing-api", _image_by_tag, "prod-images-by-digest"),
    "sql-enterprise-plus": (
        rules.SQL_INSTANCE,
        None,
        _enterprise_plus,
        "cloud-sql-edition-fits-tier",
    ),
    "sql-without-edition": (rules.SQL_INSTANCE, None, _no_edition, "cloud-sql-edition-fits-tier"),
}


@pytest.mark.parametrize("broken", BROKEN)
@pytest.mark.parametrize("stack", STACKS)
def test_a_broken_resource_is_refused_in_a_first_preview(stack, broken, analyzer, recorded):
    typ, name, change, policy = BROKEN[broken]
    resource = one(recorded(stack, True), typ, name)
    if typ == rules.RUN_SERVICE:
        template = props(resource).get("template")
        assert isinstance(template, dict), (
            f"{name}'s template is unknown in preview: rules are blind"
        )
    assert shown(analyze(analyzer, resource)) == [], "the program's own passes"

    found = analyze(analyzer, with_props(resource, change))
    if policy == "prod-images-by-digest" and stack != "prod":
        assert shown(found) == [], "dev may run an image by tag"
        return
    assert [(d.policyName, d.enforcementLevel) for d in found] == [(policy, MANDATORY)]
    assert CANT_RUN not in found[0].message


def _grant_to(resources: list[Registered], secret: str, account_id: str) -> Registered:
    """The accessor grant on ``secret`` for the account ``housing-<workload>``."""
    (account,) = [
        r
        for r in resources
        if r.type == rules.ACCOUNT and r.stack_resource().props.get("accountId") == account_id
    ]
    grants = [
        r
        for r in resources
        if r.type in rules.SECRET_IAM
        and r.stack_resource().props.get("secretId") == secret
        and account.urn in r.property_dependencies.get("member", ())
    ]
    assert len(grants) == 1, f"the program grants {account_id} {len(grants)} times on {secret}"
    return grants[0]


MISSING = {
    # removed grant: (secret, account id) → workloads refused
    "wandb-for-the-pipeline": (
        WANDB_SECRET,
        "housing-pipeline",
        {"housing-pipeline", "housing-tune"},
    ),
    "db-password-for-mlflow": ("db-db-password", "housing-mlflow", {"housing-mlflow"}),
}


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
@pytest.mark.parametrize("missing", MISSING)
@pytest.mark.parametrize("stack", STACKS)
def test_a_secret_without_an_accessor_grant_is_refused(stack, missing, preview, analyzer, recorded):
    config = stack_config(stack)
    resources = recorded(stack, preview)
    secret, account_id, workloads = MISSING[missing]
    grant = _grant_to(resources, secret, account_id)

    found = analyze_stack(analyzer, [r for r in resources if r is not grant])
    assert {(d.policyName, d.enforcementLevel) for d in found} == {
        ("secrets-are-granted", MANDATORY)
    }
    by_urn = {r.urn: r for r in resources}
    assert {props(by_urn[d.urn])["name"] for d in found} == workloads
    email = f"{account_id}@{config.project}.iam.gserviceaccount.com"
    for d in found:
        assert props(by_urn[d.urn])["name"] in d.message
        assert f"secret {secret!r}" in d.message
        assert email in d.message
        assert CANT_RUN not in d.message


def test_a_template_unknown_in_preview_only_draws_an_advisory(analyzer, recorded):
    """What defect 14 looked like: a template built inside an ``apply`` is one unknown in
    preview, so the mandatory rules reading it could only advise, and the tests above would see
    the advisory (this is the wording they look for)."""
    api = one(recorded("prod", True), rules.RUN_SERVICE, "housing-api")
    found = analyze(analyzer, with_props(api, lambda p: p.update(template=UNKNOWN_SENTINEL)))
    advised = [d for d in found if d.enforcementLevel == analyzer_pb2.ADVISORY]
    assert {"cloud-run-max-instances", "no-plaintext-secrets"} <= {d.policyName for d in advised}
    assert all(d.message.startswith("can't run policy") for d in advised)
    assert all(CANT_RUN in d.message for d in advised)
