"""Build the four images, start each and check what it holds: ``nox -s images``.

Builds with Docker where a daemon answers, else with Debian's buildah (``--format docker``, so
``HEALTHCHECK`` survives) and runs with podman, installing them with apt when they are missing and
apt can be run. A base image that is neither present nor pullable gets a local stand-in, passed to
the Dockerfiles as ``BASE_IMAGE`` / ``UV_IMAGE``:

- ``python:3.11.x-slim-<suite>``: a Debian root file system made by mmdebstrap from Debian's own
  packages (python3 of the same minor version, ca-certificates, ``python`` on /usr/local/bin);
- ``ghcr.io/astral-sh/uv:<version>``: a scratch image holding the ``uv`` binary of uv's wheel of
  that version on PyPI.

Package downloads inside a build verify with this machine's CA bundle, given as the build secret
``ca_bundle`` (mounted, never stored in a layer); a uv cache mount keeps rebuilds fast.

Then each image is started as its non-root user, every container on the host network bound to
127.0.0.1: the pipeline trains a small model into a mounted home, the service serves it (and again
with its fast form removed, so it must fall back to scikit-learn), the UI answers its health check
and prices a house in Chromium through the service container, MLflow answers on SQLite; inside
each image, what it must import imports and what it must not hold is absent. Last, a table of the
images' sizes.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import gzip
import json
import os
import platform
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools import system_tools
from devtools.browser import chromium, open_pages, price_for_the_form
from model_runtime.contract import EXAMPLE_HOUSE

ROOT = Path(__file__).resolve().parents[1]
#: The project's packages (the wheel's), whose modules an image may copy.
PACKAGES = (
    "pipeline",
    "service",
    "ui",
    "infra",
    "model_runtime",
    "housing_platform",
    "local_platform",
    "tracking_server",
    "batch_prediction",
    "rollout",
)
#: The images' user (``useradd --uid 10001 app`` in every Dockerfile).
APP_UID = 10001
#: Where the checks mount a pipeline home inside the containers.
HOME_IN_CONTAINER = "/home/app/housing-mlops"
STANDIN_REPOSITORY = "localhost/housing-standin"
#: The build secret carrying the CA bundle (the Dockerfiles mount it at /run/secrets/ca_bundle).
CA_SECRET = "ca_bundle"
#: Debian suite → its python3 minor version: a stand-in must match the base's.
DEBIAN_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}
DEBIAN_MIRROR = "http://deb.debian.org/debian"
#: What the builds and runs need from apt when no Docker daemon answers.
PODMAN_PACKAGES = {"buildah": "buildah", "podman": "podman", "runc": "runc"}
#: Settings every container gets, as every local session does: nothing leaves the machine.
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
#: A pipeline run of about a minute: one family, two folds, two tuning trials.
QUICK_CONFIG = """\
[impute]
methods = ["knn", "median"]
[features]
cluster_candidates = [8]
cv_folds = 2
[select]
families = ["hist_gradient_boosting"]
cv_folds = 2
[tune]
n_trials = 2
cv_folds = 2
[evaluate]
permutation_repeats = 1
"""
#: Rows of the packaged data set the check trains on, as the integration tests do.
SAMPLE_ROWS = 3000


class CheckError(RuntimeError):
    """A build or a check failed; the message says which and why."""


@dataclass(frozen=True)
class ImageSpec:
    """One image: its Dockerfile, and what it must and must not hold."""

    name: str
    dockerfile: str
    group: str
    roots: tuple[str, ...]
    """The modules it runs, and those loaded by name at run time: every project module they
    import (at any depth) must be copied into the image."""
    imports: tuple[str, ...]
    """Modules that must import inside the image, as its user."""
    absent: tuple[str, ...]
    """Modules (packages of other parts, or libraries) that must not be in the image."""
    plugin: bool = False
    """Whether MLflow is there to load the project's ID-token plugin (an entry point)."""
    token: bool = False
    """Whether it mints Google ID tokens (the plugin, or the UI's client with API_AUDIENCE)."""

    @property
    def tag(self) -> str:
        return f"localhost/housing-{self.name}:latest"


IMAGES = (
    ImageSpec(
        name="pipeline",
        dockerfile="pipeline/Dockerfile",
        group="pipeline",
        roots=("pipeline.__main__", "pipeline.steps", "housing_platform.id_token"),
        imports=(
            "pipeline.cli",
            "batch_prediction.cli",
            "pipeline.orchestrator",
            "pipeline.model_registry",
            "pipeline.onnx_translation",
            "pipeline.onnx_graph",
            "pipeline.onnx_reference",
            "pipeline.steps.tune",
            "mlflow",
            "optuna",
            "wandb",
            "onnx",
            "onnxruntime",
            "sklearn",
            "pyarrow",
            "git",
        ),
        # service: only the modules batch prediction shares with it (house checks, predictor).
        absent=("service.app", "ui", "infra", "litestar", "streamlit", "pulumi"),
        plugin=True,
        token=True,
    ),
    ImageSpec(
        name="mlflow",
        dockerfile="tracking_server/Dockerfile",
        group="mlflow",
        roots=("tracking_server.__main__", "housing_platform.id_token"),
        imports=("tracking_server.server", "mlflow.server", "psycopg2", "google.auth", "git"),
        absent=(
            "pipeline",
            "model_runtime",
            "service",
            "ui",
            "infra",
            "litestar",
            "streamlit",
            "pulumi",
            "optuna",
            "wandb",
        ),
        plugin=True,
    ),
    ImageSpec(
        name="service",
        dockerfile="service/Dockerfile",
        # The scikit-learn fallback unpickles (skops) the custom transformers by name, and the
        # installed project registers housing_platform.id_token as MLflow's header plugin.
        group="service",
        roots=(
            "service.__main__",
            "model_runtime.transformers",
            "pipeline.transformers",
            "housing_platform.id_token",
        ),
        imports=(
            "service.app",
            "model_runtime.transformers",
            "model_runtime.onnx_runtime",
            "pipeline.transformers",
            "skops.io",
            "sklearn",
            "onnxruntime",
            "mlflow.sklearn",
            "pyarrow.parquet",
            "git",
        ),
        absent=(
            "pipeline.onnx_translation",
            "pipeline.onnx_graph",
            "pipeline.onnx_reference",
            "pipeline.steps",
            "ui",
            "infra",
            "streamlit",
            "pulumi",
            "optuna",
            "wandb",
        ),
        plugin=True,
        token=True,
    ),
    ImageSpec(
        name="ui",
        dockerfile="ui/Dockerfile",
        group="ui",
        roots=("ui.app",),
        imports=(
            "ui.client",
            "ui.batch",
            "ui.messages",
            "ui.settings",
            "model_runtime.contract",
            "housing_platform.id_token",
            "google.auth.transport.requests",
            "google.oauth2.id_token",
            "streamlit",
            "httpx",
            "pandas",
        ),
        absent=(
            "sklearn",
            "scipy",
            "mlflow",
            "onnxruntime",
            "pipeline",
            "service",
            "infra",
            "pulumi",
        ),
        token=True,
    ),
)


# --- Reading the Dockerfiles ------------------------------------------------------------------


def base_args(dockerfile_text: str) -> dict[str, str]:
    """The ``ARG NAME=default`` lines before the first ``FROM``: the bases a build can swap."""
    args: dict[str, str] = {}
    for line in dockerfile_text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "FROM":
            break
        if words[0].upper() == "ARG" and "=" in line:
            name, _, default = line.split(None, 1)[1].partition("=")
            args[name.strip()] = default.strip().strip('"')
    return args


def copied_sources(dockerfile_text: str) -> set[str]:
    """Project files a Dockerfile copies from the build context (directories as ``dir/``)."""
    sources: set[str] = set()
    # A backslash continues an instruction on the next line.
    for instruction in re.sub(r"\\\n", " ", dockerfile_text).splitlines():
        words = instruction.split()
        if not words or words[0].upper() != "COPY":
            continue
        operands = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        sources.update(operands[:-1])
    return sources


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file that defines a project module (a package's ``__init__.py``), if any."""
    path = root / module.replace(".", "/")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def import_closure(roots: Iterable[str], root: Path = ROOT) -> set[str]:
    """Project modules reachable from ``roots`` by import statements anywhere in their code
    (functions included), with the packages that hold them; a package root also brings its
    submodules (a package whose modules are imported by name, like ``pipeline.steps``)."""
    todo = list(roots)
    for name in list(todo):
        folder = root / name.replace(".", "/")
        if folder.is_dir():
            todo += [f"{name}.{p.stem}" for p in sorted(folder.glob("*.py"))]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        path = module_file(module, root)
        if module in seen or path is None:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] in PACKAGES]
            elif (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").split(".")[0] in PACKAGES
            ):
                todo.append(str(node.module))
                todo += [f"{node.module}.{a.name}" for a in node.names]
    return seen


def uncopied_modules(spec: ImageSpec, root: Path = ROOT) -> list[str]:
    """Project files the image's entry points import that its Dockerfile does not copy."""
    copied = copied_sources((root / spec.dockerfile).read_text())
    missing = []
    for module in sorted(import_closure(spec.roots, root)):
        path = module_file(module, root)
        assert path is not None
        relative = path.relative_to(root).as_posix()
        folders = [relative.rsplit("/", n)[0] + "/" for n in range(1, relative.count("/") + 1)]
        if relative not in copied and not any(f in copied for f in folders):
            missing.append(relative)
    return missing


def locked_closure(
    lock: Mapping[str, Any], *groups: str, project: str = "housing-mlops"
) -> set[str]:
    """Every distribution ``uv sync --no-default-groups --group …`` installs from a parsed
    uv.lock (markers ignored: a superset on any one platform), the project's core included."""
    packages = {p["name"]: p for p in lock["package"]}
    root = packages[project]
    todo = [*root.get("dependencies", [])]
    for group in groups:
        todo += root.get("dev-dependencies", {})[group]
    seen: set[str] = set()
    while todo:
        dep = todo.pop()
        package = packages[dep["name"]]
        for extra in dep.get("extra", []):
            todo += package.get("optional-dependencies", {}).get(extra, [])
        if dep["name"] not in seen:
            seen.add(dep["name"])
            todo += package.get("dependencies", [])
    return seen


def copied_packages(spec: ImageSpec, root: Path = ROOT) -> set[str]:
    """The project packages an image's Dockerfile copies sources of."""
    copied = copied_sources((root / spec.dockerfile).read_text())
    return {s.split("/")[0] for s in copied if s.split("/")[0] in PACKAGES}


# --- Deciding how to build --------------------------------------------------------------------


@dataclass(frozen=True)
class EnginePlan:
    """How images are built and run here, and what must be installed first."""

    engine: str | None
    """``docker``, ``podman`` (buildah builds, podman runs) or None: no way here."""
    install: tuple[str, ...] = ()
    """Debian packages to install first."""
    error: str = ""


def plan_engine(
    docker_answers: bool, which: Callable[[str], str | None], can_apt: bool
) -> EnginePlan:
    """Docker when its daemon answers; else buildah + podman, installed with apt when missing."""
    if docker_answers:
        return EnginePlan("docker")
    missing = tuple(pkg for tool, pkg in PODMAN_PACKAGES.items() if which(tool) is None)
    if not missing:
        return EnginePlan("podman")
    if can_apt:
        return EnginePlan("podman", install=missing)
    return EnginePlan(
        None,
        error=(
            "no Docker daemon answers and " + ", ".join(missing) + " missing: start Docker, or "
            f"install them (apt-get install {' '.join(missing)}) as root"
        ),
    )


def standin_ref(ref: str) -> str:
    """The local name of a base's stand-in: ``python:3.11.11-slim-bookworm`` →
    ``localhost/housing-standin/python:3.11.11-slim-bookworm``."""
    return f"{STANDIN_REPOSITORY}/{ref.rsplit('/', 1)[-1]}"


def plan_bases(defaults: Mapping[str, str], available: Callable[[str], bool]) -> dict[str, str]:
    """The build args: each base the Dockerfile names, fully qualified, where the engine has it or
    can pull it (podman would match a short name to any local image of that name, a stand-in
    included), else its stand-in."""
    chosen = {}
    for arg, ref in defaults.items():
        real = qualified(ref)
        chosen[arg] = real if available(real) else standin_ref(ref)
    return chosen


def qualified(ref: str) -> str:
    """A reference as registries resolve it: ``python:3`` → ``docker.io/library/python:3``."""
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if rest else f"docker.io/library/{ref}"


def python_standin(ref: str) -> tuple[str, str]:
    """(Debian suite, python minor) of a ``python:X.Y.Z-slim-<suite>`` base, when Debian's own
    python3 on that suite is the same minor version; else ValueError."""
    match = re.fullmatch(r"(?:.*/)?python:(\d+\.\d+)(?:\.\d+)?-slim-(\w+)", ref)
    if match is None:
        raise ValueError(f"no stand-in for {ref}: only python:X.Y.Z-slim-<suite> tags have one")
    minor, suite = match.groups()
    if DEBIAN_PYTHON.get(suite) != minor:
        have = DEBIAN_PYTHON.get(suite, "unknown")
        raise ValueError(f"no stand-in for {ref}: Debian {suite}'s python3 is {have}, not {minor}")
    return suite, minor


def uv_version(ref: str) -> str:
    """The version of ``ghcr.io/astral-sh/uv:<version>``; ValueError for anything else."""
    match = re.fullmatch(r"(?:.*/)?uv:(\d+\.\d+\.\d+)", ref)
    if match is None:
        raise ValueError(f"no stand-in for {ref}: only ghcr.io/astral-sh/uv:<version> has one")
    return match.group(1)


def mmdebstrap_command(suite: str, tar: Path, mirror: str = DEBIAN_MIRROR) -> list[str]:
    """A minimal Debian with python3, like the slim images (no docs, man pages or locales), with
    ``python`` and ``python3`` where the python images have them (/usr/local/bin)."""
    link = 'ln -sf /usr/bin/python3 "$1/usr/local/bin/python3"; '
    link += 'ln -sf /usr/bin/python3 "$1/usr/local/bin/python"'
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--include=python3,ca-certificates",
        *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "info", "locale")),
        f"--customize-hook={link}",
        "--format=tar",
        suite,
        str(tar),
        mirror,
    ]


def engine_env(engine: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of build and run commands: buildah and podman as measured to work without
    a daemon (vfs storage, chroot isolation), unless the caller chose otherwise; BuildKit for
    Docker (build secrets and cache mounts)."""
    env = dict(environ)
    if engine == "podman":
        env.setdefault("STORAGE_DRIVER", "vfs")
        env.setdefault("BUILDAH_ISOLATION", "chroot")
    else:
        env.setdefault("DOCKER_BUILDKIT", "1")
    return env


def build_command(
    engine: str, spec: ImageSpec, build_args: Mapping[str, str], ca_bundle: Path | None
) -> list[str]:
    if engine == "docker":
        command = ["docker", "build"]
    else:
        # --format docker: the OCI format has no HEALTHCHECK; --layers: reuse unchanged steps.
        command = ["buildah", "bud", "--format", "docker", "--layers"]
    command += ["-f", str(ROOT / spec.dockerfile), "-t", spec.tag]
    for name, value in sorted(build_args.items()):
        command += ["--build-arg", f"{name}={value}"]
    if ca_bundle is not None:
        command += ["--secret", f"id={CA_SECRET},src={ca_bundle}"]
    return [*command, str(ROOT)]


def ulimit_flags(getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit) -> list[str]:
    """podman sets its own high limits by default, which this sandbox refuses (runc: "error
    setting rlimit … operation not permitted"): pass open files as they are here, and a modest
    process cap."""
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    files = soft if hard == resource.RLIM_INFINITY else min(soft, hard)
    nproc_soft, _ = getrlimit(resource.RLIMIT_NPROC)
    procs = 4096 if nproc_soft == resource.RLIM_INFINITY else min(nproc_soft, 4096)
    return ["--ulimit", f"nofile={files}:{files}", "--ulimit", f"nproc={procs}:{procs}"]


def run_command(
    engine: str,
    image: str,
    *,
    name: str,
    env: Mapping[str, str] | None = None,
    volumes: Mapping[Path, str] | None = None,
    detach: bool = False,
    entrypoint: str | None = None,
    args: Sequence[str] = (),
    ulimits: Sequence[str] = (),
) -> list[str]:
    """A container on the host network (each server binds 127.0.0.1 through HOST), as the
    image's own user."""
    command = [engine, "run", "--name", name, "--network", "host"]
    if engine == "podman":
        command += ["--runtime", "runc", *ulimits]
    command += ["--detach"] if detach else ["--rm"]
    for key, value in sorted((env or {}).items()):
        command += ["-e", f"{key}={value}"]
    for host, inside in sorted((volumes or {}).items()):
        command += ["-v", f"{host}:{inside}"]
    if entrypoint is not None:
        command += ["--entrypoint", entrypoint]
    return [*command, image, *args]


def healthcheck_command(test: Sequence[str]) -> list[str]:
    """What to exec for an image config's ``Healthcheck.Test`` (empty for none)."""
    if test[:1] == ["CMD-SHELL"]:
        return ["sh", "-c", *test[1:]]
    return list(test[1:]) if test[:1] == ["CMD"] else []


def size_table(rows: Sequence[tuple[str, int, int | None]]) -> str:
    """``image | size | before`` in MB (10**6 bytes), as the engines print them."""
    lines = ["| image | size | before | change |", "| --- | ---: | ---: | ---: |"]
    for name, size, before in rows:
        if before:
            change = f"{(size - before) / before:+.0%}"
            lines.append(f"| {name} | {size / 1e6:,.0f} MB | {before / 1e6:,.0f} MB | {change} |")
        else:
            lines.append(f"| {name} | {size / 1e6:,.0f} MB | | |")
    return "\n".join(lines)


# --- What runs inside each image --------------------------------------------------------------

#: Run as ``python -c PROBE '<json>'`` inside an image: imports, absences, plugin, ID token.
PROBE = r"""
import importlib, importlib.metadata, importlib.util, json, os, sys
spec = json.loads(sys.argv[1])
out = {"uid": os.getuid(), "failed": {}, "present": [], "plugins": [], "token": ""}
for name in spec["imports"]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        out["failed"][name] = f"{type(exc).__name__}: {exc}"[:300]
for name in spec["absent"]:
    try:
        if importlib.util.find_spec(name) is not None:
            out["present"].append(name)
    except ImportError:
        pass
for ep in importlib.metadata.entry_points(group="mlflow.request_header_provider"):
    try:
        ep.load()
        out["plugins"].append(ep.name)
    except Exception as exc:
        out["failed"][f"entry point {ep.name}"] = f"{type(exc).__name__}: {exc}"[:300]
if spec.get("token_audience"):
    import google.auth.exceptions
    from housing_platform.id_token import GoogleIdToken
    try:
        GoogleIdToken(spec["token_audience"])()
        out["token"] = "minted"
    except google.auth.exceptions.GoogleAuthError as exc:
        out["token"] = type(exc).__name__
    except Exception as exc:
        out["failed"]["ID token"] = f"{type(exc).__name__}: {exc}"[:300]
print(json.dumps(out))
"""


def probe_request(spec: ImageSpec) -> dict[str, Any]:
    request: dict[str, Any] = {"imports": list(spec.imports), "absent": list(spec.absent)}
    if spec.token:
        # Without credentials (NO_GCE_CHECK) google-auth must fail as google-auth, not ImportError.
        request["token_audience"] = "https://housing-service.example"
    return request


def probe_problems(spec: ImageSpec, result: Mapping[str, Any]) -> list[str]:
    """What a probe's answer shows wrong with an image, one line each."""
    problems = [f"{name} does not import: {why}" for name, why in result["failed"].items()]
    problems += [f"{name} is in the image, and should not be" for name in result["present"]]
    if result["uid"] in (0, None):
        problems.append("runs as root")
    if spec.plugin and "google-id-token" not in result["plugins"]:
        problems.append("the google-id-token MLflow plugin is not registered")
    if spec.token and not result["token"]:
        problems.append("the ID-token path did not run")
    return problems


# --- Running the engine -----------------------------------------------------------------------


def log(message: str) -> None:
    print(message, flush=True)


@contextlib.contextmanager
def timed(label: str, times: dict[str, float]) -> Iterator[None]:
    began = time.monotonic()
    log(f"-- {label} …")
    try:
        yield
    finally:
        times[label] = time.monotonic() - began
        log(f"== {label}: {times[label]:.0f}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def http_post_json(url: str, body: Any, timeout: float = 30) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def can_apt() -> bool:
    return system_tools.can_apt()[0]


def apt_install(packages: Sequence[str]) -> None:
    sudo = system_tools.can_apt()[1]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"-- apt-get install {' '.join(packages)}")
    if subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *packages], env=env).returncode:
        subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *packages], env=env, check=True)


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def ca_bundle(environ: Mapping[str, str]) -> Path | None:
    """The CA bundle this machine's clients verify with (a TLS-inspecting proxy's CA is in it)."""
    for candidate in (environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@dataclass
class Engine:
    kind: str
    env: dict[str, str]
    logs: Path
    ulimits: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)

    def run(self, *args: str, check: bool = True, timeout: float | None = None) -> str:
        done = subprocess.run(
            args, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode:
            output = (done.stdout + done.stderr)[-3000:]
            raise CheckError(f"{' '.join(args[:3])} … failed:\n{output}")
        return done.stdout

    def logged(self, log_name: str, *args: str, timeout: float | None = None) -> None:
        """A long command (a build), its output in a log file, the tail shown if it fails."""
        path = self.logs / log_name
        with path.open("w") as out:
            code = subprocess.run(
                args, env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        if code:
            tail = "\n".join(path.read_text().splitlines()[-40:])
            raise CheckError(f"{' '.join(args[:2])} failed (log: {path}):\n{tail}")

    def exists(self, ref: str) -> bool:
        command = ["podman", "image", "exists", ref]
        if self.kind == "docker":
            command = ["docker", "image", "inspect", "--format", "{{.Id}}", ref]
        return subprocess.run(command, env=self.env, capture_output=True).returncode == 0

    def available(self, ref: str) -> bool:
        """Present, or pulled now."""
        if self.exists(ref):
            return True
        log(f"-- pulling {ref}")
        try:
            done = subprocess.run(
                [self.kind, "pull", "-q", qualified(ref)],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            return False
        if done.returncode:
            log(f"   cannot pull {ref}: {(done.stderr.strip().splitlines() or [''])[-1][:200]}")
            return False
        return True

    def size(self, ref: str) -> int:
        return int(self.run(self.kind, "image", "inspect", ref, "--format", "{{.Size}}").strip())

    def healthcheck(self, ref: str) -> list[str]:
        """The image's HEALTHCHECK command (empty when it has none)."""
        fmt = "{{json .Config.Healthcheck}}" if self.kind == "docker" else "{{json .HealthCheck}}"
        config = json.loads(self.run(self.kind, "image", "inspect", ref, "--format", fmt) or "null")
        return healthcheck_command((config or {}).get("Test") or [])

    def start(self, spec: ImageSpec, name: str, env: Mapping[str, str], **kw: Any) -> str:
        self.remove(name)
        command = run_command(
            self.kind,
            spec.tag,
            name=name,
            env={**OFFLINE_ENV, **env},
            detach=True,
            ulimits=self.ulimits,
            **kw,
        )
        self.run(*command)
        self.containers.append(name)
        return name

    def once(
        self, spec: ImageSpec, name: str, env: Mapping[str, str], **kw: Any
    ) -> tuple[int, str]:
        """Run a container to its end: (exit code, output)."""
        self.remove(name)
        command = run_command(
            self.kind, spec.tag, name=name, env={**OFFLINE_ENV, **env}, ulimits=self.ulimits, **kw
        )
        done = subprocess.run(command, env=self.env, capture_output=True, text=True)
        return done.returncode, done.stdout + done.stderr

    def container_logs(self, name: str) -> str:
        done = subprocess.run(
            [self.kind, "logs", name], env=self.env, capture_output=True, text=True
        )
        return done.stdout + done.stderr

    def remove(self, name: str) -> None:
        subprocess.run([self.kind, "rm", "-f", name], env=self.env, capture_output=True)
        if name in self.containers:
            self.containers.remove(name)

    def cleanup(self) -> None:
        for name in list(self.containers):
            self.remove(name)


def prepare_engine(environ: Mapping[str, str], logs: Path) -> Engine:
    plan = plan_engine(docker_answers(), shutil.which, can_apt())
    if plan.engine is None:
        raise CheckError(plan.error)
    if plan.install:
        apt_install(plan.install)
    engine = Engine(plan.engine, engine_env(plan.engine, environ), logs)
    if plan.engine == "podman":
        engine.ulimits = ulimit_flags()
    log(f"-- engine: {'docker' if plan.engine == 'docker' else 'buildah + podman'}")
    return engine


def make_python_standin(engine: Engine, ref: str, work: Path) -> str:
    suite, _ = python_standin(ref)
    if shutil.which("mmdebstrap") is None:
        if not can_apt():
            raise CheckError(f"cannot pull {ref}, and mmdebstrap is missing to make a stand-in")
        apt_install(["mmdebstrap"])
    tar = work / "base.tar"
    engine.logged("standin-python.log", *mmdebstrap_command(suite, tar))
    target = standin_ref(ref)
    changes = [
        "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["python3"]',
    ]
    flags = [f for change in changes for f in ("--change", change)]
    engine.run(engine.kind, "import", *flags, str(tar), target)
    tar.unlink()
    return target


def make_uv_standin(engine: Engine, ref: str, work: Path) -> str:
    version = uv_version(ref)
    uv = shutil.which("uv")
    if uv is None:
        raise CheckError(f"cannot pull {ref}, and uv is missing to fetch uv {version}'s wheel")
    target_dir = work / "uv-wheel"
    machine = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
    arch = machine.get(platform.machine().lower(), platform.machine())
    engine.run(
        uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target_dir),
        "--python-platform", f"{arch}-manylinux_2_17", f"uv=={version}",
    )  # fmt: skip
    context = work / "uv-context"
    context.mkdir()
    shutil.copy2(target_dir / "bin" / "uv", context / "uv")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY uv /uv\n")
    target = standin_ref(ref)
    if engine.kind == "docker":
        engine.logged("standin-uv.log", "docker", "build", "-t", target, str(context))
    else:
        engine.logged("standin-uv.log", "buildah", "bud", "--format", "docker", "-t", target,
                      str(context))  # fmt: skip
    return target


def resolve_bases(engine: Engine, work: Path) -> dict[str, str]:
    """The build args every Dockerfile gets: the same bases, real or stand-in."""
    defaults: dict[str, str] = {}
    for spec in IMAGES:
        args = base_args((ROOT / spec.dockerfile).read_text())
        if not {"BASE_IMAGE", "UV_IMAGE"} <= set(args):
            raise CheckError(f"{spec.dockerfile}: no ARG BASE_IMAGE=… / ARG UV_IMAGE=… default")
        if defaults and args != defaults:
            raise CheckError(f"{spec.dockerfile} names other bases: {args} against {defaults}")
        defaults = args
    chosen = plan_bases(defaults, engine.available)
    makers = {"BASE_IMAGE": make_python_standin, "UV_IMAGE": make_uv_standin}
    for arg, ref in chosen.items():
        if ref == standin_ref(defaults[arg]) and not engine.exists(ref):
            log(f"-- making the stand-in {ref}")
            makers[arg](engine, defaults[arg], work)
        log(f"   {arg}={ref}")
    return chosen


# --- The checks -------------------------------------------------------------------------------


def wait_http(engine: Engine, name: str, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http_get(url, timeout=3)[0] == 200:
                return
        except (OSError, urllib.error.URLError):
            pass
        running = engine.run(engine.kind, "inspect", name, "--format", "{{.State.Running}}",
                             check=False).strip()  # fmt: skip
        if running != "true" or time.monotonic() > deadline:
            why = "exited" if running != "true" else f"not answering after {timeout:.0f}s"
            raise CheckError(f"{name} {why} ({url}):\n{engine.container_logs(name)[-3000:]}")
        time.sleep(0.5)


def check_healthcheck(engine: Engine, spec: ImageSpec, name: str) -> None:
    """The image's own HEALTHCHECK command passes inside the running container."""
    command = engine.healthcheck(spec.tag)
    if not command:
        raise CheckError(
            f"{spec.name}: the image has no HEALTHCHECK (built without --format docker?)"
        )
    done = subprocess.run(
        [engine.kind, "exec", name, *command], env=engine.env, capture_output=True, text=True
    )
    if done.returncode:
        raise CheckError(f"{spec.name}: HEALTHCHECK failed: {(done.stdout + done.stderr)[-500:]}")


def probe(engine: Engine, spec: ImageSpec) -> None:
    code, out = engine.once(
        spec,
        f"housing-probe-{spec.name}",
        {},
        entrypoint="python",
        args=["-c", PROBE, json.dumps(probe_request(spec))],
    )
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if code or not lines:
        raise CheckError(f"{spec.name}: the probe failed:\n{out[-2000:]}")
    problems = probe_problems(spec, json.loads(lines[-1]))
    if problems:
        raise CheckError(f"{spec.name}: " + "; ".join(problems))


def own(path: Path) -> None:
    """Writable by the images' user: its own when root can give it, else everyone's."""
    for p in [path, *path.rglob("*")]:
        if os.geteuid() == 0:
            os.chown(p, APP_UID, APP_UID, follow_symlinks=False)
        elif not p.is_symlink():
            p.chmod(0o777 if p.is_dir() else 0o666)


def write_sample(packaged: Path, target: Path, rows: int = SAMPLE_ROWS) -> None:
    """``rows`` rows of the packaged data set (seeded, in their order), as a CSV."""
    with gzip.open(packaged, "rt", newline="") as source:
        header, *data = list(csv.reader(source))
    keep = sorted(random.Random(0).sample(range(len(data)), rows))
    with target.open("w", newline="") as out:
        csv.writer(out).writerows([header, *(data[i] for i in keep)])


def train(engine: Engine, home: Path) -> None:
    """The packaged data set ingests (checksum verified) in the image; then the whole pipeline
    trains on a sample of it, with few trials, into the mounted home."""
    spec = spec_named("pipeline")
    home.mkdir()
    (home / "quick.toml").write_text(QUICK_CONFIG)
    write_sample(ROOT / "pipeline" / "data" / "housing.csv.gz", home / "sample.csv")
    own(home)
    runs = {
        "packaged": ["run", "--steps", "ingest"],
        "quick": [
            "run",
            "--config",
            f"{HOME_IN_CONTAINER}/quick.toml",
            "--source",
            f"{HOME_IN_CONTAINER}/sample.csv",
        ],
    }
    for label, args in runs.items():
        code, out = engine.once(
            spec,
            "housing-check-pipeline",
            {"HOUSING_MLOPS_HOME": HOME_IN_CONTAINER},
            volumes={home: HOME_IN_CONTAINER},
            args=args,
        )
        (engine.logs / f"pipeline-{label}.log").write_text(out)
        if code:
            raise CheckError(f"pipeline: `{' '.join(args)}` failed ({code}):\n{out[-3000:]}")
        if "GitPython" in out or "git executable" in out:
            raise CheckError("pipeline: GitPython warnings in its output (GIT_PYTHON_REFRESH)")
    champion = home / "artifacts" / "models" / "housing-price" / "champion"
    if not (champion / "MLmodel").is_file():
        raise CheckError(f"pipeline: no champion exported under {champion}")


def without_fast_form(home: Path, copy: Path) -> int:
    """A copy of a home whose model versions have no ``model.onnx``; how many were removed."""
    shutil.copytree(home, copy, symlinks=True)
    removed = 0
    for path in copy.rglob("model.onnx"):
        path.unlink()
        removed += 1
    own(copy)
    return removed


def serve(engine: Engine, home: Path, name: str, runtime: str) -> str:
    """Start the service on a home; check health, readiness, a price and the runtime. Its URL."""
    spec = spec_named("service")
    port = free_port()
    engine.start(
        spec,
        name,
        {"HOST": "127.0.0.1", "PORT": str(port), "HOUSING_MLOPS_HOME": HOME_IN_CONTAINER},
        volumes={home: HOME_IN_CONTAINER},
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(engine, name, url + "/health")
    wait_http(engine, name, url + "/ready")
    check_healthcheck(engine, spec, name)
    status, body = http_post_json(url + "/api/v1/predict", {"instances": [EXAMPLE_HOUSE]})
    if status != 200 or not body["predictions"][0]["predicted_price"] > 0:
        raise CheckError(f"service: predict answered {status}: {str(body)[:500]}")
    status, raw = http_get(url + "/api/v1/model")
    model = json.loads(raw)
    if status != 200 or model.get("runtime") != runtime:
        raise CheckError(
            f"service: expected runtime {runtime}, got {model.get('runtime')!r} "
            f"(warnings: {model.get('warnings')})"
        )
    log(f"   {name}: ready, priced ${body['predictions'][0]['predicted_price']:,.0f}, {runtime}")
    return url


def browser() -> tuple[str, str]:
    """A working Chromium and its driver, as `nox -s tests` finds them (installed with apt when
    missing and apt can run)."""
    found = system_tools.find()
    if found.browser is None or found.driver is None:
        packages = system_tools.APT_PACKAGES["browser"]
        if not can_apt() or found.snap_shims:
            raise CheckError(f"Chromium or chromedriver is missing: install {' '.join(packages)}")
        apt_install(packages)
        found = system_tools.find()
    if found.browser is None or found.driver is None:
        raise CheckError("no working Chromium browser and chromedriver after apt-get install")
    return found.browser, found.driver


def browser_price(ui_url: str, profile: Path) -> str:
    """The price the UI's page shows after pressing 'Predict price' in headless Chromium, read
    as tests/integration/test_ui_browser.py reads it; then every page of the console is opened
    (a page file the image lacks, or a traceback, fails the check)."""
    binary, driver_path = browser()
    with chromium(binary, driver_path, profile) as driver:
        price = price_for_the_form(driver, ui_url, timeout=90)
        for line in open_pages(driver, ui_url, timeout=90):
            log(f"   ui: {line}")
        return price


def check_ui(engine: Engine, service_url: str, work: Path) -> None:
    spec = spec_named("ui")
    # With API_AUDIENCE set the client mints Google ID tokens (google-auth,
    # housing_platform.id_token).
    port = free_port()
    name = engine.start(
        spec,
        "housing-check-ui-audience",
        {"HOST": "127.0.0.1", "PORT": str(port), "API_URL": service_url,
         "API_AUDIENCE": service_url},
    )  # fmt: skip
    wait_http(engine, name, f"http://127.0.0.1:{port}/_stcore/health")
    check_healthcheck(engine, spec, name)
    engine.remove(name)
    port = free_port()
    name = engine.start(
        spec, "housing-check-ui", {"HOST": "127.0.0.1", "PORT": str(port), "API_URL": service_url}
    )
    ui_url = f"http://127.0.0.1:{port}"
    wait_http(engine, name, ui_url + "/_stcore/health")
    shown = browser_price(ui_url, work / "chromium-profile")
    _, body = http_post_json(service_url + "/api/v1/predict", {"instances": [EXAMPLE_HOUSE]})
    expected = f"${body['predictions'][0]['predicted_price']:,.0f}"
    if shown != expected:
        raise CheckError(f"ui: the page shows {shown!r}, the service answers {expected}")
    log(f"   ui: the page shows {shown}, as the service container answers")
    engine.remove(name)


def check_mlflow(engine: Engine, work: Path) -> None:
    spec = spec_named("mlflow")
    store = work / "mlflow"
    store.mkdir()
    own(store)
    port = free_port()
    inside = "/home/app/mlflow"
    name = engine.start(
        spec,
        "housing-check-mlflow",
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "BACKEND_STORE_URI": f"sqlite:///{inside}/mlflow.db",
            "ARTIFACTS_DESTINATION": f"{inside}/artifacts",
        },
        volumes={store: inside},
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(engine, name, url + "/health", timeout=180)
    check_healthcheck(engine, spec, name)
    status, _ = http_get(url + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default")
    if status != 200:
        raise CheckError(f"mlflow: the store answers {status} for the Default experiment")
    log("   mlflow: healthy on SQLite, Default experiment found")
    engine.remove(name)


def spec_named(name: str) -> ImageSpec:
    return next(spec for spec in IMAGES if spec.name == name)


def read_sizes(path: Path) -> dict[str, int]:
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        return {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nox -s images --", description=__doc__.splitlines()[0])
    parser.add_argument("--no-build", action="store_true", help="check the images already built")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a JSON file of {image: bytes} to compare sizes with (written when missing)",
    )
    options = parser.parse_args(argv)
    home = Path(os.environ.get("HOUSING_MLOPS_HOME", ROOT / ".housing-mlops"))
    logs = home / "logs" / "images"
    logs.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="housing-images-"))
    engine: Engine | None = None
    try:
        engine = prepare_engine(os.environ, logs)
        with timed("bases", times):
            build_args = resolve_bases(engine, work)
        bundle = ca_bundle(os.environ)
        for spec in () if options.no_build else IMAGES:
            with timed(f"build {spec.name}", times):
                command = build_command(engine.kind, spec, build_args, bundle)
                engine.logged(f"build-{spec.name}.log", *command)
        with timed("probe the images' contents", times):
            for spec in IMAGES:
                probe(engine, spec)
        with timed("pipeline: train into a mounted home", times):
            train(engine, work / "home")
        with timed("service: the champion, then scikit-learn without model.onnx", times):
            if not without_fast_form(work / "home", work / "home-sklearn"):
                raise CheckError("the pipeline logged no model.onnx to remove")
            serve(engine, work / "home-sklearn", "housing-check-service-sklearn", "scikit-learn")
            engine.remove("housing-check-service-sklearn")
            service_url = serve(engine, work / "home", "housing-check-service", "onnxruntime")
        with timed("ui: health, then a price in Chromium", times):
            check_ui(engine, service_url, work)
        engine.remove("housing-check-service")
        with timed("mlflow: health on SQLite", times):
            check_mlflow(engine, work)
        sizes = {spec.name: engine.size(spec.tag) for spec in IMAGES}
        before = read_sizes(options.baseline) if options.baseline else {}
        if options.baseline and not before:
            options.baseline.write_text(json.dumps(sizes, indent=1))
        base = engine.size(build_args["BASE_IMAGE"])
        log("")
        log(size_table([(s.name, sizes[s.name], before.get(s.name)) for s in IMAGES]))
        log(f"(base {build_args['BASE_IMAGE']}: {base / 1e6:,.0f} MB of each)")
        log("")
        log("\n".join(f"{label}: {seconds:.0f}s" for label, seconds in times.items()))
        log(f"total: {sum(times.values()):.0f}s (logs: {logs})")
        return 0
    except CheckError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if engine is not None:
            engine.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
