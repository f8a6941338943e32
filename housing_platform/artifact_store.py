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
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import pandas as pd

if TYPE_CHECKING:
    from google.cloud import storage as gcs


#: Bytes per request of a streamed read or write on GCS (a multiple of 256 KiB, as resumable
#: uploads require).
CHUNK_BYTES = 8 * 1024 * 1024


class StorageError(RuntimeError):
    """An artifact could not be read or written."""


class ArtifactStore(Protocol):
    uri: str

    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def open_read(self, key: str) -> IO[bytes]: ...
    def open_write(self, key: str) -> contextlib.AbstractContextManager[IO[bytes]]: ...
    def create(self, key: str, data: bytes) -> bool: ...


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
        with self.open_write(key) as fh:
            fh.write(data)

    def open_read(self, key: str) -> IO[bytes]:
        """A seekable binary file, for inputs too large to hold in memory."""
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise StorageError(f"artifact {key!r} not found in {self.uri}") from None

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[IO[bytes]]:
        """A binary file written as a stream; the artifact appears only when the block ends
        without an error (a temp file renamed into place), as with ``write_bytes``."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
            Path(tmp).replace(path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it doesn't exist yet (atomically: a hard link fails on an
        existing name); False when another writer got there first."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)

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

    def open_read(self, key: str) -> IO[bytes]:
        """A seekable reader fetching ranges as it goes (the object is never held whole)."""
        blob = self.bucket.blob(self._name(key))
        if not blob.exists():
            raise StorageError(f"artifact {key!r} not found in {self.uri}")
        return blob.open("rb", chunk_size=CHUNK_BYTES)

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[IO[bytes]]:
        """A resumable upload; the object appears only when the block ends without an error
        (an error cancels the upload)."""
        blob = self.bucket.blob(self._name(key))
        with blob.open("wb", chunk_size=CHUNK_BYTES, ignore_flush=True) as fh:
            yield fh

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if no object has that name (generation precondition 0); False
        when another writer got there first."""
        from google.api_core.exceptions import PreconditionFailed

        try:
            self.bucket.blob(self._name(key)).upload_from_string(data, if_generation_match=0)
        except PreconditionFailed:
            return False
        return True

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


def read_if_present(store: ArtifactStore, key: str) -> bytes | None:
    """The object's bytes, or None when there is none; a store that fails is still an error
    (one read, and an existence check only when it fails)."""
    try:
        return store.read_bytes(key)
    except StorageError:
        if store.exists(key):
            raise
        return None


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
