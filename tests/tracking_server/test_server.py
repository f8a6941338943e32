"""The MLflow server's entrypoint: settings from the environment, the command it execs, and the
bounded wait for its database."""

from __future__ import annotations

import time

import pytest

from housing_platform.database_url import DatabaseUnavailableError, wait_for
from housing_platform.settings_reader import SettingsError
from tests.helpers import free_port
from tracking_server.server import command, from_env, server_env

ENV = {
    "BACKEND_STORE_URI": "postgresql+psycopg2://housing@/mlflow?host=/cloudsql/p:r:db",
    "DB_PASSWORD": "s3cr=t/pw",
    "ARTIFACTS_DESTINATION": "gs://bucket/mlflow",
    "HOST": "0.0.0.0",
    "PORT": "8080",
    "ALLOWED_HOSTS": "housing-mlflow-*.run.app",
    "MLFLOW_WORKERS": "2",
}


def test_the_command_serves_artifacts_keeps_the_host_check_and_hides_the_password():
    settings = from_env(ENV)
    args = command(settings)
    assert args[:3] == ["mlflow", "server", "--serve-artifacts"]
    assert args[args.index("--artifacts-destination") + 1] == "gs://bucket/mlflow"
    assert args[args.index("--allowed-hosts") + 1] == "housing-mlflow-*.run.app"
    assert args[args.index("--workers") + 1] == "2"
    assert args[args.index("--port") + 1] == "8080"
    assert not any("s3cr" in a for a in args), "no password in the process list"
    env = server_env(settings, ENV)
    assert "DB_PASSWORD" not in env
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith(
        "postgresql+psycopg2://housing:s3cr%3Dt%2Fpw@/"
    )
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_local_defaults_are_one_worker_on_loopback():
    settings = from_env({"BACKEND_STORE_URI": "sqlite:///x.db", "ARTIFACTS_DESTINATION": "a"})
    args = command(settings)
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--workers") + 1] == "1"
    assert "--allowed-hosts" not in args
    assert not settings.is_database


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ARTIFACTS_DESTINATION": "a"}, "BACKEND_STORE_URI is not set"),
        ({"BACKEND_STORE_URI": "sqlite:///x.db"}, "ARTIFACTS_DESTINATION is not set"),
        (ENV | {"PORT": "http"}, "PORT: expected an integer, got 'http'. Fix PORT"),
    ],
)
def test_a_wrong_variable_is_named(env, message):
    with pytest.raises(SettingsError, match=message):
        from_env(env)


def test_waiting_for_an_absent_database_is_bounded_and_hides_the_password():
    url = f"postgresql+psycopg2://housing:hunter2@127.0.0.1:{free_port()}/mlflow"
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as caught:
        wait_for(url, timeout_s=2)
    assert time.monotonic() - started < 6
    message = str(caught.value)
    assert "not reachable after" in message
    assert "hunter2" not in message
    assert "***" in message


def test_waiting_for_a_running_database_returns_at_once(postgres_server):
    assert wait_for(f"{postgres_server}/mlflow", timeout_s=5) == 1
