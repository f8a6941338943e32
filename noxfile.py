"""Every entry point of housing-mlops is a nox session: `nox -l` lists them."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent))  # devtools: stdlib-only helpers of the sessions
from devtools import system_tools

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


def install(session: nox.Session, *groups: str, location: str = "") -> None:
    """Sync the session's venv to uv.lock with these dependency groups (a no-op when current),
    compiled to bytecode as in the images: without .pyc files every start-up compiles its imports
    (about 3 s more for the service, and this machine sets PYTHONDONTWRITEBYTECODE)."""
    if session.venv_backend not in {"uv", "virtualenv", "venv"}:
        session.error(f"unsupported venv backend {session.venv_backend}")
    if session.venv_backend != "uv":
        session.install("uv")
    args = ["uv", "sync", "--locked", "--no-default-groups", "--compile-bytecode"]
    for group in groups:
        args += ["--group", group]
    session.run_install(
        *args,
        env={"UV_PROJECT_ENVIRONMENT": location or session.virtualenv.location},
        silent=True,
        external=session.venv_backend == "uv",
    )


def offline_env(**extra: str) -> dict[str, str]:
    env = dict(OFFLINE_ENV)
    if os.environ.get("WANDB_API_KEY"):
        env.pop("WANDB_MODE")
    env.update(extra)
    return env


#: The part of the offline env that hides Google's metadata server. Sessions that run Pulumi
#: against a real project must not carry it: credentials from a metadata server (Cloud Build, a
#: VM) could not be found.
METADATA_SANDBOX = ("NO_GCE_CHECK", "GCE_METADATA_HOST", "GCE_METADATA_IP")
#: Sessions that run the Pulumi CLI against a real stack (`plan` runs under mocks, `pin` only
#: edits a stack file: both stay offline).
PULUMI_SESSIONS = frozenset(
    {"preview", "up", "destroy", "canary", "promote", "rollback", "rollout"}
)


def session_env(name: str) -> dict[str, str | None]:
    """What session `name` sets on top of the caller's environment: the offline env, except that
    the Pulumi sessions remove the metadata sandbox, even when the calling shell (a test run)
    exported it — nox drops a variable whose value is None."""
    env: dict[str, str | None] = dict(offline_env())
    if name in PULUMI_SESSIONS:
        env.update(dict.fromkeys(METADATA_SANDBOX))
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
def monitor(session: nox.Session) -> None:
    """Drift of the logged houses against each version's profile: `nox -s monitor --
    [--window 24h | --since T --until T] [--model-version N] [--dry-run]`."""
    install(session, "pipeline")
    session.run("python", "-m", "pipeline", "monitor", *session.posargs, env=offline_env())


@nox.session(python=PYTHON)
def batch(session: nox.Session) -> None:
    """Price a file of houses with a model version: `nox -s batch -- --input SRC --output DST
    [--version N | --alias A] [--tasks K] [--overwrite | --resume]`."""
    install(session, "pipeline")
    session.run("python", "-m", "pipeline", "batch", *session.posargs, env=offline_env())


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
def mlflow(session: nox.Session) -> None:
    """MLflow on 127.0.0.1:5000 over the pipeline's local store: `nox -s mlflow -- [--postgres]
    [--port N]` (--postgres: a throwaway PostgreSQL cluster, the stand-in for Cloud SQL)."""
    install(session, "mlflow")
    session.run("python", "-m", "local_platform.mlflow_server", *session.posargs, env=offline_env())


@nox.session(python=PYTHON)
def stack(session: nox.Session) -> None:
    """MLflow, a model, the service and the UI on loopback: `nox -s stack -- [--mlflow-port N]
    [--api-port N] [--ui-port N] [pipeline run options]`; Ctrl-C stops all three."""
    install(session, "pipeline", "service", "ui", "mlflow")
    session.run("python", "-m", "local_platform.stack", *session.posargs, env=offline_env())


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite: `nox -s tests -- [pytest options]`. Installs Chromium, its driver and
    the PostgreSQL server binaries with apt when they are missing and apt can run (root or
    passwordless sudo); otherwise stops at once, naming what to install."""
    env = offline_env(**ensure_system_tools(session))
    install(session, "dev")
    main_args, parity_args = split_parity(session.posargs)
    if main_args is not None:
        session.run("pytest", *main_args, env=env)
    if parity_args is not None:
        parity_tests(session, parity_args, env)


PARITY = "tests/parity"


def split_parity(posargs: list[str]) -> tuple[list[str] | None, list[str] | None]:
    """Who runs what: no arguments runs both suites; arguments naming tests/parity run it
    alone; any other arguments are the main suite's."""
    if not posargs:
        return [], [PARITY]
    if any(a.startswith(PARITY) for a in posargs):
        return None, list(posargs)
    return list(posargs), None


def parity_tests(session: nox.Session, args: list[str], env: dict[str, str]) -> None:
    """tests/parity (the monitor's decisions against Evidently's) in the parity group's own
    environment beside the session's: Evidently needs pandas 2, the project pandas 3. The main
    suite's options (which ignore tests/parity) and its conftest are left out."""
    location = str(Path(session.virtualenv.location).with_name("tests-parity"))
    install(session, "parity", location=location)
    python = str(Path(location) / "bin" / "python")
    session.run(
        python, "-m", "pytest", "-o", "addopts=-ra --strict-markers",
        f"--confcutdir={PARITY}", "-p", "no:cacheprovider", *args,
        env=env, external=True,
    )  # fmt: skip


def ensure_system_tools(session: nox.Session) -> dict[str, str]:
    """What the suite needs beyond Python, installed when it can be; the env that finds it."""
    found = system_tools.find()
    apt_ok, sudo = system_tools.can_apt()
    step = system_tools.plan(found, can_apt=apt_ok)
    if step.error:
        session.error(step.error)
    if step.install:
        session.log(f"installing {' '.join(step.install)} with apt (the suite needs them)")
        quiet = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run(*sudo, "apt-get", "update", "-qq", external=True, env=quiet)
        session.run(
            *sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *step.install,
            external=True, env=quiet,
        )  # fmt: skip
        found = system_tools.find()
        if found.missing():
            session.error(f"apt installed {' '.join(step.install)}, yet {found.missing()} missing")
    return system_tools.environment(found)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check and mypy."""
    install(session, "dev", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", *session.posargs)


PULUMI_HINT = (
    "the Pulumi CLI is not installed: install it with `curl -fsSL https://get.pulumi.com | sh` "
    "(https://www.pulumi.com/docs/install/), or use `nox -s plan` offline"
)


def _stack_args(session: nox.Session, usage: str) -> list[str]:
    if not session.posargs or session.posargs[0].startswith("-"):
        session.error(f"usage: nox -s {session.name} -- {usage}")
    return list(session.posargs)


def _infra(session: nox.Session, *args: str, needs_cli: bool) -> None:
    if needs_cli and shutil.which("pulumi") is None:
        session.error(PULUMI_HINT)
    install(session, "infra")
    session.run("python", "-m", *args, env=session_env(session.name))


#: The stack name of the local platform (`nox -s stack`): its release is
#: `$HOUSING_MLOPS_HOME/release.yaml`, applied by the running stack; no Pulumi, no cloud.
LOCAL_STACK = "local"


def _release(session: nox.Session, command: str, args: list[str], needs_cli: bool) -> None:
    """canary/promote/rollback: against `local` offline, with the service group (the fault
    spec's check, the stack's modules); against a Pulumi stack through `_infra`."""
    if args[0] == LOCAL_STACK:
        install(session, "infra", "service")
        session.run("python", "-m", "infra.cli", command, *args, env=offline_env())
    else:
        _infra(session, "infra.cli", command, *args, needs_cli=needs_cli)


@nox.session(python=PYTHON)
def plan(session: nox.Session) -> None:
    """Offline plan under Pulumi's mocks: `nox -s plan -- <stack> [--json PATH]`."""
    _infra(session, "infra.plan", *_stack_args(session, "<stack> [--json PATH]"), needs_cli=False)


@nox.session(python=PYTHON)
def cost(session: nox.Session) -> None:
    """Monthly cost from the offline plan: `nox -s cost -- <stack> [--json PATH] [--against REF]
    [--markdown]`, or `-- --all` (every stack, free tiers once); fails over cost.monthlyBudget."""
    if not session.posargs:
        session.error("usage: nox -s cost -- <stack> [--json PATH] [--against REF] | --all")
    _infra(session, "infra.cost", *session.posargs, needs_cli=False)


@nox.session(python=PYTHON)
def prices(session: nox.Session) -> None:
    """Refresh infra/prices/<region>.yaml from the Cloud Billing Catalog API (needs a network
    and CLOUD_BILLING_API_KEY): `nox -s prices -- [--region R] [--dry-run]`."""
    _infra(session, "infra.cost.billing_catalog", *session.posargs, needs_cli=False)


@nox.session(python=PYTHON)
def preview(session: nox.Session) -> None:
    """`pulumi preview` with the policy pack: `nox -s preview -- <stack>`."""
    _infra(session, "infra.cli", "preview", *_stack_args(session, "<stack>"), needs_cli=True)


@nox.session(python=PYTHON)
def up(session: nox.Session) -> None:
    """`pulumi up` with the policy pack: `nox -s up -- <stack>`."""
    _infra(session, "infra.cli", "up", *_stack_args(session, "<stack>"), needs_cli=True)


@nox.session(python=PYTHON)
def destroy(session: nox.Session) -> None:
    """`pulumi destroy`: `nox -s destroy -- <stack>`."""
    _infra(session, "infra.cli", "destroy", *_stack_args(session, "<stack>"), needs_cli=True)


@nox.session(python=PYTHON)
def canary(session: nox.Session) -> None:
    """Shift traffic to a new model: `nox -s canary -- <stack> --model-version N --percent P
    [--image REF] [--stable-revision REV] [--no-up]`; `-- local …` against `nox -s stack`
    (`--canary-faults SPEC`, `--timeout S`)."""
    args = _stack_args(session, "<stack> --model-version N --percent P [--no-up]")
    # With --no-up the CLI is needed only to read the live revision; infra.cli says so itself
    # (a first release has none to read).
    _release(session, "canary", args, needs_cli="--no-up" not in args)


@nox.session(python=PYTHON)
def promote(session: nox.Session) -> None:
    """The canary takes all traffic and becomes the stable revision: `nox -s promote -- <stack>
    [--revision REV] [--no-up]` (REV: default the stack's canary_revision output)."""
    args = _stack_args(session, "<stack> [--revision REV] [--no-up]")
    needs_cli = "--no-up" not in args or "--revision" not in args
    _release(session, "promote", args, needs_cli=needs_cli)


@nox.session(python=PYTHON)
def rollback(session: nox.Session) -> None:
    """All traffic back to the stable revision: `nox -s rollback -- <stack> [--no-up]`."""
    args = _stack_args(session, "<stack> [--no-up]")
    _release(session, "rollback", args, needs_cli="--no-up" not in args)


@nox.session(python=PYTHON, default=False)
def rollout(session: nox.Session) -> None:
    """Shadow and canary steps, each judged, rolled back or promoted on its own:
    `nox -s rollout -- <stack|local> --model-version N [--shadow DURATION] [--steps 5,25,50,100]
    [--interval DURATION] [--probe-rps 20] [--canary-faults SPEC]` (see README: Rollout)."""
    args = _stack_args(session, "<stack|local> --model-version N [--steps 5,25,50,100] …")
    # The judge, the probes and `pipeline promote` (a subprocess at the end).
    install(session, "infra", "service", "pipeline")
    if args[0] == LOCAL_STACK:
        session.run("python", "-m", "rollout", *args, env=offline_env())
        return
    if shutil.which("pulumi") is None:
        session.error(PULUMI_HINT)
    session.run("python", "-m", "rollout", *args, env=session_env(session.name))


@nox.session(python=PYTHON)
def pin(session: nox.Session) -> None:
    """Point the stack file at images by digest, without Pulumi: `nox -s pin -- <stack> --image
    PART=REF [--image PART=REF …]` (PART: mlflow, pipeline, ui, service; REF: path@sha256:…)."""
    args = _stack_args(session, "<stack> --image PART=REF …")
    _infra(session, "infra.cli", "pin", *args, needs_cli=False)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks that print figures and ratios: `nox -s bench -- pipeline|service|shadow`
    (service: wrk's load, the prediction log's cost, strace's count of system calls per request;
    shadow: what mirroring to a shadow costs the stable revision)."""
    install(session, "dev")
    targets = session.posargs or ["pipeline", "service"]
    env = offline_env()
    if {"service", "shadow"} & set(targets):
        missing = [tool for tool in ("wrk", "strace") if shutil.which(tool) is None]
        if missing:
            session.run("apt-get", "install", "-y", "-q", *missing, external=True)
        # The server runs with the service group alone, as in its image and `nox -s serve`.
        served = str(Path(session.virtualenv.location).with_name("bench-service"))
        install(session, "service", location=served)
        env["SERVICE_PYTHON"] = str(Path(served) / "bin" / "python")
    for target in targets:
        script = ROOT / "tests" / "bench" / f"{target}_bench.py"
        if not script.is_file():
            known = sorted(p.stem.removesuffix("_bench") for p in script.parent.glob("*_bench.py"))
            session.error(f"no benchmark {target!r}; choose from {', '.join(known)}")
        session.run("python", str(script), env=env)


@nox.session(python=PYTHON)
def images(session: nox.Session) -> None:
    """Build the four images, start each and check what it holds (buildah and podman where no
    Docker daemon answers, stand-ins for bases that can't be pulled): `nox -s images --
    [--no-build] [--baseline sizes.json]`."""
    install(session, "test")
    session.run("python", "-m", "devtools.images", *session.posargs, env=offline_env())
