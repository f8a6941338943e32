"""The README's layout map is the tree: every package it lists exists, every package is listed,
and no module imports a project package its row doesn't allow (imports inside functions too):
so nothing that serves imports code that builds, tunes or registers models."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from tests.test_project import ROOT

ROW = re.compile(r"^\| `(\w+)/` \| .+ \| (.+) \|$", re.M)


def layout() -> dict[str, tuple[str, ...]]:
    """package -> the project modules (or packages) it may import, from the README's table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    return {
        package: tuple(re.findall(r"`([\w.]+)`", allowed))
        for package, allowed in ROW.findall(section)
    }


def packages_in_tree() -> set[str]:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return {p.split("/")[0] for p in tracked if p.count("/") == 1 and p.endswith("/__init__.py")}


def project_imports(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """Project modules a package's files import (absolute imports, at any depth) -> the files."""
    projects = packages_in_tree() - {"tests"}
    found: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.split(".")[0] in projects:
                    found.setdefault(name, set()).add(str(path.relative_to(root)))
    return found


def forbidden(package: str, allowed: tuple[str, ...], root: Path = ROOT) -> list[str]:
    bad = []
    for name, files in project_imports(package, root).items():
        if name.split(".")[0] == package:
            continue
        if not any(name == a or name.startswith(a + ".") for a in allowed):
            bad += [f"{file} imports {name}" for file in sorted(files)]
    return sorted(bad)


def test_the_map_lists_every_package_and_only_those():
    assert set(layout()) == packages_in_tree() - {"tests"}


@pytest.mark.parametrize("package", sorted(layout()))
def test_each_package_imports_only_what_its_row_allows(package):
    assert forbidden(package, layout()[package]) == []


def test_serving_code_never_reaches_training_code():
    """The service and the model runtime, by their rows: no pipeline module at any depth."""
    for package in ("service", "model_runtime"):
        assert not any(a.startswith("pipeline") for a in layout()[package])


def test_a_forbidden_import_inside_a_function_is_found(tmp_path):
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "x.py").write_text(
        "def f():\n    from pipeline.fast_model import to_onnx\n"
    )
    assert forbidden("service", ("model_runtime",), tmp_path) == [
        "service/x.py imports pipeline.fast_model.to_onnx"
    ]
