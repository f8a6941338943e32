"""The whole program under Pulumi's mocks, with each stack file as committed."""

from __future__ import annotations

import json

import msgspec
import pytest

from infra.config import StackConfig
from infra.release.traffic import Release
from tests.infra.conftest import STACKS, stack_config

SERVICE = "gcp:cloudrunv2/service:Service"
JOB = "gcp:cloudrunv2/job:Job"
SERVICE_IAM = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
JOB_IAM = "gcp:cloudrunv2/jobIamMember:JobIamMember"
BUCKET_IAM = "gcp:storage/bucketIAMMember:BucketIAMMember"
SECRET_IAM = "gcp:secretmanager/secretIamMember:SecretIamMember"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
SA_IAM = "gcp:serviceaccount/iAMMember:IAMMember"


def sa(name: str, config: StackConfig) -> str:
    return f"serviceAccount:housing-{name}@{config.project}.iam.gserviceaccount.com"


def services(deployed) -> dict[str, dict]:
    return {r.inputs["name"]: r.inputs for r in deployed.of_type(SERVICE)}


def envs(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("envs", [])}


def with_release(config: StackConfig, **changes) -> StackConfig:
    assert config.release is not None
    release = msgspec.structs.replace(config.release, **changes)
    return msgspec.structs.replace(config, release=release)


@pytest.mark.parametrize("stack", STACKS)
def test_every_part_is_declared_with_its_key_settings(stack, deployed):
    config = stack_config(stack)
    d = deployed(config)
    prod = config.production

    (bucket,) = d.of_type("gcp:storage/bucket:Bucket")
    assert bucket.inputs["forceDestroy"] is not prod
    (instance,) = d.of_type("gcp:sql/databaseInstance:DatabaseInstance")
    assert instance.inputs["deletionProtection"] is config.database.deletion_protection
    assert instance.inputs["settings"]["availabilityType"] == ("REGIONAL" if prod else "ZONAL")

    by_name = services(d)
    assert set(by_name) == {"housing-mlflow", "housing-api"} | (
        {"housing-ui"} if config.ui.enabled else set()
    )
    for service in by_name.values():
        assert service["deletionProtection"] is prod
        assert service["scaling"] == {"minInstanceCount": 0}, "service-level scaling explicit"
        assert service["template"]["scaling"]["maxInstanceCount"] >= 1

    mlflow = by_name["housing-mlflow"]["template"]
    mlflow_env = envs(mlflow["containers"][0])
    assert mlflow_env["BACKEND_STORE_URI"]["value"] == (
        f"postgresql+psycopg2://housing@/mlflow?host=/cloudsql/{config.project}:"
        f"{config.region}:db-instance"
    )
    assert mlflow_env["ARTIFACTS_DESTINATION"]["value"] == "gs://data-bucket/mlflow"
    assert mlflow_env["ALLOWED_HOSTS"]["value"] == "housing-mlflow-*.run.app"
    assert mlflow["volumes"] == [
        {"name": "cloudsql", "cloudSqlInstance": {"instances": [instance_connection(config)]}}
    ]
    assert mlflow["containers"][0]["volumeMounts"] == [
        {"name": "cloudsql", "mountPath": "/cloudsql"}
    ]

    api = by_name["housing-api"]["template"]
    container = api["containers"][0]
    version = config.release.model_version
    assert envs(container)["MODEL_URI"]["value"] == f"models:/housing-price/{version}"
    assert envs(container)["MODEL_FALLBACK_URI"]["value"] == (
        f"gs://data-bucket/artifacts/models/housing-price/{version}"
    )
    assert container["startupProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["scaling"] == {
        "minInstanceCount": config.service.min_instances,
        "maxInstanceCount": config.service.max_instances,
    }

    jobs = {r.inputs["name"]: r.inputs for r in d.of_type(JOB)}
    tune = jobs["housing-tune"]["template"]
    assert (tune["taskCount"], tune["parallelism"]) == (
        config.pipeline.tune_tasks,
        config.pipeline.tune_parallelism,
    )
    assert tune["template"]["containers"][0]["args"] == ["run", "--steps", "tune"]
    assert jobs["housing-pipeline"]["template"]["template"]["containers"][0]["args"] == ["run"]
    schedules = [
        s
        for s in d.of_type("gcp:cloudscheduler/job:Job")
        if "housing-pipeline" in s.inputs["httpTarget"]["uri"]
    ]
    assert len(schedules) == (1 if config.pipeline.schedule else 0)
    for schedule in schedules:
        assert schedule.inputs["schedule"] == config.pipeline.schedule
        assert schedule.inputs["httpTarget"]["uri"].endswith("/jobs/housing-pipeline:run")

    assert set(d.exports) >= {
        "bucket",
        "registry",
        "mlflow_url",
        "service_url",
        "live_revision",
        "canary_revision",
        "tag_urls",
        "workload_identity_provider",
    }
    assert ("ui_url" in d.exports) is config.ui.enabled


def instance_connection(config: StackConfig) -> str:
    return f"{config.project}:{config.region}:db-instance"


@pytest.mark.parametrize("stack", STACKS)
def test_iam_bindings_are_exactly_the_intended_ones(stack, deployed):
    config = stack_config(stack)
    d = deployed(config)
    grants = {
        (
            r.typ.split(":", 1)[1],
            r.inputs.get("name") or r.inputs.get("bucket") or "project",
            r.inputs["role"],
            r.inputs["member"],
        )
        for r in d.of_type(SERVICE_IAM)
        + d.of_type(JOB_IAM)
        + d.of_type(BUCKET_IAM)
        + d.of_type(PROJECT_IAM)
        if "housing-ci@" not in r.inputs["member"]
    }
    grants |= {
        (
            "secretmanager/secretIamMember:SecretIamMember",
            r.inputs["secretId"],
            r.inputs["role"],
            r.inputs["member"],
        )
        for r in d.of_type(SECRET_IAM)
    }
    run_svc = "cloudrunv2/serviceIamMember:ServiceIamMember"
    bucket = "storage/bucketIAMMember:BucketIAMMember"
    project = "projects/iAMMember:IAMMember"
    secret = "secretmanager/secretIamMember:SecretIamMember"
    invoker, accessor = "roles/run.invoker", "roles/secretmanager.secretAccessor"
    expected = {
        (run_svc, "housing-mlflow", invoker, sa("pipeline", config)),
        (run_svc, "housing-mlflow", invoker, sa("api", config)),
        (bucket, "data-bucket", "roles/storage.objectAdmin", sa("pipeline", config)),
        (bucket, "data-bucket", "roles/storage.objectAdmin", sa("mlflow", config)),
        (bucket, "data-bucket", "roles/storage.objectViewer", sa("api", config)),
        (bucket, "data-bucket", "roles/storage.objectCreator", sa("api", config)),
        (project, "project", "roles/cloudsql.client", sa("pipeline", config)),
        (project, "project", "roles/cloudsql.client", sa("mlflow", config)),
        (secret, "db-db-password", accessor, sa("pipeline", config)),
        (secret, "db-db-password", accessor, sa("mlflow", config)),
    }
    if config.service.public:
        expected.add((run_svc, "housing-api", invoker, "allUsers"))
    elif config.ui.enabled:
        expected.add((run_svc, "housing-api", invoker, sa("ui", config)))
    if config.ui.enabled and config.ui.public:
        expected.add((run_svc, "housing-ui", invoker, "allUsers"))
    job = "cloudrunv2/jobIamMember:JobIamMember"
    if config.pipeline.schedule:
        expected.add((job, "housing-pipeline", invoker, sa("pipeline", config)))
    if config.monitoring.enabled:
        expected |= {
            (run_svc, "housing-mlflow", invoker, sa("monitor", config)),
            (bucket, "data-bucket", "roles/storage.objectViewer", sa("monitor", config)),
            (bucket, "data-bucket", "roles/storage.objectUser", sa("monitor", config)),
        }
        if config.monitoring.schedule:
            expected.add((job, "housing-monitor", invoker, sa("monitor", config)))
    if config.batch.enabled:
        expected |= {
            (run_svc, "housing-mlflow", invoker, sa("batch", config)),
            (bucket, "data-bucket", "roles/storage.objectViewer", sa("batch", config)),
            (bucket, "data-bucket", "roles/storage.objectUser", sa("batch", config)),
        }
    assert grants == expected

    ci = "serviceAccount:housing-ci@"
    ci_service_grants = {
        r.inputs["name"] for r in d.of_type(SERVICE_IAM) if r.inputs["member"].startswith(ci)
    }
    assert ci_service_grants == (
        {"housing-mlflow"} | ({"housing-api"} if not config.service.public else set())
    )
    (provider,) = d.of_type("gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider")
    repo = config.github.repository
    assert provider.inputs["attributeCondition"].startswith(f"assertion.repository == '{repo}'")
    wif = [
        r.inputs for r in d.of_type(SA_IAM) if r.inputs["role"] == "roles/iam.workloadIdentityUser"
    ]
    principal = (
        f"attribute.repository_id/{config.github.repository_id}"
        if config.github.repository_id
        else f"attribute.repository/{repo}"
    )
    assert [g["member"] for g in wif] == [
        "principalSet://iam.googleapis.com/projects/123456789/locations/global/"
        f"workloadIdentityPools/github-a1b2c3/{principal}"
    ]
    public = [
        r for r in d.of_type(SERVICE_IAM) + d.of_type(JOB_IAM) if r.inputs["member"] == "allUsers"
    ]
    assert all(r.inputs["name"] in {"housing-api", "housing-ui"} for r in public)


@pytest.mark.parametrize("stack", STACKS)
def test_the_database_password_is_secret_and_in_no_env_literal(stack, deployed):
    d = deployed(stack_config(stack))
    (user,) = d.of_type("gcp:sql/user:User")
    password = user.inputs["password"]["value"]
    assert user.inputs["password"]["4dabf18193072939515e22adb298388d"]
    for resource in d.of_type(SERVICE) + d.of_type(JOB):
        text = json.dumps(resource.inputs)
        assert password not in text, f"{resource.name} carries the password"
        template = resource.inputs["template"]
        containers = template.get("containers") or template["template"]["containers"]
        for container in containers:
            for env in container.get("envs", []):
                if env["name"] == "DB_PASSWORD":
                    assert env["valueSource"]["secretKeyRef"] == {
                        "secret": "db-db-password",
                        "version": "latest",
                    }


@pytest.mark.parametrize(
    ("percent", "expected"),
    [
        (0, [("stable", 100), ("canary", 0)]),
        (10, [("stable", 90), ("canary", 10)]),
        (50, [("stable", 50), ("canary", 50)]),
        (100, [("stable", 0), ("canary", 100)]),
    ],
)
def test_canary_traffic_follows_the_stack_config(percent, expected, deployed):
    config = with_release(
        stack_config("prod"),
        model_version=2,
        canary_percent=percent,
        stable_revision="housing-api-m1-aaaa1111",
    )
    d = deployed(config)
    api = services(d)["housing-api"]
    newest = api["template"]["revision"]
    assert newest.startswith("housing-api-m2-")
    traffic = [(t["tag"], t["percent"]) for t in api["traffics"]]
    assert traffic == expected
    assert sum(p for _, p in traffic) == 100
    revisions = {t["tag"]: t["revision"] for t in api["traffics"]}
    assert revisions == {"stable": "housing-api-m1-aaaa1111", "canary": newest}
    if percent == 100:
        assert (d.exports["live_revision"], d.exports["canary_revision"]) == (newest, "")
    else:
        assert d.exports["live_revision"] == "housing-api-m1-aaaa1111"
        assert d.exports["canary_revision"] == newest
    assert set(d.exports["tag_urls"]) == {"stable", "canary"}


def test_a_first_deploy_sends_everything_to_the_only_revision(deployed):
    d = deployed(with_release(stack_config("dev"), canary_percent=100, stable_revision=""))
    api = services(d)["housing-api"]
    assert [(t["revision"], t["percent"], t["tag"]) for t in api["traffics"]] == [
        (api["template"]["revision"], 100, "canary")
    ]
    assert d.exports["live_revision"] == api["template"]["revision"]


def revision(config: StackConfig, deployed) -> str:
    return services(deployed(config))["housing-api"]["template"]["revision"]


def test_revision_names_are_stable_unless_the_template_changes(deployed):
    config = stack_config("dev")
    first = revision(config, deployed)
    assert revision(config, deployed) == first, "no change, no new revision"
    assert revision(with_release(config, image=config.release.image + "-2"), deployed) != first
    by_version = revision(with_release(config, model_version=9), deployed)
    assert by_version != first
    assert by_version.startswith("housing-api-m9-")
    # Moving traffic is not a template change: the newest revision keeps its name.
    moved = with_release(config, canary_percent=10, stable_revision="housing-api-m0-00000000")
    assert revision(moved, deployed) == first


def test_parts_without_an_image_or_release_are_left_out(deployed):
    config = stack_config("dev")
    bare = msgspec.structs.replace(
        config,
        images=msgspec.structs.replace(config.images, mlflow="", pipeline="", ui=""),
        ui=msgspec.structs.replace(config.ui, enabled=False),
        release=None,
    )
    d = deployed(bare)
    assert d.of_type(SERVICE) == []
    assert d.of_type(JOB) == []
    assert d.of_type("gcp:artifactregistry/repository:Repository")
    assert {"bucket", "registry"} <= set(d.exports)
    assert "service_url" not in d.exports


def test_release_reads_the_stack_file_spelling():
    release = msgspec.convert(
        {"modelVersion": 3, "image": "i", "canaryPercent": 5, "stableRevision": "r"}, Release
    )
    assert (release.model_version, release.canary_percent) == (3, 5)


@pytest.mark.parametrize("ui", [True, False])
@pytest.mark.parametrize("stack", STACKS)
def test_the_console_reads_operator_data_with_its_own_accounts_token(stack, ui, deployed):
    """One token, three places that must agree (mocks accept any value): the UI mints it for
    an audience the service lists as a custom audience (so Cloud Run's IAM lets it in) and that
    the service's operator check expects, from the account that check trusts."""
    config = stack_config(stack)
    config = msgspec.structs.replace(config, ui=msgspec.structs.replace(config.ui, enabled=ui))
    by_name = services(deployed(config))
    api = by_name["housing-api"]
    api_env = envs(api["template"]["containers"][0])
    if not ui:
        assert "housing-ui" not in by_name
        assert "OPERATOR_AUDIENCE" not in api_env
        assert not api.get("customAudiences")
        return
    ui_env = envs(by_name["housing-ui"]["template"]["containers"][0])
    audience = ui_env["API_AUDIENCE"]["value"]
    assert audience == api_env["OPERATOR_AUDIENCE"]["value"]
    assert api["customAudiences"] == [audience]
    environment = "prod" if config.production else "dev"
    assert audience.endswith(f"/{config.project}/{environment}"), "one audience per stack"
    ui_account = by_name["housing-ui"]["template"]["serviceAccount"]
    assert api_env["OPERATOR_ACCOUNTS"]["value"] == ui_account
