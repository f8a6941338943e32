"""Batch prediction on GCP (issue 16): the ``housing-batch`` Cloud Run job declared from stack
config, an account that may read the model and only ``batch/`` in the bucket, and runners who
may start it with overrides and do nothing else to it."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import msgspec
import pytest

from infra.components.batch import COMMAND, RUNNER_PERMISSIONS
from infra.config import BatchConfig, ConfigError, StackConfig, parse
from infra.cost import cli as cost_cli
from infra.cost import estimate, pricing
from infra.plan import main as plan_main
from infra.plan import read_stack_config, stack_file
from infra.policy import rules
from tests.infra.conftest import ROOT, STACKS, assert_readme_documents, stack_config
from tests.infra.fake_cloud import FakeCloud
from tests.infra.preview import analyze, analyze_stack, policy_pack, record
from tests.infra.test_deployability import API_OF, NOT_GOOGLE, values
from tests.infra.test_monitoring import allows, envs, grants_of, member

JOB = "gcp:cloudrunv2/job:Job"
JOB_IAM = "gcp:cloudrunv2/jobIamMember:JobIamMember"
SERVICE_IAM = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
RUNNERS = ("group:pricing@example.com", "user:ada@example.com")


def with_batch(config: StackConfig, **changes) -> StackConfig:
    return msgspec.structs.replace(config, batch=msgspec.structs.replace(config.batch, **changes))


def batch_section(stack: str, section: dict) -> BatchConfig:
    """``housing-mlops:batch`` as a stack file would spell it, parsed as `pulumi up` reads it."""
    return parse(values(stack) | {"housing-mlops:batch": section}, stack).batch


# -- The job, from stack config ---------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_the_batch_job_takes_its_tasks_and_resources_from_stack_config(stack, deployed):
    config = stack_config(stack)
    b = config.batch
    d = deployed(config)
    job = d.one(JOB, "batch-job")
    assert job["name"] == "housing-batch"
    assert (job["template"]["taskCount"], job["template"]["parallelism"]) == (
        b.tasks,
        b.parallelism,
    )
    task = job["template"]["template"]
    assert (task["timeout"], task["maxRetries"]) == (b.timeout, b.max_retries)
    (container,) = task["containers"]
    assert container["resources"]["limits"] == {"cpu": b.cpu, "memory": b.memory}
    assert container["image"] == config.images.pipeline
    assert task["serviceAccount"] == f"housing-batch@{config.project}.iam.gserviceaccount.com"
    assert job["labels"] == {"environment": "prod" if config.production else "dev"}
    assert job["deletionProtection"] is config.production
    env = envs(job)
    assert env["ARTIFACT_URI"] == "gs://data-bucket/artifacts"
    assert env["MLFLOW_TRACKING_URI"] == env["MLFLOW_TRACKING_AUDIENCE"]
    assert env["MLFLOW_TRACKING_URI"].startswith("https://housing-mlflow-")
    # Cloud Run sets each task's share itself; nothing in the template may pin it.
    assert not {"CLOUD_RUN_TASK_INDEX", "CLOUD_RUN_TASK_COUNT"} & set(env)
    # No database and no secret: the model comes from MLflow over HTTP or from the export.
    assert "DB_PASSWORD" not in env
    assert "[secret]" not in env.values()
    assert not task.get("volumes")
    assert d.exports["batch_job"] == "housing-batch"


def test_the_committed_stacks_size_the_job_for_their_work():
    dev, prod = stack_config("dev").batch, stack_config("prod").batch
    assert dev.enabled
    assert prod.enabled
    assert prod.tasks > dev.tasks, "prod prices portfolios; dev tries the job"
    for b in (dev, prod):
        assert 1 <= b.parallelism <= b.tasks


def test_an_omitted_batch_section_takes_the_typed_defaults(deployed):
    raw = {k: v for k, v in values("dev").items() if k != "housing-mlops:batch"}
    assert parse(raw, "dev").batch == BatchConfig()
    config = msgspec.structs.replace(stack_config("dev"), batch=BatchConfig())
    job = deployed(config).one(JOB, "batch-job")
    task = job["template"]["template"]
    assert (job["template"]["taskCount"], job["template"]["parallelism"]) == (4, 4)
    assert task["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    assert (task["timeout"], task["maxRetries"]) == ("3600s", 1)


def test_every_batch_key_of_the_stack_file_reaches_the_job(deployed):
    section = {
        "tasks": 16,
        "parallelism": 8,
        "cpu": "2",
        "memory": "4Gi",
        "timeout": "7200s",
        "maxRetries": 3,
        "runners": ["group:pricing@example.com"],
    }
    batch = batch_section("dev", section)
    d = deployed(msgspec.structs.replace(stack_config("dev"), batch=batch))
    job = d.one(JOB, "batch-job")
    task = job["template"]["template"]
    assert (job["template"]["taskCount"], job["template"]["parallelism"]) == (16, 8)
    assert task["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert (task["timeout"], task["maxRetries"]) == ("7200s", 3)
    (runner,) = [r.inputs for r in d.of_type(JOB_IAM) if r.inputs["name"] == "housing-batch"]
    assert runner["member"] == "group:pricing@example.com"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"tasks": 2, "parallelism": 4},
            r"^housing-mlops:batch.parallelism must be between 1 and batch.tasks \(2\), got 4",
        ),
        ({"tasks": 0}, r"^housing-mlops:batch.tasks: Expected `int` >= 1"),
        ({"tasks": 10_001}, r"^housing-mlops:batch.tasks: Expected `int` <= 10000"),
        ({"parallelism": 0}, r"^housing-mlops:batch.parallelism: Expected `int` >= 1"),
        ({"maxRetries": 11}, r"^housing-mlops:batch.maxRetries: Expected `int` <= 10"),
        ({"maxRetries": -1}, r"^housing-mlops:batch.maxRetries: Expected `int` >= 0"),
        ({"timeout": "1h"}, r"^housing-mlops:batch.timeout '1h' must be whole seconds .*'3600s'"),
        ({"timeout": "604801s"}, r"^housing-mlops:batch.timeout '604801s' .*at most 604800s"),
        ({"cpu": "two"}, r"^housing-mlops:batch.cpu 'two' is not a quantity"),
        ({"memory": "2 GB"}, r"^housing-mlops:batch.memory '2 GB' is not a quantity"),
        ({"runners": ["allUsers"]}, r"^housing-mlops:batch.runners has 'allUsers': list members"),
        ({"runners": ["ada@example.com"]}, r"^housing-mlops:batch.runners has 'ada@example.com'"),
        ({"taskCount": 4}, r"^housing-mlops:batch: Object contains unknown field `taskCount`"),
    ],
)
def test_a_wrong_batch_setting_names_its_key(section, message):
    with pytest.raises(ConfigError, match=message):
        batch_section("dev", section)


@pytest.mark.parametrize("timeout", ["1s", "604800s"])
def test_the_task_timeout_may_reach_cloud_runs_limits(timeout):
    assert batch_section("dev", {"timeout": timeout}).timeout == timeout


# -- What it may run, read and write ----------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_the_job_runs_the_batch_command_and_an_override_can_change_only_its_arguments(
    stack, deployed
):
    """An execution's overrides replace the container's arguments (and its task count), never
    its command: whoever may run the job with overrides runs `python -m pipeline batch …` and
    nothing else as the batch account."""
    (container,) = deployed(stack_config(stack)).one(JOB, "batch-job")["template"]["template"][
        "containers"
    ]
    assert container["commands"] == list(COMMAND) == ["python", "-m", "pipeline", "batch"]
    assert not container.get("args"), "the input and output come with each execution"


@pytest.mark.parametrize("stack", STACKS)
def test_the_batch_account_reads_the_model_and_reads_and_writes_only_under_batch(stack, deployed):
    config = stack_config(stack)
    d = deployed(config)
    grants = {g["role"]: g for g in grants_of(d, member("batch", config))}
    assert set(grants) == {"roles/storage.objectViewer", "roles/storage.objectUser"}
    assert all(g.get("condition") for g in grants.values()), "no grant on the whole bucket"
    read = grants["roles/storage.objectViewer"]["condition"]["expression"]
    write = grants["roles/storage.objectUser"]["condition"]["expression"]

    def can_read(key: str) -> bool:
        return allows(read, "data-bucket", key=key) or allows(write, "data-bucket", key=key)

    # The model as the service reads it when MLflow can't answer: a version's export, or the
    # champion's.
    for key in (
        "artifacts/models/housing-price/3/model.onnx",
        "artifacts/models/housing-price/3/manifest.json",
        "artifacts/models/housing-price/champion/MLmodel",
    ):
        assert can_read(key), key
        assert not allows(write, "data-bucket", key=key), f"may overwrite {key}"
    for key in (
        "batch/in/houses.parquet",
        "batch/out/prices/part-00003.parquet",
        "batch/out/prices/_done/00003",
        "batch/out/prices/manifest.json",
    ):
        assert allows(write, "data-bucket", key=key), key
    assert allows(write, "data-bucket", listing="batch/out/prices/")
    assert allows(read, "data-bucket", listing="artifacts/models/housing-price/")
    for key in (
        "artifacts/data/train.parquet",
        "artifacts/predictions/date=2026-11-30/model_version=3/r/i/00000001.parquet",
        "artifacts/feedback/2026-11-30.parquet",
        "artifacts/decisions/register.json",
        "mlflow/1/model.pkl",
        "batchX/a.parquet",
        "other/batch/a.parquet",
    ):
        assert not can_read(key), key
    assert not allows(read, "data-bucket", listing="")
    assert not allows(write, "data-bucket", listing="")
    assert not allows(write, "other-bucket", key="batch/out/prices/manifest.json")

    # MLflow (by alias or version): invoker on MLflow, and nothing at the project level.
    (mlflow,) = [
        r.inputs for r in d.of_type(SERVICE_IAM) if r.inputs["member"] == member("batch", config)
    ]
    assert (mlflow["name"], mlflow["role"]) == ("housing-mlflow", "roles/run.invoker")
    project_roles = [
        r.inputs
        for r in d.of_type("gcp:projects/iAMMember:IAMMember")
        if r.inputs["member"] == member("batch", config)
    ]
    assert project_roles == []
    secrets = [
        r.inputs
        for r in d.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")
        if r.inputs["member"] == member("batch", config)
    ]
    assert secrets == []


@pytest.mark.parametrize("stack", STACKS)
def test_the_job_waits_for_what_its_first_task_needs(stack, deployed):
    """Mocks accept any order; a real `up` creates in parallel what nothing waits for: the job's
    first execution must find its bucket grants and its MLflow invoker grant in place."""
    d = deployed(stack_config(stack))
    waits = d.mocks.waits_for("batch-job")
    assert {"data-batch-models", "data-batch-data", "tracking-invoker-batch"} <= waits
    assert {"identity-batch", "api-run"} <= waits, "its account, and the Cloud Run API"


# -- Who may run it with overrides ------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_without_runners_no_one_is_granted_anything_on_the_job(stack, deployed):
    config = stack_config(stack)
    assert config.batch.runners == (), "the committed stacks name no one"
    d = deployed(config)
    assert [r for r in d.of_type(JOB_IAM) if r.inputs["name"] == "housing-batch"] == []
    assert [r for r in d.of_type(CUSTOM_ROLE) if "Batch" in r.inputs["roleId"]] == []


@pytest.mark.parametrize("stack", STACKS)
def test_runners_may_run_the_job_with_overrides_and_nothing_else(stack, deployed):
    config = with_batch(stack_config(stack), runners=RUNNERS)
    d = deployed(config)
    (role,) = [r.inputs for r in d.of_type(CUSTOM_ROLE) if "Batch" in r.inputs["roleId"]]
    # Starting an execution with overrides (the Admin API checks run.jobs.run on the job and
    # run.jobs.runWithOverrides on the overrides) and following it; nothing that edits a job.
    assert set(role["permissions"]) == {
        "run.jobs.run",
        "run.jobs.runWithOverrides",
        "run.executions.get",
        "run.executions.list",
    }
    assert set(RUNNER_PERMISSIONS) == set(role["permissions"])
    assert not any(
        p.startswith(("run.jobs.update", "run.jobs.delete", "run.jobs.create", "run.jobs.set"))
        or p.startswith(("run.services.", "iam.", "storage.", "run.executions.cancel"))
        for p in role["permissions"]
    )
    granted = [r.inputs for r in d.of_type(JOB_IAM) if r.inputs["member"] in RUNNERS]
    assert {g["member"] for g in granted} == set(RUNNERS)
    for grant in granted:
        assert grant["name"] == "housing-batch", "on the batch job alone"
        assert (grant["project"], grant["location"]) == (config.project, config.region)
        assert re.fullmatch(
            rf"projects/{config.project}/roles/housingBatchRunner_[a-z0-9]{{6}}", grant["role"]
        )
    # The runners get nothing else: no other job, no service, no bucket, no project role.
    others = [
        r for r in d.mocks.resources if r.inputs.get("member") in RUNNERS and r.typ != JOB_IAM
    ]
    assert others == []


def test_dev_with_batch_runners_can_be_destroyed_and_created_again_at_once():
    """The runner role's id carries a suffix per stack lifetime: a deleted custom role's id
    can't be reused for 37 days."""

    def config() -> StackConfig:
        return with_batch(read_stack_config(stack_file("dev"), full_stack=True), runners=RUNNERS)

    cloud = FakeCloud()
    cloud.up(config())
    (first,) = cloud.roles
    cloud.destroy()
    cloud.advance(timedelta(hours=1))
    cloud.up(config())
    assert cloud.roles != {first}


@pytest.mark.parametrize("stack", STACKS)
def test_ci_can_deploy_the_batch_job_and_its_runner_role(stack, deployed):
    """Deploying a job that runs as housing-batch is acting as it; the runner role needs IAM's
    role admin."""
    config = with_batch(stack_config(stack), runners=RUNNERS)
    d = deployed(config)
    ci = member("ci", config)
    acts_as = {
        r.inputs["serviceAccountId"].rsplit("/", 1)[-1]
        for r in d.of_type("gcp:serviceaccount/iAMMember:IAMMember")
        if r.inputs["member"] == ci and r.inputs["role"] == "roles/iam.serviceAccountUser"
    }
    assert f"housing-batch@{config.project}.iam.gserviceaccount.com" in acts_as
    roles = {
        r.inputs["role"]
        for r in d.of_type("gcp:projects/iAMMember:IAMMember")
        if r.inputs["member"] == ci
    }
    assert {"roles/iam.roleAdmin", "roles/run.admin"} <= roles


def test_a_disabled_batch_declares_nothing_and_grants_nothing(deployed):
    config = with_batch(stack_config("dev"), enabled=False, runners=RUNNERS)
    d = deployed(config)
    assert "housing-batch" not in {r.inputs["name"] for r in d.of_type(JOB)}
    assert grants_of(d, member("batch", config)) == []
    assert [r for r in d.mocks.resources if r.inputs.get("member") == member("batch", config)] == []
    assert [r for r in d.mocks.resources if r.inputs.get("member") in RUNNERS] == []
    assert "batch_job" not in d.exports


def test_without_a_pipeline_image_there_is_no_batch_job(deployed):
    config = stack_config("dev")
    config = msgspec.structs.replace(
        config, images=msgspec.structs.replace(config.images, pipeline="")
    )
    d = deployed(config)
    assert "housing-batch" not in {r.inputs["name"] for r in d.of_type(JOB)}
    assert grants_of(d, member("batch", config)) == []


@pytest.mark.parametrize("stack", STACKS)
def test_with_runners_every_resource_calls_only_apis_the_stack_enables(stack, deployed):
    """The runner role is IAM's: a fresh project must have enabled it before the role, and the
    role and its grants wait for the APIs as the job does."""
    d = deployed(with_batch(stack_config(stack), runners=RUNNERS))
    enabled = {r.inputs["service"] for r in d.of_type("gcp:projects/service:Service")}
    for typ in {r.typ for r in d.mocks.resources if not r.typ.startswith(NOT_GOOGLE)}:
        (needed, *_) = [api for prefix, api in API_OF.items() if typ.startswith(prefix)]
        assert needed <= enabled, f"{typ} needs {sorted(needed - enabled)}"
    for name in ("batch-job", "batch-runner-role", "batch-runner-0", "batch-runner-1"):
        assert {"api-run", "api-iam"} <= d.mocks.waits_for(name), name
    assert "batch-runner-role" in d.mocks.waits_for("batch-runner-1")


# -- Guardrails -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def analyzer():
    with policy_pack() as stub:
        yield stub


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
@pytest.mark.parametrize("stack", STACKS)
def test_the_batch_job_and_its_runner_grants_pass_the_policy_pack(stack, preview, analyzer):
    """Every resource with runners set, through the pack's gRPC analyzer as the engine sends it,
    in a first preview (what GCP computes unknown) and in `up`: no violation, no advisory."""
    resources = record(with_batch(stack_config(stack), runners=RUNNERS), preview=preview)
    names = {r.name for r in resources}
    assert {"batch-job", "batch-runner-0", "batch-runner-1", "data-batch-data"} <= names
    found = {r.name: analyze(analyzer, r) for r in resources}
    assert {name: list(d) for name, d in found.items() if d} == {}
    assert list(analyze_stack(analyzer, resources)) == []


@pytest.mark.parametrize(
    "role", ["roles/run.developer", "roles/run.admin", "roles/editor", "roles/owner"]
)
def test_a_job_grant_that_could_change_the_job_is_refused(role):
    grant = {
        "name": "housing-batch",
        "project": "p",
        "location": "europe-west1",
        "role": role,
        "member": "group:pricing@example.com",
    }
    (found,) = rules.violations(rules.JOB_IAM[0], grant)["job-grants-are-narrow"]
    assert "housing-batch" in found
    assert role in found


@pytest.mark.parametrize(
    "role", ["roles/run.invoker", "projects/p/roles/housingBatchRunner_a1b2c3", rules.UNKNOWN]
)
def test_running_a_job_with_or_without_overrides_is_a_narrow_grant(role):
    grant = {"name": "housing-batch", "role": role, "member": "group:pricing@example.com"}
    assert rules.violations(rules.JOB_IAM[0], grant) == {}


def test_the_batch_job_on_prod_must_run_an_image_by_digest(deployed):
    job = deployed(stack_config("prod")).one(JOB, "batch-job")
    assert rules.violations(rules.RUN_JOB, job) == {}
    container = job["template"]["template"]["containers"][0]
    container["image"] = container["image"].split("@", 1)[0] + ":latest"
    assert list(rules.violations(rules.RUN_JOB, job)) == ["prod-images-by-digest"]


# -- What it costs ----------------------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_the_cost_estimate_prices_the_batch_job_by_the_rows_a_month(stack):
    """Rows a month over rows a second per task is task-seconds, whatever the task count: the
    same rows split over more tasks cost the same (the start of each task aside)."""
    result = cost_cli.price(stack, ROOT)
    config = stack_config(stack)
    usage = config.cost.jobs["housing-batch"]
    assert usage.rows_per_month, "the stack file says what it assumes"
    assert usage.rows_per_second
    (item,) = [i for i in result.estimate.items if i.resource == "Cloud Run job housing-batch"]
    cpu = estimate.quantity(config.batch.cpu)
    memory = estimate.quantity(config.batch.memory) / 2**30
    expected = pricing.cloud_run_job(
        "housing-batch",
        cpu=cpu,
        memory_gib=memory,
        task_seconds=usage.rows_per_month / usage.rows_per_second,
        usage="",
        prices=result.prices,
    )
    assert item.monthly == pytest.approx(expected.monthly, rel=1e-9)
    assert item.usage == (
        f"{pricing.count(usage.rows_per_month)} rows at {usage.rows_per_second:g}/s per task, "
        f"{cpu:g} vCPU/{memory:g} GiB"
    )
    assert 0 <= item.monthly < 1, "pricing portfolios costs cents, not dollars"


def test_the_offline_plan_shows_the_batch_job_and_its_scoped_grants(capsys):
    """What a reviewer reads in `nox -s plan -- prod`: the job's command, tasks, resources,
    timeout and retries, and each grant's condition."""
    assert plan_main(["prod"]) == 0
    out = capsys.readouterr().out
    lines = {m[1]: m[2] for m in re.finditer(r"^\+ \S+  (\S+)\n    (.*)$", out, re.M)}
    b = stack_config("prod").batch
    job = lines["batch-job"]
    assert 'name="housing-batch"' in job
    assert f"template.taskCount={b.tasks}, template.parallelism={b.parallelism}" in job
    assert 'commands=["python","-m","pipeline","batch"]' in job
    found = re.search(r"resources\.limits=(\{[^}]*\})", job)
    assert found, job
    limits = json.loads(found[1])
    assert limits == {"cpu": b.cpu, "memory": b.memory}
    assert f'template.template.timeout="{b.timeout}"' in job
    assert f"template.template.maxRetries={b.max_retries}" in job
    for grant in ("data-batch-models", "data-batch-data"):
        assert "objectListPrefix" in lines[grant], grant
    assert "export batch_job" in out


# -- What the README tells users to write -----------------------------------------------------
def test_the_readme_documents_every_batch_key_as_the_stacks_set_it():
    assert_readme_documents("batch", BatchConfig, lambda stack: stack.batch)
