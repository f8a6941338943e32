"""Custom scikit-learn transformers of the model pipeline.

They follow scikit-learn's contract (parameters stored in ``__init__``, checks in ``fit``,
fitted attributes ending in ``_``, feature names out) so they clone, pickle, serialise with
skops and pass ``parametrize_with_checks``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    OneToOneFeatureMixin,
    TransformerMixin,
)
from sklearn.cluster import KMeans
from sklearn.impute import KNNImputer
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.model_selection import KFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.utils.validation import check_is_fitted, validate_data

#: Per-household ratios of block-group totals: (numerator, denominator, name).
RATIOS = (
    ("total_rooms", "households", "rooms_per_household"),
    ("total_bedrooms", "total_rooms", "bedrooms_per_room"),
    ("population", "households", "population_per_household"),
)


def ratio_features(X: Any) -> Any:
    """Append the per-household ratios to a frame of the raw numeric columns."""
    out = X.copy()
    for num, den, name in RATIOS:
        out[name] = X[num] / X[den].where(X[den] != 0)
    return out


def ratio_feature_names(transformer: Any, input_features: Any) -> NDArray[np.object_]:
    """Feature names for :func:`ratio_features`, for ``FunctionTransformer``."""
    return np.asarray([*input_features, *(name for _, _, name in RATIOS)], dtype=np.object_)


class ClusterSimilarity(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """RBF similarity of each point to KMeans centres fitted on the training coordinates.

    Prices cluster geographically (Bay Area, Los Angeles, the coast); similarity to learned
    centres gives any model a smooth notion of "near which hub".
    """

    def __init__(self, n_clusters: int = 10, gamma: float = 1.0, random_state: int | None = None):
        self.n_clusters = n_clusters
        self.gamma = gamma
        self.random_state = random_state

    def fit(self, X: ArrayLike, y: ArrayLike | None = None):
        X = validate_data(self, X)
        self.kmeans_ = KMeans(self.n_clusters, n_init=10, random_state=self.random_state)
        self.kmeans_.fit(X)
        self._n_features_out = self.n_clusters
        return self

    def transform(self, X: ArrayLike) -> NDArray[np.float64]:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return rbf_kernel(X, self.kmeans_.cluster_centers_, gamma=self.gamma)


class NeighborTargetEncoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Distance-weighted mean target of the nearest training points, one column.

    Like scikit-learn's ``TargetEncoder``, ``fit_transform`` is cross-fitted: each training row
    is encoded by a model that never saw it, so the downstream model can't learn from leakage.
    ``transform`` on new rows uses all training points.
    """

    def __init__(self, n_neighbors: int = 8, cv: int = 5, random_state: int | None = 0):
        self.n_neighbors = n_neighbors
        self.cv = cv
        self.random_state = random_state

    def _knn(self) -> KNeighborsRegressor:
        return KNeighborsRegressor(n_neighbors=self.n_neighbors, weights="distance")

    def fit(self, X: ArrayLike, y: ArrayLike):
        X_arr, y_arr = validate_data(self, X, y, y_numeric=True)
        n_samples = np.shape(X_arr)[0]
        if self.n_neighbors < 1:
            raise ValueError(f"n_neighbors must be >= 1, got {self.n_neighbors}")
        if n_samples < self.n_neighbors:
            raise ValueError(
                f"n_samples = {n_samples} is fewer than n_neighbors = {self.n_neighbors}"
            )
        self.knn_ = self._knn().fit(X_arr, y_arr)
        self._n_features_out = 1
        return self

    def fit_transform(self, X: ArrayLike, y: ArrayLike | None = None, **fit_params: Any):
        if y is None:
            raise ValueError("NeighborTargetEncoder needs y to fit")
        self.fit(X, y)
        X_arr, y_arr = validate_data(self, X, y, y_numeric=True, reset=False)
        out = np.empty(X_arr.shape[0])
        n_splits = min(self.cv, X_arr.shape[0] // self.n_neighbors)
        if n_splits < 2:
            return self.transform(X_arr)
        folds = KFold(n_splits, shuffle=True, random_state=self.random_state)
        for train_idx, held_idx in folds.split(X_arr):
            knn = self._knn().fit(X_arr[train_idx], y_arr[train_idx])
            out[held_idx] = knn.predict(X_arr[held_idx])
        return out.reshape(-1, 1)

    def transform(self, X: ArrayLike) -> NDArray[np.float64]:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return np.asarray(self.knn_.predict(X), dtype=float).reshape(-1, 1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


class ScaledKNNImputer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """KNN imputation on standardised columns, returning values in their original units.

    Plain ``KNNImputer`` measures distance in raw units, so the column with the largest numbers
    (room counts) decides who the neighbours are.
    """

    def __init__(self, n_neighbors: int = 5):
        self.n_neighbors = n_neighbors

    def fit(self, X: ArrayLike, y: ArrayLike | None = None):
        X_arr = np.asarray(validate_data(self, X, ensure_all_finite="allow-nan"), dtype=float)
        self.mean_ = np.nanmean(X_arr, axis=0)
        scale = np.nanstd(X_arr, axis=0)
        self.scale_ = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        self.mean_ = np.where(np.isfinite(self.mean_), self.mean_, 0.0)
        self.imputer_ = KNNImputer(n_neighbors=self.n_neighbors, keep_empty_features=True)
        self.imputer_.fit((X_arr - self.mean_) / self.scale_)
        return self

    def transform(self, X: ArrayLike) -> NDArray[np.float64]:
        check_is_fitted(self)
        X_arr = np.asarray(
            validate_data(self, X, reset=False, ensure_all_finite="allow-nan"), dtype=float
        )
        filled = self.imputer_.transform((X_arr - self.mean_) / self.scale_)
        return np.asarray(filled * self.scale_ + self.mean_, dtype=float)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
