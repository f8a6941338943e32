"""Impute: choose how to fill missing total_bedrooms by masked-reconstruction error.

Known values are hidden at random in the training side only, each imputer fills them back,
and the one with the lowest RMSE on the hidden values becomes the model's imputer.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from model_runtime import contract
from pipeline import catalog
from pipeline.model import make_imputer
from pipeline.settings import ImputeConfig

if TYPE_CHECKING:
    from pipeline.step_context import StepContext

TARGET_COLUMN = "total_bedrooms"


def compare(train: pd.DataFrame, config: ImputeConfig) -> pd.DataFrame:
    """One row per imputer: RMSE and MAE on the masked values, and fit time."""
    numeric = train[list(contract.NUMERIC_FEATURES)]
    known = numeric[numeric[TARGET_COLUMN].notna()].reset_index(drop=True)
    rng = np.random.default_rng(config.random_state)
    hidden = rng.random(len(known)) < config.mask_share
    masked = known.copy()
    masked.loc[hidden, TARGET_COLUMN] = np.nan
    truth = known.loc[hidden, TARGET_COLUMN].to_numpy()
    column = list(contract.NUMERIC_FEATURES).index(TARGET_COLUMN)
    rows = []
    for name in config.methods:
        imputer = clone(make_imputer(name, config.random_state))
        began = time.perf_counter()
        filled = np.asarray(imputer.fit_transform(masked))[hidden, column]
        err = filled - truth
        rows.append(
            {
                "imputer": name,
                "rmse": float(np.sqrt(np.mean(err**2))),
                "mae": float(np.mean(np.abs(err))),
                "seconds": time.perf_counter() - began,
                "masked": int(hidden.sum()),
            }
        )
    return pd.DataFrame(rows).sort_values("rmse", kind="stable").reset_index(drop=True)


def plot(table: pd.DataFrame) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.barh(table["imputer"], table["rmse"], color="#4c72b0")
    ax.invert_yaxis()
    ax.set_xlabel("RMSE on hidden total_bedrooms (lower is better)")
    ax.set_title("Imputation by masked reconstruction")
    return fig


def run(ctx: StepContext) -> dict[str, Any]:
    train = ctx.read_frame(catalog.TRAIN)
    table = compare(train, ctx.settings.impute)
    winner = str(table.iloc[0]["imputer"])
    ctx.write_frame("reports/impute.csv", table)
    ctx.write_figure("reports/impute.png", plot(table))
    ctx.write_json(catalog.IMPUTE_DECISION, {"imputer": winner, "table": table.to_dict("records")})
    if ctx.tracker:
        ctx.tracker.params({"imputer": winner})
        ctx.tracker.table("impute", table)
    return {"winner": winner, "rmse": float(table.iloc[0]["rmse"])}
