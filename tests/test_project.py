"""The project's own promises: layout, README commands, Dockerfiles that reference real files."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted([*ROOT.glob("*/Dockerfile"), *ROOT.glob("*/*.Dockerfile")])
#: Image → its dependency group, and whether it is a server (needs a HEALTHCHECK).
IMAGES = {
    "pipeline/Dockerfile": ("pipeline", False),
    "tracking_server/Dockerfile": ("mlflow", True),
    "service/Dockerfile": ("service", True),
    "ui/Dockerfile": ("ui", True),
}


def image_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def entry_module(text: str) -> str | None:
    """The module an image runs (`python -m X` in ENTRYPOINT or CMD), if any."""
    found = re.search(r'^(?:ENTRYPOINT|CMD) \["python", "-m", "([\w.]+)"', text, re.M)
    return found.group(1) if found else None


def nox_sessions() -> set[str]:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("session" in ast.unparse(d) for d in node.decorator_list)
    }


def test_top_level_is_the_documented_layout():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    top = {line.split("/")[0] for line in tracked.splitlines()}
    from tests.test_layout import layout

    packages = set(layout()) | {"tests"}
    assert top <= packages | {
        "Pulumi.yaml",
        "Pulumi.dev.yaml",
        "Pulumi.prod.yaml",
        "noxfile.py",
        "pyproject.toml",
        "README.md",
        ".ci",
        ".github",
        ".gitignore",
        ".dockerignore",
        "uv.lock",
        ".streamlit",
        "docs",  # the README's pictures
    }
    assert {"infra", "pipeline", "service", "ui", "tests", ".ci", "uv.lock"} <= top


def test_every_nox_session_in_the_readme_exists():
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"nox -s ([a-z_]+)", readme))
    assert {"pipeline", "tests"} <= named
    assert named <= nox_sessions()


def test_every_nox_session_has_a_row_in_the_readme_table():
    """First cells like `nox -s preview -- <stack>` / `up` / `destroy` name their sessions."""
    readme = (ROOT / "README.md").read_text()
    first_cells = [
        line.split(" | ")[0] for line in readme.splitlines() if line.startswith("| `nox -s")
    ]
    documented = {name for cell in first_cells for name in re.findall(r"nox -s (\w+)", cell)}
    documented |= {name for cell in first_cells for name in re.findall(r"/ `(\w+)`", cell)}
    assert sorted(nox_sessions() - documented) == []


def test_the_pipeline_image_entrypoint_starts_outside_docker():
    """`ENTRYPOINT ["python", "-m", "pipeline"]`: the module answers its own CLI."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "steps"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ingest")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "nox -s lint tests" in ci
    assert "nox -s tests" in (ROOT / "README.md").read_text()


def test_ci_builds_and_checks_the_images_after_the_tests_and_times_each_part():
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line[:1] != "#"]
    parts = [line for line in lines if line.startswith("part ")]
    assert parts[-2:] == [
        'part "nox -s lint tests" nox -s lint tests',
        'part "nox -s images" nox -s images',
    ]


def test_every_image_is_known():
    assert sorted(image_id(p) for p in DOCKERFILES) == sorted(IMAGES)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=image_id)
def test_dockerfile_copies_real_files_and_runs_a_real_module(dockerfile):
    text = dockerfile.read_text()
    group, server = IMAGES[image_id(dockerfile)]
    for line in text.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"{dockerfile}: COPY {source} does not exist"
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11\.\d+-slim-bookworm$", text, re.M), "pinned base"
    assert re.search(r"^ARG UV_IMAGE=ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+$", text, re.M), "pinned uv"
    assert set(re.findall(r"^FROM (\S+)", text, re.M)) == {"${BASE_IMAGE}", "${UV_IMAGE}"}
    assert "USER app" in text
    assert ("HEALTHCHECK" in text) is server
    assert set(re.findall(r"--group (\w+)", text)) == {group}, "only its own group"
    for instruction in re.findall(r"^(?:CMD|ENTRYPOINT) (.+)$", text, re.M):
        assert instruction.startswith("["), "exec form, so signals reach the process"
    module = entry_module(text)
    if module is None:
        assert "streamlit run app.py" in text
        assert "COPY ui/app.py /home/app/app.py" in text
    else:
        path = ROOT / module.replace(".", "/")
        assert (path / "__main__.py").is_file() or path.with_suffix(".py").is_file()
    if server:
        assert "PORT" in text


def test_dockerignore_keeps_data_venvs_and_reports_out_at_any_depth():
    """Docker matches a bare `*.db` only at the context's root (tests/test_images.py checks the
    matching itself with docker-py)."""
    ignored = set((ROOT / ".dockerignore").read_text().split())
    wanted = {".venv", ".nox", ".housing-mlops", "tests", "*.parquet", "*.db", "wandb", "mlruns"}
    assert {f"**/{name}" for name in wanted} <= ignored


def instruction(text: str, name: str) -> list[str]:
    """Every ``name`` instruction of a Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line for line in joined.splitlines() if line.startswith(name + " ")]


def env_of(text: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", " ".join(instruction(text, "ENV"))))


def test_the_ui_image_does_not_call_itself():
    """It listened on PORT=8080 and called API_URL=http://127.0.0.1:8080: Streamlit answered its
    own API calls with HTML."""
    from urllib.parse import urlsplit

    from ui.settings import UISettings

    env = env_of((ROOT / "ui" / "Dockerfile").read_text())
    api = urlsplit(env.get("API_URL", UISettings().api_url))
    assert api.port != int(env["PORT"])
    assert env["PORT"] == "8501", "Streamlit's own port, as `nox -s ui` and `nox -s stack` use"


def test_the_ui_image_listens_where_host_says():
    """Its CMD hard-coded --server.address=0.0.0.0."""
    text = (ROOT / "ui" / "Dockerfile").read_text()
    (cmd,) = instruction(text, "CMD")
    assert '--server.address=\\"${HOST:-0.0.0.0}\\"' in cmd
    assert '--server.port=\\"${PORT:-8501}\\"' in cmd
    assert "exec streamlit" in cmd, "exec, so signals reach Streamlit"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=image_id)
def test_images_with_mlflow_silence_gitpython(dockerfile):
    """No git in the images: GitPython printed ~45 lines of warnings on every pipeline start."""
    env = env_of(dockerfile.read_text())
    if IMAGES[image_id(dockerfile)][0] != "ui":
        assert env.get("GIT_PYTHON_REFRESH") == "quiet"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=image_id)
def test_images_build_from_swappable_bases_recorded_in_a_label(dockerfile):
    text = dockerfile.read_text()
    comments = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert "the deploy workflow resolves both to digests" in comments, "say who pins the tags"
    assert "COPY --from=uv /uv /bin/uv" in text
    final = text.rsplit("\nFROM ", 1)[1]
    assert final.startswith("${BASE_IMAGE}\nARG BASE_IMAGE\n")
    assert 'LABEL org.opencontainers.image.base.name="${BASE_IMAGE}"' in final


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=image_id)
def test_downloads_verify_with_a_mounted_ca_bundle_never_a_layer(dockerfile):
    text = dockerfile.read_text()
    syncs = [run for run in instruction(text, "RUN") if "uv sync" in run]
    assert len(syncs) == 2
    for run in syncs:
        assert "--mount=type=secret,id=ca_bundle" in run
        assert "--mount=type=cache,target=/root/.cache/uv" in run
        assert "export SSL_CERT_FILE=/run/secrets/ca_bundle UV_NATIVE_TLS=1" in run
    assert "SSL_CERT_FILE" not in " ".join(instruction(text, "ENV"))
    assert not re.search(r"\.(crt|pem)\b", " ".join(instruction(text, "COPY")))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=image_id)
def test_dependencies_install_before_anything_that_changes_more_often(dockerfile):
    """Only pyproject.toml and uv.lock come before the dependencies' layer: a README or source
    edit must not reinstall them."""
    text = dockerfile.read_text()
    before = text[: text.index("--no-install-project")]
    copies = [c for c in instruction(before, "COPY") if "--from=" not in c]
    assert copies == ["COPY pyproject.toml uv.lock ./"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=image_id)
def test_the_projects_wheel_is_built_from_this_images_sources(dockerfile):
    """uv's cache keys a local project by its pyproject.toml: with a shared cache mount, the
    service image got the wheel built for the MLflow image's sources (no service package)."""
    (install,) = [r for r in instruction(dockerfile.read_text(), "RUN") if "--no-editable" in r]
    assert "--reinstall-package housing-mlops" in install


def test_nox_and_the_infra_cli_give_the_same_install_hint():
    import ast

    from infra.cli import INSTALL_HINT

    tree = ast.parse((ROOT / "noxfile.py").read_text())
    hints = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "PULUMI_HINT" for t in node.targets)
    ]
    assert hints == [INSTALL_HINT]


def test_a_plain_uv_sync_as_pulumi_runs_it_installs_the_programs_group():
    import tomllib

    pulumi_yaml = (ROOT / "Pulumi.yaml").read_text()
    assert "toolchain: uv" in pulumi_yaml
    assert "main: infra/" in pulumi_yaml
    assert (ROOT / "infra" / "__main__.py").is_file()
    uv = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]
    assert uv["default-groups"] == ["infra"]
