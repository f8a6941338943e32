"""What a real `pulumi up` on a fresh project needs and Pulumi's mocks don't check: editions
that accept the tier, every API a resource calls, the order resources are created in, grants for
every secret, who may call and deploy, and a stack that can be destroyed and made again."""

from __future__ import annotations

import re

import msgspec
import pytest
from ruamel.yaml import YAML

from infra.components import apis
from infra.components.identity import GRANTABLE_ROLES
from infra.config import ConfigError, parse
from infra.plan import read_stack_config
from infra.sql_tiers import tier_problem
from tests.infra.conftest import ROOT, STACKS, stack_config

SECRET_IAM = "gcp:secretmanager/secretIamMember:SecretIamMember"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
RUN_SERVICE = "gcp:cloudrunv2/service:Service"
RUN_JOB = "gcp:cloudrunv2/job:Job"
PROVIDER = "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider"


def values(stack: str) -> dict:
    return dict(YAML(typ="safe").load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"])


# -- 1. Cloud SQL edition ------------------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_the_sql_instance_states_an_edition_that_accepts_its_tier(stack, deployed):
    (instance,) = deployed(stack_config(stack)).of_type("gcp:sql/databaseInstance:DatabaseInstance")
    settings = instance.inputs["settings"]
    assert instance.inputs["databaseVersion"] == "POSTGRES_16"
    assert settings.get("edition"), "unset: PostgreSQL 16 defaults to ENTERPRISE_PLUS"
    assert tier_problem(settings["tier"], settings["edition"]) is None


@pytest.mark.parametrize(
    ("tier", "edition", "accepted"),
    [
        ("db-f1-micro", "ENTERPRISE", True),
        ("db-custom-1-3840", "ENTERPRISE", True),
        ("db-perf-optimized-N-2", "ENTERPRISE_PLUS", True),
        ("db-f1-micro", "ENTERPRISE_PLUS", False),
        ("db-custom-1-3840", "ENTERPRISE_PLUS", False),
        ("db-perf-optimized-N-2", "ENTERPRISE", False),
        ("db-f1-micro", None, False),
    ],
)
def test_tier_and_edition_must_fit(tier, edition, accepted):
    assert (tier_problem(tier, edition) is None) is accepted


def test_a_tier_the_edition_refuses_is_a_config_error_naming_the_key():
    raw = values("dev") | {
        "housing-mlops:database": {"tier": "db-f1-micro", "edition": "ENTERPRISE_PLUS"}
    }
    with pytest.raises(ConfigError, match=r"^housing-mlops:database: tier 'db-f1-micro' \(shared"):
        parse(raw, "dev")


# -- 2. APIs ---------------------------------------------------------------------------------
#: The API each resource type's calls go to (from GCP's REST reference of each resource).
API_OF = {
    "gcp:storage/": {"storage.googleapis.com"},
    "gcp:artifactregistry/": {"artifactregistry.googleapis.com"},
    "gcp:sql/": {"sqladmin.googleapis.com"},
    "gcp:secretmanager/": {"secretmanager.googleapis.com"},
    "gcp:cloudrunv2/": {"run.googleapis.com"},
    "gcp:cloudscheduler/": {"cloudscheduler.googleapis.com"},
    "gcp:serviceaccount/": {"iam.googleapis.com"},
    "gcp:iam/": {"iam.googleapis.com", "sts.googleapis.com"},
    "gcp:projects/iAMMember": {"cloudresourcemanager.googleapis.com"},
    "gcp:projects/iAMCustomRole": {"iam.googleapis.com"},
    "gcp:projects/service": {"serviceusage.googleapis.com", "cloudresourcemanager.googleapis.com"},
}
NOT_GOOGLE = ("random:", "housing-mlops:")


@pytest.mark.parametrize("retrain_source", ["", "gs://labelled/housing.csv"])
@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_calls_only_apis_the_stack_enables(stack, retrain_source, deployed):
    config = stack_config(stack)
    # A retrain source adds the monitor's custom role (IAM's API).
    monitoring = msgspec.structs.replace(config.monitoring, retrain_source=retrain_source)
    d = deployed(msgspec.structs.replace(config, monitoring=monitoring))
    enabled = {r.inputs["service"] for r in d.of_type("gcp:projects/service:Service")}
    assert enabled == set(apis.SERVICES)
    for typ in {r.typ for r in d.mocks.resources if not r.typ.startswith(NOT_GOOGLE)}:
        needed = [api for prefix, api in API_OF.items() if typ.startswith(prefix)]
        assert needed, f"{typ}: which API does it call? add it to API_OF and apis.SERVICES"
        assert needed[0] <= enabled, f"{typ} needs {sorted(needed[0] - enabled)}"
    # The ID-token exchange of the workflows goes through IAM Credentials.
    assert "iamcredentials.googleapis.com" in enabled


@pytest.mark.parametrize("stack", STACKS)
def test_the_rollouts_cross_check_is_readable_by_the_release_jobs_account(stack, deployed):
    """``nox -s rollout -- <stack>`` reads each revision's request counts from Cloud
    Monitoring: the stack enables its API, and the account the release job runs as may read it."""
    config = stack_config(stack)
    d = deployed(config)
    enabled = {r.inputs["service"] for r in d.of_type("gcp:projects/service:Service")}
    assert "monitoring.googleapis.com" in enabled
    ci = f"serviceAccount:housing-ci@{config.project}.iam.gserviceaccount.com"
    roles = {
        r.inputs["role"]
        for r in d.of_type("gcp:projects/iAMMember:IAMMember")
        if r.inputs["member"] == ci
    }
    assert "roles/monitoring.viewer" in roles


# -- 3. Ordering -----------------------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_workloads_wait_for_their_database_secret_and_grants(stack, deployed):
    d = deployed(stack_config(stack))
    waits = d.mocks.waits_for
    needs = {
        "db-password-version",
        "db-user",
        "db-mlflow",
        "db-optuna",
    }
    for workload, name in (("mlflow", "tracking-service"), ("pipeline", "jobs-pipeline")):
        missing = (
            needs | {f"db-password-{workload}", f"identity-{workload}-cloudsql-client"}
        ) - waits(name)
        assert not missing, f"{name} may start before {sorted(missing)}"
    assert "jobs-tune" in d.mocks.dependencies
    assert "db-password-version" in waits("jobs-tune")
    assert "data-api-objects" in waits("api-service")


def test_the_dependency_graph_is_recorded_from_the_engines_requests(deployed):
    d = deployed(stack_config("dev"))
    # A property dependency (the template names the instance's connection) and an explicit one.
    assert "db-instance" in d.mocks.property_dependencies["tracking-service"]["template"]
    assert "db-user" in d.mocks.dependencies["tracking-service"]
    assert "db-user" not in d.mocks.waits_for("data-bucket")


# -- 4. Secrets and their grants -------------------------------------------------------------------
def mounted_secrets(resource) -> set[str]:
    template = resource.inputs["template"]
    containers = template.get("containers") or template["template"]["containers"]
    return {
        env["valueSource"]["secretKeyRef"]["secret"]
        for c in containers
        for env in c.get("envs") or []
        if "valueSource" in env
    }


def account_of(resource) -> str:
    template = resource.inputs["template"]
    return (template.get("serviceAccount") or template["template"]["serviceAccount"]).split("@")[0]


@pytest.mark.parametrize("wandb", ["", "wandb-api-key"])
@pytest.mark.parametrize("stack", STACKS)
def test_every_mounted_secret_is_readable_by_the_workloads_account(stack, wandb, deployed):
    config = stack_config(stack)
    config = msgspec.structs.replace(
        config, pipeline=msgspec.structs.replace(config.pipeline, wandb_secret=wandb)
    )
    d = deployed(config)
    granted = {
        (r.inputs["secretId"], r.inputs["member"].split(":")[1].split("@")[0])
        for r in d.of_type(SECRET_IAM)
        if r.inputs["role"] == "roles/secretmanager.secretAccessor"
    }
    for resource in d.of_type(RUN_SERVICE) + d.of_type(RUN_JOB):
        for secret in mounted_secrets(resource):
            assert (secret, account_of(resource)) in granted, f"{resource.name} can't read {secret}"
    if wandb:
        assert ("wandb-api-key", "housing-pipeline") in granted
        assert "jobs-wandb-accessor" in d.mocks.waits_for("jobs-pipeline")


# -- 6. Images by digest, kept by the registry ----------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_committed_stack_files_pin_no_image_and_have_no_release(stack):
    committed = read_stack_config(ROOT / f"Pulumi.{stack}.yaml")
    assert committed.images.refs() == {}, "CI pins digests; a tag nobody pushes deploys nothing"
    assert committed.release is None
    full = stack_config(stack)
    assert set(full.images.refs()) == {"mlflow", "pipeline", "service", "ui"}
    assert all("@sha256:" in ref for ref in full.images.refs().values())


def test_a_production_stack_refuses_images_by_tag():
    raw = values("prod") | {
        "housing-mlops:images": {"mlflow": "europe-west1-docker.pkg.dev/p/r/mlflow:latest"}
    }
    with pytest.raises(ConfigError, match=r"^housing-mlops:images.mlflow is .*by digest only"):
        parse(raw, "prod")
    parse(values("dev") | raw_images("mlflow:latest"), "dev")  # dev may try a tag


def raw_images(ref: str) -> dict:
    return {"housing-mlops:images": {"mlflow": f"europe-west1-docker.pkg.dev/p/r/{ref}"}}


def test_the_registry_never_cleans_up_a_digest_the_stack_serves_or_may_roll_back_to(deployed):
    config = stack_config("prod")
    stable_image = "europe-west1-docker.pkg.dev/p/housing-mlops/service@sha256:" + "9" * 64
    release = msgspec.structs.replace(
        config.release,
        stable_image=stable_image,
        stable_revision="housing-api-m1-00000000",
        canary_percent=10,
    )
    d = deployed(msgspec.structs.replace(config, release=release))
    (repo,) = d.of_type("gcp:artifactregistry/repository:Repository")
    policies = {p["id"]: p for p in repo.inputs["cleanupPolicies"]}
    keep = policies["keep-deployed"]
    assert keep["action"] == "KEEP"
    kept = set(keep["condition"]["versionNamePrefixes"])
    served = {ref.rsplit("@", 1)[1] for ref in config.images.refs().values()}
    assert served | {"sha256:" + "9" * 64} == kept
    # Artifact Registry applies KEEP before DELETE whatever the order: a delete-all rule is safe
    # only beside the keep rules.
    assert {p["action"] for p in policies.values()} == {"KEEP", "DELETE"}


# -- 9. Who may call a private API -----------------------------------------------------------------
def test_a_private_api_is_callable_by_the_members_config_names(deployed):
    config = stack_config("prod")
    caller = "serviceAccount:caller@other.iam.gserviceaccount.com"
    config = msgspec.structs.replace(
        config, service=msgspec.structs.replace(config.service, invokers=(caller,))
    )
    d = deployed(config)
    members = {
        r.inputs["member"]
        for r in d.of_type("gcp:cloudrunv2/serviceIamMember:ServiceIamMember")
        if r.inputs["name"] == "housing-api"
    }
    assert caller in members
    assert "allUsers" not in members


@pytest.mark.parametrize("member", ["allUsers", "ada@example.com"])
def test_service_invokers_must_be_named_members(member):
    raw = values("prod") | {"housing-mlops:service": {"public": False, "invokers": [member]}}
    with pytest.raises(ConfigError, match=r"^housing-mlops:service.invokers has"):
        parse(raw, "prod")


# -- 10. Who may deploy ------------------------------------------------------------------------
def test_prod_trusts_only_main_of_the_pinned_repository(deployed):
    config = stack_config("prod")
    d = deployed(config)
    (provider,) = d.of_type(PROVIDER)
    condition = provider.inputs["attributeCondition"]
    g = config.github
    for clause in (
        f"assertion.repository == '{g.repository}'",
        f"assertion.repository_id == '{g.repository_id}'",
        f"assertion.repository_owner_id == '{g.repository_owner_id}'",
        "assertion.ref == 'refs/heads/main'",
        f"assertion.environment == '{g.environment}'",
    ):
        assert clause in condition
    (binding,) = [
        r for r in d.of_type("gcp:serviceaccount/iAMMember:IAMMember")
        if r.inputs["role"] == "roles/iam.workloadIdentityUser"
    ]  # fmt: skip
    assert binding.inputs["member"].endswith(f"/attribute.repository_id/{g.repository_id}")


def test_a_production_stack_needs_the_repository_ids():
    raw = values("prod") | {"housing-mlops:github": {"repository": "o/r"}}
    with pytest.raises(ConfigError, match=r"^housing-mlops:github.repositoryId and"):
        parse(raw, "prod")


@pytest.mark.parametrize("stack", STACKS)
def test_ci_can_grant_only_the_workloads_project_roles(stack, deployed):
    d = deployed(stack_config(stack))
    ci = [r for r in d.of_type(PROJECT_IAM) if "housing-ci@" in r.inputs["member"]]
    (admin,) = [r for r in ci if r.inputs["role"] == "roles/resourcemanager.projectIamAdmin"]
    expression = admin.inputs["condition"]["expression"]
    assert "iam.googleapis.com/modifiedGrantsByRole" in expression
    listed = set(re.findall(r"'(roles/[^']+)'", expression))
    workload_roles = {
        r.inputs["role"] for r in d.of_type(PROJECT_IAM) if "housing-ci@" not in r.inputs["member"]
    }
    assert listed == set(GRANTABLE_ROLES) == workload_roles
    assert not {r.inputs["role"] for r in ci} & {"roles/owner", "roles/editor"}


# -- 11. Destroy, then up again ------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_pool_ids_are_suffixed_and_sql_objects_abandoned_on_destroy(stack, deployed):
    d = deployed(stack_config(stack))
    (pool,) = d.of_type("gcp:iam/workloadIdentityPool:WorkloadIdentityPool")
    assert re.fullmatch(r"github-[a-z0-9]{6}", pool.inputs["workloadIdentityPoolId"])
    for typ in ("gcp:sql/user:User", "gcp:sql/database:Database"):
        for resource in d.of_type(typ):
            assert resource.inputs["deletionPolicy"] == "ABANDON", resource.name
