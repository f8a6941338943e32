"""Evaluate: refit the tuned model on the whole training side and score it on the test side.

This is the only step besides register that reads the test set. It writes the candidate model,
metrics overall, per ocean_proximity and per income band, a sample of its test-side prices beside
the actual ones, plots and permutation importances. The register step attaches them all to the
version (and keeps the importances in its reference profile).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from model_runtime import contract
from pipeline import catalog
from pipeline.cv import xy
from pipeline.metrics import regression_metrics
from pipeline.model import build_model
from pipeline.steps.features import load_spec
from pipeline.steps.split import income_category

if TYPE_CHECKING:
    from pipeline.step_context import StepContext


def errors_by(frame: pd.DataFrame, predictions: np.ndarray, groups: pd.Series) -> pd.DataFrame:
    rows = []
    y = frame[contract.TARGET].to_numpy()
    for group in sorted(groups.dropna().unique(), key=str):
        mask = (groups == group).to_numpy()
        rows.append(
            {
                "group": str(group),
                "rows": int(mask.sum()),
                **regression_metrics(y[mask], predictions[mask]),
            }
        )
    return pd.DataFrame(rows)


#: Test-side houses kept with their predicted and actual prices: enough for a scatter plot, small
#: enough to serve in one answer.
SAMPLE_ROWS = 1000


def scored_sample(
    test: pd.DataFrame, predictions: np.ndarray, rows: int = SAMPLE_ROWS
) -> pd.DataFrame:
    """A fixed random sample of test-side houses: where they are, their income band and ocean
    proximity, and their actual and predicted prices, for charts drawn from data."""
    frame = pd.DataFrame(
        {
            "longitude": test["longitude"].to_numpy(dtype=float),
            "latitude": test["latitude"].to_numpy(dtype=float),
            "median_income": test["median_income"].to_numpy(dtype=float),
            "income_band": income_category(test["median_income"]).astype(str).to_numpy(),
            contract.CATEGORICAL: test[contract.CATEGORICAL].astype(str).to_numpy(),
            "actual": test[contract.TARGET].to_numpy(dtype=float),
            "predicted": np.asarray(predictions, dtype=float),
        }
    )
    if len(frame) > rows:
        frame = frame.sample(n=rows, random_state=42)
    return frame.reset_index(drop=True)


def plots(y: np.ndarray, predictions: np.ndarray) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    residuals = y - predictions
    fig_res, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(predictions, residuals, s=3, alpha=0.3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("predicted price (USD)")
    ax.set_ylabel("actual - predicted (USD)")
    ax.set_title("Residuals on the test set")

    fig_pva, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y, predictions, s=3, alpha=0.3)
    lo, hi = float(min(y.min(), predictions.min())), float(max(y.max(), predictions.max()))
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
    ax.set_xlabel("actual price (USD)")
    ax.set_ylabel("predicted price (USD)")
    ax.set_title("Predicted vs actual, test set")
    return fig_res, fig_pva


def importances(model: Any, X: pd.DataFrame, y: pd.Series, repeats: int) -> pd.DataFrame:
    """Permutation importance of each raw input column, in RMSE lost when it is shuffled."""
    result = permutation_importance(
        model, X, y, scoring="neg_root_mean_squared_error", n_repeats=repeats, random_state=42
    )
    return (
        pd.DataFrame(
            {
                "feature": X.columns,
                "rmse_increase": result.importances_mean,
                "std": result.importances_std,
            }
        )
        .sort_values("rmse_increase", ascending=False)
        .reset_index(drop=True)
    )


def run(ctx: StepContext) -> dict[str, Any]:
    train = ctx.read_frame(catalog.TRAIN)
    test = ctx.read_frame(catalog.TEST)
    decision = ctx.read_json(catalog.TUNE_DECISION)
    model = build_model(load_spec(ctx), decision["family"], decision["params"])
    X_train, y_train = xy(train)
    X_test, y_test = xy(test)
    model.fit(X_train, y_train)
    predictions = np.asarray(model.predict(X_test), dtype=float)
    metrics = regression_metrics(y_test, predictions)
    by_ocean = errors_by(test, predictions, test[contract.CATEGORICAL])
    by_income = errors_by(test, predictions, income_category(test["median_income"]))
    importance = importances(model, X_test, y_test, ctx.settings.evaluate.permutation_repeats)

    buf = io.BytesIO()
    joblib.dump(model, buf, compress=3)
    ctx.write_bytes(catalog.MODEL, buf.getvalue())
    ctx.write_json(
        catalog.EVALUATION,
        {
            "family": decision["family"],
            "params": decision["params"],
            "test_metrics": metrics,
            "test_rows": len(test),
            "train_rows": len(train),
        },
    )
    ctx.write_frame(catalog.ERRORS_BY_OCEAN, by_ocean)
    ctx.write_frame(catalog.ERRORS_BY_INCOME, by_income)
    ctx.write_frame(catalog.FEATURE_IMPORTANCE, importance)
    ctx.write_frame(catalog.TEST_PREDICTIONS, scored_sample(test, predictions))
    fig_res, fig_pva = plots(y_test.to_numpy(dtype=float), predictions)
    ctx.write_figure(catalog.RESIDUALS_PLOT, fig_res)
    ctx.write_figure(catalog.PREDICTED_VS_ACTUAL_PLOT, fig_pva)
    if ctx.tracker:
        ctx.tracker.metrics({f"test_{k}": v for k, v in metrics.items()})
        ctx.tracker.table("errors_by_ocean_proximity", by_ocean)
        ctx.tracker.table("errors_by_income", by_income)
        ctx.tracker.table("feature_importance", importance)
    return {k: metrics[k] for k in ("rmse", "r2", "mape")}
