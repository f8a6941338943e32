"""The fast form decides as scikit-learn does: same prices on rows it never saw, NaN bedrooms
included, and on houses far from anything the training grid held; what it can't translate is
refused, never approximated."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KDTree

from model_runtime import onnx_runtime
from model_runtime.contract import (
    EXAMPLE_HOUSE,
    FEATURES,
    NUMERIC_FEATURES,
    OCEAN_PROXIMITY,
    RANGES,
    TARGET,
)
from pipeline import onnx_translation
from pipeline.model import COORDINATES, FeatureSpec, build_model


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
    session = onnx_runtime.session(onnx_translation.to_onnx(model))
    assert onnx_runtime.agreement(model, session, unseen) <= onnx_runtime.TOLERANCE
    one = unseen.iloc[[40]]
    assert onnx_runtime.agreement(model, session, one) <= onnx_runtime.TOLERANCE


def test_a_different_model_is_caught_by_the_agreement_check(housing):
    model, unseen = fitted(housing, "median", "hist_gradient_boosting", {"max_iter": 30})
    other, _ = fitted(housing, "median", "hist_gradient_boosting", {"max_iter": 31})
    session = onnx_runtime.session(onnx_translation.to_onnx(other))
    assert onnx_runtime.agreement(model, session, unseen) > onnx_runtime.TOLERANCE


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
    with pytest.raises(onnx_translation.NotConvertibleError, match=message):
        onnx_translation.to_onnx(model)


def test_raw_thresholds_decide_exactly_like_the_transformed_ones():
    def transform(raw):
        return (np.log1p(raw) - 7.1) / 0.9

    thresholds = transform(np.array([0.0, 1.0, 880.0, 1234.5, 5e4])) + np.array(
        [0.0, 1e-13, 0.0, -1e-12, 3e-9]
    )
    raw = onnx_translation.raw_threshold(thresholds, transform)
    for t, r in zip(thresholds, raw, strict=True):
        assert transform(np.array([r]))[0] <= t
        assert transform(np.array([np.nextafter(r, np.inf)]))[0] > t


# Off the training grid: houses no district of the training data is near or like.

#: Every option the translation supports, each at least once: the three imputers, the three
#: target transforms, cluster similarities and neighbour prices alone, together and neither.
OPTIONS = {
    "median-clusters-neighbours-sqrt": ("median", 8, 8, "sqrt"),
    "mean-clusters-neighbours-log": ("mean", 8, 8, "log"),
    "knn-clusters-neighbours-none": ("knn", 8, 8, "none"),
    "median-no-geography-sqrt": ("median", 0, 0, "sqrt"),
    "mean-clusters-only-none": ("mean", 8, 0, "none"),
    "knn-neighbours-only-log": ("knn", 0, 8, "log"),
}


@pytest.fixture(scope="module", params=list(OPTIONS), ids=list(OPTIONS))
def model_and_fast_form(request, housing_sample):
    imputer, n_clusters, neighbors, target = OPTIONS[request.param]
    spec = FeatureSpec(imputer=imputer, n_clusters=n_clusters, neighbors=neighbors)
    params = {"max_iter": 60, "target_transform": target}
    model = build_model(spec, "hist_gradient_boosting", params)
    model.fit(housing_sample[list(FEATURES)], housing_sample[TARGET])
    return model, onnx_runtime.session(onnx_translation.to_onnx(model))


def houses(**columns: object) -> pd.DataFrame:
    """The example house with ``columns`` replaced (scalars or equal-length sequences)."""
    frame = pd.DataFrame({**{c: EXAMPLE_HOUSE[c] for c in FEATURES}, **columns})
    return frame[list(FEATURES)]


def places_off_the_grid(districts: pd.DataFrame) -> pd.DataFrame:
    """(latitude, longitude) where no training district lies: the corners and edges of the
    schema's box, a half-degree lattice across it, the same shifted off the 0.01° grid, and
    next to districts (on the grid and off it, as real addresses are)."""
    lon, lat = RANGES["longitude"], RANGES["latitude"]
    lons = np.unique(np.r_[np.arange(lon.min, lon.max, 0.5), lon.max].round(2))
    lats = np.unique(np.r_[np.arange(lat.min, lat.max, 0.5), lat.max].round(2))
    lattice = np.array(list(itertools.product(lats, lons)))
    shifted = np.clip(
        lattice + np.array([1 / 300, -1 / 700]), [lat.min, lon.min], [lat.max, lon.max]
    )
    near = districts[COORDINATES].to_numpy()[:300]
    beside = np.r_[
        (near + np.array([0.01, 0.0])).round(2),
        (near + np.array([0.0, -0.03])).round(2),
        near + np.array([0.0049, 0.0031]),
        near + np.random.default_rng(0).uniform(-0.005, 0.005, near.shape),
    ]
    points = pd.DataFrame(np.r_[lattice, shifted, beside], columns=COORDINATES)
    known = points.merge(districts[COORDINATES].drop_duplicates(), how="left", indicator=True)
    return points[(known["_merge"] == "left_only").to_numpy()].reset_index(drop=True)


def nearest_district_degrees(points: pd.DataFrame, districts: pd.DataFrame) -> np.ndarray:
    tree = KDTree(districts[COORDINATES].to_numpy())
    return tree.query(points[COORDINATES].to_numpy(), k=1)[0][:, 0]


def at_schema_bounds() -> pd.DataFrame:
    """Every numeric input at its minimum or maximum, in every combination (2⁸ rows)."""
    corners = itertools.product(*[(RANGES[c].min, RANGES[c].max) for c in NUMERIC_FEATURES])
    frame = pd.DataFrame(list(corners), columns=list(NUMERIC_FEATURES))
    return houses(**{c: frame[c] for c in NUMERIC_FEATURES})


def agrees(model_and_fast_form, frame: pd.DataFrame) -> float:
    model, fast = model_and_fast_form
    return onnx_runtime.agreement(model, fast, frame)


def test_the_places_off_the_grid_include_far_ones_near_ones_and_off_grid_ones(housing_sample):
    places = places_off_the_grid(housing_sample)
    distance = nearest_district_degrees(places, housing_sample)
    assert (distance > 0).all()
    # Beyond the neighbour price's 0.2° grid table, within it, and between grid points.
    assert (distance > 1.0).sum() >= 50
    assert (distance <= 0.2).sum() >= 300
    assert (np.round(places * 100) / 100 != places).any(axis=1).sum() >= 600


def test_it_agrees_far_from_every_training_district(model_and_fast_form, housing_sample):
    places = places_off_the_grid(housing_sample)
    frame = houses(latitude=places["latitude"], longitude=places["longitude"])
    assert agrees(model_and_fast_form, frame) <= onnx_runtime.TOLERANCE


def test_it_agrees_with_every_input_at_its_schema_bounds(model_and_fast_form):
    assert agrees(model_and_fast_form, at_schema_bounds()) <= onnx_runtime.TOLERANCE


def test_it_agrees_without_a_bedroom_count_off_the_grid(model_and_fast_form, housing_sample):
    places = places_off_the_grid(housing_sample)
    frame = pd.concat(
        [houses(latitude=places["latitude"], longitude=places["longitude"]), at_schema_bounds()],
        ignore_index=True,
    ).assign(total_bedrooms=np.nan)
    assert agrees(model_and_fast_form, frame) <= onnx_runtime.TOLERANCE


@pytest.mark.parametrize("category", OCEAN_PROXIMITY)
def test_it_agrees_for_every_ocean_proximity(model_and_fast_form, housing_sample, category):
    places = places_off_the_grid(housing_sample).iloc[::10]
    frame = pd.concat(
        [
            houses(latitude=places["latitude"], longitude=places["longitude"]),
            at_schema_bounds(),
            houses(total_bedrooms=[np.nan]),
        ],
        ignore_index=True,
    ).assign(ocean_proximity=category)
    assert agrees(model_and_fast_form, frame) <= onnx_runtime.TOLERANCE


def test_it_agrees_on_a_category_training_never_saw(housing_sample):
    train = housing_sample[housing_sample["ocean_proximity"] != "ISLAND"]
    spec = FeatureSpec(n_clusters=0, neighbors=0)
    model = build_model(spec, "hist_gradient_boosting", {"max_iter": 30})
    model.fit(train[list(FEATURES)], train[TARGET])
    fast = onnx_runtime.session(onnx_translation.to_onnx(model))
    frame = at_schema_bounds().assign(ocean_proximity="ISLAND")
    assert onnx_runtime.agreement(model, fast, frame) <= onnx_runtime.TOLERANCE
