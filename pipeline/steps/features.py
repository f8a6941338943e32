"""Features: fix the feature pipeline, choosing the number of geographic clusters by CV error.

Silhouette says how well KMeans separates points; what matters is how much the clusters help
the model, so each candidate is scored by cross-validated RMSE of a quick boosted model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pandas as pd

from pipeline import catalog
from pipeline.cv import cross_validate, xy
from pipeline.model import FAMILIES, FeatureSpec, build_model
from pipeline.settings import FeaturesConfig

if TYPE_CHECKING:
    from pipeline.step_context import StepContext

#: A quick, strong-enough model to rank feature variants with.
PROBE_FAMILY = "hist_gradient_boosting"


def compare_clusters(
    train: pd.DataFrame, imputer: str, config: FeaturesConfig
) -> tuple[FeatureSpec, pd.DataFrame]:
    X, y = xy(train)

    def spec_for(n_clusters: int) -> FeatureSpec:
        return FeatureSpec(
            imputer=imputer,  # type: ignore[arg-type]
            n_clusters=n_clusters,
            cluster_gamma=config.cluster_gamma,
            neighbors=config.neighbors,
            random_state=config.random_state,
        )

    rows = []
    for k in config.cluster_candidates:
        model = build_model(spec_for(k), PROBE_FAMILY, FAMILIES[PROBE_FAMILY])
        scores = cross_validate(model, X, y, config.cv_folds, config.random_state)
        rows.append({"n_clusters": k, **scores})
    table = pd.DataFrame(rows).sort_values("rmse", kind="stable").reset_index(drop=True)
    return spec_for(int(table.iloc[0]["n_clusters"])), table


def load_spec(ctx: StepContext) -> FeatureSpec:
    return msgspec.convert(ctx.read_json(catalog.FEATURES_DECISION)["spec"], FeatureSpec)


def run(ctx: StepContext) -> dict[str, Any]:
    train = ctx.read_frame(catalog.TRAIN)
    imputer = ctx.read_json(catalog.IMPUTE_DECISION)["imputer"]
    spec, table = compare_clusters(train, imputer, ctx.settings.features)
    ctx.write_frame("reports/features.csv", table)
    ctx.write_json(
        catalog.FEATURES_DECISION,
        {"spec": msgspec.to_builtins(spec), "table": table.to_dict("records")},
    )
    if ctx.tracker:
        ctx.tracker.params(msgspec.to_builtins(spec))
        ctx.tracker.table("clusters", table)
    return {"n_clusters": spec.n_clusters, "cv_rmse": float(table.iloc[0]["rmse"])}
