"""Cross-validation shared by the steps that compare models on the training side."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import KFold

from model_runtime import contract
from pipeline.metrics import regression_metrics


def xy(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Raw feature columns and the target, as the model sees them."""
    return frame[list(contract.FEATURES)], frame[contract.TARGET]


def folds(n_splits: int, seed: int) -> KFold:
    return KFold(n_splits=n_splits, shuffle=True, random_state=seed)


def iter_fold_scores(
    model: Any, X: pd.DataFrame, y: pd.Series, n_splits: int, seed: int
) -> Iterator[tuple[dict[str, float], Any]]:
    """Fit a clone per fold; yields the fold's metrics (with fit seconds) and the fitted clone."""
    for train_idx, held_idx in folds(n_splits, seed).split(X):
        fitted = clone(model)
        began = time.perf_counter()
        fitted.fit(X.iloc[train_idx], y.iloc[train_idx])
        seconds = time.perf_counter() - began
        scores = regression_metrics(y.iloc[held_idx], fitted.predict(X.iloc[held_idx]))
        yield {**scores, "fit_seconds": seconds}, fitted


def cross_validate(
    model: Any,
    X: pd.DataFrame,
    y: pd.Series,
    n_splits: int,
    seed: int,
    on_fold: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Mean of each metric over the folds (and the standard deviation of RMSE)."""
    per_fold = []
    for i, (scores, _) in enumerate(iter_fold_scores(model, X, y, n_splits, seed)):
        per_fold.append(scores)
        if on_fold is not None:
            on_fold(i, scores)
    table = pd.DataFrame(per_fold)
    result = {str(k): float(v) for k, v in table.mean().items()}
    result["rmse_std"] = float(np.std(table["rmse"]))
    return result
