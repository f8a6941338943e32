"""Plain-words explanations of the service's answers, for people who don't read JSON."""

from __future__ import annotations

import re
from typing import Any

from model_runtime.contract import RANGES

_LOC = re.compile(r"^instances\[\d+\]\.?(\w*)$")
_LABELS = {
    "longitude": "Longitude",
    "latitude": "Latitude",
    "housing_median_age": "Median house age",
    "total_rooms": "Total rooms",
    "total_bedrooms": "Total bedrooms",
    "population": "Population",
    "households": "Households",
    "median_income": "Median income",
    "ocean_proximity": "Ocean proximity",
}


def label(field: str) -> str:
    return _LABELS.get(field, field.replace("_", " ").capitalize())


def explain(body: dict[str, Any]) -> list[str]:
    """One sentence per rejected field of a 400 body."""
    lines = []
    for error in body.get("errors", []):
        match = _LOC.match(str(error.get("loc", "")))
        field = match.group(1) if match else ""
        message = str(error.get("msg", ""))
        if field in RANGES:
            r = RANGES[field]
            lines.append(f"{label(field)} must be between {r.min:g} and {r.max:g} ({message}).")
        elif field:
            lines.append(f"{label(field)}: {message}.")
        else:
            lines.append(message)
    return lines or [str(body.get("detail", "The service rejected the request."))]
