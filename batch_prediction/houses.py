"""A chunk of input rows checked as the service checks a request, and turned into the model's
inputs.

Every row is checked at once with arrays; only a row that fails goes through the service's own
request parser (``service.schemas.parse_predict_request``), so its ``rejected`` reason is the
field message the service's 400 gives for that house, word for word, and the array check can
only be stricter than the service: a row it flags that the parser accepts is priced as parsed.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from model_runtime import onnx_runtime
from model_runtime.contract import CATEGORICAL, NULLABLE, NUMERIC_FEATURES, RANGES
from model_runtime.contract import normalise_ocean_proximity as canonical
from service.schemas import OCEAN_PROXIMITY_PATTERN, RequestError, parse_predict_request

_CATEGORY = re.compile(OCEAN_PROXIMITY_PATTERN)
#: The service's ``max_length`` of ``ocean_proximity``.
_CATEGORY_MAX = 32


class Checked(msgspec.Struct):
    """A chunk's valid rows as the model's inputs, and a reason for each rejected row."""

    valid: NDArray[np.bool_]
    numeric: NDArray[np.float64]
    """[valid rows, 8] in ``NUMERIC_FEATURES`` order; NaN for a missing ``total_bedrooms``."""
    ocean: NDArray[Any]
    """[valid rows, 1] categories as the data set spells them."""
    rejected: list[str | None]

    def feed(self) -> dict[str, NDArray[Any]]:
        return {onnx_runtime.NUMERIC_INPUT: self.numeric, onnx_runtime.CATEGORY_INPUT: self.ocean}


def _numbers(column: pa.Array | pa.ChunkedArray) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The column as floats (NaN where empty or not a number) and where it was empty."""
    missing = column.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:
            column = pc.cast(column, pa.float64())
        except pa.ArrowInvalid:  # a word among the numbers: coerce row by row
            import pandas as pd

            text = column.to_numpy(zero_copy_only=False)
            return pd.to_numeric(text, errors="coerce").astype(np.float64), missing
    elif not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        return np.full(len(column), np.nan), missing
    values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64), missing


def _categories(column: pa.Array | pa.ChunkedArray) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """The column spelled as the data set does, and where it is a spelling the service reads
    (distinct values are checked once)."""
    n = len(column)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return np.full(n, "", dtype=object), np.zeros(n, dtype=bool)
    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    words = encoded.dictionary.to_pylist()
    known = np.array(
        [len(w) <= _CATEGORY_MAX and _CATEGORY.match(w) is not None for w in words] + [False]
    )
    spelled = np.array([canonical(w) for w in words] + [""], dtype=object)
    codes = encoded.indices.fill_null(len(words)).to_numpy(zero_copy_only=False)
    return spelled[codes], known[codes]


def _house(batch: pa.RecordBatch, row: int) -> dict[str, Any]:
    """One row as the service's JSON house (a missing value is null)."""
    house = {}
    for name in (*NUMERIC_FEATURES, CATEGORICAL):
        value = batch.column(name)[row].as_py()
        if isinstance(value, str) and name != CATEGORICAL:
            with contextlib.suppress(ValueError):
                value = float(value)
        house[name] = value
    return house


def _service_answer(house: dict[str, Any]) -> tuple[str | None, Any]:
    """The service's verdict on one house: its field message, or the house as it parsed it."""
    body = msgspec.json.encode({"instances": [house]})
    try:
        (parsed,) = parse_predict_request(body, 1)
    except RequestError as err:
        if not err.errors:
            return err.detail, None
        first = err.errors[0]
        return f"{first.loc.removeprefix('instances[0]').lstrip('.') or 'house'}: {first.msg}", None
    return None, parsed


def _plain(column: pa.Array) -> pa.Array:
    """A dictionary-encoded column (pandas' categories, in parquet) as its values."""
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column


def check(batch: pa.RecordBatch) -> Checked:
    n = batch.num_rows
    batch = pa.RecordBatch.from_arrays([_plain(c) for c in batch.columns], names=batch.schema.names)
    numeric = np.empty((n, len(NUMERIC_FEATURES)), dtype=np.float64)
    ok = np.ones(n, dtype=bool)
    for j, name in enumerate(NUMERIC_FEATURES):
        values, missing = _numbers(batch.column(name))
        bounds = RANGES[name]
        inside = (values >= bounds.min) & (values <= bounds.max)  # False for NaN
        if name in NULLABLE:
            values = np.where(missing | np.isnan(values), np.nan, values)
            inside |= np.isnan(values)  # the service reads NaN as JSON's null
        numeric[:, j] = values
        ok &= inside
    ocean, known = _categories(batch.column(CATEGORICAL))
    ok &= known
    rejected: list[str | None] = [None] * n
    for row in np.flatnonzero(~ok):
        reason, parsed = _service_answer(_house(batch, int(row)))
        if reason is not None:
            rejected[row] = reason
            continue
        numeric[row] = [
            np.nan if v is None else v for v in (getattr(parsed, f) for f in NUMERIC_FEATURES)
        ]
        ocean[row] = parsed.ocean_proximity
        ok[row] = True
    return Checked(ok, numeric[ok], ocean[ok].reshape(-1, 1), rejected)
