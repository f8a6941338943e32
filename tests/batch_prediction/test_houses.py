"""A rejected row carries the service's own 400 message for that house, and the array check
never prices a house the service would refuse."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from litestar.testing import TestClient

from batch_prediction.houses import check
from model_runtime.contract import EXAMPLE_HOUSE, FEATURES, NUMERIC_FEATURES, RANGES
from service.app import create_app
from service.settings import ServiceSettings
from tests.service.test_app import OneDollar


@pytest.fixture(scope="module")
def service() -> Any:
    with TestClient(create_app(ServiceSettings(prediction_log=False), predictor=OneDollar())) as c:
        yield c


def service_verdict(client: Any, house: dict[str, Any]) -> str | None:
    """``field: message`` of the service's 400 for the house alone, None if it prices it."""
    response = client.post("/api/v1/predict", json={"instances": [house]})
    if response.status_code == 200:
        return None
    assert response.status_code == 400
    error = response.json()["errors"][0]
    return f"{error['loc'].removeprefix('instances[0].')}: {error['msg']}"


def as_csv_text(houses: list[dict[str, Any]]) -> pa.RecordBatch:
    """The houses as a CSV input reaches the check: every cell text, an empty cell null."""
    return pa.RecordBatch.from_pydict(
        {n: [None if h[n] is None else str(h[n]) for h in houses] for n in FEATURES}
    )


def as_typed(houses: list[dict[str, Any]]) -> pa.RecordBatch:
    """The houses as a parquet input with numeric columns reaches it."""
    return pa.RecordBatch.from_pydict(
        {
            n: pa.array(
                [np.nan if h[n] is None else h[n] for h in houses],
                type=pa.string() if n == "ocean_proximity" else pa.float64(),
            )
            for n in FEATURES
        }
    )


BAD = [
    {"latitude": 50.0},
    {"longitude": -130.0},
    {"median_income": 0.0},
    {"housing_median_age": 60},
    {"population": None},
    {"total_rooms": 0},
    {"ocean_proximity": "on the moon"},
    {"ocean_proximity": "NEAR BAY" * 5},
    {"total_bedrooms": -1},
]
GOOD = [
    {},
    {"total_bedrooms": None},
    {"ocean_proximity": " near_bay "},
    {"ocean_proximity": "<1h ocean"},
    {name: RANGES[name].min for name in NUMERIC_FEATURES},
    {name: RANGES[name].max for name in NUMERIC_FEATURES},
]


@pytest.mark.parametrize("form", [as_csv_text, as_typed])
def test_rejected_rows_carry_the_services_messages(service, form):
    houses = [{**EXAMPLE_HOUSE, **change} for change in BAD + GOOD]
    checked = check(form(houses))
    expected = [service_verdict(service, h) for h in houses]
    assert all(e is not None for e in expected[: len(BAD)])
    assert checked.rejected == expected
    assert checked.valid.tolist() == [e is None for e in expected]
    # ' near_bay ' and '<1h ocean' spelled as the data set spells them
    assert checked.ocean[:, 0].tolist() == ["NEAR BAY"] * 3 + ["<1H OCEAN"] + ["NEAR BAY"] * 2


def test_a_word_among_the_numbers_is_rejected_as_the_service_rejects_it(service):
    house = {**EXAMPLE_HOUSE, "households": "many"}
    checked = check(as_csv_text([house, EXAMPLE_HOUSE]))
    assert checked.rejected == [service_verdict(service, house), None]
    assert checked.rejected[0] == "households: Expected `float`, got `str`"


def test_the_array_check_agrees_with_the_service_on_houses_near_every_bound(service):
    rng = np.random.default_rng(0)
    houses = []
    for _ in range(300):
        house: dict[str, Any] = dict(EXAMPLE_HOUSE)
        name = str(rng.choice(NUMERIC_FEATURES))
        bound = RANGES[name]
        edge = bound.min if rng.random() < 0.5 else bound.max
        house[name] = float(edge + rng.choice([-1e-9, 0.0, 1e-9, -1.0, 1.0]))
        houses.append(house)
    checked = check(as_typed(houses))
    assert checked.rejected == [service_verdict(service, h) for h in houses]
    priced = [h for h, ok in zip(houses, checked.valid, strict=True) if ok]
    assert checked.numeric.tolist() == [[h[n] for n in NUMERIC_FEATURES] for h in priced]


def test_categories_stored_as_pandas_categoricals_are_read(service):
    batch = as_typed([EXAMPLE_HOUSE, {**EXAMPLE_HOUSE, "ocean_proximity": "INLAND"}])
    column = batch.column("ocean_proximity").dictionary_encode()
    encoded = batch.set_column(len(FEATURES) - 1, "ocean_proximity", column)
    checked = check(encoded)
    assert checked.rejected == [None, None]
    assert checked.ocean[:, 0].tolist() == ["NEAR BAY", "INLAND"]
