"""The fast form at run time: an ONNX graph of the fitted pipeline, run by ONNX Runtime.

What the service (and any other command that prices houses) loads; it never imports the code
that translates a model to the graph (``pipeline.onnx_translation``). The graph carries a
reference: rows and the prices scikit-learn gave them at register time. A process serves the
graph only after it reproduces those prices (:func:`reference_difference` within
:data:`TOLERANCE`), so the check needs no scikit-learn load at start-up.

Inputs: ``numeric`` (double, [n, 8], ``NUMERIC_FEATURES`` order, NaN for a missing
``total_bedrooms``) and ``ocean_proximity`` (string, [n, 1]); output ``price`` (double, [n]).
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from model_runtime.contract import CATEGORICAL, NUMERIC_FEATURES

FILENAME = "model.onnx"
#: Largest relative difference from scikit-learn at which the fast form may serve.
TOLERANCE = 1e-5
NUMERIC_INPUT = "numeric"
CATEGORY_INPUT = CATEGORICAL
OUTPUT = "price"
#: Metadata key of the graph's :class:`Reference`.
REFERENCE_KEY = "housing_mlops.reference"


def inputs(frame: pd.DataFrame) -> dict[str, NDArray[Any]]:
    """The graph's inputs from raw rows (the columns the pipeline was trained on)."""
    return {
        NUMERIC_INPUT: frame[list(NUMERIC_FEATURES)].to_numpy(dtype=np.float64),
        CATEGORY_INPUT: frame[[CATEGORICAL]].to_numpy(dtype=object).astype(str),
    }


def session(onnx_bytes: bytes) -> Any:
    """An ONNX Runtime session pinned to one thread (the serving process owns the cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


#: Rows per graph call: bounds the [rows, training places] distance tensors of new places.
CHUNK = 64
#: Rows per call for a file of houses: each call costs a fixed ~50 µs of set-up, so larger
#: calls price a million houses ~25% faster, for ~13 MiB more memory than ``CHUNK``.
BULK_CHUNK = 1024


def predict(fast: Any, feed: dict[str, NDArray[Any]], chunk: int = CHUNK) -> NDArray[np.float64]:
    """Prices for the graph's inputs, ``chunk`` rows per call (the prices don't depend on it)."""
    rows = len(feed[NUMERIC_INPUT])
    parts = [
        fast.run([OUTPUT], {name: array[start : start + chunk] for name, array in feed.items()})[0]
        for start in range(0, rows, chunk)
    ]
    return np.concatenate(parts).astype(np.float64) if parts else np.empty(0)


def relative_difference(expected: NDArray[np.float64], got: NDArray[np.float64]) -> float:
    if got.shape != expected.shape or not len(expected):
        return float("inf")
    scale = np.maximum(np.abs(expected), 1e-12)
    return float(np.max(np.abs(got - expected) / scale))


def agreement(model: Any, fast: Any, frame: pd.DataFrame) -> float:
    """Largest relative difference between the sklearn pipeline and the fast form on ``frame``."""
    expected = np.asarray(model.predict(frame), dtype=np.float64)
    return relative_difference(expected, predict(fast, inputs(frame)))


class Reference(msgspec.Struct, forbid_unknown_fields=True):
    """Rows and the prices the sklearn pipeline gave them, kept in the graph's metadata."""

    numeric: list[list[float | None]]
    """``NUMERIC_FEATURES`` per row; null for a missing value."""
    ocean_proximity: list[str]
    prices: list[float]


def reference_difference(fast: Any) -> float | None:
    """Largest relative difference between the graph, run here, and the prices scikit-learn
    gave its reference rows at register time; None when the graph carries no reference."""
    raw = fast.get_modelmeta().custom_metadata_map.get(REFERENCE_KEY)
    if raw is None:
        return None
    reference = msgspec.json.decode(raw, type=Reference)
    feed = {
        NUMERIC_INPUT: np.array(reference.numeric, dtype=np.float64).reshape(
            -1, len(NUMERIC_FEATURES)
        ),
        CATEGORY_INPUT: np.array(reference.ocean_proximity, dtype=object).reshape(-1, 1),
    }
    return relative_difference(np.asarray(reference.prices, dtype=np.float64), predict(fast, feed))
