"""Pricing a table of houses through the service in batches it accepts: no more houses, and no
larger a body, than ``GET /api/v1/model`` says one request may hold.

Rows the service rejects are listed with its reasons; the others still get a price.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pandas as pd

from model_runtime.contract import FEATURES, NUMERIC_FEATURES
from ui.client import ServiceClient, ServiceLimits, predict_body

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
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else None
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


#: Bytes of a body around its instances: ``{"instances":[`` … ``]}``.
ENVELOPE_BYTES = len(predict_body([]))


def batches(sizes: Sequence[int], limits: ServiceLimits) -> tuple[list[list[int]], list[int]]:
    """(positions in batches the service accepts, in order; positions too large to send at all),
    from each instance's encoded size: at most ``max_instances`` a batch, and a body of at most
    ``max_body_bytes`` (the instances, a comma between each two, the envelope)."""
    most = limits.max_body_bytes
    groups: list[list[int]] = []
    too_large: list[int] = []
    group: list[int] = []
    body = ENVELOPE_BYTES
    for position, size in enumerate(sizes):
        if most is not None and ENVELOPE_BYTES + size > most:
            too_large.append(position)
            continue
        full = len(group) == limits.max_instances
        if group and (full or (most is not None and body + 1 + size > most)):
            groups.append(group)
            group, body = [], ENVELOPE_BYTES
        body += size + (1 if group else 0)
        group.append(position)
    if group:
        groups.append(group)
    return groups, too_large


def price_table(
    frame: pd.DataFrame,
    client: ServiceClient,
    on_progress: Callable[[float], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the frame with ``predicted_price``, the rejected rows with ``row`` and ``reason``), in
    batches within the limits the service publishes. An answer other than prices or rejected
    houses (a 413, a 5xx) raises ``ServiceRefusedError``, one line for the page."""
    instances = to_instances(frame)
    limits = client.limits()
    sizes = [len(msgspec.json.encode(instance)) for instance in instances]
    groups, too_large = batches(sizes, limits)
    prices: list[float | None] = [None] * len(instances)
    rejected = {
        p: f"row: {sizes[p]:,} bytes of JSON, more than the service accepts in one request "
        f"({limits.max_body_bytes:,} with the envelope)"
        for p in too_large
    }
    for number, positions in enumerate(groups, start=1):
        while positions:
            response = client.predict([instances[p] for p in positions])
            if response.status_code == 200:
                for p, pred in zip(positions, response.json()["predictions"], strict=True):
                    prices[p] = float(pred["predicted_price"])
                break
            if response.status_code != 400:
                houses = f"{len(positions):,} house{'s' if len(positions) > 1 else ''}"
                raise client.refused(response, f"a batch of {houses}")
            bad = rejected_positions(response.json())
            if not bad:
                for p in positions:
                    rejected[p] = str(response.json().get("detail", "rejected"))
                break
            for i, reason in bad.items():
                rejected[positions[i]] = reason
            positions = [p for i, p in enumerate(positions) if i not in bad]
        if on_progress is not None:
            on_progress(number / len(groups))
    priced = frame.copy()
    priced["predicted_price"] = prices
    rejections = pd.DataFrame(
        {"row": list(rejected), "reason": list(rejected.values())}, columns=["row", "reason"]
    ).sort_values("row", ignore_index=True)
    return priced, rejections
