"""How closely two sets of prices for the same houses agree: the one report schema that replay,
the safe-release shadow report and the console all read. It lives with the model's run time
because the serving revision computes it too (the shadow mirror's report, service/shadow_report.py),
and serving code never imports the pipeline.

``served`` is the reference (what the live model answered); ``other`` is what another version
says about the same houses, row for row. Relative figures are taken against ``served``.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
from numpy.typing import ArrayLike


class Agreement(msgspec.Struct, frozen=True, kw_only=True):
    """Agreement between two price columns; every figure is None when no house was compared."""

    n: int
    """Houses compared (pairs where both prices are finite)."""
    mape: float | None
    """Mean of |other - served| / |served|, as a share (0.05 = 5%)."""
    within_5pct: float | None
    """Share of houses where the two prices are within 5% of ``served``."""
    within_10pct: float | None
    """Share of houses where the two prices are within 10% of ``served``."""
    mean_signed_difference: float | None
    """Mean of other - served, in dollars: positive = the other version prices higher."""
    spearman: float | None
    """Spearman rank correlation of the two columns; None when undefined (fewer than two houses,
    or a column of one constant price)."""


def agreement(served: ArrayLike, other: ArrayLike) -> Agreement:
    """The agreement of ``other`` with ``served``, pair by pair. Pairs with a missing or infinite
    price on either side, or a served price of 0 (no relative difference), are left out (``n``
    counts the rest); a length mismatch is an error."""
    from scipy.stats import spearmanr

    a = np.asarray(served, dtype=np.float64).ravel()
    b = np.asarray(other, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"served has {a.size} prices but other has {b.size}: compare row by row")
    keep = np.isfinite(a) & np.isfinite(b) & (a != 0)
    a, b = a[keep], b[keep]
    if a.size == 0:
        return Agreement(
            n=0,
            mape=None,
            within_5pct=None,
            within_10pct=None,
            mean_signed_difference=None,
            spearman=None,
        )
    relative = np.abs(b - a) / np.abs(a)
    rho: float | None = None
    if a.size >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
        value = float(spearmanr(a, b).statistic)
        rho = value if math.isfinite(value) else None
    return Agreement(
        n=int(a.size),
        mape=float(relative.mean()),
        within_5pct=float(np.mean(relative <= 0.05)),
        within_10pct=float(np.mean(relative <= 0.10)),
        mean_signed_difference=float(np.mean(b - a)),
        spearman=rho,
    )
