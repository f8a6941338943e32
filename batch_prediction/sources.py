"""The input file: where it is, its checksum, its columns, and a task's share of its rows read
in chunks (pyarrow), so memory stays flat whatever the file's size.

A CSV is read with every column as text: extra columns come out exactly as written, and a bad
value in one row (a word where a number belongs) stays that row's problem instead of failing
the type inference of a whole block. A row with the wrong number of fields is skipped and
counted (pyarrow can't hand it over as a row)."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from typing import IO, Any

import msgspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batch_prediction.errors import BatchError
from batch_prediction.shards import Task, byte_range, row_groups
from housing_platform.artifact_store import ArtifactStore, StorageError, open_store
from model_runtime.contract import FEATURES

#: Rows per chunk of a parquet input; a CSV's chunks are blocks of this many bytes.
CHUNK_ROWS = 65_536
CSV_BLOCK_BYTES = 8 << 20


class Location(msgspec.Struct, frozen=True):
    """A file as a store (its folder, local or ``gs://``) and a key in it."""

    store: Any
    key: str
    uri: str


def locate(uri: str, gcs_client: Any = None) -> Location:
    folder, _, name = uri.rstrip("/").rpartition("/")
    if uri.startswith("gs://") and folder in ("gs:", "gs:/"):
        raise BatchError(f"{uri}: name an object, gs://bucket/path/file.csv")
    store: ArtifactStore = open_store(folder or ".", gcs_client)
    return Location(store, name, uri)


def input_format(uri: str) -> str:
    lower = uri.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith(".csv"):
        return "csv"
    raise BatchError(f"{uri}: unknown input format; name a .csv or .parquet file")


def _open(location: Location) -> IO[bytes]:
    try:
        fh: IO[bytes] = location.store.open_read(location.key)
    except StorageError:
        raise BatchError(f"{location.uri}: no such file") from None
    except OSError as exc:
        raise BatchError(f"{location.uri}: can't be read: {exc}") from None
    return fh


def checksum(location: Location) -> str:
    """sha256 of the input's bytes, read in blocks."""
    digest = hashlib.sha256()
    with _open(location) as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def _missing(columns: list[str], uri: str) -> None:
    missing = [c for c in FEATURES if c not in columns]
    if missing:
        raise BatchError(
            f"{uri}: missing column(s) {', '.join(missing)}; the input needs "
            f"{', '.join(FEATURES)} (other columns are carried through)"
        )


class _Range(io.RawIOBase):
    """``prefix`` then bytes ``[start, end)`` of ``fh``: a CSV share with its header."""

    def __init__(self, fh: IO[bytes], prefix: bytes, start: int, end: int):
        self._fh, self._prefix, self._left = fh, prefix, end - start
        fh.seek(start)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        if self._left <= 0:
            return 0
        data = self._fh.read(min(len(view), self._left))
        self._left -= len(data)
        view[: len(data)] = data
        return len(data)


class Share:
    """A task's share of the input: its schema (the input's columns), its size (rows for
    parquet, bytes for CSV, for progress), and its chunks."""

    def __init__(self, location: Location, task: Task):
        self.location = location
        self.format = input_format(location.uri)
        self.task = task
        self.skipped: list[int | None] = []
        """Line numbers (when pyarrow knows them) of CSV rows with the wrong number of fields."""
        self._fh = _open(location)
        try:
            self._prepare()
        except BatchError:
            self._fh.close()
            raise
        except (pa.ArrowException, OSError, ValueError) as exc:
            self._fh.close()
            raise BatchError(f"{location.uri}: can't be read as {self.format}: {exc}") from None

    def _prepare(self) -> None:
        if self.format == "parquet":
            self._parquet = pq.ParquetFile(self._fh)
            self.schema = self._parquet.schema_arrow
            _missing(self.schema.names, self.location.uri)
            self._groups = row_groups(self._parquet.num_row_groups, self.task)
            meta = self._parquet.metadata
            self.total = sum(meta.row_group(g).num_rows for g in self._groups)
            self.unit = "rows"
            return
        self._fh.seek(0, io.SEEK_END)
        size = self._fh.tell()
        self._fh.seek(0)
        header = self._fh.readline()
        if not header.strip():
            raise BatchError(f"{self.location.uri}: empty, no header line")
        try:
            names = next(csv.reader([header.decode("utf-8-sig")]))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise BatchError(f"{self.location.uri}: can't read the header: {exc}") from None
        _missing(names, self.location.uri)
        self.schema = pa.schema([(n, pa.string()) for n in names])
        self._header = header if header.endswith(b"\n") else header + b"\n"
        self._start, self._end = byte_range(self._fh, len(header), size, self.task)
        self.total = self._end - self._start
        self.unit = "bytes"

    def chunks(self) -> Iterator[tuple[pa.RecordBatch, int]]:
        """Record batches of the share, each with how far it got (rows or bytes)."""
        try:
            yield from (self._parquet_chunks() if self.format == "parquet" else self._csv_chunks())
        except (pa.ArrowException, OSError) as exc:
            raise BatchError(
                f"{self.location.uri}: can't be read as {self.format}: {exc}"
            ) from None

    def _parquet_chunks(self) -> Iterator[tuple[pa.RecordBatch, int]]:
        done = 0
        if not self._groups:
            return
        for batch in self._parquet.iter_batches(batch_size=CHUNK_ROWS, row_groups=self._groups):
            done += batch.num_rows
            yield batch, done

    def _skip(self, row: Any) -> str:
        self.skipped.append(row.number)
        return "skip"

    def _csv_chunks(self) -> Iterator[tuple[pa.RecordBatch, int]]:
        if self._end <= self._start:
            return
        raw = _Range(self._fh, self._header, self._start, self._end)
        reader = pacsv.open_csv(
            io.BufferedReader(raw, buffer_size=1 << 20),
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=self._skip),
            convert_options=pacsv.ConvertOptions(
                column_types=self.schema,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        for batch in reader:
            yield batch, min(self._fh.tell() - self._start, self.total)

    def close(self) -> None:
        self._fh.close()
