"""The reference profile: what a model version was trained on, small enough to keep with it.

A profile summarises, per numeric input, the training side's distribution as quantiles (or, for
an input with few distinct values, the exact count of each value), per category its counts, the
same for the model's prices on the test side, and the evaluate step's importances. The drift
monitor (``pipeline.monitoring.drift``) reads nothing else of the training data.

Quantiles sit on a fixed grid of levels, dense in both tails (where an interpolated quantile
function loses most), and are computed with Hazen's rule (the level of the i-th of n sorted
values is (i - 0.5) / n), so the straight lines between them follow the empirical quantile
function that Evidently's Wasserstein distance integrates. On the housing data the normalised
Wasserstein distance from a profile is within 0.5% of the exact one (tests/pipeline/monitoring/
test_drift.py holds it to 1%), and a profile of the whole data set is about 55 KB; the grid is
written into the profile, so a profile stays readable when the grid changes.

Where it is kept: the register step logs ``reference_profile.json`` as an artifact of the
version's logged model, beside ``model.onnx``. MLflow then shows it with the version, and every
export of the version (``models/<name>/<version>/`` in the artifact store, written through a
checksummed manifest) carries it. The monitor reads it from the export: on GCP the monitor job
has the bucket but needs no route to the private MLflow server, and a locally exported version
reads the same way. Re-exporting (promote, ``pipeline export``) keeps it, since exports are
copies of the logged model's files.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    import pandas as pd

    from housing_platform.artifact_store import ArtifactStore

FILENAME = "reference_profile.json"
FORMAT = 1
MAX_BYTES = 100_000
#: Evidently picks Wasserstein / Jensen-Shannon only for references above this many rows.
MIN_REFERENCE_ROWS = 1001
#: A numeric column with at most this many distinct values is kept exactly (value → count).
MAX_DISCRETE = 250
#: The column name of the model's prices, in profiles and in drift reports.
PREDICTION = "price"
SIGNIFICANT = 7


class ProfileError(PipelineError):
    """A profile that can't be built, stored or read; the message names it and the fix."""


class Grid(msgspec.Struct, frozen=True, kw_only=True):
    """Quantile levels: ``body + 1`` evenly spaced in [0, 1] plus ``tail`` geometrically spaced
    in [tail_min, tail_max] at each end."""

    body: int = 700
    tail: int = 100
    tail_min: float = 1e-5
    tail_max: float = 0.04

    def levels(self) -> np.ndarray:
        return _levels(self.body, self.tail, self.tail_min, self.tail_max)


@functools.lru_cache(maxsize=8)
def _levels(body: int, tail: int, tail_min: float, tail_max: float) -> np.ndarray:
    ends = np.geomspace(tail_min, tail_max, tail)
    levels = np.unique(np.concatenate([np.linspace(0.0, 1.0, body + 1), ends, 1 - ends]))
    levels.flags.writeable = False  # shared by every caller
    return levels


class NumericReference(msgspec.Struct, frozen=True, kw_only=True):
    """One numeric column: either ``quantiles`` on the profile's grid, or (few distinct values)
    ``values`` with their ``counts``. ``std`` is the population standard deviation Evidently
    divides the Wasserstein distance by; missing values are left out of everything else."""

    count: int
    missing: int
    mean: float
    std: float
    quantiles: list[float] | None = None
    values: list[float] | None = None
    counts: list[int] | None = None

    @property
    def discrete(self) -> bool:
        return self.values is not None


class CategoricalReference(msgspec.Struct, frozen=True, kw_only=True):
    """One categorical column: how many rows held each category (missing left out)."""

    count: int
    missing: int
    counts: dict[str, int]

    def shares(self) -> dict[str, float]:
        return {k: v / self.count for k, v in self.counts.items()}


class Importance(msgspec.Struct, frozen=True, kw_only=True):
    feature: str
    rmse_increase: float


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """What a model version was trained on: inputs (training side), prices (test side)."""

    format: int = FORMAT
    model_name: str = ""
    model_version: str = ""
    created_at: str = ""
    reference_rows: int
    prediction_rows: int
    grid: Grid
    numeric: dict[str, NumericReference]
    categorical: dict[str, CategoricalReference]
    predictions: NumericReference
    importances: list[Importance]

    def top_features(self, k: int) -> list[str]:
        """The ``k`` inputs whose shuffling costs the model most RMSE."""
        ranked = sorted(self.importances, key=lambda i: i.rmse_increase, reverse=True)
        return [i.feature for i in ranked[:k]]

    def stamped(self, model_name: str, model_version: str) -> Profile:
        return msgspec.structs.replace(self, model_name=model_name, model_version=model_version)


def _round(values: np.ndarray) -> list[float]:
    """Seven significant digits: far below the 1% the statistics need, a third of the bytes."""
    return [float(f"{v:.{SIGNIFICANT}g}") for v in values.tolist()]


def numeric_reference(values: Any, grid: Grid) -> NumericReference:
    """Summarise one numeric column (array-like, NaN = missing)."""
    x = np.asarray(values, dtype=float)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        raise ProfileError("a numeric column has no values to profile")
    count, missing = int(finite.size), int(x.size - finite.size)
    mean, std = float(finite.mean()), float(finite.std())
    distinct, counts = np.unique(finite, return_counts=True)
    if distinct.size <= MAX_DISCRETE:
        return NumericReference(
            count=count,
            missing=missing,
            mean=mean,
            std=std,
            values=distinct.tolist(),
            counts=counts.tolist(),
        )
    q = np.quantile(finite, grid.levels(), method="hazen")
    return NumericReference(count=count, missing=missing, mean=mean, std=std, quantiles=_round(q))


def categorical_reference(values: Sequence[Any] | pd.Series) -> CategoricalReference:
    import pandas as pd

    series = pd.Series(values, dtype=object)
    present = series.dropna().astype(str)
    counts = present.value_counts()
    return CategoricalReference(
        count=int(present.size),
        missing=int(series.size - present.size),
        counts={str(k): int(v) for k, v in counts.sort_index().items()},
    )


def build(
    train_inputs: pd.DataFrame,
    test_predictions: Any,
    importances: pd.DataFrame | Sequence[Mapping[str, Any]],
    categorical: Sequence[str],
    grid: Grid | None = None,
) -> Profile:
    """A profile from the frames the model saw: its training inputs (numeric columns are every
    column not in ``categorical``), its prices on the test side, and its importances
    (``feature``, ``rmse_increase``)."""
    import pandas as pd

    grid = grid or Grid()
    if len(train_inputs) < MIN_REFERENCE_ROWS:
        raise ProfileError(
            f"the training side has {len(train_inputs)} rows; the monitor's statistics "
            f"(Evidently's for large references) need at least {MIN_REFERENCE_ROWS}"
        )
    rows = (
        importances.to_dict("records")
        if isinstance(importances, pd.DataFrame)
        else list(importances)
    )
    profile = Profile(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        reference_rows=len(train_inputs),
        prediction_rows=len(np.asarray(test_predictions)),
        grid=grid,
        numeric={
            c: numeric_reference(train_inputs[c], grid)
            for c in train_inputs.columns
            if c not in categorical
        },
        categorical={c: categorical_reference(train_inputs[c]) for c in categorical},
        predictions=numeric_reference(test_predictions, grid),
        importances=[
            Importance(feature=str(r["feature"]), rmse_increase=float(r["rmse_increase"]))
            for r in rows
        ],
    )
    check_size(encode(profile))
    return profile


def check_size(data: bytes) -> None:
    if len(data) > MAX_BYTES:
        raise ProfileError(f"profile is {len(data):,} bytes, over the {MAX_BYTES:,} allowed")


def encode(profile: Profile) -> bytes:
    return msgspec.json.encode(profile)


def decode(data: bytes, name: str = FILENAME) -> Profile:
    try:
        profile = msgspec.json.decode(data, type=Profile)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProfileError(f"{name} is not a reference profile: {exc}") from None
    if profile.format != FORMAT:
        raise ProfileError(f"{name} has format {profile.format}; this code reads {FORMAT}")
    if not all(math.isfinite(c.std) for c in profile.numeric.values()):
        raise ProfileError(f"{name} has a non-finite standard deviation")
    return profile


def read(store: ArtifactStore, model_name: str, version: str) -> Profile:
    """The profile of a version, from its export in the artifact store (checked against the
    export's manifest). A version without one names the backfill command."""
    from model_runtime import exports

    prefix = exports.export_prefix(model_name, version)
    hint = f"run `python -m pipeline profile --version {version}` to backfill it"
    try:
        export = exports.Export(store, prefix, where=f"{store.uri}/{prefix}")
        if not export.has(FILENAME):
            raise ProfileError(
                f"model {model_name} version {version} has no {FILENAME} in "
                f"{store.uri}/{prefix}: {hint}"
            )
        data = export.read(FILENAME)
    except exports.ExportError as exc:
        raise ProfileError(f"model {model_name} version {version}: {exc}") from None
    return decode(data, f"{prefix}/{FILENAME}")


def log_to_version(model_name: str, version: str, profile: Profile) -> None:
    """Log the profile as an artifact of the version's logged model (beside ``model.onnx``),
    so the version's downloads and exports carry it. Uses the active MLflow tracking URI."""
    import tempfile
    from pathlib import Path

    from mlflow import MlflowClient

    client = MlflowClient()
    mv = client.get_model_version(model_name, version)
    # MLflow 3 registers a logged model by its URI, ``models:/<model id>``; model_id is not
    # always filled in on the version itself.
    source = str(mv.source or "")
    model_id = mv.model_id or (
        source.removeprefix("models:/") if source.startswith("models:/m-") else ""
    )
    if not model_id:
        raise ProfileError(f"model {model_name} version {version} has no logged model to hold it")
    data = encode(profile.stamped(model_name, version))
    check_size(data)
    with tempfile.TemporaryDirectory(prefix="housing-profile-") as tmp:
        path = Path(tmp) / FILENAME
        path.write_bytes(data)
        client.log_model_artifact(model_id, str(path))
