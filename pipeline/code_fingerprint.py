"""What a step's result depends on in code: every project module its code can reach through
imports (at the top or inside functions), and the installed version of every third-party
distribution those modules import.

Derived from the source, not a list someone must keep: editing ``onnx_graph.py`` re-runs
``register`` because ``register`` imports ``registry``, which imports ``onnx_translation`` (and
so ``onnx_graph``) inside a function. Versions are read from what is installed
(``importlib.metadata``): the pipeline image has no lock file, and an upgraded scikit-learn can
change a fitted model.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from collections.abc import Iterable
from functools import cache, lru_cache
from importlib import metadata
from pathlib import Path

#: The repository root: project modules are the ``.py`` files of its packages.
ROOT = Path(__file__).resolve().parent.parent


#: The project's own top-level packages. In an installed environment (an image) ROOT is
#: site-packages, so only these names count as project code; every other is a library.
PROJECT_PACKAGES = frozenset(
    {
        "pipeline",
        "service",
        "ui",
        "infra",
        "model_runtime",
        "housing_platform",
        "local_platform",
        "tracking_server",
        "devtools",
    }
)


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of project module ``name`` (a package's ``__init__.py``), or None when
    it is not the project's."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _type_checking_only(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` — imports under it never run."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@lru_cache(maxsize=4096)
def imported_names(source: str, module: str, is_package: bool) -> frozenset[str]:
    """Every module name ``source`` imports where it can run (at the top, inside functions; not
    under ``if TYPE_CHECKING:``); ``from a import b`` yields both ``a`` and ``a.b`` (b may be a
    submodule), relative imports resolved against ``module``."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    todo: list[ast.AST] = [ast.parse(source)]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            if base:
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        if _type_checking_only(node):
            todo.extend(getattr(node, "orelse", []))
            continue
        todo.extend(ast.iter_child_nodes(node))
    return frozenset(names)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def reach(start: str, root: Path = ROOT) -> tuple[dict[str, Path], set[str]]:
    """Project modules reachable from ``start`` (name → file, packages' ``__init__`` included,
    since importing ``a.b`` runs ``a``) and the top-level names of everything else imported."""
    found: dict[str, Path] = {}
    external: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        for candidate in _parents(name):
            if candidate in found:
                continue
            path = module_file(candidate, root)
            if path is None:
                if candidate == name.split(".")[0]:
                    external.add(candidate)
                continue
            found[candidate] = path
            is_package = path.name == "__init__.py"
            todo.extend(imported_names(path.read_text(), candidate, is_package))
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    return found, {n for n in external if n not in stdlib}


@cache
def _distributions() -> dict[str, tuple[str, ...]]:
    return {k: tuple(v) for k, v in metadata.packages_distributions().items()}


def distribution_versions(top_level_names: Iterable[str]) -> dict[str, str]:
    """``{distribution: version}`` for imported top-level names that an installed distribution
    provides (names nothing provides — optional imports — are left out)."""
    out: dict[str, str] = {}
    for name in top_level_names:
        for dist in _distributions().get(name, ()):
            out[dist] = _version(dist)
    return out


@cache
def _version(dist: str) -> str:
    """Installed version, read once per process (a run never sees an upgrade mid-way)."""
    return metadata.version(dist)


def code_fingerprint(module: str, root: Path = ROOT, also: Iterable[str] = ()) -> str:
    """Hash of the source of every project module ``module`` (and ``also``) reaches, and of the
    installed versions of the distributions they import."""
    modules: dict[str, Path] = {}
    external: set[str] = set()
    for start in (module, *also):
        found, imported = reach(start, root)
        modules |= found
        external |= imported
    h = hashlib.sha256()
    for name in sorted(modules):
        h.update(f"{name}\0".encode())
        h.update(hashlib.sha256(modules[name].read_bytes()).digest())
    for dist, version in sorted(distribution_versions(external).items()):
        h.update(f"{dist}=={version}\0".encode())
    return h.hexdigest()
