"""The reference the fast form carries: rows and the prices scikit-learn gave them at register
time, in the graph's metadata (:class:`model_runtime.onnx_runtime.Reference`).

A process serves the graph only after it reproduces those prices
(``onnx_runtime.reference_difference`` within ``onnx_runtime.TOLERANCE``), so that check needs
no scikit-learn load at start-up; otherwise it serves scikit-learn and says why.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pandas as pd

from model_runtime.contract import NULLABLE
from model_runtime.onnx_runtime import (
    CATEGORY_INPUT,
    NUMERIC_INPUT,
    REFERENCE_KEY,
    Reference,
    inputs,
)

#: Rows kept in the reference: the head of the check rows, plus some with a missing value.
REFERENCE_ROWS, REFERENCE_MISSING = 200, 8


def reference_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The check rows worth keeping: the head (the logged input example is its first rows)
    and a few with a missing value, so the imputer's branch is checked too."""
    head, rest = frame.head(REFERENCE_ROWS), frame.iloc[REFERENCE_ROWS:]
    missing = rest[sorted(NULLABLE)].isna().any(axis=1)
    return pd.concat([head, rest[missing].head(REFERENCE_MISSING)])


def with_reference(onnx_bytes: bytes, model: Any, rows: pd.DataFrame) -> bytes:
    """The graph with ``rows`` and scikit-learn's prices for them in its metadata."""
    import onnx

    feed = inputs(rows)
    numeric = [[None if np.isnan(v) else float(v) for v in row] for row in feed[NUMERIC_INPUT]]
    reference = Reference(
        numeric=numeric,
        ocean_proximity=[str(c) for c in feed[CATEGORY_INPUT][:, 0]],
        prices=np.asarray(model.predict(rows), dtype=np.float64).tolist(),
    )
    graph = onnx.load_from_string(onnx_bytes)
    entry = graph.metadata_props.add()
    entry.key, entry.value = REFERENCE_KEY, msgspec.json.encode(reference).decode()
    return bytes(graph.SerializeToString())
