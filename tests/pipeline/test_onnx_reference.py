"""The graph carries scikit-learn's prices for some rows, so the service checks it without
loading scikit-learn; a graph and prices that don't belong together are caught."""

from __future__ import annotations

import numpy as np
import pandas as pd

from model_runtime import onnx_runtime
from model_runtime.contract import FEATURES, TARGET
from pipeline import onnx_reference, onnx_translation
from pipeline.model import FeatureSpec, build_model


def fitted(housing: pd.DataFrame, max_iter: int):
    train = housing.sample(4000, random_state=1)
    spec = FeatureSpec(imputer="knn", n_clusters=8, neighbors=8)
    model = build_model(spec, "hist_gradient_boosting", {"max_iter": max_iter})
    return model.fit(train[list(FEATURES)], train[TARGET]), housing.drop(train.index)


def test_the_graph_carries_scikit_learns_prices_and_is_checked_without_scikit_learn(housing):
    model, rest = fitted(housing, 40)
    unseen = rest.sample(1500, random_state=2)[list(FEATURES)].copy()
    unseen.loc[unseen.index[:40], "total_bedrooms"] = np.nan
    nan_rows_last = pd.concat([unseen.iloc[40:], unseen.iloc[:40]])
    rows = onnx_reference.reference_rows(nan_rows_last)
    assert len(rows) == onnx_reference.REFERENCE_ROWS + onnx_reference.REFERENCE_MISSING
    assert rows["total_bedrooms"].iloc[onnx_reference.REFERENCE_ROWS :].isna().all()
    graph = onnx_translation.to_onnx(model)
    assert onnx_runtime.reference_difference(onnx_runtime.session(graph)) is None
    checked = onnx_runtime.session(onnx_reference.with_reference(graph, model, rows))
    assert onnx_runtime.reference_difference(checked) <= onnx_runtime.TOLERANCE
    # Another model's prices (a graph and a reference that don't belong together) are caught.
    other, _ = fitted(housing, 41)
    mismatched = onnx_runtime.session(onnx_reference.with_reference(graph, other, rows))
    assert onnx_runtime.reference_difference(mismatched) > onnx_runtime.TOLERANCE
