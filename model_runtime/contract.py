"""The data set's contract: columns, types and the ranges a valid row stays within.

One definition serves validation (pipeline), request checking (service) and form limits (UI),
so the three can never disagree about what a house looks like.
"""

from __future__ import annotations

from typing import Final

import msgspec

TARGET: Final = "median_house_value"
CATEGORICAL: Final = "ocean_proximity"
ROW_ID: Final = "row_id"

NUMERIC_FEATURES: Final = (
    "longitude",
    "latitude",
    "housing_median_age",
    "total_rooms",
    "total_bedrooms",
    "population",
    "households",
    "median_income",
)
FEATURES: Final = (*NUMERIC_FEATURES, CATEGORICAL)
COLUMNS: Final = (*NUMERIC_FEATURES, TARGET, CATEGORICAL)

OCEAN_PROXIMITY: Final = ("<1H OCEAN", "INLAND", "ISLAND", "NEAR BAY", "NEAR OCEAN")

#: Columns that may be missing in a valid row: the model imputes them.
NULLABLE: Final = frozenset({"total_bedrooms"})


class Range(msgspec.Struct, frozen=True):
    """Closed interval a column's values must fall in."""

    min: float
    max: float
    description: str


#: Bounds come from the 1990 census data itself: California's bounding box, the census caps
#: (age 52, income 15.0001, value 500,001) and counts that can't be negative.
RANGES: Final[dict[str, Range]] = {
    "longitude": Range(-124.6, -114.0, "degrees east, California's bounding box"),
    "latitude": Range(32.4, 42.1, "degrees north, California's bounding box"),
    "housing_median_age": Range(1, 52, "years; the census caps it at 52"),
    "total_rooms": Range(1, 50_000, "rooms in the block group"),
    "total_bedrooms": Range(0, 10_000, "bedrooms in the block group"),
    "population": Range(1, 50_000, "people in the block group"),
    "households": Range(1, 10_000, "households in the block group"),
    "median_income": Range(0.4999, 15.0001, "tens of thousands of US dollars; capped at 15.0001"),
    TARGET: Range(14_999, 500_001, "US dollars; the census caps it at 500,001"),
}


#: A real block group (the data set's first row), for docs, tests and benchmarks.
EXAMPLE_HOUSE: dict[str, float | str] = {
    "longitude": -122.23,
    "latitude": 37.88,
    "housing_median_age": 41.0,
    "total_rooms": 880.0,
    "total_bedrooms": 129.0,
    "population": 322.0,
    "households": 126.0,
    "median_income": 8.3252,
    "ocean_proximity": "NEAR BAY",
}


def normalise_ocean_proximity(value: str) -> str:
    """Map free-form spellings ('near bay', ' Near_Bay ') onto the data set's category."""
    return " ".join(value.replace("_", " ").split()).upper()
