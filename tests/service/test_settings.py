import pytest

from housing_platform.settings_reader import SettingsError
from service.settings import from_env


def test_defaults_serve_the_local_champion(tmp_path):
    s = from_env({"HOUSING_MLOPS_HOME": str(tmp_path)})
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.model_uri == "models:/housing-price@champion"
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert s.fallback == str(tmp_path / "artifacts/models/housing-price/champion")
    assert s.cors_origins == ()


def test_cors_allow_list_never_star():
    assert from_env({"CORS_ORIGINS": "https://a.example, https://b.example"}).cors_origins == (
        "https://a.example",
        "https://b.example",
    )
    with pytest.raises(SettingsError, match="CORS_ORIGINS"):
        from_env({"CORS_ORIGINS": "*"})


def test_bad_values_name_the_variable():
    with pytest.raises(SettingsError, match=r"^PORT: expected an integer, got 'eighty'\. Fix PORT"):
        from_env({"PORT": "eighty"})
    with pytest.raises(SettingsError, match=r"^MAX_INSTANCES: expected an integer >= 1, got '0'"):
        from_env({"MAX_INSTANCES": "0"})


def test_flags_win_over_their_variables():
    s = from_env({"HOST": "0.0.0.0", "PORT": "8080"}, host="127.0.0.2", port=9000)
    assert (s.host, s.port) == ("127.0.0.2", 9000)


def test_the_prediction_log_is_on_by_default_and_writes_under_the_homes_artifacts(tmp_path):
    s = from_env({"HOUSING_MLOPS_HOME": str(tmp_path)})
    assert s.prediction_log is True
    assert s.store_uri == str(tmp_path / "artifacts")
    assert s.revision_name == "local"


def test_the_prediction_log_reads_its_variables_and_cloud_runs_revision():
    s = from_env(
        {
            "ARTIFACT_URI": "gs://bucket/artifacts",
            "PREDICTION_LOG": "false",
            "PREDICTION_LOG_BATCH_ROWS": "50",
            "PREDICTION_LOG_INTERVAL_SECONDS": "2.5",
            "PREDICTION_LOG_CAPACITY_ROWS": "500",
            "PREDICTION_LOG_FLUSH_SECONDS": "1",
            "K_REVISION": "housing-api-00012-abc",
        }
    )
    assert s.store_uri == "gs://bucket/artifacts"
    assert s.prediction_log is False
    assert (s.prediction_log_batch_rows, s.prediction_log_capacity_rows) == (50, 500)
    assert (s.prediction_log_interval_seconds, s.prediction_log_flush_seconds) == (2.5, 1.0)
    assert s.revision_name == "housing-api-00012-abc"
    with pytest.raises(
        SettingsError, match=r"^PREDICTION_LOG: expected true or false, got 'maybe'"
    ):
        from_env({"PREDICTION_LOG": "maybe"})
    with pytest.raises(SettingsError, match=r"^PREDICTION_LOG_CAPACITY_ROWS: expected at least"):
        from_env({"PREDICTION_LOG_BATCH_ROWS": "100", "PREDICTION_LOG_CAPACITY_ROWS": "10"})


def test_the_drain_and_the_final_flush_fit_cloud_runs_ten_seconds():
    """Cloud Run kills the process 10 s after SIGTERM: the default drain, the log's final flush
    and uvicorn's own steps fit in them, and a drain that leaves no room is refused at start."""
    s = from_env({})
    assert s.shutdown_seconds <= s.shutdown_grace_seconds == 10
    assert from_env({"DRAIN_SECONDS": "8"}).drain_seconds == 8  # what the Cloud Run revision sets
    with pytest.raises(SettingsError) as refused:
        from_env({"DRAIN_SECONDS": "20"})
    assert str(refused.value) == (
        "DRAIN_SECONDS: expected at most 8, so that the drain, the prediction log's final flush "
        "(PREDICTION_LOG_FLUSH_SECONDS=1.5) and uvicorn's own 0.5 s fit in the 10 s the platform "
        "allows after SIGTERM (SHUTDOWN_GRACE_SECONDS; Cloud Run allows 10), got '20'. Fix "
        "DRAIN_SECONDS in the environment, or unset it for the default (8)."
    )
    with pytest.raises(SettingsError, match=r"^DRAIN_SECONDS: expected at most 6, "):
        from_env({"PREDICTION_LOG_FLUSH_SECONDS": "3", "DRAIN_SECONDS": "8"})
    # Without the log, the drain has the whole budget but uvicorn's part.
    assert from_env({"PREDICTION_LOG": "false", "DRAIN_SECONDS": "9"}).drain_seconds == 9
    # A platform that waits longer (Kubernetes' terminationGracePeriodSeconds) says so.
    assert from_env({"SHUTDOWN_GRACE_SECONDS": "130", "DRAIN_SECONDS": "120"}).drain_seconds == 120
