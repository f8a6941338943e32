import pytest
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import FunctionTransformer

from pipeline.model import FeatureSpec, build_model
from pipeline.model_registry import promotion_decision, trusted_types


def test_first_model_becomes_champion():
    assert promotion_decision(40_000, None, 0.01, "auto") == (True, "no champion yet")


def test_challenger_must_beat_champion_by_the_margin():
    promote, reason = promotion_decision(39_700, 40_000, 0.01, "auto")
    assert not promote
    assert "needs <= 39,600" in reason
    assert promotion_decision(39_500, 40_000, 0.01, "auto")[0]


def test_manual_policy_never_promotes_by_itself():
    promote, reason = promotion_decision(1.0, None, 0.0, "manual")
    assert not promote
    assert "python -m pipeline promote" in reason


def test_trusted_types_are_only_the_projects_and_its_libraries(housing_sample):
    from model_runtime import contract

    X, y = housing_sample[list(contract.FEATURES)], housing_sample[contract.TARGET]
    model = build_model(FeatureSpec(n_clusters=3), "ridge", {"target_transform": "log"}).fit(X, y)
    types = trusted_types(model)
    assert "model_runtime.transformers.ClusterSimilarity" in types
    assert all(
        t.startswith(
            (
                "model_runtime.transformers.",
                "sklearn.",
                "numpy.",
                "builtins.",
                "scipy.",
                "collections.",
            )
        )
        for t in types
    )


def test_foreign_types_are_refused():
    import json

    model = FunctionTransformer(json.dumps).fit([[1.0]])
    with pytest.raises(ValueError, match="outside the project"):
        trusted_types(model)
    assert trusted_types(LinearRegression()) == ["sklearn.linear_model._base.LinearRegression"]


def test_experimental_estimators_are_listed_whatever_the_import_order():
    from pipeline.model import make_imputer

    types = trusted_types(make_imputer("iterative").fit([[1.0, 2.0], [2.0, None], [3.0, 6.0]]))
    assert "sklearn.impute._iterative.IterativeImputer" in types
