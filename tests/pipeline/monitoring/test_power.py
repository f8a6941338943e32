"""The monitor's power and false-alarm rate, measured: windows of 1,000 houses resampled (with
replacement) from held-out rows of the packaged data set, judged against a profile of the rest.

A stand-in model (least squares on the inputs) gives the prices, so a shift of an input moves
them as a model's would; its top inputs come from its coefficients times the inputs' spread.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model_runtime import contract
from pipeline.monitoring import drift
from pipeline.monitoring.profile import PREDICTION, Profile, build

WINDOW = 1000
SHIFTED_WINDOWS = 1000
CLEAN_WINDOWS = 200
THRESHOLDS = drift.Thresholds()


def design(frame: pd.DataFrame) -> np.ndarray:
    numeric = frame[list(contract.NUMERIC_FEATURES)].fillna(435.0).to_numpy(dtype=float)
    ocean = np.stack(
        [(frame[contract.CATEGORICAL] == c).to_numpy(float) for c in contract.OCEAN_PROXIMITY],
        axis=1,
    )
    return np.hstack([numeric, ocean])


class Model:
    def __init__(self, frame: pd.DataFrame):
        X = design(frame)
        self.coef, *_ = np.linalg.lstsq(X, frame[contract.TARGET].to_numpy(float), rcond=None)
        spread = X.std(axis=0) * np.abs(self.coef)
        self.importance = pd.DataFrame(
            {
                "feature": [*contract.NUMERIC_FEATURES, contract.CATEGORICAL],
                "rmse_increase": [*spread[: len(contract.NUMERIC_FEATURES)], spread[8:].sum()],
            }
        )

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return design(frame) @ self.coef


@pytest.fixture(scope="module")
def setup(housing: pd.DataFrame) -> tuple[Profile, pd.DataFrame, Model]:
    shuffled = housing.sample(frac=1.0, random_state=11).reset_index(drop=True)
    train, held_out = shuffled.iloc[:16512], shuffled.iloc[16512:].reset_index(drop=True)
    model = Model(train)
    profile = build(
        train[list(contract.FEATURES)],
        model.predict(held_out),
        model.importance,
        [contract.CATEGORICAL],
    )
    return profile, held_out, model


class Pool:
    """The held-out rows as arrays, so a window is an index array (vectorised: a few seconds
    for 1,200 windows)."""

    def __init__(self, held_out: pd.DataFrame, model: Model, profile: Profile):
        self.columns = {f: held_out[f].to_numpy() for f in contract.FEATURES}
        self.X = design(held_out)
        self.model = model
        self.watched = profile.top_features(THRESHOLDS.top_features)
        self.profile = profile
        self.size = len(held_out)

    def flagged(self, rows: np.ndarray, income_shift: float = 0.0) -> bool:
        """The window's decision, from the columns that make it: the prices and top inputs."""
        columns = {f: self.columns[f][rows] for f in self.watched}
        X = self.X[rows].copy()
        X[:, contract.NUMERIC_FEATURES.index("median_income")] += income_shift
        if "median_income" in columns:
            columns["median_income"] = X[:, contract.NUMERIC_FEATURES.index("median_income")]
        columns[PREDICTION] = X @ self.model.coef
        verdict = drift.window_drift(self.profile, "1", columns, rows.size, THRESHOLDS)
        return verdict.drifted


def windows(pool: Pool, count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, pool.size, size=(count, WINDOW))


@pytest.fixture(scope="module")
def pool(setup) -> Pool:
    profile, held_out, model = setup
    return Pool(held_out, model, profile)


def test_the_model_watches_median_income(pool):
    assert "median_income" in pool.watched


def test_half_a_standard_deviation_of_median_income_flags_95_percent_of_windows(pool):
    shift = 0.5 * pool.profile.numeric["median_income"].std
    hits = sum(pool.flagged(rows, shift) for rows in windows(pool, SHIFTED_WINDOWS, seed=1))
    power = hits / SHIFTED_WINDOWS
    assert power >= 0.95, f"power {power:.1%} over {SHIFTED_WINDOWS} windows"


def test_unshifted_windows_raise_at_most_1_percent_false_alarms(pool):
    alarms = sum(pool.flagged(rows) for rows in windows(pool, CLEAN_WINDOWS, seed=2))
    rate = alarms / CLEAN_WINDOWS
    assert rate <= 0.01, f"false alarms {rate:.1%} over {CLEAN_WINDOWS} windows"
