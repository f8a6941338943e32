"""Each guardrail rejects a resource built to break it and accepts the program's own."""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import tomllib
from typing import Any

import pytest

from infra.plan import resources, run
from infra.policy import rules
from tests.infra.conftest import ROOT, STACKS, stack_config
from tests.infra.preview import WANDB_SECRET, policy_pack, record, with_wandb

SERVICE_IAM_MEMBER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"


@pytest.mark.parametrize("stack", STACKS)
def test_the_programs_own_resources_pass_every_rule(stack, deployed):
    for resource in resources(deployed(stack_config(stack)).mocks):
        assert rules.violations(resource["type"], resource["inputs"]) == {}, resource["name"]
    for name, (_, rule) in rules.STACK_RULES.items():
        assert rule(stack_of(stack)) == [], name


@pytest.fixture(scope="module")
def prod_listed() -> list[dict]:
    """The program's resources on prod, declared once for the module (tests edit copies)."""
    mocks, _ = run(stack_config("prod"))
    return resources(mocks)


def program_resource(listed: list[dict], typ: str, name: str | None = None) -> dict:
    found = [
        r for r in listed if r["type"] == typ and (name is None or r["inputs"].get("name") == name)
    ]
    return copy.deepcopy(found[0]["inputs"])


def test_a_bucket_without_public_access_prevention_is_refused(prod_listed):
    bucket = program_resource(prod_listed, rules.BUCKET)
    bucket["publicAccessPrevention"] = "inherited"
    bucket["uniformBucketLevelAccess"] = False
    found = rules.violations(rules.BUCKET, bucket)
    assert list(found) == ["bucket-private"]
    assert len(found["bucket-private"]) == 2


@pytest.mark.parametrize(
    ("typ", "name"),
    [
        ("gcp:cloudrunv2/serviceIamMember:ServiceIamMember", "housing-mlflow"),
        ("gcp:cloudrunv2/jobIamMember:JobIamMember", "housing-pipeline"),
        ("gcp:cloudrunv2/jobIamMember:JobIamMember", "housing-tune"),
    ],
)
@pytest.mark.parametrize("member", ["allUsers", "allAuthenticatedUsers"])
def test_mlflow_and_jobs_are_never_public(typ, name, member):
    props = {"name": name, "role": "roles/run.invoker", "member": member}
    assert list(rules.violations(typ, props)) == ["no-public-mlflow-or-jobs"]


def test_the_api_may_be_public_when_config_says_so():
    props = {"name": "housing-api", "role": "roles/run.invoker", "member": "allUsers"}
    assert rules.violations("gcp:cloudrunv2/serviceIamMember:ServiceIamMember", props) == {}


def test_cloud_sql_with_a_public_network_is_refused(prod_listed):
    instance = program_resource(prod_listed, rules.SQL_INSTANCE)
    instance["settings"]["ipConfiguration"]["authorizedNetworks"] = [{"value": "0.0.0.0/0"}]
    assert (
        "public network '0.0.0.0/0'"
        in rules.violations(rules.SQL_INSTANCE, instance)["cloud-sql-closed"][0]
    )
    instance["settings"]["ipConfiguration"]["authorizedNetworks"] = [{"value": "10.0.0.0/8"}]
    assert rules.violations(rules.SQL_INSTANCE, instance) == {}


def test_production_cloud_sql_needs_backups_and_deletion_protection(prod_listed):
    instance = program_resource(prod_listed, rules.SQL_INSTANCE)
    assert instance["settings"]["userLabels"] == {"environment": "prod"}
    instance["deletionProtection"] = False
    instance["settings"]["backupConfiguration"] = {"enabled": False}
    messages = rules.violations(rules.SQL_INSTANCE, instance)["cloud-sql-closed"]
    assert len(messages) == 2
    instance["settings"]["userLabels"] = {"environment": "dev"}
    assert rules.violations(rules.SQL_INSTANCE, instance) == {}


def test_a_service_without_max_instances_is_refused(prod_listed):
    service = program_resource(prod_listed, rules.RUN_SERVICE, "housing-api")
    del service["template"]["scaling"]["maxInstanceCount"]
    assert list(rules.violations(rules.RUN_SERVICE, service)) == ["cloud-run-max-instances"]


@pytest.mark.parametrize("name", ["DB_PASSWORD", "WANDB_API_KEY", "MLFLOW_TRACKING_TOKEN"])
def test_a_plaintext_secret_env_var_is_refused(prod_listed, name):
    service = program_resource(prod_listed, rules.RUN_SERVICE, "housing-mlflow")
    service["template"]["containers"][0]["envs"].append({"name": name, "value": "hunter2"})
    assert list(rules.violations(rules.RUN_SERVICE, service)) == ["no-plaintext-secrets"]
    job = program_resource(prod_listed, rules.RUN_JOB, "housing-pipeline")
    job["template"]["template"]["containers"][0]["envs"].append({"name": name, "value": "x"})
    assert list(rules.violations(rules.RUN_JOB, job)) == ["no-plaintext-secrets"]


def test_the_pack_serves_every_rule_and_rejects_a_broken_resource():
    """The pack as Pulumi runs it: a gRPC analyzer on loopback, asked as the engine asks."""
    from google.protobuf import empty_pb2, struct_pb2
    from pulumi.runtime.proto import analyzer_pb2

    with policy_pack() as analyzer:
        info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
        assert {p.name for p in info.policies} == set(rules.RULES) | set(rules.STACK_RULES)
        assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}
        props = struct_pb2.Struct()
        props.update({"publicAccessPrevention": "inherited", "uniformBucketLevelAccess": True})
        request = analyzer_pb2.AnalyzeRequest(
            type=rules.BUCKET,
            properties=props,
            urn="urn:pulumi:dev::housing-mlops::gcp:storage/bucket:Bucket::data-bucket",
            name="data-bucket",
        )
        found = analyzer.Analyze(request, timeout=30).diagnostics
    assert [d.policyName for d in found] == ["bucket-private"]
    assert found[0].enforcementLevel == analyzer_pb2.MANDATORY


@pytest.mark.parametrize(
    ("tier", "edition"),
    [
        ("db-custom-1-3840", "ENTERPRISE_PLUS"),  # what PostgreSQL 16 picks when unset
        ("db-f1-micro", "ENTERPRISE_PLUS"),
        ("db-custom-1-3840", None),
        ("db-perf-optimized-N-2", "ENTERPRISE"),
    ],
)
def test_cloud_sql_edition_must_fit_the_tier(prod_listed, tier, edition):
    instance = program_resource(prod_listed, rules.SQL_INSTANCE)
    assert rules.cloud_sql_edition_fits_tier(rules.SQL_INSTANCE, instance) == []
    instance["settings"]["tier"] = tier
    instance["settings"].pop("edition", None)
    if edition is not None:
        instance["settings"]["edition"] = edition
    found = rules.violations(rules.SQL_INSTANCE, instance)
    assert list(found) == ["cloud-sql-edition-fits-tier"]
    assert (tier if edition else "set it explicitly") in found["cloud-sql-edition-fits-tier"][0]


def test_an_enterprise_plus_tier_passes_with_its_edition(prod_listed):
    instance = program_resource(prod_listed, rules.SQL_INSTANCE)
    instance["settings"] |= {"tier": "db-perf-optimized-N-2", "edition": "ENTERPRISE_PLUS"}
    assert rules.violations(rules.SQL_INSTANCE, instance) == {}


def _images(typ: str, props: dict) -> list[dict]:
    template = props["template"] if typ == rules.RUN_SERVICE else props["template"]["template"]
    return template["containers"]


@pytest.mark.parametrize(
    ("typ", "name"),
    [
        (rules.RUN_SERVICE, "housing-api"),
        (rules.RUN_SERVICE, "housing-mlflow"),
        (rules.RUN_JOB, "housing-pipeline"),
    ],
)
def test_prod_images_must_be_pinned_by_digest(prod_listed, typ, name):
    workload = program_resource(prod_listed, typ, name)
    assert workload["labels"] == {"environment": "prod"}
    assert rules.prod_images_by_digest(typ, workload) == []
    container = _images(typ, workload)[0]
    container["image"] = container["image"].split("@", 1)[0] + ":latest"
    found = rules.violations(typ, workload)
    assert list(found) == ["prod-images-by-digest"]
    assert name in found["prod-images-by-digest"][0]
    assert ":latest" in found["prod-images-by-digest"][0]
    container["image"] += "@sha256:" + "ab" * 31  # 62 hex: not a digest
    assert list(rules.violations(typ, workload)) == ["prod-images-by-digest"]

    workload["labels"] = {"environment": "dev"}  # dev may run a tag
    assert rules.violations(typ, workload) == {}


def test_a_cloud_run_workload_without_an_environment_label_is_refused(prod_listed):
    """Otherwise leaving the label out would let a prod image by tag through."""
    job = program_resource(prod_listed, rules.RUN_JOB, "housing-tune")
    del job["labels"]
    assert list(rules.violations(rules.RUN_JOB, job)) == ["prod-images-by-digest"]


def test_a_rule_that_needs_an_unknown_value_says_so_instead_of_deciding(prod_listed):
    """Preview: the pack turns this into Pulumi's "can't run during preview" advisory."""
    service = program_resource(prod_listed, rules.RUN_SERVICE, "housing-api")
    service["template"] = rules.UNKNOWN
    with pytest.raises(rules.UnknownValueError, match="template"):
        rules.services_have_max_instances(rules.RUN_SERVICE, service)


def test_rules_ignore_unknown_values_they_do_not_decide_on(prod_listed):
    """An account email unknown in preview neither trips a rule nor stops it."""
    service = program_resource(prod_listed, rules.RUN_SERVICE, "housing-api")
    service["template"]["serviceAccount"] = rules.UNKNOWN
    for env in service["template"]["containers"][0]["envs"]:
        env["value"] = rules.UNKNOWN
    assert rules.violations(rules.RUN_SERVICE, service) == {}
    grant = {"name": "housing-mlflow", "role": "roles/run.invoker", "member": rules.UNKNOWN}
    assert rules.violations(SERVICE_IAM_MEMBER, grant) == {}


@functools.cache
def _stack_of(stack: str) -> tuple[rules.StackResource, ...]:
    return tuple(r.stack_resource() for r in record(with_wandb(stack_config(stack)), preview=False))


def stack_of(stack: str) -> list[rules.StackResource]:
    """What the stack validation is given for the program (W&B on), values resolved."""
    return list(_stack_of(stack))


def without(resources: list[rules.StackResource], unwanted) -> list[rules.StackResource]:
    kept = [r for r in resources if not unwanted(r)]
    assert len(kept) == len(resources) - 1, "exactly one resource removed"
    return kept


def _is_grant(secret: str, member: str):
    def match(r: rules.StackResource) -> bool:
        return (
            r.type in rules.SECRET_IAM
            and r.props.get("secretId") == secret
            and r.props.get("member") == member
        )

    return match


@pytest.mark.parametrize("stack", STACKS)
def test_every_secret_a_workload_reads_must_be_granted_to_its_account(stack):
    config = stack_config(stack)
    resources = stack_of(stack)
    assert rules.secrets_are_granted(resources) == []
    pipeline = f"housing-pipeline@{config.project}.iam.gserviceaccount.com"

    found = rules.secrets_are_granted(
        without(resources, _is_grant(WANDB_SECRET, f"serviceAccount:{pipeline}"))
    )
    by_urn = {r.urn: r for r in resources}
    assert sorted(by_urn[urn].props["name"] for urn, _ in found) == [
        "housing-pipeline",
        "housing-tune",
    ]
    for urn, message in found:
        assert by_urn[urn].props["name"] in message
        assert f"secret {WANDB_SECRET!r} (env WANDB_API_KEY)" in message
        assert pipeline in message


def test_a_project_wide_accessor_grant_counts():
    resources = stack_of("prod")
    mlflow = f"serviceAccount:housing-mlflow@{stack_config('prod').project}.iam.gserviceaccount.com"
    kept = without(resources, _is_grant("db-db-password", mlflow))
    assert rules.secrets_are_granted(kept)
    project_wide = rules.StackResource(
        type=rules.PROJECT_IAM[0],
        urn="urn:pulumi:prod::housing-mlops::gcp:projects/iAMMember:IAMMember::accessor",
        name="accessor",
        props={"project": "p", "role": rules.SECRET_ACCESSOR, "member": mlflow},
    )
    assert rules.secrets_are_granted([*kept, project_wide]) == []
    conditional = dataclasses.replace(
        project_wide, props={**project_wide.props, "condition": {"title": "x"}}
    )
    assert rules.secrets_are_granted([*kept, conditional]), "a condition can't be read: no grant"


def _account(urn: str, **props: Any) -> rules.StackResource:
    return rules.StackResource(rules.ACCOUNT, urn, urn.rsplit("::", 1)[-1], props)


def test_in_preview_a_grant_matches_its_workload_through_the_account_both_come_from():
    """Both emails unknown, and no accountId to compute one from: the URN of the account each
    input came from decides."""
    unknown = rules.UNKNOWN
    account_a = _account("urn:a::acct-a", email=unknown, accountId=unknown)
    account_b = _account("urn:b::acct-b", email=unknown, accountId=unknown)
    job = rules.StackResource(
        rules.RUN_JOB,
        "urn:job::job",
        "job",
        {
            "name": "housing-pipeline",
            "template": {
                "template": {
                    "serviceAccount": unknown,
                    "containers": [
                        {"envs": [{"name": "K", "valueSource": {"secretKeyRef": {"secret": "s"}}}]}
                    ],
                }
            },
        },
        {"template": [account_a.urn]},
    )

    def grant(account: rules.StackResource) -> rules.StackResource:
        props = {"secretId": "s", "role": rules.SECRET_ACCESSOR, "member": unknown}
        return rules.StackResource(
            rules.SECRET_IAM[0], "urn:g::grant", "grant", props, {"member": [account.urn]}
        )

    assert rules.secrets_are_granted([account_a, account_b, job, grant(account_a)]) == []
    # Either spelling names the secret.
    by_path = grant(account_a)
    by_path = dataclasses.replace(
        by_path, props={**by_path.props, "secretId": "projects/p/secrets/s"}
    )
    assert rules.secrets_are_granted([account_a, job, by_path]) == []
    ((urn, message),) = rules.secrets_are_granted([account_a, account_b, job, grant(account_b)])
    assert urn == job.urn
    assert "'s'" in message
    assert "acct-a" in message


def _is_api_write(r: rules.StackResource) -> bool:
    return r.type in rules.BUCKET_IAM and r.props.get("role") == "roles/storage.objectCreator"


def _with_condition(resources, expression: str | None) -> list[rules.StackResource]:
    """The stack with the API's prediction-log grant's condition replaced (None: removed)."""
    changed = []
    for r in resources:
        if _is_api_write(r):
            props = {k: v for k, v in r.props.items() if k != "condition"}
            if expression is not None:
                props["condition"] = {**r.props["condition"], "expression": expression}
            r = dataclasses.replace(r, props=props)
        changed.append(r)
    return changed


@pytest.mark.parametrize(
    "expression",
    [
        None,
        'resource.name.startsWith("projects/_/buckets/data-bucket/objects/")',
        'resource.name.startsWith("projects/_/buckets/data-bucket/objects/artifacts/") || true',
    ],
    ids=["no-condition", "whole-bucket", "or-true"],
)
@pytest.mark.parametrize("stack", STACKS)
def test_a_service_may_write_to_the_bucket_only_under_a_prefix(stack, expression):
    resources = stack_of(stack)
    assert [r for r in resources if _is_api_write(r)], "the API's prediction-log grant"
    assert rules.service_writes_are_scoped(resources) == []
    ((urn, message),) = rules.service_writes_are_scoped(_with_condition(resources, expression))
    assert urn.endswith("data-api-predictions")
    assert "'housing-api'" in message
    assert "roles/storage.objectCreator" in message


def test_a_job_and_mlflow_may_write_the_whole_bucket():
    """The pipeline and MLflow write everywhere (objectAdmin, no condition): not services that
    answer the internet, or the one whose work it is."""
    resources = stack_of("dev")
    unscoped = [r for r in resources if r.type in rules.BUCKET_IAM and not r.props.get("condition")]
    assert {r.props["role"] for r in unscoped} >= {"roles/storage.objectAdmin"}
    assert rules.service_writes_are_scoped(resources) == []


def test_in_preview_a_missing_condition_is_refused_and_an_unknown_expression_waits():
    unknown = rules.UNKNOWN
    account = _account("urn:a::acct-api", email=unknown, accountId="housing-api", project="p")
    service = rules.StackResource(
        rules.RUN_SERVICE,
        "urn:s::api-service",
        "api-service",
        {"name": "housing-api", "template": {"serviceAccount": unknown}},
        {"template": [account.urn]},
    )

    def grant(**props: Any) -> rules.StackResource:
        props = {
            "bucket": unknown,
            "role": "roles/storage.objectCreator",
            "member": unknown,
        } | props
        return rules.StackResource(
            rules.BUCKET_IAM[0], "urn:g::grant", "grant", props, {"member": [account.urn]}
        )

    waiting = grant(condition={"title": "t", "expression": unknown})
    assert rules.service_writes_are_scoped([account, service, waiting]) == []
    ((_, message),) = rules.service_writes_are_scoped([account, service, grant()])
    assert "housing-api@p.iam.gserviceaccount.com" in message


def _locked() -> dict[str, list[dict[str, Any]]]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages: dict[str, list[dict[str, Any]]] = {}
    for package in lock["package"]:
        packages.setdefault(package["name"], []).append(package)
    return packages


def _closure(packages: dict[str, list[dict[str, Any]]], root: str) -> set[str]:
    seen, todo = {root}, [root]
    while todo:
        for package in packages[todo.pop()]:
            for dep in package.get("dependencies", []):
                if dep["name"] not in seen:
                    seen.add(dep["name"])
                    todo.append(dep["name"])
    return seen


def _pins() -> list[tuple[str, str, str]]:
    """(name, version, marker) of each line of the pack's requirements."""
    text = (ROOT / "infra" / "policy" / "requirements.txt").read_text()
    pins = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)\s*(?:;\s*(.+))?", line)
        assert match, f"not an exact pin: {line!r}"
        name, version, marker = match.groups()
        pins.append((re.sub(r"[-_.]+", "-", name).lower(), version, marker or ""))
    return pins


def test_the_packs_requirements_are_the_locked_versions():
    """Pulumi installs the pack's requirements into its own venv: the same versions the tests
    ran, the whole of pulumi-policy's locked closure, each pinned (with uv.lock's marker where
    the lock picks a version per Python)."""
    packages = _locked()
    closure = _closure(packages, "pulumi-policy")
    markers = {
        (dep["name"], dep["version"]): dep.get("marker", "")
        for name in closure
        for package in packages[name]
        for dep in package.get("dependencies", [])
        if "version" in dep
    }
    pins = _pins()
    assert {name for name, _, _ in pins} == closure
    for name, version, marker in pins:
        locked = sorted(p["version"] for p in packages[name])
        assert version in locked, f"{name}=={version}, but uv.lock has {locked}"
        assert marker == markers.get((name, version), ""), f"{name}=={version}: marker"
    for must in ("pulumi", "pulumi-policy", "protobuf", "grpcio"):
        (package,) = packages[must]
        assert (must, package["version"], "") in pins
