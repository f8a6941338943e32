"""The monitor's drift decisions agree with Evidently's own on clear-cut windows.

Runs in the ``parity`` dependency group's environment (Evidently needs pandas 2; the rest of
the project has pandas 3): ``nox -s tests`` runs it there. It imports only the monitor's pure
modules, which need numpy, scipy and msgspec.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.monitoring import drift
from pipeline.monitoring.profile import PREDICTION, build

DATA = Path(__file__).resolve().parents[2] / "pipeline" / "data" / "housing.csv.gz"
CATEGORICAL = "ocean_proximity"
TARGET = "median_house_value"


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference (the training side) and held-out rows, inputs plus a price column."""
    frame = pd.read_csv(DATA)
    frame[PREDICTION] = frame["median_income"] * 40_000.0 + 25_000.0
    frame = frame.drop(columns=[TARGET]).sample(frac=1.0, random_state=5).reset_index(drop=True)
    return frame.iloc[:15000].reset_index(drop=True), frame.iloc[15000:].reset_index(drop=True)


@pytest.fixture(scope="module")
def profile(data):
    reference, _ = data
    inputs = reference.drop(columns=[PREDICTION])
    importances = [{"feature": c, "rmse_increase": float(i)} for i, c in enumerate(inputs.columns)]
    return build(inputs, reference[PREDICTION].to_numpy(), importances, [CATEGORICAL])


def evidently_decisions(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, dict]:
    """Evidently's default data drift table: per column its stat test, score and decision."""
    from evidently.legacy.metrics import DataDriftTable
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.report import Report

    mapping = ColumnMapping(
        target=None,
        prediction=None,
        numerical_features=[c for c in reference.columns if c != CATEGORICAL],
        categorical_features=[CATEGORICAL],
    )
    report = Report(metrics=[DataDriftTable()])
    report.run(reference_data=reference, current_data=current, column_mapping=mapping)
    return report.as_dict()["metrics"][0]["result"]["drift_by_columns"]


def ours(profile, current: pd.DataFrame) -> dict[str, drift.ColumnDrift]:
    columns = {c: current[c].to_numpy() for c in current.columns if c != CATEGORICAL}
    columns[CATEGORICAL] = current[CATEGORICAL].tolist()
    verdict = drift.window_drift(profile, "1", columns, len(current), drift.Thresholds())
    return {c.feature: c for c in verdict.columns}


def no_drift(held_out: pd.DataFrame) -> pd.DataFrame:
    return held_out.iloc[:3000].copy()


def one_shifted_feature(held_out: pd.DataFrame) -> pd.DataFrame:
    window = held_out.iloc[:1500].copy()
    window["housing_median_age"] += 0.5 * window["housing_median_age"].std()
    return window


def changed_category_mix(held_out: pd.DataFrame) -> pd.DataFrame:
    window = held_out.iloc[:1500].copy()
    window.loc[window.index[:600], CATEGORICAL] = "INLAND"
    return window


def shifted_prices(held_out: pd.DataFrame) -> pd.DataFrame:
    window = held_out.iloc[:1500].copy()
    window[PREDICTION] *= 1.3
    return window


FIXTURES = {
    "no drift": (no_drift, set()),
    "one shifted feature": (one_shifted_feature, {"housing_median_age"}),
    "changed category mix": (changed_category_mix, {CATEGORICAL}),
    "shifted prices": (shifted_prices, {PREDICTION}),
}


@pytest.mark.parametrize("case", FIXTURES)
def test_decisions_match_evidentlys(case, data, profile):
    reference, held_out = data
    make, expected = FIXTURES[case]
    current = make(held_out)
    theirs = evidently_decisions(reference, current)
    mine = ours(profile, current)
    assert set(theirs) == set(mine)
    assert {c for c, r in theirs.items() if r["drift_detected"]} == expected
    for column, result in theirs.items():
        entry = mine[column]
        assert entry.drift is bool(result["drift_detected"]), column
        assert entry.threshold == result["stattest_threshold"], column
        if column == CATEGORICAL:
            assert result["stattest_name"] == "Jensen-Shannon distance"
            assert entry.value == pytest.approx(result["drift_score"], rel=1e-9)
        else:
            assert result["stattest_name"] == "Wasserstein distance (normed)"
            assert entry.value == pytest.approx(result["drift_score"], rel=0.01), column


def test_psi_matches_evidentlys_psi_for_reading(data, profile):
    """PSI is reported beside the decision statistic; Evidently's own PSI on the raw rows."""
    from evidently.legacy.calculations.stattests.psi import psi_stat_test
    from evidently.legacy.core import ColumnType

    reference, held_out = data
    current = one_shifted_feature(held_out)
    mine = ours(profile, current)
    for column, kind in (
        ("median_income", ColumnType.Numerical),
        (CATEGORICAL, ColumnType.Categorical),
    ):
        result = psi_stat_test(reference[column], current[column], kind, None)
        tolerance = 1e-9 if kind == ColumnType.Categorical else 0.05
        assert mine[column].psi == pytest.approx(result.drift_score, rel=tolerance), column
