"""Drift statistics of a current sample against a reference profile, and the decisions.

The statistics are Evidently's defaults for a reference of more than 1,000 rows (the training
side always is), computed from the profile instead of the reference rows:

- numbers: Wasserstein-1 distance divided by the reference's population standard deviation
  (floored at 0.001), as ``evidently.legacy.calculations.stattests.wasserstein_distance_norm``;
- categories: Jensen-Shannon distance of the category shares, natural logarithm
  (``scipy.spatial.distance.jensenshannon`` with ``base=None``), as Evidently's
  ``jensenshannon`` stat test;
- PSI, for reading: numbers binned with NumPy's Sturges edges over reference and current
  together, categories by value, empty bins filled as Evidently's ``get_binned_data`` does.

A column drifts when its statistic is at or above the threshold (Evidently compares with
``>=``). Missing values are left out, as Evidently drops them before its tests. Only numpy and
scipy are needed: the monitor never imports Evidently (tests/parity checks the decisions agree).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import numpy as np
from scipy.spatial import distance

from pipeline.monitoring.profile import (
    PREDICTION,
    CategoricalReference,
    Grid,
    NumericReference,
    Profile,
)

WASSERSTEIN = "wasserstein_distance_norm"
JENSEN_SHANNON = "jensenshannon_distance"
Status = Literal["drift", "no drift", "not enough data"]


# -- the reference as a quantile function ----------------------------------------------------


def _pieces(ref: NumericReference, grid: Grid) -> tuple[np.ndarray, ...]:
    """The reference's quantile function as pieces on [0, 1]: piece k spans levels
    [a_k, b_k] and runs linearly from value lo_k to hi_k (flat for an exact value)."""
    if ref.values is not None and ref.counts is not None:
        values = np.asarray(ref.values, dtype=float)
        cum = np.cumsum(np.asarray(ref.counts, dtype=float))
        b = cum / cum[-1]
        a = np.concatenate([[0.0], b[:-1]])
        return a, b, values, values
    if ref.quantiles is None:
        raise ValueError("a numeric reference holds neither quantiles nor values")
    levels = grid.levels()
    q = np.asarray(ref.quantiles, dtype=float)
    if q.size != levels.size:
        raise ValueError(f"{q.size} quantiles for a grid of {levels.size} levels")
    return levels[:-1], levels[1:], q[:-1], q[1:]


def _finite(values: Any) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def wasserstein_norm(ref: NumericReference, grid: Grid, current: Any) -> float:
    """Wasserstein-1 distance between the reference and ``current`` over the reference's std:
    the integral over u in [0, 1] of |Q_ref(u) - Q_cur(u)|, exactly, for the reference's
    piecewise-linear quantile function and the sample's step function."""
    cur = np.sort(_finite(current))
    n = cur.size
    if n == 0:
        return math.nan
    a, b, lo_v, hi_v = _pieces(ref, grid)
    u = np.unique(np.concatenate([a, b, np.arange(n + 1) / n]))
    left, right = u[:-1], u[1:]
    width = right - left
    keep = width > 0
    left, right, width = left[keep], right[keep], width[keep]
    mid = (left + right) / 2
    c = cur[np.minimum((mid * n).astype(np.int64), n - 1)]
    k = np.clip(np.searchsorted(b, mid, side="left"), 0, a.size - 1)
    span = b[k] - a[k]
    slope = np.where(span > 0, (hi_v[k] - lo_v[k]) / np.where(span > 0, span, 1.0), 0.0)
    d0 = lo_v[k] + slope * (left - a[k]) - c
    d1 = lo_v[k] + slope * (right - a[k]) - c
    a0, a1 = np.abs(d0), np.abs(d1)
    total = a0 + a1
    crossing = (d0 * d1) < 0
    area = np.where(
        crossing, width * (d0**2 + d1**2) / (2 * np.where(total > 0, total, 1.0)), width * total / 2
    )
    return float(area.sum()) / max(ref.std, 0.001)


def _cdf_left(ref: NumericReference, grid: Grid, x: np.ndarray) -> np.ndarray:
    """P(reference < x), exact for exact values, interpolated between quantiles otherwise."""
    if ref.values is not None and ref.counts is not None:
        values = np.asarray(ref.values, dtype=float)
        cum = np.concatenate([[0.0], np.cumsum(np.asarray(ref.counts, dtype=float))])
        return np.asarray(cum[np.searchsorted(values, x, side="left")] / cum[-1])
    levels = grid.levels()
    q = np.asarray(ref.quantiles, dtype=float)
    k = np.searchsorted(q, x, side="right")
    inner = np.clip(k, 1, q.size - 1)
    q0, q1, p0, p1 = q[inner - 1], q[inner], levels[inner - 1], levels[inner]
    frac = np.where(q1 > q0, (x - q0) / np.where(q1 > q0, q1 - q0, 1.0), 1.0)
    f = p0 + np.clip(frac, 0.0, 1.0) * (p1 - p0)
    return np.where(k == 0, 0.0, np.where(k >= q.size, 1.0, f))


def _fill_zeros(shares: np.ndarray) -> np.ndarray:
    """Evidently's ``get_binned_data(..., feel_zeroes=True)``: an empty bin gets a millionth of
    the smallest share when that is at most 0.0001, else 0.0001."""
    out = shares.astype(float).copy()
    nonzero = out[out != 0]
    if nonzero.size:
        smallest = float(nonzero.min())
        out[out == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return out


def _psi(ref_shares: np.ndarray, cur_shares: np.ndarray) -> float:
    r, c = _fill_zeros(ref_shares), _fill_zeros(cur_shares)
    return float(np.sum((r - c) * np.log(r / c)))


def psi_numeric(ref: NumericReference, grid: Grid, current: Any) -> float:
    """PSI over Sturges bins of reference and current together (Evidently's binning for a
    numeric column of more than 20 values), reference shares read from its profile."""
    cur = _finite(current)
    if cur.size == 0:
        return math.nan
    if ref.values is not None:
        ref_min, ref_max = float(ref.values[0]), float(ref.values[-1])
    else:
        assert ref.quantiles is not None
        ref_min, ref_max = float(ref.quantiles[0]), float(ref.quantiles[-1])
    lo, hi = min(ref_min, float(cur.min())), max(ref_max, float(cur.max()))
    bins = math.ceil(math.log2(ref.count + cur.size) + 1)  # NumPy's "sturges"
    edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo - 0.5, lo + 0.5])
    cdf = _cdf_left(ref, grid, edges)
    cdf[-1] = 1.0
    cdf[0] = 0.0
    ref_shares = np.diff(cdf)
    cur_shares = np.histogram(cur, edges)[0] / cur.size
    return _psi(ref_shares, cur_shares)


def _category_shares(ref: CategoricalReference, current: Sequence[Any]) -> tuple[np.ndarray, ...]:
    present = [str(v) for v in current if v is not None and v == v]  # NaN != NaN
    keys = sorted(set(ref.counts) | set(present))
    cur_counts = Counter(present)
    n_cur = max(len(present), 1)
    r = np.array([ref.counts.get(k, 0) / ref.count for k in keys], dtype=float)
    c = np.array([cur_counts.get(k, 0) / n_cur for k in keys], dtype=float)
    return r, c


def jensenshannon(ref: CategoricalReference, current: Sequence[Any]) -> float:
    """Jensen-Shannon distance (natural log) between the category shares."""
    r, c = _category_shares(ref, current)
    if c.sum() == 0:
        return math.nan
    return float(distance.jensenshannon(r, c))


def psi_categorical(ref: CategoricalReference, current: Sequence[Any]) -> float:
    r, c = _category_shares(ref, current)
    return math.nan if c.sum() == 0 else _psi(r, c)


# -- decisions ----------------------------------------------------------------------------


class Thresholds(msgspec.Struct, frozen=True, kw_only=True):
    statistic: float = 0.1
    psi: float = 0.1
    min_rows: int = 200
    top_features: int = 3


class ColumnDrift(msgspec.Struct, frozen=True, kw_only=True):
    """One input's (or the prices') drift: the decision statistic, its threshold and the
    decision, with PSI beside it for reading. A statistic that can't be computed (no value of
    the column in the window) is NaN and counts as drift: the column's distribution changed."""

    feature: str
    kind: Literal["numeric", "categorical", "prediction"]
    statistic: str
    value: float
    threshold: float
    drift: bool
    psi: float
    psi_threshold: float
    current_rows: int
    reference_rows: int
    top_feature: bool = False


def _decide(value: float, threshold: float) -> bool:
    return bool(math.isnan(value) or value >= threshold)


def column_drift(
    profile: Profile, feature: str, current: Any, thresholds: Thresholds
) -> ColumnDrift:
    """The drift of one input (or of :data:`PREDICTION`) in ``current`` (its values)."""
    top = feature in profile.top_features(thresholds.top_features)
    if feature in profile.categorical:
        cat = profile.categorical[feature]
        values = list(current)
        value = jensenshannon(cat, values)
        return ColumnDrift(
            feature=feature,
            kind="categorical",
            statistic=JENSEN_SHANNON,
            value=value,
            threshold=thresholds.statistic,
            drift=_decide(value, thresholds.statistic),
            psi=psi_categorical(cat, values),
            psi_threshold=thresholds.psi,
            current_rows=sum(1 for v in values if v is not None and v == v),
            reference_rows=cat.count,
            top_feature=top,
        )
    if feature == PREDICTION:
        ref, kind = profile.predictions, "prediction"
    elif feature in profile.numeric:
        ref, kind = profile.numeric[feature], "numeric"
    else:
        raise KeyError(f"the profile has no column {feature!r}")
    x = _finite(current)
    value = wasserstein_norm(ref, profile.grid, x)
    return ColumnDrift(
        feature=feature,
        kind=kind,  # type: ignore[arg-type]
        statistic=WASSERSTEIN,
        value=value,
        threshold=thresholds.statistic,
        drift=_decide(value, thresholds.statistic),
        psi=psi_numeric(ref, profile.grid, x),
        psi_threshold=thresholds.psi,
        current_rows=int(x.size),
        reference_rows=ref.count,
        top_feature=top,
    )


class WindowDrift(msgspec.Struct, frozen=True, kw_only=True):
    """A window's verdict for one model version, with every column's entry."""

    model_version: str
    rows: int
    status: Status
    reason: str
    columns: list[ColumnDrift]

    @property
    def drifted(self) -> bool:
        return self.status == "drift"


def window_drift(
    profile: Profile,
    model_version: str,
    columns: dict[str, Any],
    rows: int,
    thresholds: Thresholds,
) -> WindowDrift:
    """Every column's drift, and the window's: it drifts when the prices or any of the
    ``top_features`` most important inputs drift; under ``min_rows`` rows it is "not enough
    data" (its columns are still reported), never "no drift"."""
    entries = [column_drift(profile, name, values, thresholds) for name, values in columns.items()]
    watched = [c for c in entries if c.kind == "prediction" or c.top_feature]
    drifted = [c.feature for c in watched if c.drift]
    if rows < thresholds.min_rows:
        status: Status = "not enough data"
        reason = f"{rows} rows in the window, fewer than the {thresholds.min_rows} needed"
    elif drifted:
        status, reason = "drift", f"drifted: {', '.join(drifted)}"
    else:
        watched_names = ", ".join(c.feature for c in watched)
        status, reason = "no drift", f"none of {watched_names} drifted"
    return WindowDrift(
        model_version=model_version, rows=rows, status=status, reason=reason, columns=entries
    )
