"""The output's layout and how it becomes whole.

``DST/part-00001-of-00004.parquet`` is task 1's part; ``DST/_done/part-00001-of-00004.json`` its
done-marker (written after the part: rows, checksum, the input's checksum and the model
version); ``DST/_manifest.json`` names every part, the input's checksum and the model version,
and is written only once every marker is there and they all agree (create-only, so of two
tasks that see the last marker one writes it). A job that failed part-way has no manifest: its
output never looks complete, and parts priced by two versions or from two inputs never make
one. Names starting with ``_`` are skipped by parquet readers of the folder.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec

from batch_prediction.errors import BatchError

MANIFEST = "_manifest.json"
DONE = "_done/"


def output_format(uri: str) -> str:
    """CSV parts when the output's name ends in ``.csv``, parquet otherwise."""
    return "csv" if uri.rstrip("/").lower().endswith(".csv") else "parquet"


def part_key(index: int, count: int, fmt: str) -> str:
    return f"part-{index:05d}-of-{count:05d}.{fmt}"


def marker_key(index: int, count: int) -> str:
    return f"{DONE}part-{index:05d}-of-{count:05d}.json"


class Marker(msgspec.Struct, kw_only=True):
    """A finished part."""

    part: str
    task_index: int
    task_count: int
    rows: int
    priced: int
    rejected: int
    skipped_lines: int
    sha256: str
    input_sha256: str
    model_name: str
    model_version: str
    runtime: str


class Manifest(msgspec.Struct, kw_only=True):
    input: str
    input_sha256: str
    model_name: str
    model_version: str
    tasks: int
    rows: int
    priced: int
    rejected: int
    skipped_lines: int
    parts: list[Marker]
    written_at: str


def markers(store: Any) -> dict[str, Marker]:
    """The done-markers in the output, by key (one that can't be read counts as missing)."""
    found = {}
    for key in store.list(DONE.rstrip("/")):
        try:
            found[key] = msgspec.json.decode(store.read_bytes(key), type=Marker)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return found


def foreign(found: dict[str, Marker], input_sha256: str, version: str, count: int) -> list[str]:
    """Markers of another input, model version or task count than this run's."""
    return sorted(
        key
        for key, m in found.items()
        if (m.input_sha256, m.model_version, m.task_count) != (input_sha256, version, count)
    )


def finalise(store: Any, uri: str, input_sha256: str, version: str, count: int) -> bool:
    """Write the manifest if every part of this run is done; True once it exists."""
    if store.exists(MANIFEST):
        return True
    found = markers(store)
    parts = [found.get(marker_key(i, count)) for i in range(count)]
    mine = [
        m for m in parts if m is not None and not foreign({"": m}, input_sha256, version, count)
    ]
    if len(mine) < count:
        return False
    manifest = Manifest(
        input=uri,
        input_sha256=input_sha256,
        model_name=mine[0].model_name,
        model_version=version,
        tasks=count,
        rows=sum(m.rows for m in mine),
        priced=sum(m.priced for m in mine),
        rejected=sum(m.rejected for m in mine),
        skipped_lines=sum(m.skipped_lines for m in mine),
        parts=mine,
        written_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    store.create(MANIFEST, json.dumps(msgspec.to_builtins(manifest), indent=2).encode() + b"\n")
    return True


def read(store: Any) -> Manifest | None:
    if not store.exists(MANIFEST):
        return None
    try:
        return msgspec.json.decode(store.read_bytes(MANIFEST), type=Manifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BatchError(f"{store.uri}/{MANIFEST} can't be read: {exc}") from None
