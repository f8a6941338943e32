"""Ingest: raw csv bytes from the packaged copy, a path, an https:// URL or gs://, to parquet.

The bytes are checked against an expected sha256 before anything is parsed, and the parsed
frame must carry every column of the data set.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from housing_platform.artifact_store import sha256, split_gs_uri
from model_runtime import contract
from pipeline import catalog
from pipeline.errors import PipelineError
from pipeline.settings import PACKAGED_DATA, PACKAGED_SHA256, IngestConfig

if TYPE_CHECKING:
    from pipeline.step_context import StepContext

CSV_IN_ARCHIVE = "housing.csv"


def fetch(source: str, timeout_s: float, gcs_client: Any = None) -> bytes:
    """The bytes behind ``source``; empty means the packaged copy."""
    if not source:
        return gzip.decompress(PACKAGED_DATA.read_bytes())
    if source.startswith(("https://", "http://")):
        try:
            with urllib.request.urlopen(source, timeout=timeout_s) as response:
                data: bytes = response.read()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PipelineError(f"ingest: cannot download {source}: {reason}") from None
    elif source.startswith("gs://"):
        data = _fetch_gcs(source, timeout_s, gcs_client)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise PipelineError(f"ingest: source file {source} does not exist")
        data = path.read_bytes()
    return unpack(data, source)


def _fetch_gcs(uri: str, timeout_s: float, client: Any) -> bytes:
    from google.api_core.exceptions import GoogleAPIError

    if client is None:
        from google.cloud import storage

        client = storage.Client()
    bucket, name = split_gs_uri(uri)
    try:
        return bytes(client.bucket(bucket).blob(name).download_as_bytes(timeout=timeout_s))
    except GoogleAPIError as exc:
        raise PipelineError(f"ingest: cannot read {uri}: {exc}") from None


def unpack(data: bytes, source: str) -> bytes:
    """The csv inside a .tgz archive or a .gz file; plain csv bytes as they are."""
    if data[:2] == b"\x1f\x8b":
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise PipelineError(f"ingest: {source} is a corrupt gzip file: {exc}") from None
        if tarfile.is_tarfile(io.BytesIO(inner)):
            with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
                members = [m for m in tar.getmembers() if Path(m.name).name == CSV_IN_ARCHIVE]
                extracted = tar.extractfile(members[0]) if members else None
                if extracted is None:
                    raise PipelineError(f"ingest: {source} holds no {CSV_IN_ARCHIVE}")
                return extracted.read()
        return inner
    return data


def parse(data: bytes, source: str) -> pd.DataFrame:
    """Parse csv bytes into a frame with every expected column and a stable row id."""
    try:
        frame = pd.read_csv(io.BytesIO(data), on_bad_lines="error", low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"ingest: {source or 'data'} is not a valid csv: {first}") from None
    missing = [c for c in contract.COLUMNS if c not in frame.columns]
    if missing:
        raise PipelineError(
            f"ingest: {source or 'data'} lacks column(s) {', '.join(missing)}; "
            f"expected {', '.join(contract.COLUMNS)}"
        )
    frame = frame[list(contract.COLUMNS)].copy()
    frame.insert(0, contract.ROW_ID, range(len(frame)))
    return frame


def load(config: IngestConfig, gcs_client: Any = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fetch, verify and parse; also returns the provenance report."""
    data = fetch(config.source, config.timeout_s, gcs_client)
    expected = config.sha256 or (PACKAGED_SHA256 if not config.source else "")
    digest = sha256(data)
    if expected and digest != expected.lower():
        raise PipelineError(
            f"ingest: checksum mismatch for {config.source or PACKAGED_DATA.name}: "
            f"expected sha256 {expected}, got {digest}"
        )
    frame = parse(data, config.source)
    report = {
        "source": config.source or f"package:{PACKAGED_DATA.name}",
        "sha256": digest,
        "verified": bool(expected),
        "rows": len(frame),
        "columns": list(frame.columns),
    }
    return frame, report


def run(ctx: StepContext) -> dict[str, Any]:
    frame, report = load(ctx.settings.ingest, ctx.gcs_client)
    ctx.write_frame(catalog.RAW, frame)
    ctx.write_json(catalog.INGEST_REPORT, report)
    if ctx.tracker:
        ctx.tracker.params({"source": report["source"], "sha256": report["sha256"]})
        ctx.tracker.metrics({"rows": len(frame)})
    return {"rows": len(frame), "sha256": report["sha256"][:12]}
