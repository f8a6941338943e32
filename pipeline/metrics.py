"""Regression metrics reported by every step that scores a model."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn import metrics as skm

METRIC_NAMES = ("rmse", "mae", "r2", "mape", "wmape", "within_10pct")


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """RMSE, MAE, R², MAPE, weighted MAPE and the share of predictions within 10% of truth."""
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    abs_err = np.abs(t - p)
    return {
        "rmse": float(skm.root_mean_squared_error(t, p)),
        "mae": float(skm.mean_absolute_error(t, p)),
        "r2": float(skm.r2_score(t, p)),
        "mape": float(skm.mean_absolute_percentage_error(t, p)),
        "wmape": float(abs_err.sum() / np.abs(t).sum()),
        "within_10pct": float(np.mean(abs_err <= 0.1 * np.abs(t))),
    }
