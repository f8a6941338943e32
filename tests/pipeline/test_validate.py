import pandas as pd
import pytest

from pipeline.steps import validate


def test_census_data_is_entirely_valid(housing):
    valid, quarantined = validate.check(housing)
    assert len(valid) == 20_640
    assert quarantined.empty
    assert valid["total_bedrooms"].isna().sum() == 207  # left for the model to impute


def test_bad_rows_are_quarantined_with_a_reason_each(housing_sample):
    frame = housing_sample.head(100).copy()
    frame["latitude"] = frame["latitude"].astype(object)
    frame.loc[1, "latitude"] = "north"
    frame.loc[2, "longitude"] = 10.0
    frame.loc[3, "ocean_proximity"] = "MARS"
    frame.loc[4, "households"] = -3.0
    frame.loc[5, "median_house_value"] = float("inf")
    frame.loc[6, "total_bedrooms"] = frame.loc[6, "total_rooms"] + 1
    frame.loc[7, "median_income"] = None
    dup = frame.iloc[[10]].assign(row_id=10_000)
    frame = pd.concat([frame, dup], ignore_index=True)

    valid, quarantined = validate.check(frame)

    reasons = dict(zip(quarantined["row_id"].astype(int), quarantined["reason"], strict=True))
    ids = frame["row_id"].tolist()
    assert "latitude: not a number" in reasons[ids[1]]
    assert "longitude: outside" in reasons[ids[2]]
    assert "ocean_proximity: unknown category" in reasons[ids[3]]
    assert "households: outside" in reasons[ids[4]]
    assert "median_house_value: not finite" in reasons[ids[5]]
    assert "more than total_rooms" in reasons[ids[6]]
    assert "median_income: missing" in reasons[ids[7]]
    assert reasons[10_000] == "duplicate of an earlier row"
    assert len(valid) + len(quarantined) == len(frame)
    assert valid["latitude"].dtype == float


def test_report_counts_reasons_and_the_summary_says_the_limit(housing_sample):
    frame = housing_sample.head(20).copy()
    frame.loc[0, "ocean_proximity"] = "MARS"
    valid, quarantined = validate.check(frame)
    rep = validate.report(valid, quarantined, 0.01)
    assert rep["quarantined"] == 1
    assert rep["reasons"] == {"ocean_proximity: unknown category": 1}
    assert rep["bad_share"] == pytest.approx(0.05)
    assert "limit 1.00%" in validate.summary_markdown(rep)
