"""Replay: price the houses the service logged in a window with another model version, and say how
far its prices are from what was served (``python -m pipeline replay --version N``).

The version is loaded as the service loads it (``model_runtime.loader``: the registry's fast ONNX
form when it reproduces scikit-learn's prices on the rows it carries, else the scikit-learn
model), so a replay is what serving that version would have answered. The report is written
atomically to ``reports/replay/<until>-v<version>.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from model_runtime import onnx_runtime, prediction_records
from model_runtime.contract import FEATURES
from pipeline.errors import PipelineError
from pipeline.monitoring.agreement import Agreement, agreement

if TYPE_CHECKING:
    from housing_platform.artifact_store import ArtifactStore
    from model_runtime.loader import Loaded
    from pipeline.settings import Settings

REPORTS = "reports/replay/"
Pricer = Callable[[pd.DataFrame], NDArray[np.float64]]


class ReplayReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a replay found: the agreement overall and per version that served the houses."""

    model_name: str
    version: str
    """The version the logged houses were priced with again."""
    form: str
    """The runtime that priced them: "onnxruntime" or "scikit-learn"."""
    since: str
    until: str
    """The window, ISO 8601 UTC, [since, until)."""
    rows: int
    """Logged houses in the window."""
    seconds: float
    """Time to price them (after loading the version)."""
    agreement: Agreement
    by_served_version: dict[str, Agreement]


def features_frame(log: pd.DataFrame) -> pd.DataFrame:
    """The model's raw input columns from logged rows: numbers as floats (a missing
    ``total_bedrooms`` as NaN), the category as the string the service normalised it to."""
    frame = pd.DataFrame(
        {name: pd.to_numeric(log[name], errors="coerce").astype(float) for name in FEATURES[:-1]}
    )
    frame[FEATURES[-1]] = log[FEATURES[-1]].astype(str).to_numpy(dtype=object)
    return frame


def compare(log: pd.DataFrame, price: Pricer) -> tuple[Agreement, dict[str, Agreement]]:
    """Pure core: logged rows priced again by ``price``, against the served ``price`` column —
    overall and per served model version."""
    other = np.asarray(price(features_frame(log)), dtype=np.float64) if len(log) else np.empty(0)
    served = log["price"].to_numpy(dtype=np.float64)
    versions = log["model_version"].astype(str).to_numpy()
    per = {
        str(v): agreement(served[versions == v], other[versions == v])
        for v in sorted(set(versions.tolist()))
    }
    return agreement(served, other), per


def pricer(loaded: Loaded) -> tuple[Pricer, str]:
    """A price function for a loaded version, chosen as the service chooses: the fast form once it
    reproduces the prices kept in its graph (or scikit-learn's on the logged example), else the
    scikit-learn pipeline; and the form's name."""
    if loaded.fast is not None:
        fast = onnx_runtime.session(loaded.fast)
        diff = onnx_runtime.reference_difference(fast)
        if diff is None:
            model, example = loaded.sklearn()
            if example is not None:
                diff = onnx_runtime.agreement(model, fast, example)
        if diff is not None and diff <= onnx_runtime.TOLERANCE:
            return (lambda frame: onnx_runtime.predict(fast, onnx_runtime.inputs(frame))), (
                "onnxruntime"
            )
    model, _ = loaded.sklearn()
    return (lambda frame: np.asarray(model.predict(frame), dtype=np.float64)), "scikit-learn"


def load_version(settings: Settings, version: str) -> Loaded:
    """Version ``version`` of the registered model, from the registry the pipeline writes to."""
    from model_runtime.loader import ModelSource, from_mlflow

    source = ModelSource(
        model_uri=f"models:/{settings.register.model_name}/{version}",
        tracking_uri=settings.mlflow_uri,
        fallback="",
    )
    try:
        return from_mlflow(source)
    except Exception as exc:  # MLflow raises its own types for an unknown name or version
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise PipelineError(
            f"replay: version {version} of {settings.register.model_name} can't be loaded from "
            f"{settings.mlflow_uri}: {first}; `python -m pipeline report` lists the versions"
        ) from None


_UNITS = {"m": 1 / 60, "h": 1.0, "d": 24.0}


def window_hours(text: str) -> float:
    """``--window``: ``90m``, ``24h``, ``2d`` or a bare number of hours, as the monitor reads it."""
    value = text.strip().lower()
    scale = _UNITS.get(value[-1:])
    number = value[:-1] if scale is not None else value
    try:
        hours = float(number) * (scale or 1.0)
    except ValueError:
        hours = float("nan")
    if not hours > 0 or hours == float("inf"):
        raise PipelineError(
            f"replay: --window {text!r} is not a duration: give e.g. 90m, 24h, 2d (or hours)"
        )
    return hours


def window(until: datetime | None, hours: float) -> tuple[datetime, datetime]:
    """[until - hours, until), until defaulting to now (UTC)."""
    end = (until or datetime.now(UTC)).astimezone(UTC)
    return end - timedelta(hours=hours), end


def report_key(until: datetime, version: str) -> str:
    return f"{REPORTS}{until.strftime('%Y%m%dT%H%M%SZ')}-v{version}.json"


def replay(
    store: ArtifactStore,
    loaded: Loaded,
    since: datetime,
    until: datetime,
    *,
    model_name: str = "",
) -> tuple[ReplayReport, str]:
    """Adapter: read the window's log, price it with ``loaded``, write the report atomically;
    returns the report and its key. A window with no logged houses is an error (nothing is
    written): there is nothing to compare."""
    log = prediction_records.read_window(store, since, until)
    if log.empty:
        raise PipelineError(
            f"replay: no logged houses between {since.isoformat()} and {until.isoformat()} in "
            f"{store.uri}; widen --window or check the service's prediction log settings"
        )
    price, form = pricer(loaded)
    began = time.perf_counter()
    overall, per = compare(log, price)
    seconds = time.perf_counter() - began
    version = loaded.meta.version
    report = ReplayReport(
        model_name=model_name or loaded.meta.name,
        version=version,
        form=form,
        since=since.isoformat(),
        until=until.isoformat(),
        rows=len(log),
        seconds=round(seconds, 3),
        agreement=overall,
        by_served_version=per,
    )
    key = report_key(until, version)
    store.write_bytes(key, msgspec.json.format(msgspec.json.encode(report), indent=2))
    return report, key


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def summary(report: ReplayReport) -> str:
    """A few lines for the terminal."""
    a = report.agreement
    lines = [
        f"replayed {report.rows:,} logged houses ({report.since} .. {report.until}) on "
        f"{report.model_name} version {report.version} ({report.form}) in {report.seconds:.2f}s",
        f"{'served by':<12} {'houses':>8} {'MAPE':>7} {'±5%':>7} {'±10%':>7} "
        f"{'mean diff $':>12} {'spearman':>9}",
    ]
    rows: list[tuple[str, Agreement]] = [*report.by_served_version.items(), ("all", a)]
    for name, x in rows:
        diff = "n/a" if x.mean_signed_difference is None else f"{x.mean_signed_difference:,.0f}"
        rho = "n/a" if x.spearman is None else f"{x.spearman:.3f}"
        lines.append(
            f"{name:<12} {x.n:>8,} {_pct(x.mape):>7} {_pct(x.within_5pct):>7} "
            f"{_pct(x.within_10pct):>7} {diff:>12} {rho:>9}"
        )
    return "\n".join(lines)


def run(
    settings: Settings,
    store: ArtifactStore,
    version: str,
    *,
    hours: float | str | None = None,
    until: datetime | None = None,
) -> tuple[ReplayReport, str]:
    """The CLI's entry: load ``version`` from the registry and replay the window on it
    (``hours``: a number, or ``--window``'s text; default ``monitor.window_hours``)."""
    if isinstance(hours, str):
        hours = window_hours(hours)
    since, end = window(until, hours or settings.monitor.window_hours)
    loaded = load_version(settings, version)
    return replay(store, loaded, since, end, model_name=settings.register.model_name)
