import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from model_runtime.transformers import (
    ClusterSimilarity,
    NeighborTargetEncoder,
    ScaledKNNImputer,
    ratio_features,
)


@parametrize_with_checks(
    [
        ClusterSimilarity(n_clusters=3, random_state=0),
        NeighborTargetEncoder(n_neighbors=2),
        ScaledKNNImputer(),
    ]
)
def test_follows_scikit_learn_contract(estimator, check):
    check(estimator)


def test_ratio_features_are_per_household_and_tolerate_zero_denominators():
    frame = pd.DataFrame(
        {
            "total_rooms": [10.0, 6.0],
            "total_bedrooms": [2.0, 3.0],
            "population": [8.0, 4.0],
            "households": [4.0, 0.0],
        }
    )
    out = ratio_features(frame)
    assert out["rooms_per_household"].iloc[0] == pytest.approx(2.5)
    assert out["bedrooms_per_room"].iloc[1] == pytest.approx(0.5)
    assert np.isnan(out["population_per_household"].iloc[1])
    assert list(frame.columns) == ["total_rooms", "total_bedrooms", "population", "households"]


def test_neighbor_encoder_never_sees_a_rows_own_target_when_fitting():
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(200, 2))
    y = rng.normal(size=200)
    y[0] = 1e6  # a row that would dominate its own encoding if it leaked
    X[1] = X[0] + 1e-9  # its nearest neighbour sits on top of it
    encoded = NeighborTargetEncoder(n_neighbors=1).fit_transform(X, y)
    assert encoded[0, 0] != pytest.approx(1e6)
    # at prediction time the training points are all available
    assert NeighborTargetEncoder(n_neighbors=1).fit(X, y).transform(X[:1])[0, 0] == pytest.approx(
        1e6
    )


def test_cluster_similarity_is_one_at_a_centre_and_names_its_features():
    X = np.array([[0.0, 0.0], [0.0, 0.1], [10.0, 10.0], [10.0, 10.1]])
    sim = ClusterSimilarity(n_clusters=2, gamma=1.0, random_state=0).fit(X)
    out = sim.transform(sim.kmeans_.cluster_centers_)
    assert np.allclose(np.diag(out), 1.0)
    assert list(sim.get_feature_names_out()) == ["clustersimilarity0", "clustersimilarity1"]


def test_scaled_knn_imputer_fills_in_original_units():
    X = np.array([[1.0, 1000.0], [1.1, 1100.0], [5.0, 5000.0], [1.05, np.nan]])
    filled = ScaledKNNImputer(n_neighbors=2).fit_transform(X)
    assert 1000.0 <= filled[3, 1] <= 1100.0
