"""Kept importable for models saved before the custom transformers moved to
``model_runtime.transformers``: skops records each type and function by module path (and MLflow
lists them as ``skops_trusted_types`` in the MLmodel file), so those models name
``pipeline.transformers.*``. Nothing in the project imports this module;
``tests/model_runtime/test_saved_before_the_move.py`` loads such a model."""

from model_runtime.transformers import (
    ClusterSimilarity,
    NeighborTargetEncoder,
    ScaledKNNImputer,
    ratio_feature_names,
    ratio_features,
)

__all__ = [
    "ClusterSimilarity",
    "NeighborTargetEncoder",
    "ScaledKNNImputer",
    "ratio_feature_names",
    "ratio_features",
]
