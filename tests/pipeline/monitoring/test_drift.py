"""Drift statistics from a profile agree with the exact ones on the raw reference, and the
decisions follow the rules a reader of the report relies on."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from model_runtime import contract
from pipeline.monitoring import drift
from pipeline.monitoring.profile import PREDICTION, Grid, build, numeric_reference

GRID = Grid()


@pytest.fixture(scope="module")
def halves(housing: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    shuffled = housing.sample(frac=1.0, random_state=1).reset_index(drop=True)
    return shuffled.iloc[:15000], shuffled.iloc[15000:]


def exact_wasserstein_norm(ref: np.ndarray, cur: np.ndarray) -> float:
    """Evidently's definition on the raw rows."""
    return float(stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001))


@pytest.mark.parametrize("column", contract.NUMERIC_FEATURES)
@pytest.mark.parametrize("shift", [0.0, 0.15, 0.5])
def test_wasserstein_from_a_profile_is_within_one_percent_of_the_exact_value(halves, column, shift):
    ref_frame, held_out = halves
    ref = ref_frame[column].dropna().to_numpy()
    summary = numeric_reference(ref, GRID)
    rng = np.random.default_rng(7)
    pool = held_out[column].dropna().to_numpy()
    for size in (200, 1000, 5000):
        cur = rng.choice(pool, size) + shift * ref.std()
        exact = exact_wasserstein_norm(ref, cur)
        assert drift.wasserstein_norm(summary, GRID, cur) == pytest.approx(exact, rel=0.01)


def test_an_exactly_kept_column_gives_the_exact_distance():
    rng = np.random.default_rng(0)
    ref = rng.integers(1, 53, 5000).astype(float)
    cur = rng.integers(5, 53, 700).astype(float)
    summary = numeric_reference(ref, GRID)
    assert summary.discrete
    got = drift.wasserstein_norm(summary, GRID, cur)
    assert got == pytest.approx(exact_wasserstein_norm(ref, cur), rel=1e-9)


def test_missing_values_are_left_out_as_evidently_drops_them():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=3000)
    cur = np.concatenate([rng.normal(size=500), [np.nan] * 50])
    summary = numeric_reference(np.concatenate([ref, [np.nan] * 10]), GRID)
    assert summary.missing == 10
    assert drift.wasserstein_norm(summary, GRID, cur) == pytest.approx(
        exact_wasserstein_norm(ref, cur[:500]), rel=0.01
    )


def test_jensen_shannon_is_scipys_natural_log_distance_of_the_shares(halves):
    ref_frame, _ = halves
    ref = build(
        ref_frame[list(contract.FEATURES)],
        np.arange(2000.0),
        [{"feature": "median_income", "rmse_increase": 1.0}],
        [contract.CATEGORICAL],
    ).categorical[contract.CATEGORICAL]
    current = ["INLAND"] * 600 + ["NEAR BAY"] * 400 + ["NEW CATEGORY"] * 10
    keys = sorted(set(ref.counts) | {"NEW CATEGORY"})
    p = [ref.counts.get(k, 0) / ref.count for k in keys]
    q = [current.count(k) / len(current) for k in keys]
    assert drift.jensenshannon(ref, current) == pytest.approx(distance.jensenshannon(p, q))
    assert drift.jensenshannon(ref, current) <= math.sqrt(math.log(2))


def test_psi_of_categories_fills_empty_bins_as_evidently():
    ref = drift.CategoricalReference(count=100, missing=0, counts={"a": 50, "b": 50})
    # "c" is new: its reference share 0 becomes 0.0001 (the smallest share is 0.5).
    r = np.array([0.5, 0.5, 0.0001])
    c = np.array([0.5, 0.25, 0.25])
    expected = float(np.sum((r - c) * np.log(r / c)))
    assert drift.psi_categorical(ref, ["a"] * 2 + ["b", "c"]) == pytest.approx(expected)


def test_psi_of_numbers_is_near_the_value_from_the_raw_reference(halves):
    ref_frame, held_out = halves
    ref = ref_frame["median_income"].to_numpy()
    cur = held_out["median_income"].to_numpy()[:1000] + 0.3
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    r = drift._fill_zeros(np.histogram(ref, edges)[0] / ref.size)
    c = drift._fill_zeros(np.histogram(cur, edges)[0] / cur.size)
    expected = float(np.sum((r - c) * np.log(r / c)))
    got = drift.psi_numeric(numeric_reference(ref, GRID), GRID, cur)
    assert got == pytest.approx(expected, rel=0.05)


@pytest.fixture(scope="module")
def profile(halves):
    ref_frame, _ = halves
    prices = ref_frame["median_income"].to_numpy()[:4000] * 40_000
    importances = pd.DataFrame(
        {
            "feature": ["median_income", "ocean_proximity", "housing_median_age", "population"],
            "rmse_increase": [50_000.0, 20_000.0, 10_000.0, 1.0],
        }
    )
    return build(ref_frame[list(contract.FEATURES)], prices, importances, [contract.CATEGORICAL])


def window(frame: pd.DataFrame) -> dict[str, object]:
    columns: dict[str, object] = {f: frame[f].to_numpy() for f in contract.FEATURES}
    columns[PREDICTION] = frame["median_income"].to_numpy() * 40_000
    return columns


THRESHOLDS = drift.Thresholds()


def test_an_unshifted_window_does_not_drift(profile, halves):
    _, held_out = halves
    verdict = drift.window_drift(profile, "3", window(held_out.iloc[:2000]), 2000, THRESHOLDS)
    assert verdict.status == "no drift"
    assert not any(c.drift for c in verdict.columns)
    assert {c.feature for c in verdict.columns} == {*contract.FEATURES, PREDICTION}


def test_a_shifted_top_input_drifts_the_window_and_names_it(profile, halves):
    _, held_out = halves
    frame = held_out.iloc[:2000].copy()
    frame["housing_median_age"] += 0.5 * frame["housing_median_age"].std()
    verdict = drift.window_drift(profile, "3", window(frame), 2000, THRESHOLDS)
    assert verdict.drifted
    assert verdict.reason == "drifted: housing_median_age"
    entry = next(c for c in verdict.columns if c.feature == "housing_median_age")
    assert entry.drift
    assert entry.statistic == drift.WASSERSTEIN
    assert entry.value >= entry.threshold == 0.1


def test_a_drifted_input_outside_the_top_three_reports_drift_but_not_the_window(profile, halves):
    _, held_out = halves
    frame = held_out.iloc[:2000].copy()
    frame["population"] *= 3
    verdict = drift.window_drift(profile, "3", window(frame), 2000, THRESHOLDS)
    population = next(c for c in verdict.columns if c.feature == "population")
    assert population.drift
    assert not population.top_feature
    assert verdict.status == "no drift"


def test_drifted_prices_drift_the_window(profile, halves):
    _, held_out = halves
    columns = window(held_out.iloc[:2000])
    columns[PREDICTION] = np.asarray(columns[PREDICTION]) * 1.5
    verdict = drift.window_drift(profile, "3", columns, 2000, THRESHOLDS)
    assert verdict.drifted
    assert verdict.reason == f"drifted: {PREDICTION}"


def test_a_changed_category_mix_is_drift(profile, halves):
    _, held_out = halves
    frame = held_out.iloc[:2000].copy()
    frame[contract.CATEGORICAL] = "INLAND"
    verdict = drift.window_drift(profile, "3", window(frame), 2000, THRESHOLDS)
    entry = next(c for c in verdict.columns if c.feature == contract.CATEGORICAL)
    assert entry.statistic == drift.JENSEN_SHANNON
    assert entry.drift
    assert verdict.drifted


def test_a_small_window_is_not_enough_data_even_when_it_looks_shifted(profile, halves):
    _, held_out = halves
    frame = held_out.iloc[:150].copy()
    frame["median_income"] += 3.0
    verdict = drift.window_drift(profile, "3", window(frame), 150, THRESHOLDS)
    assert verdict.status == "not enough data"
    assert not verdict.drifted
    assert "150 rows" in verdict.reason


def test_the_threshold_is_inclusive_as_in_evidently():
    assert drift._decide(0.1, 0.1)
    assert not drift._decide(0.0999, 0.1)
    assert drift._decide(math.nan, 0.1)
