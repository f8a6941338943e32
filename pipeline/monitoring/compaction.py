"""Daily compaction of the prediction log: a day that is over ends as one object per model
version, instead of one per flush of every instance.

``predictions/date=D/model_version=V/compacted/<hash>.parquet`` sits where
``prediction_records.read_window`` lists, so readers find it like any other object. The hash is
of the source objects' names, which the compacted object also lists in its parquet metadata.
Order: write the compacted object (atomically: one upload, or a rename locally), then delete
its sources. A run that stops in between leaves both; the next monitor run finishes that
compaction (deletes the sources its metadata lists) before it reads the log, so no row is lost;
and ``prediction_records.read_window`` skips the objects a compacted one lists, so no reader
counts a row twice while the sources are being deleted.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from datetime import date, timedelta

import msgspec

from housing_platform.artifact_store import ArtifactStore
from model_runtime import prediction_records

COMPACTED = prediction_records.COMPACTED
METADATA_KEY = prediction_records.SOURCES_KEY
is_compacted = prediction_records.is_compacted
sources_of = prediction_records.sources_of


class Compaction(msgspec.Struct, frozen=True, kw_only=True):
    day: str
    model_version: str
    key: str
    sources: int
    rows: int


def partition_prefix(day: date, model_version: str) -> str:
    return f"{prediction_records.PREFIX}date={day.isoformat()}/model_version={model_version}/"


def superseded(store: ArtifactStore, keys: Iterable[str]) -> set[str]:
    """Objects among ``keys`` that a compacted object also among them already holds."""
    keys = list(keys)
    listed: set[str] = set()
    for key in keys:
        if is_compacted(key):
            listed.update(sources_of(store.read_bytes(key)))
    return listed & set(keys)


def compact_partition(store: ArtifactStore, day: date, model_version: str) -> Compaction | None:
    """Compact one (day, version) partition; None when it already is one object."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prefix = partition_prefix(day, model_version)
    keys = [k for k in store.list(prefix) if k.endswith(".parquet")]
    # Finish a compaction that stopped after writing its object: its sources go first.
    done = superseded(store, keys)
    for key in sorted(done):
        store.delete(key)
    keys = [k for k in keys if k not in done]
    if len(keys) <= 1:
        return None
    tables = []
    for key in keys:
        try:
            tables.append(pq.read_table(io.BytesIO(store.read_bytes(key))))
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise prediction_records.PredictionLogError(
                f"prediction log object {key} can't be read, so {prefix} is not compacted: {exc}"
            ) from exc
    table = pa.concat_tables(
        [t.select(list(prediction_records.COLUMNS)) for t in tables], promote_options="default"
    ).sort_by([("time", "ascending")])
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(sorted(keys)).encode()})
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]
    key = f"{prefix}{COMPACTED}{digest}.parquet"
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    store.write_bytes(key, out.getvalue())
    for source in sorted(keys):
        if source != key:
            store.delete(source)
    return Compaction(
        day=day.isoformat(),
        model_version=model_version,
        key=key,
        sources=len(keys),
        rows=table.num_rows,
    )


def finish_interrupted(store: ArtifactStore, days: Iterable[date]) -> list[str]:
    """Delete the sources of compactions that stopped before deleting them, so a reader that
    follows sees each row once; returns the keys deleted."""
    deleted: list[str] = []
    for day in sorted(set(days)):
        for version in versions_on(store, day):
            keys = store.list(partition_prefix(day, version))
            if not any(is_compacted(k) for k in keys):
                continue
            for key in sorted(superseded(store, keys)):
                store.delete(key)
                deleted.append(key)
    return deleted


def versions_on(store: ArtifactStore, day: date) -> list[str]:
    prefix = f"{prediction_records.PREFIX}date={day.isoformat()}/"
    found = {p[1] for k in store.list(prefix) if (p := prediction_records.partition(k))}
    return sorted(found)


def compact_days(store: ArtifactStore, days: Iterable[date], today: date) -> list[Compaction]:
    """Compact every version's partition of each day that is over (before ``today``, UTC);
    today's partitions are still being written and are left alone."""
    done = []
    for day in sorted(set(days)):
        if day >= today:
            continue
        for version in versions_on(store, day):
            result = compact_partition(store, day, version)
            if result is not None:
                done.append(result)
    return done


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
