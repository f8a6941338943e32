from pipeline.settings import ImputeConfig
from pipeline.steps import impute


def test_compares_every_method_and_ranks_by_reconstruction_error(housing_sample):
    table = impute.compare(housing_sample, ImputeConfig())
    assert list(table["imputer"]).count("median") == 1
    assert set(table["imputer"]) == {"median", "mean", "knn", "iterative"}
    assert table["rmse"].is_monotonic_increasing
    # bedrooms follow rooms and households closely: a model-based imputer must beat a constant
    assert table.iloc[0]["imputer"] in {"knn", "iterative"}
    assert table.set_index("imputer").loc["median", "rmse"] > 2 * table.iloc[0]["rmse"]


def test_uses_only_the_rows_it_is_given(housing_sample):
    """The step receives the training side only; scoring a subset changes the masked count."""
    full = impute.compare(housing_sample, ImputeConfig(methods=("median",)))
    half = impute.compare(housing_sample.head(1500), ImputeConfig(methods=("median",)))
    assert half.iloc[0]["masked"] < full.iloc[0]["masked"]
