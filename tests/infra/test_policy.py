"""Each guardrail rejects a resource built to break it and accepts the program's own."""

from __future__ import annotations

import copy

import pytest

from infra.plan import resources
from infra.policy import rules
from tests.infra.conftest import STACKS, stack_config


@pytest.mark.parametrize("stack", STACKS)
def test_the_programs_own_resources_pass_every_rule(stack, deployed):
    for resource in resources(deployed(stack_config(stack)).mocks):
        assert rules.violations(resource["type"], resource["inputs"]) == {}, resource["name"]


def program_resource(deployed, typ: str, name: str | None = None) -> dict:
    listed = resources(deployed(stack_config("prod")).mocks)
    found = [
        r for r in listed if r["type"] == typ and (name is None or r["inputs"].get("name") == name)
    ]
    return copy.deepcopy(found[0]["inputs"])


def test_a_bucket_without_public_access_prevention_is_refused(deployed):
    bucket = program_resource(deployed, rules.BUCKET)
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


def test_cloud_sql_with_a_public_network_is_refused(deployed):
    instance = program_resource(deployed, rules.SQL_INSTANCE)
    instance["settings"]["ipConfiguration"]["authorizedNetworks"] = [{"value": "0.0.0.0/0"}]
    assert (
        "public network '0.0.0.0/0'"
        in rules.violations(rules.SQL_INSTANCE, instance)["cloud-sql-closed"][0]
    )
    instance["settings"]["ipConfiguration"]["authorizedNetworks"] = [{"value": "10.0.0.0/8"}]
    assert rules.violations(rules.SQL_INSTANCE, instance) == {}


def test_production_cloud_sql_needs_backups_and_deletion_protection(deployed):
    instance = program_resource(deployed, rules.SQL_INSTANCE)
    assert instance["settings"]["userLabels"] == {"environment": "prod"}
    instance["deletionProtection"] = False
    instance["settings"]["backupConfiguration"] = {"enabled": False}
    messages = rules.violations(rules.SQL_INSTANCE, instance)["cloud-sql-closed"]
    assert len(messages) == 2
    instance["settings"]["userLabels"] = {"environment": "dev"}
    assert rules.violations(rules.SQL_INSTANCE, instance) == {}


def test_a_service_without_max_instances_is_refused(deployed):
    service = program_resource(deployed, rules.RUN_SERVICE, "housing-api")
    del service["template"]["scaling"]["maxInstanceCount"]
    assert list(rules.violations(rules.RUN_SERVICE, service)) == ["cloud-run-max-instances"]


@pytest.mark.parametrize("name", ["DB_PASSWORD", "WANDB_API_KEY", "MLFLOW_TRACKING_TOKEN"])
def test_a_plaintext_secret_env_var_is_refused(deployed, name):
    service = program_resource(deployed, rules.RUN_SERVICE, "housing-mlflow")
    service["template"]["containers"][0]["envs"].append({"name": name, "value": "hunter2"})
    assert list(rules.violations(rules.RUN_SERVICE, service)) == ["no-plaintext-secrets"]
    job = program_resource(deployed, rules.RUN_JOB, "housing-pipeline")
    job["template"]["template"]["containers"][0]["envs"].append({"name": name, "value": "x"})
    assert list(rules.violations(rules.RUN_JOB, job)) == ["no-plaintext-secrets"]


def test_the_pack_serves_every_rule_and_rejects_a_broken_resource():
    """The pack as Pulumi runs it: a gRPC analyzer on loopback, asked as the engine asks."""
    import subprocess
    import sys

    import grpc
    from google.protobuf import empty_pb2, struct_pb2
    from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

    from tests.infra.conftest import ROOT

    pack = subprocess.Popen(
        [sys.executable, str(ROOT / "infra" / "policy" / "__main__.py")],
        stdout=subprocess.PIPE,
        cwd=ROOT / "infra" / "policy",
    )
    try:
        port = int(pack.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            analyzer = analyzer_pb2_grpc.AnalyzerStub(channel)
            info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
            assert {p.name for p in info.policies} == set(rules.RULES)
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
    finally:
        pack.kill()
        pack.wait()
