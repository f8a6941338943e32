import numpy as np
import pytest

from model_runtime import contract
from pipeline.model import FAMILIES, FeatureSpec, build_model, make_imputer


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_trains_and_predicts_from_raw_columns(family, housing_sample):
    X = housing_sample[list(contract.FEATURES)]
    y = housing_sample[contract.TARGET]
    params = dict(FAMILIES[family])
    if "n_estimators" in params:
        params["n_estimators"] = 10
    if "max_iter" in params:
        params["max_iter"] = 20
    model = build_model(FeatureSpec(n_clusters=5), family, params).fit(X, y)
    predictions = model.predict(X.head(50))
    assert predictions.shape == (50,)
    assert np.all(np.isfinite(predictions))


def test_model_predicts_rows_with_missing_bedrooms_and_unseen_category(housing_sample):
    X = housing_sample[list(contract.FEATURES)]
    y = housing_sample[contract.TARGET]
    model = build_model(FeatureSpec(n_clusters=3), "ridge", FAMILIES["ridge"]).fit(X, y)
    row = X.head(1).copy()
    row["total_bedrooms"] = np.nan
    row["ocean_proximity"] = "ISLAND-ISH"
    assert np.isfinite(model.predict(row)).all()


def test_unknown_imputer_names_the_choices():
    with pytest.raises(ValueError, match="median, mean, knn, iterative"):
        make_imputer("zero")  # type: ignore[arg-type]
