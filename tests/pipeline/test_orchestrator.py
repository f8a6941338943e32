"""The step cache, declared outputs, and what a failed step leaves behind."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from housing_platform.artifact_store import LocalStore
from pipeline import catalog, orchestrator
from pipeline.code_fingerprint import ROOT, code_fingerprint, reach
from pipeline.errors import PipelineError
from pipeline.settings import load_settings

STEPS = catalog.STEP_NAMES


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of the project's packages, to edit without touching the working tree."""
    root = tmp_path_factory.mktemp("tree")
    shutil.copytree(ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("data"))
    return root


def edit(path: Path) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def edited() -> Iterator[None]:
        before = path.read_bytes()
        path.write_bytes(before + b"\n# an edit\n")
        try:
            yield
        finally:
            path.write_bytes(before)

    return edited()


def step_code(name: str, root: Path) -> str:
    return code_fingerprint(f"pipeline.steps.{name}", root, also=(orchestrator.STEP_RUNTIME,))


@pytest.mark.parametrize("step", STEPS)
def test_editing_any_module_a_step_reaches_changes_its_code_and_no_other_does(step, tree):
    reached = set(reach(f"pipeline.steps.{step}", tree)[0])
    reached |= set(reach(orchestrator.STEP_RUNTIME, tree)[0])
    before = step_code(step, tree)
    for path in sorted((tree / "pipeline").rglob("*.py")):
        module = ".".join(path.relative_to(tree).with_suffix("").parts).removesuffix(".__init__")
        with edit(path):
            changed = step_code(step, tree) != before
        assert changed is (module in reached), f"{step}: editing {module}"


def test_register_reaches_the_fast_form_it_exports():
    """The defect: a hand-kept list left fast_model.py out, so an edited ONNX translation
    reported register as cached and kept the old code's fast form."""
    modules = reach("pipeline.steps.register")[0]
    translation = {"pipeline.onnx_translation", "pipeline.onnx_graph", "pipeline.onnx_reference"}
    assert translation | {"pipeline.model_registry", "pipeline.cv"} <= set(modules)
    assert "pipeline.steps.tune" not in modules


def test_installed_libraries_beside_the_project_are_not_project_code(tmp_path):
    """In an image the project sits in site-packages beside its libraries."""
    for name in ("pipeline", "somelib"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            "import somelib\n" if name == "pipeline" else ""
        )
    modules, external = reach("pipeline", tmp_path)
    assert set(modules) == {"pipeline"}
    assert external == {"somelib"}


def test_imports_inside_functions_count_and_type_checking_ones_do_not(tmp_path, monkeypatch):
    from pipeline import code_fingerprint as cf

    monkeypatch.setattr(cf, "PROJECT_PACKAGES", cf.PROJECT_PACKAGES | {"pkg"})
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg import c\n"
        "def f():\n    from . import b\n    import numpy.linalg\n"
    )
    (pkg / "b.py").write_text("import json\n")
    (pkg / "c.py").write_text("")
    modules, external = reach("pkg.a", tmp_path)
    assert set(modules) == {"pkg", "pkg.a", "pkg.b"}
    assert external == {"numpy"}


def test_an_upgraded_library_changes_the_code_of_the_steps_that_import_it(monkeypatch):
    from pipeline import code_fingerprint as cf

    before = {s: orchestrator.step_code(s) for s in ("tune", "validate")}
    real = cf.metadata.version
    monkeypatch.setattr(cf.metadata, "version", lambda d: "99.0" if d == "optuna" else real(d))
    cf._version.cache_clear()  # as in a new process: versions are read once per process
    try:
        assert orchestrator.step_code("tune") != before["tune"]
        assert orchestrator.step_code("validate") == before["validate"]
    finally:
        cf._version.cache_clear()


@pytest.fixture
def inputs(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path / "artifacts")
    for spec in catalog.CATALOG:
        for key in spec.outputs:
            store.write_bytes(key, f"{key} bytes".encode())
    return store


def fingerprints(store: LocalStore, code: dict[str, str]) -> dict[str, str]:
    settings = load_settings(None, {}, {})
    out: dict[str, str] = {}
    for name in STEPS:
        out[name] = orchestrator.fingerprint(
            catalog.BY_NAME[name], settings, store, out, code.get(name, "v1")
        )
    return out


def downstream(step: str) -> set[str]:
    found = {step}
    for spec in catalog.CATALOG:
        if any(catalog.producer(k) in found for k in spec.inputs):
            found.add(spec.name)
    return found


@pytest.mark.parametrize("step", STEPS)
def test_a_code_change_reruns_the_step_and_everything_after_it(step, inputs):
    before = fingerprints(inputs, {})
    after = fingerprints(inputs, {step: "v2"})
    rerun = {name for name in STEPS if before[name] != after[name]}
    assert rerun == downstream(step)


class NullTracker:
    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        class Step:
            def metrics(self, *_: object, **__: object) -> None:
                pass

        yield Step()  # type: ignore[misc]

    def finish(self, status: str = "FINISHED") -> None:
        self.status = status


def test_a_step_that_writes_an_undeclared_key_fails_and_commits_nothing(inputs, monkeypatch):
    from pipeline.steps import split

    def run(ctx):
        for key in catalog.BY_NAME["split"].outputs:
            ctx.write_bytes(key, b"new")
        ctx.write_bytes("data/extra.parquet", b"x")

    monkeypatch.setattr(split, "run", run)
    tracker = NullTracker()
    with pytest.raises(PipelineError, match=r"wrote 'data/extra.parquet', which it does not"):
        orchestrator.run_pipeline(
            load_settings(None, {}, {}), inputs, tracker, steps=["split"], echo=lambda _: None
        )
    assert tracker.status == "FAILED"
    assert not inputs.exists("data/extra.parquet")
    assert inputs.read_bytes(catalog.TRAIN) == f"{catalog.TRAIN} bytes".encode()
    assert not inputs.exists("state/split.json")


def test_a_failed_step_leaves_nothing_that_looks_complete(inputs, monkeypatch):
    from pipeline.steps import split

    def run(ctx):
        ctx.write_bytes(catalog.TRAIN, b"half")
        raise ValueError("disk full")

    monkeypatch.setattr(split, "run", run)
    with pytest.raises(PipelineError, match="step split failed: ValueError: disk full"):
        orchestrator.run_pipeline(
            load_settings(None, {}, {}), inputs, NullTracker(), steps=["split"],
            echo=lambda _: None,
        )  # fmt: skip
    assert inputs.read_bytes(catalog.TRAIN) == f"{catalog.TRAIN} bytes".encode()
    assert not inputs.exists("state/split.json")


def test_a_tree_under_no_declared_prefix_is_refused(inputs):
    from pipeline.step_context import StepContext

    ctx = StepContext(catalog.BY_NAME["evaluate"], load_settings(None, {}, {}), inputs, None)
    with pytest.raises(PipelineError, match="publishes 'models/x/1', under no prefix it declares"):
        ctx.publish("models/x/1", [("a", b"1")])
