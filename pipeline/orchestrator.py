"""Runs the steps in order, skipping those whose inputs, config and code are unchanged.

Each step's outputs are staged in memory and committed to the store only when the step
succeeds, so a failure never leaves half an artifact behind. A state record per step holds the
fingerprint it ran with.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from housing_platform.artifact_store import ArtifactStore, sha256, to_json
from pipeline import catalog, run_lock
from pipeline.code_fingerprint import code_fingerprint
from pipeline.errors import PipelineError
from pipeline.experiment_tracking import Tracker
from pipeline.settings import Settings
from pipeline.step_context import StepContext

__all__ = ["PipelineError", "StepContext", "StepResult", "run_pipeline"]


class StepResult(msgspec.Struct):
    name: str
    status: str  # "ran", "cached", "failed"
    seconds: float
    fingerprint: str = ""
    summary: dict[str, Any] = {}


#: What every step's code runs through besides its own imports: the context it writes with.
STEP_RUNTIME = "pipeline.step_context"


def step_code(name: str) -> str:
    """Fingerprint of step ``name``'s code: every project module it reaches and the installed
    versions of the libraries they import (see ``code_fingerprint``)."""
    return code_fingerprint(f"pipeline.steps.{name}", also=(STEP_RUNTIME,))


def fingerprint(
    spec: catalog.StepSpec,
    settings: Settings,
    store: ArtifactStore,
    upstream: dict[str, str] | None = None,
    code: str = "",
) -> str:
    """Hash of the step's code, its config section, its inputs' content and their producers'
    fingerprints, so a change anywhere upstream re-runs every step after it."""
    h = hashlib.sha256()
    h.update(spec.name.encode())
    h.update((code or step_code(spec.name)).encode())
    section = getattr(settings, spec.name, None)
    h.update(msgspec.json.encode(section))
    for key in spec.inputs:
        if not store.exists(key):
            raise PipelineError(
                f"step {spec.name} needs {key!r}, which is missing: "
                f"run step {catalog.producer(key)} first"
            )
        h.update(key.encode())
        h.update(sha256(store.read_bytes(key)).encode())
        producer = catalog.producer(key)
        h.update(((upstream or {}).get(producer) or _recorded(store, producer)).encode())
    return h.hexdigest()


def _recorded(store: ArtifactStore, name: str) -> str:
    key = _state_key(name)
    if not store.exists(key):
        return ""
    return str(json.loads(store.read_bytes(key)).get("fingerprint", ""))


def _state_key(name: str) -> str:
    return f"state/{name}.json"


def is_fresh(spec: catalog.StepSpec, store: ArtifactStore, fp: str) -> bool:
    return _recorded(store, spec.name) == fp and all(store.exists(k) for k in spec.outputs)


def select_steps(steps: Sequence[str] | None, start: str | None) -> tuple[list[str], bool]:
    """The steps to consider and whether they are forced (named explicitly by the user)."""
    names = list(catalog.STEP_NAMES)
    if steps and start:
        raise PipelineError("use either --steps or --from, not both")
    if steps:
        unknown = [s for s in steps if s not in names]
        if unknown:
            raise PipelineError(f"unknown step(s) {unknown}; steps are: {', '.join(names)}")
        return [n for n in names if n in steps], True
    if start:
        if start not in names:
            raise PipelineError(f"unknown step {start!r}; steps are: {', '.join(names)}")
        return names[names.index(start) :], True
    return names, False


def run_pipeline(
    settings: Settings,
    store: ArtifactStore,
    tracker: Tracker,
    steps: Sequence[str] | None = None,
    start: str | None = None,
    force: bool = False,
    echo: Callable[[str], None] = print,
    gcs_client: Any = None,
) -> list[StepResult]:
    """Run the selected steps; returns one result per step, in order."""
    names, forced = select_steps(steps, start)
    force = force or forced
    results: list[StepResult] = []
    fingerprints: dict[str, str] = {}
    code: dict[str, str] = {}
    status = "FAILED"  # until every step has finished
    try:
        with run_lock.holding(settings.home_path):
            for i, name in enumerate(names, 1):
                spec = catalog.BY_NAME[name]
                prefix = f"[{i}/{len(names)}] {name:<9}"
                began = time.perf_counter()
                fp = fingerprint(
                    spec, settings, store, fingerprints, code.setdefault(name, step_code(name))
                )
                fingerprints[name] = fp
                if not force and is_fresh(spec, store, fp):
                    results.append(StepResult(name, "cached", time.perf_counter() - began, fp))
                    echo(f"{prefix} cached")
                    continue
                echo(f"{prefix} running…")
                module = importlib.import_module(f"pipeline.steps.{name}")
                with tracker.step(name) as step_tracker:
                    ctx = StepContext(spec, settings, store, step_tracker, gcs_client, fp)
                    try:
                        summary = module.run(ctx) or {}
                    except PipelineError:
                        status = "FAILED"
                        raise
                    except Exception as exc:
                        status = "FAILED"
                        raise PipelineError(
                            f"step {name} failed: {type(exc).__name__}: {exc}"
                        ) from exc
                    missing = [k for k in spec.outputs if k not in ctx.staged]
                    if missing:
                        status = "FAILED"
                        raise PipelineError(f"step {name} did not write {missing}")
                    undeclared = sorted(k for k in ctx.staged if k not in spec.outputs)
                    if undeclared:
                        status = "FAILED"
                        raise PipelineError(
                            f"step {name} wrote {undeclared[0]!r}, which it does not declare: "
                            "add it to the step's outputs in pipeline/catalog.py"
                        )
                    for key, data in ctx.staged.items():
                        store.write_bytes(key, data)
                    seconds = time.perf_counter() - began
                    store.write_bytes(
                        _state_key(name),
                        to_json({"fingerprint": fp, "seconds": seconds, "summary": summary}),
                    )
                    step_tracker.metrics({"step_seconds": seconds})
                results.append(StepResult(name, "ran", seconds, fp, summary))
                echo(f"{prefix} done in {seconds:.1f}s  {_short(summary)}")
        status = "FINISHED"
    finally:
        tracker.finish(status)
    return results


def _short(summary: dict[str, Any]) -> str:
    return "  ".join(f"{k}={_fmt(v)}" for k, v in list(summary.items())[:5])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def summary_table(results: Sequence[StepResult]) -> str:
    """The closing table: step, status, seconds."""
    lines = [f"{'step':<10} {'status':<7} {'seconds':>8}", "-" * 27]
    for r in results:
        lines.append(f"{r.name:<10} {r.status:<7} {r.seconds:>8.2f}")
    total = sum(r.seconds for r in results)
    hits = sum(r.status == "cached" for r in results)
    lines.append("-" * 27)
    lines.append(f"{'total':<10} {f'{hits} hit':<7} {total:>8.2f}")
    return "\n".join(lines)
