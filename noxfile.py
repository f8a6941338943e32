"""Every entry point of housing-mlops is a nox session: `nox -l` lists them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
PYTHON = "3.11"

#: Set in every local session before anything imports a cloud or tracking client: nothing here
#: may reach beyond loopback by accident (Google's metadata server, telemetry, W&B's cloud).
OFFLINE_ENV = {
    "NO_GCE_CHECK": "True",
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "WANDB_MODE": "offline",
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def install(session: nox.Session, *groups: str) -> None:
    """Sync the session's venv to uv.lock with these dependency groups (a no-op when current)."""
    if session.venv_backend not in {"uv", "virtualenv", "venv"}:
        session.error(f"unsupported venv backend {session.venv_backend}")
    if session.venv_backend != "uv":
        session.install("uv")
    args = ["uv", "sync", "--locked", "--no-default-groups"]
    for group in groups:
        args += ["--group", group]
    session.run_install(
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
        silent=True,
        external=session.venv_backend == "uv",
    )


def offline_env(**extra: str) -> dict[str, str]:
    env = dict(OFFLINE_ENV)
    if os.environ.get("WANDB_API_KEY"):
        env.pop("WANDB_MODE")
    env.update(extra)
    return env


@nox.session(python=PYTHON)
def pipeline(session: nox.Session) -> None:
    """Train, evaluate and register a model: `nox -s pipeline -- [run options]`."""
    install(session, "pipeline")
    args = session.posargs or ["run"]
    if args[0].startswith("-"):
        args = ["run", *args]
    session.run("python", "-m", "pipeline", *args, env=offline_env())


@nox.session(python=PYTHON)
def serve(session: nox.Session) -> None:
    """The inference service on 127.0.0.1:8080, serving the pipeline's champion."""
    install(session, "service")
    session.run("python", "-m", "service", *session.posargs, env=offline_env())


@nox.session(python=PYTHON)
def ui(session: nox.Session) -> None:
    """The Streamlit UI on 127.0.0.1:8501, calling the service at API_URL."""
    install(session, "ui")
    session.run("streamlit", "run", "ui/app.py", *session.posargs, env=offline_env())


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite: `nox -s tests -- [pytest options]`."""
    install(session, "dev")
    session.run("pytest", *session.posargs, env=offline_env())


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check and mypy."""
    install(session, "dev", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks that print figures and ratios: `nox -s bench -- pipeline`."""
    install(session, "dev")
    targets = session.posargs or ["pipeline", "service"]
    if "service" in targets and shutil.which("wrk") is None:
        session.run("apt-get", "install", "-y", "-q", "wrk", external=True)
    for target in targets:
        script = ROOT / "tests" / "bench" / f"{target}_bench.py"
        if not script.is_file():
            known = sorted(p.stem.removesuffix("_bench") for p in script.parent.glob("*_bench.py"))
            session.error(f"no benchmark {target!r}; choose from {', '.join(known)}")
        session.run("python", str(script), env=offline_env())
