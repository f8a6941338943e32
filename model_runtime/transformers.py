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
from sklearn.neighbors import KDTree
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


def _squared(diff: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray((diff * diff).sum(axis=-1), dtype=np.float64)


def _weighted_mean(
    d2: NDArray[np.float64], targets: NDArray[np.float64], kth: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Mean target of the places within the k-th distance, weighted by 1/distance; places at
    distance zero take all the weight."""
    near = d2 <= kth
    exact = near & (d2 == 0)
    with np.errstate(divide="ignore"):
        weights = np.where(near, 1.0 / np.sqrt(d2), 0.0)
    weights = np.where(exact.any(axis=1, keepdims=True), exact * 1.0, weights)
    return np.asarray((weights * targets).sum(axis=1) / weights.sum(axis=1), dtype=np.float64)


class NeighborTargetEncoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Distance-weighted mean target of the nearest training places, one column.

    Rows sharing coordinates (block groups often do) are one place with their mean target, and
    every place as near as the k-th nearest counts: on a coordinate grid, ties at the k-th
    distance are common, and no storage order may decide them (nor could a compiled form
    reproduce it). A place at distance zero takes all the weight.

    Like scikit-learn's ``TargetEncoder``, ``fit_transform`` is cross-fitted: each training row
    is encoded by places that never saw it, so the downstream model can't learn from leakage.
    ``transform`` on new rows uses all training places.
    """

    def __init__(self, n_neighbors: int = 8, cv: int = 5, random_state: int | None = 0):
        self.n_neighbors = n_neighbors
        self.cv = cv
        self.random_state = random_state

    @staticmethod
    def places(
        X: NDArray[np.float64], y: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Distinct coordinates and the mean target at each."""
        places, which = np.unique(X, axis=0, return_inverse=True)
        which = which.reshape(-1)
        return places, np.bincount(which, weights=y) / np.bincount(which)

    @staticmethod
    def encode(
        X: NDArray[np.float64],
        places: NDArray[np.float64],
        targets: NDArray[np.float64],
        k: int,
        margin: int = 32,
    ) -> NDArray[np.float64]:
        """A k-d tree proposes the nearest ``k + margin`` places; the decision is then made on
        squared distances summed in coordinate order (what the fast form computes), and a row
        whose tie runs past the proposals is decided against every place."""
        k = min(k, len(places))
        m = min(k + margin, len(places))
        _, proposed = KDTree(places).query(X, k=m)
        d2 = _squared(X[:, None, :] - places[proposed])
        kth = np.partition(d2, k - 1, axis=1)[:, k - 1 : k]
        out = _weighted_mean(d2, targets[proposed], kth)
        crowded = np.flatnonzero((d2.max(axis=1, keepdims=True) <= kth).ravel() & (m < len(places)))
        for start in range(0, len(crowded), 256):
            rows = crowded[start : start + 256]
            all_d2 = _squared(X[rows, None, :] - places[None, :, :])
            all_kth = np.partition(all_d2, k - 1, axis=1)[:, k - 1 : k]
            out[rows] = _weighted_mean(all_d2, np.broadcast_to(targets, all_d2.shape), all_kth)
        return out

    def fit(self, X: ArrayLike, y: ArrayLike):
        X_arr, y_arr = validate_data(self, X, y, y_numeric=True)
        n_samples = np.shape(X_arr)[0]
        if self.n_neighbors < 1:
            raise ValueError(f"n_neighbors must be >= 1, got {self.n_neighbors}")
        if n_samples < self.n_neighbors:
            raise ValueError(
                f"n_samples = {n_samples} is fewer than n_neighbors = {self.n_neighbors}"
            )
        self.places_, self.place_targets_ = self.places(
            np.asarray(X_arr, dtype=float), np.asarray(y_arr, dtype=float)
        )
        self._n_features_out = 1
        return self

    def fit_transform(self, X: ArrayLike, y: ArrayLike | None = None, **fit_params: Any):
        if y is None:
            raise ValueError("NeighborTargetEncoder needs y to fit")
        self.fit(X, y)
        X_arr, y_arr = validate_data(self, X, y, y_numeric=True, reset=False)
        X_arr, y_arr = np.asarray(X_arr, dtype=float), np.asarray(y_arr, dtype=float)
        n_splits = min(self.cv, X_arr.shape[0] // self.n_neighbors)
        if n_splits < 2:
            return self.transform(X_arr)
        out = np.empty(X_arr.shape[0])
        folds = KFold(n_splits, shuffle=True, random_state=self.random_state)
        for train_idx, held_idx in folds.split(X_arr):
            places, targets = self.places(X_arr[train_idx], y_arr[train_idx])
            out[held_idx] = self.encode(X_arr[held_idx], places, targets, self.n_neighbors)
        return out.reshape(-1, 1)

    def transform(self, X: ArrayLike) -> NDArray[np.float64]:
        check_is_fitted(self)
        X_arr = np.asarray(validate_data(self, X, reset=False), dtype=float)
        encoded = self.encode(X_arr, self.places_, self.place_targets_, self.n_neighbors)
        return encoded.reshape(-1, 1)

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
