"""Pricing a table of houses through the service in batches it accepts.

Rows the service rejects are listed with its reasons; the others still get a price.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pandas as pd

from model_runtime.contract import FEATURES, NUMERIC_FEATURES
from ui.client import ServiceClient

_INDEX = re.compile(r"^instances\[(\d+)\](?:\.(\w+))?$")


def missing_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in FEATURES if c not in frame.columns]


def _value(column: str, value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if column in NUMERIC_FEATURES and isinstance(value, str):
        # One bad cell makes pandas read the whole column as text; send the numbers as
        # numbers so only the bad cell is rejected.
        try:
            return float(value)
        except ValueError:
            return value
    return value


def to_instances(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as request instances: NaN becomes null, numbers stay numbers."""
    records = frame[list(FEATURES)].to_dict("records")
    return [{str(k): _value(str(k), v) for k, v in r.items()} for r in records]


def rejected_positions(body: dict[str, Any]) -> dict[int, str]:
    """Position in the batch → reasons, from the service's 400 body."""
    reasons: dict[int, list[str]] = {}
    for error in body.get("errors", []):
        match = _INDEX.match(str(error.get("loc", "")))
        if match:
            field = match.group(2) or "row"
            reasons.setdefault(int(match.group(1)), []).append(f"{field}: {error.get('msg', '')}")
    return {i: "; ".join(r) for i, r in reasons.items()}


def price_table(
    frame: pd.DataFrame,
    client: ServiceClient,
    batch_size: int,
    on_progress: Callable[[float], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the frame with ``predicted_price``, the rejected rows with ``row`` and ``reason``)."""
    instances = to_instances(frame)
    prices: list[float | None] = [None] * len(instances)
    rejected: dict[int, str] = {}
    for start in range(0, len(instances), batch_size):
        positions = list(range(start, min(start + batch_size, len(instances))))
        while positions:
            response = client.predict([instances[p] for p in positions])
            if response.status_code == 200:
                for p, pred in zip(positions, response.json()["predictions"], strict=True):
                    prices[p] = float(pred["predicted_price"])
                break
            if response.status_code != 400:
                response.raise_for_status()
            bad = rejected_positions(response.json())
            if not bad:
                for p in positions:
                    rejected[p] = str(response.json().get("detail", "rejected"))
                break
            for i, reason in bad.items():
                rejected[positions[i]] = reason
            positions = [p for i, p in enumerate(positions) if i not in bad]
        if on_progress is not None:
            on_progress(min(1.0, (start + batch_size) / max(1, len(instances))))
    priced = frame.copy()
    priced["predicted_price"] = prices
    rejections = pd.DataFrame(
        {"row": list(rejected), "reason": list(rejected.values())}, columns=["row", "reason"]
    ).sort_values("row", ignore_index=True)
    return priced, rejections
