"""Select: k-fold CV of every model family on the same features; the lowest RMSE wins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline import catalog
from pipeline.cv import cross_validate, xy
from pipeline.model import FAMILIES, FeatureSpec, build_model
from pipeline.settings import SelectConfig
from pipeline.steps.features import load_spec

if TYPE_CHECKING:
    from pipeline.step_context import StepContext

COLUMNS = [
    "family",
    "rmse",
    "rmse_std",
    "mae",
    "r2",
    "mape",
    "wmape",
    "within_10pct",
    "fit_seconds",
]


def compare_families(train: pd.DataFrame, spec: FeatureSpec, config: SelectConfig) -> pd.DataFrame:
    X, y = xy(train)
    rows = []
    for family in config.families:
        model = build_model(spec, family, FAMILIES[family])
        rows.append({"family": family, **cross_validate(model, X, y, config.cv_folds, seed=42)})
    table = pd.DataFrame(rows)[COLUMNS]
    return table.sort_values("rmse", kind="stable").reset_index(drop=True)


def run(ctx: StepContext) -> dict[str, Any]:
    train = ctx.read_frame(catalog.TRAIN)
    table = compare_families(train, load_spec(ctx), ctx.settings.select)
    best = str(table.iloc[0]["family"])
    ctx.write_frame("reports/select.csv", table)
    ctx.write_json(catalog.SELECT_DECISION, {"family": best, "table": table.to_dict("records")})
    if ctx.tracker:
        ctx.tracker.params({"family": best})
        ctx.tracker.table("families", table)
        for row in table.to_dict("records"):
            ctx.tracker.metrics({f"{row['family']}_cv_rmse": row["rmse"]})
    return {"family": best, "cv_rmse": float(table.iloc[0]["rmse"])}
