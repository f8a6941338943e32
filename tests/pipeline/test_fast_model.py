"""The fast form decides as scikit-learn does: same prices on rows it never saw, NaN bedrooms
included; what it can't translate is refused, never approximated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model_runtime import onnx_runtime
from model_runtime.contract import FEATURES, TARGET
from pipeline import fast_model
from pipeline.model import FeatureSpec, build_model


def fitted(housing: pd.DataFrame, imputer: str, family: str, params: dict):
    train = housing.sample(4000, random_state=1)
    model = build_model(FeatureSpec(imputer=imputer, n_clusters=8, neighbors=8), family, params)
    model.fit(train[list(FEATURES)], train[TARGET])
    unseen = housing.drop(train.index).sample(1500, random_state=2)[list(FEATURES)].copy()
    unseen.loc[unseen.index[:40], "total_bedrooms"] = np.nan
    return model, unseen


@pytest.mark.parametrize(
    ("imputer", "params"),
    [
        ("knn", {"max_iter": 120, "target_transform": "sqrt"}),
        ("median", {"max_iter": 60, "target_transform": "log"}),
        ("mean", {"max_iter": 60, "target_transform": "none"}),
    ],
)
def test_the_fast_form_agrees_with_scikit_learn_on_unseen_rows(housing, imputer, params):
    model, unseen = fitted(housing, imputer, "hist_gradient_boosting", params)
    session = onnx_runtime.session(fast_model.to_onnx(model))
    assert onnx_runtime.agreement(model, session, unseen) <= onnx_runtime.TOLERANCE
    one = unseen.iloc[[40]]
    assert onnx_runtime.agreement(model, session, one) <= onnx_runtime.TOLERANCE


def test_a_different_model_is_caught_by_the_agreement_check(housing):
    model, unseen = fitted(housing, "median", "hist_gradient_boosting", {"max_iter": 30})
    other, _ = fitted(housing, "median", "hist_gradient_boosting", {"max_iter": 31})
    session = onnx_runtime.session(fast_model.to_onnx(other))
    assert onnx_runtime.agreement(model, session, unseen) > onnx_runtime.TOLERANCE


def test_the_graph_carries_scikit_learns_prices_and_is_checked_without_scikit_learn(housing):
    model, unseen = fitted(housing, "knn", "hist_gradient_boosting", {"max_iter": 40})
    nan_rows_last = pd.concat([unseen.iloc[40:], unseen.iloc[:40]])
    rows = fast_model.reference_rows(nan_rows_last)
    assert len(rows) == fast_model.REFERENCE_ROWS + fast_model.REFERENCE_MISSING
    assert rows["total_bedrooms"].iloc[fast_model.REFERENCE_ROWS :].isna().all()
    graph = fast_model.to_onnx(model)
    assert onnx_runtime.reference_difference(onnx_runtime.session(graph)) is None
    checked = onnx_runtime.session(fast_model.with_reference(graph, model, rows))
    assert onnx_runtime.reference_difference(checked) <= onnx_runtime.TOLERANCE
    # Another model's prices (a graph and a reference that don't belong together) are caught.
    other, _ = fitted(housing, "knn", "hist_gradient_boosting", {"max_iter": 41})
    mismatched = onnx_runtime.session(fast_model.with_reference(graph, other, rows))
    assert onnx_runtime.reference_difference(mismatched) > onnx_runtime.TOLERANCE


@pytest.mark.parametrize(
    ("imputer", "family", "message"),
    [
        ("iterative", "hist_gradient_boosting", "no ONNX translation for imputer"),
        ("median", "ridge", "no fast form for Ridge"),
    ],
)
def test_what_has_no_faithful_translation_is_refused(housing, imputer, family, message):
    params = {"max_iter": 10} if family == "hist_gradient_boosting" else {}
    model, _ = fitted(housing, imputer, family, params)
    with pytest.raises(fast_model.NotConvertibleError, match=message):
        fast_model.to_onnx(model)


def test_raw_thresholds_decide_exactly_like_the_transformed_ones():
    def transform(raw):
        return (np.log1p(raw) - 7.1) / 0.9

    thresholds = transform(np.array([0.0, 1.0, 880.0, 1234.5, 5e4])) + np.array(
        [0.0, 1e-13, 0.0, -1e-12, 3e-9]
    )
    raw = fast_model._raw_threshold(thresholds, transform)
    for t, r in zip(thresholds, raw, strict=True):
        assert transform(np.array([r]))[0] <= t
        assert transform(np.array([np.nextafter(r, np.inf)]))[0] > t
