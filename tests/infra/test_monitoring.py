"""Monitoring on GCP (issue 14): the service's prediction log (its settings, a write grant on
its prefix only, retention), and the ``housing-monitor`` job with its schedule and an account
that may do what the monitor does and nothing more."""

from __future__ import annotations

import re
from datetime import timedelta

import msgspec
import pytest

from infra.components.monitor import RETRAIN_PERMISSIONS, window_arg
from infra.config import ConfigError, PredictionLogConfig, StackConfig, parse
from infra.plan import main as plan_main
from infra.plan import read_stack_config, stack_file
from tests.infra.conftest import STACKS, assert_readme_documents, stack_config
from tests.infra.fake_cloud import CloudError, FakeCloud
from tests.infra.test_deployability import values

SERVICE = "gcp:cloudrunv2/service:Service"
JOB = "gcp:cloudrunv2/job:Job"
JOB_IAM = "gcp:cloudrunv2/jobIamMember:JobIamMember"
BUCKET = "gcp:storage/bucket:Bucket"
BUCKET_IAM = "gcp:storage/bucketIAMMember:BucketIAMMember"
SCHEDULER = "gcp:cloudscheduler/job:Job"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
WRITE_ROLES = {
    "roles/storage.objectCreator",
    "roles/storage.objectUser",
    "roles/storage.objectAdmin",
    "roles/storage.admin",
}
SOURCE = "gs://labelled-data/housing.csv"

_OBJECT = re.compile(
    r'^resource\.name\.startsWith\("projects/_/buckets/([^/]+)/objects/([^"]+)"\)$'
)
_LISTING = re.compile(
    r'^api\.getAttribute\("storage\.googleapis\.com/objectListPrefix", ""\)'
    r'\.startsWith\("([^"]+)"\)$'
)


def allows(expression: str, bucket: str, *, key: str = "", listing: str | None = None) -> bool:
    """What GCS's IAM would decide for an object ``key`` (or a listing of ``listing``) under the
    condition: a disjunction of the two prefix tests the program writes, and nothing else."""
    for clause in expression.split(" || "):
        if found := _OBJECT.match(clause):
            if listing is None and found[1] == bucket and key.startswith(found[2]):
                return True
        elif found := _LISTING.match(clause):
            if listing is not None and listing.startswith(found[1]):
                return True
        else:
            raise AssertionError(f"a clause the test can't read: {clause!r}")
    return False


def envs(inputs: dict) -> dict[str, str]:
    template = inputs["template"]
    containers = template.get("containers") or template["template"]["containers"]
    return {e["name"]: e.get("value", "[secret]") for e in containers[0].get("envs", [])}


def member(name: str, config: StackConfig) -> str:
    return f"serviceAccount:housing-{name}@{config.project}.iam.gserviceaccount.com"


def with_monitoring(config: StackConfig, **changes) -> StackConfig:
    monitoring = msgspec.structs.replace(config.monitoring, **changes)
    return msgspec.structs.replace(config, monitoring=monitoring)


def grants_of(d, who: str) -> list[dict]:
    return [r.inputs for r in d.of_type(BUCKET_IAM) if r.inputs["member"] == who]


# -- The service's prediction log --------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_the_api_may_write_only_under_the_prediction_log(stack, deployed):
    config = stack_config(stack)
    d = deployed(config)
    (bucket,) = d.of_type(BUCKET)
    # A bucket grant can carry an IAM condition only with uniform bucket-level access.
    assert bucket.inputs["uniformBucketLevelAccess"] is True
    writes = [g for g in grants_of(d, member("api", config)) if g["role"] in WRITE_ROLES]
    (write,) = writes
    assert write["role"] == "roles/storage.objectCreator", "create only: names are unique"
    expression = write["condition"]["expression"]
    day = (
        "artifacts/predictions/date=2026-11-30/model_version=3/housing-api-m3-x/i/00000001.parquet"
    )
    assert allows(expression, "data-bucket", key=day)
    for elsewhere in (
        "artifacts/models/housing-price/3/model.onnx",
        "artifacts/data/train.parquet",
        "artifacts/predictionsX/a.parquet",
        "mlflow/1/model.pkl",
    ):
        assert not allows(expression, "data-bucket", key=elsewhere), elsewhere
    assert not allows(expression, "other-bucket", key=day)
    assert "data-api-predictions" in d.mocks.waits_for("api-service")


@pytest.mark.parametrize("stack", STACKS)
def test_the_service_is_told_where_and_how_to_log(stack, deployed):
    config = stack_config(stack)
    log = config.prediction_log
    env = envs(next(r.inputs for r in deployed(config).of_type(SERVICE) if r.name == "api-service"))
    assert env["ARTIFACT_URI"] == "gs://data-bucket/artifacts"
    assert env["PREDICTION_LOG"] == "true"
    assert env["PREDICTION_LOG_BATCH_ROWS"] == str(log.batch_rows)
    assert float(env["PREDICTION_LOG_INTERVAL_SECONDS"]) == log.interval_seconds
    assert env["PREDICTION_LOG_CAPACITY_ROWS"] == str(log.capacity_rows)
    assert "K_REVISION" not in env, "Cloud Run sets it"


def test_the_prediction_log_can_be_turned_off_in_stack_config(deployed):
    raw = values("dev") | {"housing-mlops:predictionLog": {"enabled": False, "batchRows": 50}}
    config = msgspec.structs.replace(
        stack_config("dev"), prediction_log=parse(raw, "dev").prediction_log
    )
    env = envs(next(r.inputs for r in deployed(config).of_type(SERVICE) if r.name == "api-service"))
    assert (env["PREDICTION_LOG"], env["PREDICTION_LOG_BATCH_ROWS"]) == ("false", "50")


@pytest.mark.parametrize("stack", STACKS)
def test_the_service_runs_on_the_second_generation_environment(stack, deployed):
    # gVisor (gen1) makes the service's system calls dear: 0.33 of the bare app's throughput.
    d = deployed(stack_config(stack))
    api = next(r.inputs for r in d.of_type(SERVICE) if r.name == "api-service")
    assert api["template"]["executionEnvironment"] == "EXECUTION_ENVIRONMENT_GEN2"


# -- Retention ---------------------------------------------------------------------------------
@pytest.mark.parametrize("days", [7, 400])
def test_the_prediction_log_is_deleted_after_the_configured_days(days, deployed):
    config = with_monitoring(stack_config("dev"), prediction_retention_days=days)
    (bucket,) = deployed(config).of_type(BUCKET)
    rules = [r["condition"] for r in bucket.inputs["lifecycleRules"]]
    expiring = [c for c in rules if "age" in c]
    assert expiring == [
        {"age": days, "matchesPrefixes": ["artifacts/predictions/"], "withState": "LIVE"}
    ]
    # An expired object of a versioned bucket becomes a noncurrent version: gone a day later.
    assert {
        "daysSinceNoncurrentTime": 1,
        "matchesPrefixes": ["artifacts/predictions/"],
        "withState": "ARCHIVED",
    } in rules
    # Nothing else in the bucket expires by age.
    assert all(c.get("matchesPrefixes") == ["artifacts/predictions/"] for c in expiring)


@pytest.mark.parametrize(
    ("monitoring", "message"),
    [
        (
            {"predictionRetentionDays": 0},
            r"^housing-mlops:monitoring.predictionRetentionDays: Expected `int` >= 1",
        ),
        (
            {"predictionRetentionDays": 1, "windowHours": 24, "consecutive": 3},
            r"^housing-mlops:monitoring.predictionRetentionDays is 1: the monitor reads 3 "
            r"windows of 24 h .*keep at least 3 days",
        ),
        ({"schedule": "hourly"}, r"^housing-mlops:monitoring.schedule 'hourly' is not a 5-field"),
        (
            {"retrainSource": "data/labelled.csv"},
            r"^housing-mlops:monitoring.retrainSource 'data/labelled.csv' must be a gs:// or",
        ),
        ({"maxMape": 0}, r"^housing-mlops:monitoring.maxMape: Expected `float` > 0"),
    ],
)
def test_a_wrong_monitoring_setting_names_its_key(monitoring, message):
    with pytest.raises(ConfigError, match=message):
        parse(values("dev") | {"housing-mlops:monitoring": monitoring}, "dev")


# -- The monitor job ---------------------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_the_monitor_job_runs_the_pipeline_image_on_its_schedule(stack, deployed):
    config = stack_config(stack)
    m = config.monitoring
    d = deployed(config)
    job = d.one(JOB, "monitor-job")
    assert job["name"] == "housing-monitor"
    task = job["template"]["template"]
    (container,) = task["containers"]
    assert container["image"] == config.images.pipeline
    assert container["args"] == ["monitor", "--window", f"{m.window_hours:g}h"]
    assert task["serviceAccount"] == f"housing-monitor@{config.project}.iam.gserviceaccount.com"
    assert job["labels"] == {"environment": "prod" if config.production else "dev"}
    env = envs(job)
    assert env["ARTIFACT_URI"] == "gs://data-bucket/artifacts"
    assert env["MLFLOW_TRACKING_URI"] == env["MLFLOW_TRACKING_AUDIENCE"]
    assert env["MLFLOW_TRACKING_URI"].startswith("https://housing-mlflow-")
    assert env["MONITOR_CONSECUTIVE"] == str(m.consecutive)
    assert float(env["MONITOR_MAX_MAPE"]) == m.max_mape
    # No database: the monitor reads MLflow over HTTP, never Cloud SQL.
    assert "DB_PASSWORD" not in env
    assert not task.get("volumes")

    (schedule,) = [s.inputs for s in d.of_type(SCHEDULER) if "housing-monitor" in str(s.inputs)]
    assert schedule["schedule"] == m.schedule
    target = schedule["httpTarget"]
    assert target["uri"] == (
        f"https://run.googleapis.com/v2/projects/{config.project}/locations/{config.region}"
        "/jobs/housing-monitor:run"
    )
    assert target["oauthToken"]["serviceAccountEmail"] == task["serviceAccount"]
    (runs,) = [r for r in d.of_type(JOB_IAM) if r.inputs["name"] == "housing-monitor"]
    assert (runs.inputs["role"], runs.inputs["member"]) == (
        "roles/run.invoker",
        member("monitor", config),
    )
    assert "monitor-scheduler" in d.mocks.waits_for("monitor-schedule")


def hours_between_runs(cron: str) -> float:
    """Hours between runs of the committed stacks' crons (a fixed hour, or every N hours)."""
    minute, hour, *rest = cron.split()
    assert minute.isdigit(), cron
    assert rest == ["*", "*", "*"], cron
    return float(hour.removeprefix("*/")) if hour.startswith("*/") else 24.0


@pytest.mark.parametrize("stack", STACKS)
def test_each_run_reads_the_window_since_the_run_before(stack):
    m = stack_config(stack).monitoring
    assert hours_between_runs(m.schedule) == m.window_hours, "a gap, or windows read twice"


@pytest.mark.parametrize(("hours", "arg"), [(24, "24h"), (6.0, "6h"), (1.5, "90m")])
def test_the_window_is_passed_as_the_monitor_spells_it(hours, arg):
    assert window_arg(hours) == arg


def test_prod_watches_more_often_than_dev():
    dev, prod = stack_config("dev").monitoring, stack_config("prod").monitoring
    assert prod.window_hours < dev.window_hours


@pytest.mark.parametrize("stack", STACKS)
def test_the_monitor_reads_and_writes_only_its_prefixes(stack, deployed):
    config = stack_config(stack)
    d = deployed(config)
    grants = {g["role"]: g for g in grants_of(d, member("monitor", config))}
    assert set(grants) == {"roles/storage.objectViewer", "roles/storage.objectUser"}
    assert all(g.get("condition") for g in grants.values()), "no grant on the whole bucket"
    read = grants["roles/storage.objectViewer"]["condition"]["expression"]
    write = grants["roles/storage.objectUser"]["condition"]["expression"]

    def can_read(key: str) -> bool:
        return allows(read, "data-bucket", key=key) or allows(write, "data-bucket", key=key)

    for key in (
        "artifacts/predictions/date=2026-11-30/model_version=3/r/i/00000001.parquet",
        "artifacts/feedback/2026-11-30.parquet",
        "artifacts/models/housing-price/3/manifest.json",
        "artifacts/reports/feature_importance.csv",
    ):
        assert can_read(key), key
    for listed in ("artifacts/predictions/date=2026-11-30/", "artifacts/feedback/"):
        assert allows(read, "data-bucket", listing=listed) or allows(
            write, "data-bucket", listing=listed
        )
    for key in (
        "artifacts/predictions/date=2026-11-30/model_version=3/compacted.parquet",
        "artifacts/monitor/trigger.json",
        "artifacts/reports/monitor/2026-11-30T04.json",
    ):
        assert allows(write, "data-bucket", key=key), key
    for key in (
        "artifacts/models/housing-price/3/model.onnx",
        "artifacts/feedback/2026-11-30.parquet",
        "artifacts/reports/evaluate.json",
        "artifacts/decisions/register.json",
        "mlflow/1/model.pkl",
    ):
        assert not allows(write, "data-bucket", key=key), f"may overwrite {key}"
    assert not can_read("mlflow/1/model.pkl")
    assert not can_read("artifacts/data/train.parquet"), "the profile in the export suffices"
    assert not allows(read, "data-bucket", listing="")
    waits = d.mocks.waits_for("monitor-job")
    assert {"data-monitor-reads", "data-monitor-writes", "tracking-invoker-monitor"} <= waits


@pytest.mark.parametrize("stack", STACKS)
def test_without_a_retrain_source_the_monitor_gets_no_right_to_retrain(stack, deployed):
    config = stack_config(stack)
    assert config.monitoring.retrain_source == "", "the committed stacks only report"
    d = deployed(config)
    assert d.of_type(CUSTOM_ROLE) == []
    pipeline_grants = [
        r.inputs for r in d.of_type(JOB_IAM) if r.inputs["name"] != "housing-monitor"
    ]
    assert member("monitor", config) not in {g["member"] for g in pipeline_grants}
    env = envs(d.one(JOB, "monitor-job"))
    assert "MONITOR_PIPELINE_JOB" not in env
    assert "MONITOR_RETRAIN_SOURCE" not in env


@pytest.mark.parametrize("stack", STACKS)
def test_a_retrain_source_lets_the_monitor_run_the_pipeline_job_with_overrides(stack, deployed):
    config = with_monitoring(stack_config(stack), retrain_source=SOURCE)
    d = deployed(config)
    (role,) = d.of_type(CUSTOM_ROLE)
    # What CloudRunStarter calls: jobs:run with overrides, and the job's executions (running?).
    assert set(role.inputs["permissions"]) == {
        "run.jobs.run",
        "run.jobs.runWithOverrides",
        "run.executions.list",
        "run.executions.get",
    }
    assert "run.jobs.runWithOverrides" in role.inputs["permissions"]
    assert not any(
        p.startswith(("run.jobs.update", "run.jobs.delete", "iam.")) for p in RETRAIN_PERMISSIONS
    )
    granted = [
        r.inputs
        for r in d.of_type(JOB_IAM)
        if r.inputs["member"] == member("monitor", config) and r.inputs["name"] != "housing-monitor"
    ]
    (grant,) = granted
    assert grant["name"] == "housing-pipeline"
    assert (grant["project"], grant["location"]) == (config.project, config.region)
    assert re.fullmatch(
        rf"projects/{config.project}/roles/housingMonitorRetrain_[a-z0-9]{{6}}", grant["role"]
    )
    env = envs(d.one(JOB, "monitor-job"))
    assert env["MONITOR_RETRAIN_SOURCE"] == SOURCE
    assert env["MONITOR_PIPELINE_JOB"] == (
        f"projects/{config.project}/locations/{config.region}/jobs/housing-pipeline"
    )
    assert {"monitor-starts-retrain", "monitor-retrain-role", "jobs-pipeline"} <= (
        d.mocks.waits_for("monitor-job")
    )


def test_a_disabled_monitor_declares_nothing_and_grants_nothing(deployed):
    config = with_monitoring(stack_config("dev"), enabled=False)
    d = deployed(config)
    assert "housing-monitor" not in {r.inputs["name"] for r in d.of_type(JOB)}
    assert all("housing-monitor" not in str(s.inputs) for s in d.of_type(SCHEDULER))
    assert grants_of(d, member("monitor", config)) == []
    invokers = [r for r in d.mocks.resources if r.inputs.get("member") == member("monitor", config)]
    assert invokers == []


def with_retrain(stack: str) -> StackConfig:
    return with_monitoring(
        read_stack_config(stack_file(stack), full_stack=True), retrain_source=SOURCE
    )


def test_dev_with_a_retrain_role_can_be_destroyed_and_created_again_at_once():
    cloud = FakeCloud()
    cloud.up(with_retrain("dev"))
    (first,) = cloud.roles
    cloud.destroy()
    cloud.advance(timedelta(hours=1))
    cloud.up(with_retrain("dev"))
    assert cloud.roles != {first}


def test_the_fake_refuses_a_custom_role_id_deleted_less_than_37_days_ago():
    """What a fixed role id meets: the same id again after a destroy is refused."""
    cloud = FakeCloud()
    cloud.up(with_retrain("dev"))
    kept = dict(cloud.randoms)
    cloud.destroy()
    cloud.randoms = kept  # as if the suffix were fixed
    cloud.advance(timedelta(days=10))
    with pytest.raises(CloudError, match="marked for deletion"):
        cloud.up(with_retrain("dev"))
    cloud.advance(timedelta(days=28))
    cloud.up(with_retrain("dev"))


@pytest.mark.parametrize("stack", STACKS)
def test_ci_can_deploy_the_monitor(stack, deployed):
    """Deploying a job and a schedule that run as housing-monitor is acting as it; creating the
    retrain role needs IAM's role admin."""
    config = with_monitoring(stack_config(stack), retrain_source=SOURCE)
    d = deployed(config)
    ci = member("ci", config)
    acts_as = {
        r.inputs["serviceAccountId"].rsplit("/", 1)[-1]
        for r in d.of_type("gcp:serviceaccount/iAMMember:IAMMember")
        if r.inputs["member"] == ci and r.inputs["role"] == "roles/iam.serviceAccountUser"
    }
    assert f"housing-monitor@{config.project}.iam.gserviceaccount.com" in acts_as
    roles = {
        r.inputs["role"]
        for r in d.of_type("gcp:projects/iAMMember:IAMMember")
        if r.inputs["member"] == ci
    }
    assert {"roles/iam.roleAdmin", "roles/cloudscheduler.admin", "roles/run.admin"} <= roles


def test_the_offline_plan_shows_the_monitor_and_the_scoped_grants(capsys):
    """What a reviewer reads in `nox -s plan -- dev`: the job, its schedule, each grant's
    condition and the log's retention, and the service's execution environment."""
    assert plan_main(["dev"]) == 0
    out = capsys.readouterr().out
    lines = {m[1]: m[2] for m in re.finditer(r"^\+ \S+  (\S+)\n    (.*)$", out, re.M)}
    assert 'name="housing-monitor"' in lines["monitor-job"]
    assert 'args=["monitor","--window","24h"]' in lines["monitor-job"]
    assert 'schedule="30 4 * * *"' in lines["monitor-schedule"]
    for grant in ("data-api-predictions", "data-monitor-reads", "data-monitor-writes"):
        assert "objectListPrefix" in lines[grant], grant
    assert '"matchesPrefixes":["artifacts/predictions/"]' in lines["data-bucket"]
    assert 'executionEnvironment="EXECUTION_ENVIRONMENT_GEN2"' in lines["api-service"]


def test_the_readme_documents_every_prediction_log_key_as_the_stacks_set_it():
    assert_readme_documents(
        "predictionLog", PredictionLogConfig, lambda stack: stack.prediction_log
    )
