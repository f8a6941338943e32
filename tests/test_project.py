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
    "pipeline/mlflow.Dockerfile": ("mlflow", True),
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
    assert top <= {
        "infra",
        "pipeline",
        "service",
        "ui",
        "tests",
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
    assert re.search(r"^FROM python:3\.11\.\d+-slim-bookworm", text, re.M), "pinned slim base"
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


def test_dockerignore_keeps_data_venvs_and_reports_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".nox", ".housing-mlops", "tests", "*.parquet", "*.db", "wandb"} <= ignored


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
