"""The GitHub Actions workflows can't run here, so: actionlint (with shellcheck for the `run:`
scripts) finds nothing in them; their deploy scripts run against local stand-ins (a git remote in
a folder, loopback HTTP servers, recording fakes of pulumi, gcloud, skopeo, docker and nox);
what they call must exist; and every secret or variable they read is documented for whoever sets
up the repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.helpers import serve_http
from tests.test_project import IMAGES, ROOT, nox_sessions

WORKFLOW_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml"))
DIGEST = "sha256:" + "ab" * 32
DEV_REGISTRY = "europe-west1-docker.pkg.dev/housing-mlops-dev/housing-mlops"
PROD_REGISTRY = "europe-west1-docker.pkg.dev/housing-mlops-prod/housing-mlops"


def load(path: Path) -> dict[str, Any]:
    return dict(YAML(typ="safe").load(path.read_text()))


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """`on:` (YAML 1.1 readers may turn the bare key into True)."""
    return dict(workflow.get("on") or workflow.get(True) or {})  # type: ignore[call-overload]


def scripts(workflow: dict[str, Any]) -> list[str]:
    return [
        step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step
    ]


def step(job: dict[str, Any], step_id: str) -> dict[str, Any]:
    (found,) = [s for s in job["steps"] if s.get("id") == step_id]
    return dict(found)


def deploy_job(name: str) -> dict[str, Any]:
    return dict(load(WORKFLOW_DIR / "deploy.yml")["jobs"][name])


def run_step(
    script: dict[str, Any], cwd: Path, env: dict[str, str], bin_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a step's script as the runner does with `shell: bash` (bash -eo pipefail), with only
    `env` (plus PATH and a throwaway HOME): no variable of this machine's leaks in."""
    path = os.environ["PATH"] if bin_dir is None else f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    home = cwd.parent / "home"
    home.mkdir(exist_ok=True)
    full = {"PATH": path, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", **env}
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script["run"]],
        cwd=cwd,
        env=full,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def requires(*tools: str) -> None:
    """The deploy scripts use tools GitHub's ubuntu runners carry (curl, jq, yq)."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not on PATH (GitHub's ubuntu runners have them)")


def test_the_three_workflows_exist_with_their_triggers():
    names = {p.stem: load(p) for p in WORKFLOWS}
    assert set(names) == {"ci", "deploy", "retrain"}
    on = {name: triggers(w) for name, w in names.items()}
    assert "pull_request" in on["ci"]
    assert on["deploy"]["push"] == {"branches": ["main"]}
    assert "workflow_dispatch" in on["deploy"]
    assert "workflow_dispatch" in on["retrain"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_nox_session_a_workflow_calls_exists(path):
    called = {m for s in scripts(load(path)) for m in re.findall(r"nox -s \"?\$?(\w+)", s)}
    called.discard("ACTION")  # deploy runs the session the input names, listed below
    assert called <= nox_sessions()
    if path.stem == "deploy":
        options = triggers(load(path))["workflow_dispatch"]["inputs"]["action"]["options"]
        assert set(options) <= nox_sessions()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_secret_and_variable_is_documented(path):
    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(r"\$\{\{\s*(?:secrets|vars)\.(\w+)\s*\}\}", path.read_text()))
    missing = sorted(name for name in used if f"`{name}`" not in readme)
    assert not missing, f"{path.name} uses {missing}, not listed in the README"


def test_deploys_authenticate_by_workload_identity_and_build_every_image():
    deploy = (WORKFLOW_DIR / "deploy.yml").read_text()
    assert "credentials_json" not in deploy, "no key files"
    assert "workload_identity_provider" in deploy
    for dockerfile in IMAGES:
        assert dockerfile in deploy, f"{dockerfile} is not built"
    assert "RepoDigests" in deploy, "deployed by digest"


def test_ci_runs_the_projects_own_ci_script_and_keeps_the_plans():
    ci = load(WORKFLOW_DIR / "ci.yml")
    runs = "\n".join(scripts(ci))
    assert "bash .ci/run" in runs
    assert "nox -s plan -- dev --json" in runs
    assert "nox -s plan -- prod --json" in runs


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_scripts_fail_on_any_failing_command_even_in_a_pipe(path):
    """`nox -s pipeline -- report | tee …` ran under `bash -e` alone: a failed report passed."""
    workflow = load(path)
    assert workflow["defaults"]["run"]["shell"] == "bash"  # the runner adds -eo pipefail
    for job in workflow["jobs"].values():
        assert all(s.get("shell", "bash") == "bash" for s in job["steps"] if "run" in s)


# actionlint, the suite's own: the `test` dependency group installs it and shellcheck into the
# venv running the tests; actionlint checks `run:` scripts only when shellcheck is on PATH.
def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    for tool in ("actionlint", "shellcheck"):
        assert (bin_dir / tool).is_file(), f"{tool} is missing from {bin_dir}: install group test"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(bin_dir / "actionlint"), "-no-color", *map(str, paths)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_actionlint_finds_nothing_in_the_workflows():
    linted = actionlint(*WORKFLOWS)
    assert linted.returncode == 0, f"actionlint:\n{linted.stdout}{linted.stderr}"


def test_actionlint_runs_shellcheck_on_run_scripts(tmp_path):
    """Without shellcheck actionlint skips `run:` silently; this proves the test above is armed."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        '      - run: echo "$(ls -d /tmp/*/ | tail -1)"\n'
    )
    linted = actionlint(bad)
    assert linted.returncode == 1
    assert "SC2005" in linted.stdout


# The release job: credentials of the stack it changes.


def test_the_stack_input_is_a_choice_of_the_two_stacks():
    inputs = triggers(load(WORKFLOW_DIR / "deploy.yml"))["workflow_dispatch"]["inputs"]
    assert inputs["stack"]["type"] == "choice"
    assert sorted(inputs["stack"]["options"]) == ["dev", "prod"]
    assert deploy_job("release")["environment"] == "${{ inputs.stack }}"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_release_credentials_follow_the_stack(tmp_path, stack):
    release = deploy_job("release")
    creds = step(release, "creds")
    assert creds["env"] == {name: f"${{{{ vars.{name} }}}}" for name in creds["env"]}
    values = {name: f"<{name}>" for name in creds["env"]}
    outputs = tmp_path / "outputs"
    done = run_step(creds, tmp_path, {**values, "STACK": stack, "GITHUB_OUTPUT": str(outputs)})
    assert done.returncode == 0, done.stdout + done.stderr
    suffix = stack.upper()
    assert outputs.read_text().splitlines() == [
        f"provider=<WIF_PROVIDER_{suffix}>",
        f"account=<CI_SERVICE_ACCOUNT_{suffix}>",
    ]
    unset = run_step(
        creds,
        tmp_path,
        {**values, f"WIF_PROVIDER_{suffix}": "", "STACK": stack, "GITHUB_OUTPUT": str(outputs)},
    )
    assert unset.returncode != 0
    assert f"WIF_PROVIDER_{suffix}" in unset.stdout


def test_release_authenticates_only_as_the_stack_it_changes():
    auths = [
        s
        for s in deploy_job("release")["steps"]
        if "google-github-actions/auth" in s.get("uses", "")
    ]
    stack_auths = [
        s
        for s in auths
        if s["with"]["workload_identity_provider"] == "${{ steps.creds.outputs.provider }}"
    ]
    assert stack_auths, "the job's credentials come from the creds step"
    for auth in stack_auths:
        assert auth["with"]["service_account"] == "${{ steps.creds.outputs.account }}"
    (dev_read,) = [s for s in auths if s not in stack_auths]
    assert dev_read["id"] == "dev-registry"
    assert dev_read["if"] == (
        "inputs.stack == 'prod' && (inputs.action == 'canary' || inputs.action == 'rollout')"
    )
    assert dev_read["with"]["token_format"] == "access_token"
    assert dev_read["with"]["create_credentials_file"] is False
    assert dev_read["with"]["export_environment_variables"] is False
    assert "_PROD" not in json.dumps(dev_read)


# Committing the stack file: on top of the branch as it is, and a failed push fails the job.


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)},
    )
    return done.stdout.strip()


@pytest.fixture
def remote(tmp_path) -> tuple[Path, Path, Path]:
    """(origin, a second clone that pushes to it like a colleague, the job's checkout)."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "--quiet", f"file://{origin}", str(seed))
    for stack in ("dev", "prod"):
        (seed / f"Pulumi.{stack}.yaml").write_text("config:\n  housing-mlops:images:\n")
    (seed / "README.md").write_text("readme\n")
    git(seed, "add", ".")
    git(seed, "commit", "--quiet", "-m", "seed")
    git(seed, "push", "--quiet", "origin", "HEAD:main")
    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "--quiet", "--depth=1", f"file://{origin}", str(checkout))
    return origin, seed, checkout


def commit_env(checkout: Path, stack: str) -> dict[str, str]:
    return {
        "STACK": stack,
        "BASE": git(checkout, "rev-parse", "HEAD"),
        "GITHUB_REF": "refs/heads/main",
        "MESSAGE": f"release({stack}): test",
    }


JOBS_AND_STACKS = [("dev", "dev"), ("release", "dev"), ("release", "prod")]


@pytest.mark.parametrize(("job", "stack"), JOBS_AND_STACKS)
def test_the_stack_file_is_committed_on_top_of_the_branch(remote, job, stack):
    origin, seed, checkout = remote
    env = commit_env(checkout, stack)
    (seed / "README.md").write_text("merged while the job ran\n")
    git(seed, "commit", "--quiet", "-am", "a merge")
    git(seed, "push", "--quiet", "origin", "HEAD:main")
    merged = git(origin, "rev-parse", "main")
    pinned = f"config:\n  housing-mlops:images:\n    ui: r/ui@{DIGEST}\n"
    (checkout / f"Pulumi.{stack}.yaml").write_text(pinned)
    done = run_step(step(deploy_job(job), "commit"), checkout, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert git(origin, "rev-parse", "main~1") == merged
    assert git(origin, "show", f"main:Pulumi.{stack}.yaml") == pinned.strip()
    assert git(origin, "show", "main:README.md") == "merged while the job ran"
    assert git(origin, "log", "-1", "--format=%s", "main") == env["MESSAGE"]


@pytest.mark.parametrize(("job", "stack"), JOBS_AND_STACKS)
def test_a_rejected_push_fails_the_job(remote, job, stack):
    origin, _, checkout = remote
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)
    (checkout / f"Pulumi.{stack}.yaml").write_text("config: {}\n")
    done = run_step(step(deploy_job(job), "commit"), checkout, commit_env(checkout, stack))
    assert done.returncode != 0, done.stdout
    assert "protected branch" in done.stderr


@pytest.mark.parametrize(("job", "stack"), JOBS_AND_STACKS)
def test_a_stack_file_changed_on_the_branch_meanwhile_fails_the_job(remote, job, stack):
    origin, seed, checkout = remote
    env = commit_env(checkout, stack)
    (seed / f"Pulumi.{stack}.yaml").write_text("config: {edited: by hand}\n")
    git(seed, "commit", "--quiet", "-am", "an edit of the stack file")
    git(seed, "push", "--quiet", "origin", "HEAD:main")
    before = git(origin, "rev-parse", "main")
    (checkout / f"Pulumi.{stack}.yaml").write_text("config: {edited: by the job}\n")
    done = run_step(step(deploy_job(job), "commit"), checkout, env)
    assert done.returncode != 0
    assert "changed on refs/heads/main" in done.stdout
    assert git(origin, "rev-parse", "main") == before


@pytest.mark.parametrize(("job", "stack"), JOBS_AND_STACKS)
def test_no_change_commits_nothing(remote, job, stack):
    origin, _, checkout = remote
    before = git(origin, "rev-parse", "main")
    done = run_step(step(deploy_job(job), "commit"), checkout, commit_env(checkout, stack))
    assert done.returncode == 0, done.stdout + done.stderr
    assert git(origin, "rev-parse", "main") == before


# Recording fakes of the cloud CLIs, and a loopback stand-in for the service.

FAKE_TOOL = """#!{python}
import json, os, sys
RECORDED = ("ARTIFACT_URI", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_AUDIENCE")
tool, argv = os.path.basename(sys.argv[0]), sys.argv[1:]
stdin = sys.stdin.read() if sys.stdin and not sys.stdin.isatty() else ""
with open(os.environ["FAKE_LOG"], "a") as log:
    seen = {{k: os.environ[k] for k in RECORDED if k in os.environ}}
    log.write(json.dumps({{"tool": tool, "argv": argv, "stdin": stdin, "env": seen}}) + "\\n")
if tool == "pulumi" and argv[:2] == ["stack", "output"]:
    outputs = json.loads(os.environ["FAKE_PULUMI_OUTPUTS"])
    rest = argv[2:]
    if "--stack" in rest:
        del rest[rest.index("--stack") : rest.index("--stack") + 2]
    names = [a for a in rest if a != "--json"]
    value = outputs[names[0]] if names else outputs
    print(value if isinstance(value, str) and "--json" not in rest else json.dumps(value))
if tool == "gcloud" and argv[:2] == ["auth", "print-access-token"]:
    print(os.environ["FAKE_GCLOUD_TOKEN"])
if tool == "docker" and argv[:3] == ["buildx", "imagetools", "inspect"]:
    digests = json.loads(os.environ["FAKE_BASE_DIGESTS"])
    print(json.dumps({{"mediaType": "application/vnd.oci.image.index.v1+json",
                      "digest": digests[argv[3]], "size": 1}}))
if tool == "docker" and argv[0] == "inspect":
    print(argv[-1].rsplit(":", 1)[0] + "@" + os.environ["FAKE_BUILT_DIGEST"])
called = " ".join([tool, *argv])
exits = json.loads(os.environ.get("FAKE_EXITS", "{{}}"))
sys.exit(next((code for start, code in exits.items() if called.startswith(start)), 0))
"""


class Fakes:
    def __init__(self, root: Path):
        self.bin = root / "fake-bin"
        self.bin.mkdir()
        self.log = root / "fake.log"
        self.log.touch()
        for tool in ("pulumi", "gcloud", "skopeo", "nox", "docker"):
            path = self.bin / tool
            path.write_text(FAKE_TOOL.format(python=sys.executable))
            path.chmod(0o755)

    def calls(self, tool: str) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [r for r in records if r["tool"] == tool]


@pytest.fixture
def fakes(tmp_path) -> Fakes:
    return Fakes(tmp_path)


class Service(ThreadingHTTPServer):
    broken: set[str]
    seen: list[tuple[str, str, str]]  # (method, path, Authorization)


class ServiceHandler(BaseHTTPRequestHandler):
    server: Service

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, body: dict[str, Any]) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        status = 500 if self.path in self.server.broken else 200
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer({"ready": True})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._answer({"predictions": [{"predicted_price": 452600.0}] * len(request["instances"])})


@pytest.fixture
def service() -> Iterator[tuple[Service, str]]:
    requires("curl", "jq")
    with serve_http(ServiceHandler, Service) as (server, url):
        server.broken, server.seen = set(), []
        yield server, url


SMOKE_CALLS = [("GET", "/ready"), ("POST", "/api/v1/predict")]


def test_the_dev_deploy_smoke_tests_the_main_url(tmp_path, service):
    server, url = service
    smoke = step(deploy_job("dev"), "smoke")
    assert smoke["env"]["URL"] == "${{ steps.service.outputs.url }}"
    done = run_step(smoke, tmp_path, {"URL": url, "TOKEN": "id-token"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert [(m, p) for m, p, _ in server.seen] == SMOKE_CALLS
    assert {a for _, _, a in server.seen} == {"Bearer id-token"}


def test_a_canary_is_smoke_tested_on_its_canary_and_stable_urls(tmp_path, fakes, service):
    server, url = service
    release = deploy_job("release")
    service_url, smoke = step(release, "service"), step(release, "smoke")
    assert "steps.release.outcome == 'success' && inputs.action == 'canary'" in service_url["if"]
    assert "steps.service.outcome == 'success'" in smoke["if"]
    token = step(release, "token")
    assert token["with"]["token_format"] == "id_token"
    assert token["with"]["id_token_audience"] == "${{ steps.service.outputs.url }}"
    tags = {"canary": f"{url}/canary", "stable": f"{url}/stable"}
    env = {
        "STACK": "prod",
        "TOKEN": "id-token",
        "FAKE_LOG": str(fakes.log),
        "FAKE_PULUMI_OUTPUTS": json.dumps({"tag_urls": tags}),
    }
    done = run_step(smoke, tmp_path, env, fakes.bin)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = [(m, f"/{tag}{p}") for tag in ("canary", "stable") for m, p in SMOKE_CALLS]
    assert [(m, p) for m, p, _ in server.seen] == expected
    assert {a for _, _, a in server.seen} == {"Bearer id-token"}

    server.broken.add("/stable/api/v1/predict")
    assert run_step(smoke, tmp_path, env, fakes.bin).returncode != 0, "a failing stable fails"
    env["FAKE_PULUMI_OUTPUTS"] = json.dumps({"tag_urls": {"canary": tags["canary"]}})
    assert run_step(smoke, tmp_path, env, fakes.bin).returncode != 0, "no stable URL fails"


# Images by digest: dev pins what it built, prod copies what dev pinned.


def test_the_dev_deploy_pins_its_digests_before_up_and_commits_after(tmp_path, fakes):
    dev = deploy_job("dev")
    order = [s.get("id") for s in dev["steps"]]
    assert order.index("sync") < order.index("pin") < order.index("up") < order.index("commit")
    assert step(dev, "up")["run"] == 'nox -s up -- "$STACK"'
    assert "pulumi config set" not in (WORKFLOW_DIR / "deploy.yml").read_text()
    refs = {part: f"{DEV_REGISTRY}/{part}@{DIGEST}" for part in ("pipeline", "mlflow", "ui")}
    (tmp_path / "images").write_text("".join(f"{p}={r}\n" for p, r in refs.items()))
    env = {"STACK": "dev", "RUNNER_TEMP": str(tmp_path), "FAKE_LOG": str(fakes.log)}
    done = run_step(step(dev, "pin"), tmp_path, env, fakes.bin)
    assert done.returncode == 0, done.stdout + done.stderr
    (call,) = fakes.calls("nox")
    expected = ["-s", "pin", "--", "dev"]
    for part, ref in refs.items():
        expected += ["--image", f"{part}={ref}"]
    assert call["argv"] == expected


def test_the_dev_deploy_builds_on_the_digests_the_base_tags_name_now(tmp_path, fakes):
    """A tag can move under a rebuild: each image is built on `tag@digest` of the bases its
    Dockerfile names (the label records both), resolved at build time."""
    requires("jq")
    bases = {}
    for file in IMAGES:
        for arg in ("BASE_IMAGE", "UV_IMAGE"):
            (tag,) = re.findall(rf"^ARG {arg}=(\S+)$", (ROOT / file).read_text(), re.M)
            bases[tag] = "sha256:" + format(len(bases) + 1, "x") * 64
    env = {
        "STACK": "dev",
        "GITHUB_SHA": "0123abc",
        "RUNNER_TEMP": str(tmp_path),
        "FAKE_LOG": str(fakes.log),
        "FAKE_PULUMI_OUTPUTS": json.dumps({"registry": DEV_REGISTRY}),
        "FAKE_BASE_DIGESTS": json.dumps(bases),
        "FAKE_BUILT_DIGEST": DIGEST,
    }
    done = run_step(step(deploy_job("dev"), "build"), ROOT, env, fakes.bin)
    assert done.returncode == 0, done.stdout + done.stderr
    builds = [c["argv"] for c in fakes.calls("docker") if c["argv"][0] == "build"]
    assert sorted(argv[argv.index("-f") + 1] for argv in builds) == sorted(IMAGES)
    for argv in builds:
        dockerfile = (ROOT / argv[argv.index("-f") + 1]).read_text()
        given = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--build-arg")
        for arg in ("BASE_IMAGE", "UV_IMAGE"):
            (tag,) = re.findall(rf"^ARG {arg}=(\S+)$", dockerfile, re.M)
            assert given[arg] == f"{tag}@{bases[tag]}"
    pinned = (tmp_path / "images").read_text().split()
    parts = [part for part, _ in IMAGES.values()]
    assert pinned == [f"{part}={DEV_REGISTRY}/{part}@{DIGEST}" for part in parts]


def stack_files(root: Path, dev_images: dict[str, str], prod_ui: bool) -> None:
    images = "".join(f"    {part}: {ref}  # pinned by CI\n" for part, ref in dev_images.items())
    (root / "Pulumi.dev.yaml").write_text(
        f"config:\n  housing-mlops:images:\n{images}  housing-mlops:ui:\n    enabled: true\n"
    )
    (root / "Pulumi.prod.yaml").write_text(
        f'config:\n  housing-mlops:images:\n    ui: ""\n  housing-mlops:ui:\n'
        f"    enabled: {str(prod_ui).lower()}\n"
    )


@pytest.fixture
def copy_env(tmp_path, fakes) -> dict[str, str]:
    requires("yq")
    github_env = tmp_path / "github_env"
    github_env.touch()
    return {
        "STACK": "prod",
        "DEV_TOKEN": "dev-access-token",
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_ENV": str(github_env),
        "FAKE_LOG": str(fakes.log),
        "FAKE_GCLOUD_TOKEN": "prod-access-token",
        "FAKE_PULUMI_OUTPUTS": json.dumps({"registry": PROD_REGISTRY}),
    }


def test_a_prod_canary_copies_the_digests_dev_pinned(tmp_path, fakes, copy_env):
    release = deploy_job("release")
    ids = [s.get("id") for s in release["steps"]]
    assert ids.index("sync") < ids.index("copy") < ids.index("release"), "before the canary"
    copy = step(release, "copy")
    assert copy["if"] == (
        "inputs.stack == 'prod' && (inputs.action == 'canary' || inputs.action == 'rollout')"
    )
    dev = {part: f"{DEV_REGISTRY}/{part}@{DIGEST}" for part in ("mlflow", "pipeline", "service")}
    stack_files(tmp_path, dev | {"ui": f"{DEV_REGISTRY}/ui@{DIGEST}"}, prod_ui=False)
    done = run_step(copy, tmp_path, copy_env, fakes.bin)
    assert done.returncode == 0, done.stdout + done.stderr

    prod = {part: f"{PROD_REGISTRY}/{part}@{DIGEST}" for part in dev}
    copies = [c["argv"] for c in fakes.calls("skopeo") if c["argv"][0] == "copy"]
    assert [argv[-2:] for argv in copies] == [
        [f"docker://{dev[part]}", f"docker://{prod[part]}"] for part in dev
    ], "the same digest, no UI (prod has none)"
    for argv in copies:
        assert "--all" in argv
        assert argv[argv.index("--src-authfile") + 1].endswith("/dev.json")
        assert argv[argv.index("--dest-authfile") + 1].endswith("/prod.json")
    logins = {
        c["argv"][c["argv"].index("--authfile") + 1].rsplit("/", 1)[-1]: c["stdin"].strip()
        for c in fakes.calls("skopeo")
        if c["argv"][0] == "login"
    }
    assert logins == {"dev.json": "dev-access-token", "prod.json": "prod-access-token"}
    (pin,) = fakes.calls("nox")
    expected = ["-s", "pin", "--", "prod"]
    for part in dev:
        expected += ["--image", f"{part}={prod[part]}"]
    assert pin["argv"] == expected
    assert f"SERVICE_IMAGE={prod['service']}" in Path(copy_env["GITHUB_ENV"]).read_text()


def test_a_prod_canary_refuses_what_dev_pins_by_tag(tmp_path, fakes, copy_env):
    dev = {part: f"{DEV_REGISTRY}/{part}@{DIGEST}" for part in ("mlflow", "service")}
    stack_files(tmp_path, dev | {"pipeline": f"{DEV_REGISTRY}/pipeline:latest"}, prod_ui=True)
    done = run_step(step(deploy_job("release"), "copy"), tmp_path, copy_env, fakes.bin)
    assert done.returncode != 0
    assert "pins pipeline as" in done.stdout
    assert fakes.calls("nox") == [], "nothing pinned"


@pytest.mark.parametrize(
    ("action", "extra", "argv"),
    [
        ("canary", {"SERVICE_IMAGE": "p/service@x"}, ["--model-version", "7", "--percent", "10"]),
        ("promote", {"REVISION": "housing-api-m7-0a1b2c3d"}, ["--revision"]),
        ("promote", {}, []),
        ("rollback", {"REVISION": "ignored"}, []),
    ],
)
def test_the_release_step_runs_the_session_of_the_action(tmp_path, fakes, action, extra, argv):
    env = {"ACTION": action, "STACK": "prod", "MODEL_VERSION": "7", "PERCENT": "10"}
    env |= {"REVISION": "", "FAKE_LOG": str(fakes.log), **extra}
    done = run_step(step(deploy_job("release"), "release"), tmp_path, env, fakes.bin)
    assert done.returncode == 0, done.stdout + done.stderr
    (call,) = fakes.calls("nox")
    expected = ["-s", action, "--", "prod", *argv]
    if action == "canary":
        expected += ["--image", "p/service@x"]
    if argv == ["--revision"]:
        expected.append(extra["REVISION"])
    assert call["argv"] == expected


@pytest.mark.parametrize(("status", "rolled_back"), [(0, False), (1, True), (2, None)])
def test_a_rollout_stages_prods_image_and_a_rollback_is_committed_then_fails_the_run(
    tmp_path, fakes, status, rolled_back
):
    """`rollout` on prod: the copied image goes into the release at 0% first (its first step
    deploys it); the controller gets the stack's bucket for its audit log and lease and MLflow
    for the final promote. Its exit 1 (rolled back, applied) lets the commit step run, and the
    job's last step fails the run; any other failure fails the step at once."""
    outputs = {"bucket": "housing-prod-data", "mlflow_url": "https://housing-mlflow-x.run.app"}
    env = {"ACTION": "rollout", "STACK": "prod", "MODEL_VERSION": "7", "PERCENT": "10"}
    env |= {"REVISION": "", "STEPS": "10,50,100", "SHADOW": "5m", "FAKE_LOG": str(fakes.log)}
    env |= {"SERVICE_IMAGE": "p/service@x", "FAKE_PULUMI_OUTPUTS": json.dumps(outputs)}
    env |= {
        "GITHUB_OUTPUT": str(tmp_path / "outputs"),
        "FAKE_EXITS": json.dumps({"nox -s rollout": status}),
    }
    release = deploy_job("release")
    done = run_step(step(release, "release"), tmp_path, env, fakes.bin)
    staged, rollout = fakes.calls("nox")
    assert staged["argv"] == ["-s", "canary", "--", "prod", "--model-version", "7", "--percent",
                              "0", "--image", "p/service@x", "--no-up"]  # fmt: skip
    assert rollout["argv"] == ["-s", "rollout", "--", "prod", "--model-version", "7", "--steps",
                               "10,50,100", "--shadow", "5m"]  # fmt: skip
    assert rollout["env"] == {
        "ARTIFACT_URI": "gs://housing-prod-data/artifacts",
        "MLFLOW_TRACKING_URI": outputs["mlflow_url"],
        "MLFLOW_TRACKING_AUDIENCE": outputs["mlflow_url"],
    }
    written = (tmp_path / "outputs").read_text() if (tmp_path / "outputs").exists() else ""
    assert (done.returncode == 0) is (rolled_back is not None), done.stdout + done.stderr
    assert ("rolled_back=true" in written) is bool(rolled_back)
    last = release["steps"][-1]
    assert last["if"] == "${{ !cancelled() && steps.release.outputs.rolled_back == 'true' }}"
    assert run_step(last, tmp_path, {"STACK": "prod"}).returncode == 1
    assert release["timeout-minutes"] >= 60, "a rollout takes 15-30 minutes"


# Retraining: one trainer (the stack's Cloud Scheduler), and a report that gets fresh ID tokens.


def test_the_stacks_scheduler_is_the_only_weekly_trainer():
    """Dev retrained twice on Mondays, by Cloud Scheduler and by this workflow's cron."""
    dev = load(ROOT / "Pulumi.dev.yaml")["config"]
    assert dev["housing-mlops:pipeline"]["schedule"], "the stack schedules the weekly run"
    retrain = load(WORKFLOW_DIR / "retrain.yml")
    for job in retrain["jobs"].values():
        for s in job["steps"]:
            if "gcloud run jobs execute" in s.get("run", ""):
                assert s["if"] == "github.event_name == 'workflow_dispatch'"


def test_the_retrain_report_mints_its_id_tokens_as_it_goes():
    """One token minted before `--wait` was used up to an hour later: the plugin mints them."""
    retrain = (WORKFLOW_DIR / "retrain.yml").read_text()
    assert "token_format" not in retrain
    assert "MLFLOW_TRACKING_TOKEN" not in retrain
    report = step(load(WORKFLOW_DIR / "retrain.yml")["jobs"]["retrain"], "report")
    assert report["env"]["MLFLOW_TRACKING_AUDIENCE"] == report["env"]["MLFLOW_TRACKING_URI"]
    entry_points = (ROOT / "pyproject.toml").read_text()
    assert '= "housing_platform.id_token:IdTokenHeaderProvider"' in entry_points
