"""The model: one scikit-learn Pipeline from raw columns to a price.

Everything between a raw row and a prediction (imputation, ratios, logs, one-hot, geographic
features, the target transform) lives in this one estimator. It is what gets saved, so the
service runs exactly the code that was trained.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import numpy as np
from sklearn.base import RegressorMixin
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import (
    ExtraTreesRegressor,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer as _IterativeImputer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from model_runtime.contract import CATEGORICAL, NUMERIC_FEATURES
from model_runtime.transformers import (
    RATIOS,
    ClusterSimilarity,
    NeighborTargetEncoder,
    ScaledKNNImputer,
    ratio_feature_names,
    ratio_features,
)

ImputerName = Literal["median", "mean", "knn", "iterative"]
IMPUTERS: tuple[ImputerName, ...] = ("median", "mean", "knn", "iterative")
TargetTransform = Literal["none", "sqrt", "log"]

#: Counts and ratios whose long right tail a log flattens.
HEAVY_TAILED = (
    "total_rooms",
    "total_bedrooms",
    "population",
    "households",
    "median_income",
    *(name for _, _, name in RATIOS),
)
LINEAR_SCALE = ("longitude", "latitude", "housing_median_age")
COORDINATES = ["latitude", "longitude"]


class FeatureSpec(msgspec.Struct, frozen=True):
    """What the features step decided: the imputer and the geographic features."""

    imputer: ImputerName = "median"
    n_clusters: int = 10
    cluster_gamma: float = 1.0
    neighbors: int = 8
    random_state: int = 42


def make_imputer(name: ImputerName, random_state: int = 42) -> Any:
    if name == "median":
        return SimpleImputer(strategy="median")
    if name == "mean":
        return SimpleImputer(strategy="mean")
    if name == "knn":
        return ScaledKNNImputer(n_neighbors=5)
    if name == "iterative":
        return _IterativeImputer(max_iter=10, min_value=0.0, random_state=random_state)
    raise ValueError(f"unknown imputer {name!r}; choose one of {', '.join(IMPUTERS)}")


def build_preprocessor(spec: FeatureSpec) -> Pipeline:
    """Raw columns → model features, as one fitted-together Pipeline."""
    impute = ColumnTransformer(
        [
            ("numeric", make_imputer(spec.imputer, spec.random_state), list(NUMERIC_FEATURES)),
            ("categorical", "passthrough", [CATEGORICAL]),
        ],
        verbose_feature_names_out=False,
    )
    encode: list[tuple[str, Any, list[str]]] = [
        (
            "log",
            make_pipeline(
                FunctionTransformer(np.log1p, feature_names_out="one-to-one"), StandardScaler()
            ),
            list(HEAVY_TAILED),
        ),
        ("linear", StandardScaler(), list(LINEAR_SCALE)),
        ("ocean", OneHotEncoder(handle_unknown="ignore", sparse_output=False), [CATEGORICAL]),
    ]
    if spec.n_clusters > 0:
        geo = ClusterSimilarity(spec.n_clusters, spec.cluster_gamma, spec.random_state)
        encode.append(("geo", geo, COORDINATES))
    if spec.neighbors > 0:
        encode.append(("neighbors", NeighborTargetEncoder(spec.neighbors), COORDINATES))
    return Pipeline(
        [
            ("impute", impute),
            (
                "ratios",
                FunctionTransformer(ratio_features, feature_names_out=ratio_feature_names),
            ),
            ("encode", ColumnTransformer(encode)),
        ]
    ).set_output(transform="pandas")


#: Model families compared by the select step, with defaults that are sound without tuning.
FAMILIES: dict[str, dict[str, Any]] = {
    "ridge": {"alpha": 1.0, "target_transform": "log"},
    "knn": {"n_neighbors": 10, "target_transform": "none"},
    "random_forest": {
        "n_estimators": 100,
        "max_features": 0.5,
        "max_samples": 0.5,
        "min_samples_leaf": 2,
        "target_transform": "none",
    },
    "extra_trees": {
        "n_estimators": 100,
        "max_features": 0.7,
        "min_samples_leaf": 2,
        "target_transform": "none",
    },
    "hist_gradient_boosting": {
        "learning_rate": 0.1,
        "max_iter": 300,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 20,
        "l2_regularization": 0.0,
        "max_features": 1.0,
        "target_transform": "sqrt",
    },
}

_TARGET_FUNCS = {"sqrt": (np.sqrt, np.square), "log": (np.log, np.exp)}


def make_estimator(family: str, params: dict[str, Any], random_state: int = 42) -> RegressorMixin:
    """A bare regressor of ``family``; ``params`` are its hyper-parameters."""
    p = {k: v for k, v in params.items() if k != "target_transform"}
    if family == "ridge":
        return Ridge(**p)
    if family == "knn":
        return KNeighborsRegressor(weights="distance", **p)
    if family == "random_forest":
        return RandomForestRegressor(random_state=random_state, n_jobs=-1, **p)
    if family == "extra_trees":
        return ExtraTreesRegressor(random_state=random_state, n_jobs=-1, **p)
    if family == "hist_gradient_boosting":
        p.setdefault("early_stopping", False)
        return HistGradientBoostingRegressor(random_state=random_state, **p)
    raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")


def build_model(spec: FeatureSpec, family: str, params: dict[str, Any]) -> Pipeline:
    """The whole model: preprocessing, then the regressor on a transformed target."""
    regressor: Any = make_estimator(family, params, spec.random_state)
    transform: TargetTransform = params.get("target_transform", "none")
    if transform != "none":
        func, inverse = _TARGET_FUNCS[transform]
        regressor = TransformedTargetRegressor(
            regressor, func=func, inverse_func=inverse, check_inverse=False
        )
    return Pipeline([("preprocess", build_preprocessor(spec)), ("regressor", regressor)])
