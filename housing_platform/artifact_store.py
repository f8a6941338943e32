"""Artifact store: one interface over a local folder and ``gs://bucket/prefix``.

Writes are atomic (a temp file renamed into place locally; a single object upload on GCS), so a
reader never sees half an artifact. The GCS client is passed in, never discovered here, so tests
point it at an emulator and nothing reaches for Google's metadata server by accident.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

if TYPE_CHECKING:
    from google.cloud import storage as gcs


class StorageError(RuntimeError):
    """An artifact could not be read or written."""


class ArtifactStore(Protocol):
    uri: str

    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str = "") -> list[str]: ...


class LocalStore:
    """Artifacts as files under a root folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(f"artifact key {key!r} escapes the store root {self.root}")
        return path

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"artifact {key!r} not found in {self.uri}") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            Path(tmp).replace(path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".tmp")
        )


class GCSStore:
    """Artifacts as objects under ``gs://bucket/prefix``."""

    def __init__(self, client: gcs.Client, bucket: str, prefix: str = ""):
        self.bucket = client.bucket(bucket)
        self.prefix = prefix.strip("/")
        self.uri = f"gs://{bucket}/{self.prefix}".rstrip("/")

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def read_bytes(self, key: str) -> bytes:
        from google.api_core.exceptions import NotFound

        try:
            return bytes(self.bucket.blob(self._name(key)).download_as_bytes())
        except NotFound:
            raise StorageError(f"artifact {key!r} not found in {self.uri}") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        self.bucket.blob(self._name(key)).upload_from_string(data)

    def exists(self, key: str) -> bool:
        return bool(self.bucket.blob(self._name(key)).exists())

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self.bucket.blob(self._name(key)).delete()

    def list(self, prefix: str = "") -> list[str]:
        full = self._name(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        skip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(
            b.name[skip:] for b in self.bucket.client.list_blobs(self.bucket, prefix=full)
        )


def split_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` → ``("bucket", "a/b")``."""
    if not uri.startswith("gs://") or len(uri) <= len("gs://"):
        raise StorageError(f"not a gs:// URI: {uri!r}")
    bucket, _, path = uri[len("gs://") :].partition("/")
    return bucket, path


def open_store(uri: str, gcs_client: gcs.Client | None = None) -> ArtifactStore:
    """The store at ``uri``: ``gs://bucket/prefix`` or a local folder."""
    if uri.startswith("gs://"):
        bucket, prefix = split_gs_uri(uri)
        if gcs_client is None:
            from google.cloud import storage

            gcs_client = storage.Client()
        return GCSStore(gcs_client, bucket, prefix)
    return LocalStore(uri)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def frame_to_parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False, engine="pyarrow", compression="zstd")
    return buf.getvalue()


def frame_from_parquet(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data), engine="pyarrow")


def to_json(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode() + b"\n"
