"""Realised error: sold prices (labels) joined to the logged predictions, and the window's error
per model version — the only direct measure of a model's decay
(``python -m pipeline feedback --labels FILE``).

A labels file (CSV or parquet) holds the actual price and either the ``request_id`` the service
answered with, or the nine inputs of the house (or both). A label joins to the latest logged
prediction with that request id (and those inputs, when given), or else (no id, or an id that
matches nothing) with those inputs; inputs
are compared as the service logs them: the category normalised as the service normalises it,
numbers within a relative 1e-6 (a missing ``total_bedrooms`` matches a missing one).

The joined labels are stored atomically at ``feedback/<sha256 of the file>.parquet``: feeding the
same file twice rewrites the same object, and a prediction labelled by two files counts once.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import pandas as pd

from model_runtime import prediction_records
from model_runtime.contract import (
    CATEGORICAL,
    FEATURES,
    NUMERIC_FEATURES,
    normalise_ocean_proximity,
)
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from housing_platform.artifact_store import ArtifactStore

PREFIX = "feedback/"
#: Names the actual price may go by in a labels file, the first found wins.
PRICE_COLUMNS = ("actual_price", "sold_price", "median_house_value")
#: What identifies one logged prediction.
IDENTITY = ("request_id", "time", "model_version", *FEATURES)
STORED = (*IDENTITY, "price", "actual_price")
RTOL = 1e-6
#: How far back ``feedback`` looks for the predictions the labels belong to, by default.
LOOKBACK_DAYS = 90


class FeedbackError(PipelineError):
    """A labels file that can't be used; the message names the problem and the fix."""


class RealisedError(msgspec.Struct, frozen=True, kw_only=True):
    """A version's error on the labelled houses of a window, as the evaluate step measures it on
    the test set (``pipeline.metrics``): MAPE and the within-10% share relative to the truth."""

    n: int
    rmse: float
    mape: float
    within_10pct: float


class VersionError(msgspec.Struct, frozen=True, kw_only=True):
    """One version's realised error in a window beside its test-side figures, for the report."""

    model_version: str
    realised: RealisedError | None
    """None: no labelled prediction of this version in the window yet."""
    test: dict[str, float]
    """The version's test-set metrics (``rmse``, ``mape``, ``within_10pct``, …)."""


@dataclass(frozen=True)
class JoinResult:
    joined: pd.DataFrame
    """Columns :data:`STORED`, one row per labelled prediction."""
    labels: int
    by_request_id: int
    by_inputs: int

    @property
    def unmatched(self) -> int:
        return self.labels - len(self.joined)


def read_labels(path: str | Path) -> pd.DataFrame:
    """The labels file as a frame with ``actual_price``, ``request_id`` (empty when absent) and
    the nine inputs (when given), normalised as the service logs them."""
    path = Path(path)
    if not path.is_file():
        raise FeedbackError(f"feedback: labels file {path} does not exist")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, low_memory=False, dtype={"request_id": "string"})
    except Exception as exc:  # pandas and pyarrow raise many types for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FeedbackError(f"feedback: {path} can't be read as CSV or parquet: {first}") from None
    price = next((c for c in PRICE_COLUMNS if c in frame.columns), None)
    if price is None:
        raise FeedbackError(
            f"feedback: {path} has no price column: name the sold price one of "
            f"{', '.join(PRICE_COLUMNS)}"
        )
    has_inputs = all(c in frame.columns for c in FEATURES)
    if "request_id" not in frame.columns and not has_inputs:
        missing = [c for c in FEATURES if c not in frame.columns]
        raise FeedbackError(
            f"feedback: {path} has neither a request_id column nor the nine inputs (missing "
            f"{', '.join(missing)}): give the request id the service answered with, or the house"
        )
    out = pd.DataFrame(index=frame.index)
    out["actual_price"] = pd.to_numeric(frame[price], errors="coerce")
    values = out["actual_price"].to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values) | (values <= 0))
    if len(bad):
        raise FeedbackError(
            f"feedback: {path}: {len(bad)} row(s) have no positive number in {price} "
            f"(first: data row {int(bad[0]) + 1}); fix or drop them"
        )
    if "request_id" in frame.columns:
        ids = frame["request_id"]
        out["request_id"] = ids.where(ids.notna(), "").astype(str).str.strip()
    else:
        out["request_id"] = ""
    if has_inputs:
        for name in NUMERIC_FEATURES:
            out[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
        out[CATEGORICAL] = [
            normalise_ocean_proximity(str(v)) if isinstance(v, str) else ""
            for v in frame[CATEGORICAL]
        ]
    if out.empty:
        raise FeedbackError(f"feedback: {path} holds no labels")
    return out.reset_index(drop=True)


def _same_inputs(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """Row-wise: are the inputs of ``a`` and ``b`` (aligned) the same house?"""
    same = a[CATEGORICAL].to_numpy() == b[CATEGORICAL].to_numpy()
    for name in NUMERIC_FEATURES:
        x = a[name].to_numpy(dtype=float)
        y = b[name].to_numpy(dtype=float)
        same &= np.isclose(x, y, rtol=RTOL, atol=RTOL) | (np.isnan(x) & np.isnan(y))
    return np.asarray(same, dtype=bool)


def _log_frame(log: pd.DataFrame) -> pd.DataFrame:
    frame = log.copy()
    for name in NUMERIC_FEATURES:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    frame[CATEGORICAL] = frame[CATEGORICAL].astype(str)
    frame["request_id"] = frame["request_id"].astype(str)
    frame["model_version"] = frame["model_version"].astype(str)
    return frame.reset_index(drop=True).rename_axis("log_row").reset_index()


def _latest(candidates: pd.DataFrame) -> pd.DataFrame:
    """One logged prediction per label: the latest."""
    return candidates.sort_values("time").groupby("label", sort=False).tail(1)


def join(labels: pd.DataFrame, log: pd.DataFrame) -> JoinResult:
    """Pure: each label joined to one logged prediction (see the module's rules); labels that
    match nothing, or only several predictions of one request without the inputs to tell them
    apart, are left out (``unmatched``)."""
    logged = _log_frame(log)
    labels = labels.reset_index(drop=True).rename_axis("label").reset_index()
    if all(c in labels.columns for c in FEATURES):
        given = labels[[c for c in FEATURES if c != "total_bedrooms"]]
        inputs = given.notna().all(axis=1) & (labels[CATEGORICAL] != "")
    else:
        inputs = pd.Series(False, index=labels.index)
    parts: list[pd.DataFrame] = []

    with_id = labels[labels["request_id"] != ""]
    by_id = pd.DataFrame()
    if len(with_id):
        cand = with_id.merge(logged, on="request_id", suffixes=("", "_log"))
        keep = cand["label"].map(inputs).to_numpy(dtype=bool)
        if keep.any():
            logged_inputs = cand[[f"{c}_log" for c in FEATURES]].set_axis(list(FEATURES), axis=1)
            keep = keep & _same_inputs(cand, logged_inputs)
        per_label = cand.groupby("label")["log_row"].transform("size").to_numpy()
        alone = ~cand["label"].map(inputs).to_numpy(dtype=bool) & (per_label == 1)
        by_id = _latest(cand[keep | alone])
        parts.append(by_id)

    by_inputs = pd.DataFrame()
    rest = labels[inputs & ~labels["label"].isin(by_id["label"] if len(by_id) else [])]
    if len(rest):
        keyed = rest.assign(_lon=_grid(rest["longitude"]), _lat=_grid(rest["latitude"]))
        logk = logged.assign(_lon=_grid(logged["longitude"]), _lat=_grid(logged["latitude"]))
        cand = keyed.merge(logk, on=["_lon", "_lat", CATEGORICAL], suffixes=("", "_log"))
        logged_inputs = cand[[f"{c}_log" if c != CATEGORICAL else c for c in FEATURES]]
        logged_inputs = logged_inputs.set_axis(list(FEATURES), axis=1)
        by_inputs = _latest(cand[_same_inputs(cand, logged_inputs)])
        parts.append(by_inputs)

    if parts and sum(len(p) for p in parts):
        chosen = pd.concat([p for p in parts if len(p)], ignore_index=True)
        chosen = chosen.drop_duplicates("log_row", keep="last")
        rows = logged.loc[chosen["log_row"].to_numpy()].reset_index(drop=True)
        rows["actual_price"] = chosen["actual_price"].to_numpy(dtype=float)
        joined = rows[list(STORED)]
    else:
        joined = pd.DataFrame({c: [] for c in STORED})
    return JoinResult(joined, len(labels), len(by_id), len(by_inputs))


def _grid(values: pd.Series) -> pd.Series:
    """A coarse key for a coordinate (1/1000 degree; the census gives two decimals), so the
    input join compares only houses in the same cell instead of every pair."""
    return (pd.to_numeric(values, errors="coerce").astype(float) * 1000).round().astype("Int64")


def feed(
    store: ArtifactStore, labels_file: str | Path, since: datetime, until: datetime
) -> tuple[JoinResult, str]:
    """Adapter: read and check the labels, join them to the log of [since, until), store the
    joined labels atomically; returns the join and the object key. A file that matches nothing is
    an error and writes nothing."""
    path = Path(labels_file)
    labels = read_labels(path)
    log = prediction_records.read_window(store, since, until)
    result = join(labels, log)
    if result.joined.empty:
        raise FeedbackError(
            f"feedback: none of the {result.labels} label(s) in {path} matches a prediction "
            f"logged between {since.date()} and {until.date()} in {store.uri}: check the request "
            "ids or the inputs, or widen --since"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    key = f"{PREFIX}{digest}.parquet"
    frame = result.joined.assign(fed_at=datetime.now(UTC).timestamp())
    out = io.BytesIO()
    frame.to_parquet(out, index=False)
    store.write_bytes(key, out.getvalue())
    return result, key


def read_feedback(store: ArtifactStore) -> pd.DataFrame:
    """Every stored label, one row per labelled prediction (the latest fed wins)."""
    frames = [pd.read_parquet(io.BytesIO(store.read_bytes(k))) for k in store.list(PREFIX)]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: [] for c in (*STORED, "fed_at")})
    frame = pd.concat(frames, ignore_index=True).sort_values("fed_at")
    frame["model_version"] = frame["model_version"].astype(str)
    key = frame[list(IDENTITY)].astype(str).agg("\x1f".join, axis=1)
    return frame[~key.duplicated(keep="last")].reset_index(drop=True)


def realised_error(
    store: ArtifactStore, since: datetime, until: datetime, model_version: str
) -> RealisedError | None:
    """The realised error of ``model_version`` on the labelled predictions it made in
    [since, until) (by the time it priced them); None when none is labelled yet. The monitor
    reports it beside :func:`version_test_metrics` of the same version."""
    frame = read_feedback(store)
    t = frame["time"].astype(float)
    mine = frame[
        (frame["model_version"] == str(model_version))
        & (t >= since.timestamp())
        & (t < until.timestamp())
    ]
    if mine.empty:
        return None
    return errors(mine["actual_price"], mine["price"])


def errors(actual: pd.Series, predicted: pd.Series) -> RealisedError:
    """Pure: RMSE, MAPE and the within-10% share, as ``pipeline.metrics`` defines them."""
    from pipeline.metrics import regression_metrics

    with warnings.catch_warnings():  # R² of one house is undefined; it isn't reported
        warnings.simplefilter("ignore")
        m = regression_metrics(actual.to_numpy(dtype=float), predicted.to_numpy(dtype=float))
    return RealisedError(
        n=len(actual), rmse=m["rmse"], mape=m["mape"], within_10pct=m["within_10pct"]
    )


def version_test_metrics(model_name: str, version: str) -> dict[str, float]:
    """The test-side figures the register step tagged on a version (``test_rmse`` → ``rmse``),
    from the registry MLflow points at (call ``configure_mlflow`` first); {} for none."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from model_runtime.loader import metrics_of

    try:
        found = MlflowClient().get_model_version(model_name, version)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return {}  # logged by a version this registry doesn't hold (another home, deleted)
    return metrics_of(dict(found.tags))


def realised_vs_test(
    store: ArtifactStore,
    since: datetime,
    until: datetime,
    versions: list[str],
    test_side: Callable[[str], dict[str, float]],
) -> list[VersionError]:
    """The monitor's call: per version, the window's realised error beside ``test_side(version)``
    (e.g. ``lambda v: version_test_metrics(model_name, v)``, after ``configure_mlflow``)."""
    return [
        VersionError(
            model_version=v,
            realised=realised_error(store, since, until, v),
            test=test_side(v),
        )
        for v in versions
    ]
