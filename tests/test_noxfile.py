"""noxfile.py: the environment each session hands its command. The file is loaded with a stand-in
for nox (the test venv doesn't carry nox) and its sessions are called with a session that records
what they run, so these tests see exactly what `nox -s up` would pass on."""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any
from unittest import mock

import pytest

from tests.test_project import ROOT

#: What hides Google's metadata server (tests/conftest.py exports the same).
SANDBOX = ("NO_GCE_CHECK", "GCE_METADATA_HOST", "GCE_METADATA_IP")
PULUMI_SESSIONS = {
    "preview": ["dev"],
    "up": ["dev"],
    "destroy": ["dev"],
    "canary": ["dev", "--model-version", "2", "--percent", "10"],
    "promote": ["dev"],
    "rollback": ["dev"],
}
OFFLINE_SESSIONS = {
    "plan": ["dev"],
    "pin": ["dev", "--image", "ui=r/ui@sha256:" + "0" * 64],
    "pipeline": ["report"],
    "monitor": ["--window", "24h", "--dry-run"],
}


class RecordingSession:
    """Stands in for nox.Session: keeps every command and the env it was given."""

    venv_backend = "uv"

    def __init__(self, name: str, posargs: list[str]):
        self.name = name
        self.posargs = posargs
        self.virtualenv = types.SimpleNamespace(location="/nonexistent/venv")
        self.runs: list[tuple[tuple[str, ...], dict[str, str | None]]] = []

    def run_install(self, *args: str, **kwargs: Any) -> None:
        pass

    def run(self, *args: str, env: dict[str, str | None] | None = None, **kwargs: Any) -> None:
        self.runs.append((args, dict(env or {})))

    def error(self, message: str) -> None:
        raise SystemExit(message)


def _session_decorator(*args: Any, **kwargs: Any) -> Any:
    if args and callable(args[0]):
        return args[0]
    return lambda function: function


@pytest.fixture(scope="module")
def noxfile() -> Any:
    fake = types.ModuleType("nox")
    fake.session = _session_decorator  # type: ignore[attr-defined]
    fake.Session = RecordingSession  # type: ignore[attr-defined]
    fake.options = types.SimpleNamespace()  # type: ignore[attr-defined]
    fake.__getattr__ = lambda name: mock.MagicMock(name=f"nox.{name}")  # type: ignore[method-assign]
    saved = sys.modules.get("nox")
    sys.modules["nox"] = fake
    try:
        spec = importlib.util.spec_from_file_location("noxfile_under_test", ROOT / "noxfile.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            sys.modules.pop("nox", None)
        else:
            sys.modules["nox"] = saved
    return module


def run_session(noxfile: Any, name: str, posargs: list[str]) -> dict[str, str | None]:
    """Call session `name` as `nox -s name -- posargs` would; the env of its (one) command."""
    session = RecordingSession(name, posargs)
    with mock.patch.object(noxfile.shutil, "which", return_value="/usr/local/bin/pulumi"):
        getattr(noxfile, name)(session)
    (_, env), *more = session.runs
    assert not more, f"{name} ran more than one command: {session.runs}"
    return env


@pytest.mark.parametrize("name", sorted(PULUMI_SESSIONS))
def test_pulumi_sessions_remove_the_metadata_sandbox(noxfile, name):
    """Credentials from a metadata server (Cloud Build, a VM) must be found: the variables are
    removed (None: nox drops them), not merely left unset, so a shell that exported them for a
    test run doesn't pass them on either."""
    env = run_session(noxfile, name, PULUMI_SESSIONS[name])
    assert {key: env.get(key, "missing") for key in SANDBOX} == dict.fromkeys(SANDBOX)
    assert env["DO_NOT_TRACK"] == "1", "telemetry stays off"
    assert noxfile.session_env(name) == env


@pytest.mark.parametrize("name", sorted(OFFLINE_SESSIONS))
def test_offline_sessions_keep_the_metadata_server_out_of_reach(noxfile, name):
    env = run_session(noxfile, name, OFFLINE_SESSIONS[name])
    assert env["GCE_METADATA_HOST"] == env["GCE_METADATA_IP"] == "127.0.0.1:9"
    assert env["NO_GCE_CHECK"] == "True"


@pytest.mark.parametrize("name", ["plan", "pin", "pipeline", "tests", "serve", "stack"])
def test_session_env_is_offline_for_everything_but_pulumi(noxfile, name):
    assert noxfile.session_env(name)["GCE_METADATA_HOST"] == "127.0.0.1:9"


def test_pin_and_a_promote_given_its_revision_need_no_pulumi_cli(noxfile):
    for name, posargs in {
        "pin": OFFLINE_SESSIONS["pin"],
        "promote": ["prod", "--revision", "housing-api-m7-0a1b2c3d", "--no-up"],
    }.items():
        session = RecordingSession(name, posargs)
        with mock.patch.object(noxfile.shutil, "which", return_value=None):
            getattr(noxfile, name)(session)
        assert session.runs[0][0] == ("python", "-m", "infra.cli", name, *posargs)
    without_revision = RecordingSession("promote", ["prod", "--no-up"])  # reads canary_revision
    with (
        mock.patch.object(noxfile.shutil, "which", return_value=None),
        pytest.raises(SystemExit, match="Pulumi CLI is not installed"),
    ):
        noxfile.promote(without_revision)


def test_monitor_runs_the_pipelines_monitor_command_with_its_options(noxfile):
    session = RecordingSession("monitor", ["--window", "6h", "--model-version", "3"])
    noxfile.monitor(session)
    ((args, _),) = session.runs
    assert args == ("python", "-m", "pipeline", "monitor", "--window", "6h", "--model-version", "3")


def test_the_tests_session_runs_the_parity_suite_in_its_own_environment(noxfile):
    """Evidently needs pandas 2: tests/parity runs with the parity group's python, apart from
    the main suite (whose options ignore tests/parity) and its conftest."""
    session = RecordingSession("tests", [])
    installed: list[dict[str, str]] = []
    session.run_install = lambda *a, env=None, **k: installed.append(env)  # type: ignore[method-assign]
    with mock.patch.object(noxfile, "ensure_system_tools", return_value={}):
        noxfile.tests(session)
    (main_args, _), (parity_args, parity_env) = session.runs
    assert main_args == ("pytest",)
    assert parity_args[0] == "/nonexistent/tests-parity/bin/python"
    assert "--confcutdir=tests/parity" in parity_args
    assert parity_args[-1] == "tests/parity"
    assert {"UV_PROJECT_ENVIRONMENT": "/nonexistent/tests-parity"} in installed
    assert parity_env["GCE_METADATA_HOST"] == "127.0.0.1:9"


@pytest.mark.parametrize(
    ("posargs", "main", "parity"),
    [
        ([], [], ["tests/parity"]),
        (["-x", "tests/pipeline"], ["-x", "tests/pipeline"], None),
        (["tests/parity", "-k", "psi"], None, ["tests/parity", "-k", "psi"]),
    ],
)
def test_tests_session_arguments_choose_the_suite(noxfile, posargs, main, parity):
    assert noxfile.split_parity(posargs) == (main, parity)
