"""The prediction log's format, shared by its writer (the service) and its readers (the monitor,
feedback, replay): one row per priced house, parquet objects in the artifact store under
``predictions/``, partitioned by date and model version so readers prune by both.

``predictions/date=<YYYY-MM-DD>/model_version=<v>/<revision>/<instance>/<seq>.parquet`` —
``revision`` (Cloud Run's ``K_REVISION``) and ``instance`` keep concurrent writers apart.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from model_runtime.contract import FEATURES, NUMERIC_FEATURES

if TYPE_CHECKING:
    import pandas as pd

    from housing_platform.artifact_store import ArtifactStore

PREFIX = "predictions/"
#: One row per priced house, in this order. ``time`` is seconds since the epoch (UTC);
#: ``form`` is the runtime that answered ("onnxruntime" or "scikit-learn").
COLUMNS = (
    "request_id",
    "time",
    "model_name",
    "model_version",
    "revision",
    *FEATURES,
    "price",
    "form",
    "status",
    "latency_ms",
)
#: A day that is over is compacted into ``…/model_version=V/compacted/<hash>.parquet``, whose
#: parquet metadata lists the objects it holds (``pipeline.monitoring.compaction``).
COMPACTED = "compacted/"
SOURCES_KEY = b"housing_mlops.compacted_from"
_KEY = re.compile(
    r"^predictions/date=(?P<day>\d{4}-\d{2}-\d{2})/model_version=(?P<version>[^/]+)/.+\.parquet$"
)


class PredictionLogError(RuntimeError):
    """The log can't be read as asked; the message names the object or the window."""


def object_key(day: str, model_version: str, revision: str, instance: str, seq: int) -> str:
    """Where one flush of one (day, version) goes."""
    version = model_version or "none"
    return f"{PREFIX}date={day}/model_version={version}/{revision}/{instance}/{seq:08d}.parquet"


def schema() -> Any:
    """The objects' column types, fixed rather than inferred, so that every flush writes the
    same types whatever its rows hold (a flush whose houses all lack a bedroom count, or give
    their age as a whole number)."""
    import pyarrow as pa

    text, number = pa.string(), pa.float64()
    kinds = {"time": number, "price": number, "latency_ms": number, "status": pa.int64()}
    kinds.update(dict.fromkeys(NUMERIC_FEATURES, number))
    return pa.schema([(name, kinds.get(name, text)) for name in COLUMNS])


def encode(rows: Sequence[tuple[Any, ...]]) -> bytes:
    """Rows (tuples in :data:`COLUMNS` order) as one parquet file, typed as :func:`schema`.
    (The service's writer builds its tables from its own buffer instead.)"""
    import pyarrow as pa

    kinds = schema()
    values = zip(*rows, strict=True) if rows else ([] for _ in COLUMNS)
    arrays = [pa.array(column, type=kind) for column, kind in zip(values, kinds.types, strict=True)]
    return encode_table(pa.Table.from_arrays(arrays, schema=kinds))


def encode_table(table: Any) -> bytes:
    """A table of :data:`COLUMNS` as one parquet file. pyarrow writes it without holding the
    interpreter's lock, into its own buffer: a Python file object would take the lock back for
    every piece written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = pa.BufferOutputStream()
    pq.write_table(table, out, compression="zstd")
    data: bytes = out.getvalue().to_pybytes()
    return data


def decode(data: bytes) -> list[dict[str, Any]]:
    """The rows of one object, as dicts."""
    import pyarrow.parquet as pq

    return list(pq.read_table(io.BytesIO(data)).to_pylist())


def partition(key: str) -> tuple[date, str] | None:
    """The (day, model version) an object key belongs to; None for anything else."""
    match = _KEY.match(key)
    if match is None:
        return None
    return date.fromisoformat(match["day"]), match["version"]


def is_compacted(key: str) -> bool:
    return f"/{COMPACTED}" in key


def sources_of(data: bytes) -> list[str]:
    """The object names a compacted object was made from (its parquet metadata)."""
    import json

    import pyarrow.parquet as pq

    meta = pq.read_schema(io.BytesIO(data)).metadata or {}
    return list(json.loads(meta.get(SOURCES_KEY, b"[]")))


def keys_in(
    store: ArtifactStore, since: datetime, until: datetime, model_version: str | None = None
) -> list[str]:
    """The objects that may hold rows of [since, until), pruned by their date and version
    partitions (listing one date prefix at a time, so a long log isn't listed whole)."""
    keys: list[str] = []
    day = since.astimezone(UTC).date()
    last = (until - timedelta(microseconds=1)).astimezone(UTC).date()
    while day <= last:
        prefix = f"{PREFIX}date={day.isoformat()}/"
        if model_version is not None:
            prefix += f"model_version={model_version}/"
        keys.extend(k for k in store.list(prefix) if partition(k) is not None)
        day += timedelta(days=1)
    return keys


def read_window(
    store: ArtifactStore, since: datetime, until: datetime, model_version: str | None = None
) -> pd.DataFrame:
    """Every logged house priced in [since, until) (optionally of one model version), as a frame
    with :data:`COLUMNS`, each row once even while a compaction is deleting its sources. A corrupt
    object is an error naming it, never silently skipped."""
    import pandas as pd
    import pyarrow.parquet as pq

    keys = keys_in(store, since, until, model_version)
    # Compacted objects first: the sources they hold may still be listed while compaction deletes
    # them, and must not be counted twice.
    keys.sort(key=lambda k: not is_compacted(k))
    held: set[str] = set()
    frames = []
    for key in keys:
        if key in held:
            continue
        try:
            data = store.read_bytes(key)
            if is_compacted(key):
                held.update(sources_of(data))
            frames.append(pq.read_table(io.BytesIO(data)).to_pandas())
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise PredictionLogError(f"prediction log object {key} can't be read: {exc}") from exc
    if not frames:
        return pd.DataFrame({name: [] for name in COLUMNS})
    frame = pd.concat(frames, ignore_index=True)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise PredictionLogError(f"prediction log objects lack column(s) {', '.join(missing)}")
    lo, hi = since.timestamp(), until.timestamp()
    kept = frame[(frame["time"] >= lo) & (frame["time"] < hi)]
    if model_version is not None:
        kept = kept[kept["model_version"].astype(str) == model_version]
    return kept.reset_index(drop=True)[list(COLUMNS)]
