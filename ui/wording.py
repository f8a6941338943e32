"""Metrics in words and units, for people who run the platform rather than read `mae`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: The pipeline's income bands (pipeline/steps/split.py): upper bounds of median income, $10k.
INCOME_BAND_TOPS = (1.5, 3.0, 4.5, 6.0, math.inf)


def money(value: float) -> str:
    return f"${value:,.0f}"


def share(value: float) -> str:
    return f"{value:.0%}"


def metric_words(metrics: Mapping[str, float]) -> list[tuple[str, str, str]]:
    """(label, value, what it means) for each test metric there is, most telling first."""
    out = []
    if "mae" in metrics:
        out.append(
            (
                "Typical error",
                money(metrics["mae"]),
                "mean absolute error on the test houses: how far off a price usually is",
            )
        )
    if "rmse" in metrics:
        out.append(
            ("RMSE", money(metrics["rmse"]), "root mean squared error: big misses weigh more")
        )
    if "within_10pct" in metrics:
        out.append(
            (
                "Houses within 10%",
                share(metrics["within_10pct"]),
                "share of test houses priced within 10% of their actual value",
            )
        )
    if "mape" in metrics:
        out.append(
            (
                "Relative error",
                f"{metrics['mape']:.1%}",
                "mean absolute percentage error",
            )
        )
    if "r2" in metrics:
        out.append(("Variation explained", share(metrics["r2"]), "R², on the test houses"))
    return out


def income_band(median_income: float) -> str:
    """The band (``"1"``-``"5"``) of a median income, as the pipeline cuts them."""
    for band, top in enumerate(INCOME_BAND_TOPS, start=1):
        if median_income <= top:
            return str(band)
    return str(len(INCOME_BAND_TOPS))


def band_words(band: str) -> str:
    i = int(band) - 1
    low = 0.0 if i == 0 else INCOME_BAND_TOPS[i - 1]
    top = INCOME_BAND_TOPS[i]
    if math.isinf(top):
        return f"median income above ${low * 10_000:,.0f}"
    return f"median income ${low * 10_000:,.0f} to ${top * 10_000:,.0f}"


def typical_error_for(
    errors_by_income: Sequence[Mapping[str, Any]], median_income: float
) -> tuple[str, float] | None:
    """(band, typical error in USD) of test houses in the same income band, or None when the
    version's report has no row for it."""
    band = income_band(median_income)
    for row in errors_by_income:
        if str(row.get("group")) == band:
            return band, float(row["mae"])
    return None
