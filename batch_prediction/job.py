"""A batch run: check the output, pin the model version, price each task's share into its own
part, and write the manifest once every part is there.

Three ways in, one task body:

- one process (``--tasks 1``, the default): the task runs here;
- ``--tasks K`` locally: K processes of ``python -m batch_prediction`` run as Cloud Run would run
  them (CLOUD_RUN_TASK_INDEX / CLOUD_RUN_TASK_COUNT), with the version and the input's checksum
  pinned by this process, which writes the manifest after they all exit;
- a Cloud Run Job task (CLOUD_RUN_TASK_COUNT set): each task checks the output for itself, and
  the task that sees every done-marker writes the manifest.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batch_prediction import houses, manifest, model
from batch_prediction.errors import BatchError
from batch_prediction.progress import Progress
from batch_prediction.shards import Task, task_from_env
from batch_prediction.sources import Location, Share, checksum, input_format, locate
from housing_platform.artifact_store import open_store
from model_runtime.exports import DEFAULT_MODEL

#: The columns a run adds to each input row.
ADDED = ("predicted_price", "model_name", "model_version", "rejected")


class Request(msgspec.Struct, kw_only=True):
    input: str
    output: str
    version: str | None = None
    alias: str = "champion"
    tasks: int | None = None
    """Local processes; None: one, or the Cloud Run task of the environment."""
    overwrite: bool = False
    resume: bool = False
    child: bool = False
    """A process started by a local ``--tasks K`` run: the output was checked for it."""
    input_sha256: str | None = None


class _Hashing(io.RawIOBase):
    """Passes writes on, counting and hashing them (the part's checksum for the manifest)."""

    def __init__(self, sink: IO[bytes]):
        self.sink, self.digest, self.size = sink, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self.sink.write(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:  # the store commits the sink, not pyarrow
        super().close()


def output_schema(schema: pa.Schema, uri: str) -> pa.Schema:
    clash = [name for name in ADDED if name in schema.names]
    if clash:
        raise BatchError(
            f"{uri}: the input already has column(s) {', '.join(clash)}, which the output adds"
        )
    return (
        schema.append(pa.field("predicted_price", pa.float64()))
        .append(pa.field("model_name", pa.string()))
        .append(pa.field("model_version", pa.string()))
        .append(pa.field("rejected", pa.string()))
    )


def priced(
    batch: pa.RecordBatch, predictor: Any, name: str, version: str
) -> tuple[pa.RecordBatch, int]:
    """The batch with its prices (or reasons) appended, and how many rows were rejected."""
    checked = houses.check(batch)
    values = np.full(batch.num_rows, np.nan)
    values[checked.valid] = model.prices(predictor, checked.feed())
    n = batch.num_rows
    columns = [
        *batch.columns,
        pa.array(values, mask=~checked.valid),
        pa.repeat(pa.scalar(name), n),
        pa.repeat(pa.scalar(version), n),
        pa.array(checked.rejected, type=pa.string()),
    ]
    schema = output_schema(batch.schema, "")
    return pa.RecordBatch.from_arrays(columns, schema=schema), int(n - checked.valid.sum())


def run_task(
    location: Location,
    out: Any,
    task: Task,
    predictor: Any,
    input_sha256: str,
    fmt: str,
    progress_label: str = "",
    env: Mapping[str, str] = os.environ,
) -> manifest.Marker:
    """Price the task's share into its part, then write its done-marker."""
    share = Share(location, task)
    try:
        schema = output_schema(share.schema, location.uri)
        name, version = predictor.meta.name or DEFAULT_MODEL, predictor.meta.version
        key = manifest.part_key(task.index, task.count, fmt)
        show = Progress(
            share.total, progress_label, tty=False if env.get("BATCH_PROGRESS") == "log" else None
        )
        rows = rejected = 0
        with out.open_write(key) as sink:
            stream = _Hashing(sink)
            writer: Any = (
                pq.ParquetWriter(stream, schema, compression="zstd")
                if fmt == "parquet"
                else pacsv.CSVWriter(stream, schema)
            )
            for batch, done in share.chunks():
                result, bad = priced(batch.cast(share.schema), predictor, name, version)
                writer.write_batch(result)
                rows += batch.num_rows
                rejected += bad
                show.update(rows, done)
            writer.close()
        show.finish(rows)
        marker = manifest.Marker(
            part=key,
            task_index=task.index,
            task_count=task.count,
            rows=rows,
            priced=rows - rejected,
            rejected=rejected,
            skipped_lines=len(share.skipped),
            sha256=stream.digest.hexdigest(),
            input_sha256=input_sha256,
            model_name=name,
            model_version=version,
            runtime=predictor.runtime,
        )
        out.write_bytes(manifest.marker_key(task.index, task.count), msgspec.json.encode(marker))
        return marker
    finally:
        share.close()


def _prepare_output(out: Any, request: Request, sha: str, version: str, count: int) -> list[int]:
    """Check the output as the flags allow; the task indices still to do."""
    existing = out.list()
    if request.overwrite:
        out.delete(manifest.MANIFEST)  # first: from here on the output is incomplete
        for key in existing:
            out.delete(key)
        return list(range(count))
    found = manifest.markers(out)
    stale = manifest.foreign(found, sha, version, count)
    done = manifest.read(out)
    if done is not None and (done.input_sha256, done.model_version) != (sha, version):
        stale.append(manifest.MANIFEST)
    if stale:
        other = found.get(stale[0])
        what = (
            f"input sha256 {other.input_sha256[:12]}…, model version {other.model_version}, "
            f"{other.task_count} task(s)"
            if other is not None
            else f"input sha256 {done.input_sha256[:12]}…, model version {done.model_version}"
            if done is not None
            else stale[0]
        )
        raise BatchError(
            f"{request.output} holds parts of another run ({what}), not of this input "
            f"(sha256 {sha[:12]}…) and version {version} with {count} task(s); pass --overwrite"
        )
    return [i for i in range(count) if manifest.marker_key(i, count) not in found]


def _spawn(
    request: Request, version: str, sha: str, todo: list[int], count: int, env: Mapping[str, str]
) -> list[int]:
    """Run the tasks as processes; the indices that failed."""
    argv = [
        sys.executable,
        "-m",
        "batch_prediction",
        "--input",
        request.input,
        "--output",
        request.output,
        "--version",
        version,
        "--child",
        "--input-sha256",
        sha,
    ]
    procs: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for i in todo:
            child = {
                **env,
                "CLOUD_RUN_TASK_INDEX": str(i),
                "CLOUD_RUN_TASK_COUNT": str(count),
                "BATCH_PROGRESS": "log",
            }
            procs[i] = subprocess.Popen(argv, env=child)
        return [i for i, p in procs.items() if p.wait() != 0]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def _tasks_of(out: Any) -> int:
    """The task count of the run an output holds (a resume without --tasks takes it)."""
    counts = {m.task_count for m in manifest.markers(out).values()}
    return counts.pop() if len(counts) == 1 else 1


def _probe(location: Location) -> None:
    """Fail early, before any model is loaded, on an input that can't be read or lacks a
    column (opening a share reads the header or the parquet footer)."""
    Share(location, Task(0, 1)).close()


def run(
    request: Request,
    env: Mapping[str, str] = os.environ,
    gcs_client: Any = None,
    models: Any = model,
) -> manifest.Manifest | None:
    """The run the request asks for; its manifest (None for a Cloud Run task that wasn't the
    last to finish). ``models`` resolves and loads versions (``batch_prediction.model``)."""
    if request.overwrite and request.resume:
        raise BatchError("--overwrite and --resume can't go together")
    location = locate(request.input, gcs_client)
    input_format(request.input)
    fmt = manifest.output_format(request.output)
    out = open_store(request.output, gcs_client)
    _probe(location)
    cloud = None if request.tasks else task_from_env(env)
    if request.child or cloud is not None:
        task = cloud or task_from_env(env) or Task(0, 1)
        return _run_as_task(request, location, out, fmt, task, env, gcs_client, models)
    count = request.tasks or (_tasks_of(out) if request.resume else 1)
    if count < 1:
        raise BatchError(f"--tasks must be at least 1, got {count}")
    if out.list() and not (request.overwrite or request.resume):
        raise BatchError(
            f"{request.output} already exists; pass --overwrite to replace it, or --resume to "
            "finish an interrupted run of the same input and version"
        )
    predictor = None
    if count == 1:  # one load, which also pins the alias's version
        predictor = models.load(request.version, request.alias, env, gcs_client)
        version = predictor.meta.version
    else:
        version = models.resolve(request.version, request.alias, env, gcs_client)
    sha = checksum(location)
    todo = _prepare_output(out, request, sha, version, count)
    if len(todo) == 1:  # one share left: priced here, without starting a process
        predictor = predictor or models.load(version, "", env, gcs_client)
        run_task(location, out, Task(todo[0], count), predictor, sha, fmt, env=env)
    elif todo:
        failed = _spawn(request, version, sha, todo, count, env)
        if failed:
            raise BatchError(
                f"task(s) {', '.join(map(str, failed))} of {count} failed; no manifest was "
                f"written; --resume re-does only the missing parts"
            )
    if not manifest.finalise(out, request.input, sha, version, count):
        raise BatchError(f"{request.output}: parts are missing after every task ended; --resume")
    return manifest.read(out)


def _run_as_task(
    request: Request,
    location: Location,
    out: Any,
    fmt: str,
    task: Task,
    env: Mapping[str, str],
    gcs_client: Any,
    models: Any,
) -> manifest.Manifest | None:
    """One task's share: a local child (its output checked by its parent) or a Cloud Run task,
    which checks for itself what it can without its siblings."""
    version = request.version or models.resolve(None, request.alias, env, gcs_client)
    sha = request.input_sha256 or checksum(location)
    mine = manifest.marker_key(task.index, task.count)
    if not request.child:
        if request.overwrite:
            out.delete(manifest.MANIFEST)
            out.delete(mine)
        done = manifest.read(out)
        if done is not None and not request.overwrite:
            if request.resume and (done.input_sha256, done.model_version) == (sha, version):
                return done
            raise BatchError(f"{request.output} already exists; pass --overwrite to replace it")
        stale = manifest.foreign(manifest.markers(out), sha, version, task.count)
        if stale and not request.overwrite:
            raise BatchError(
                f"{request.output} holds parts of another input, model version or task count "
                f"({stale[0]}); pass --overwrite"
            )
    if not out.exists(mine):
        predictor = models.load(version, "", env, gcs_client)
        label = f"task {task.index + 1}/{task.count}"
        run_task(location, out, task, predictor, sha, fmt, label, env)
    if manifest.finalise(out, request.input, sha, version, task.count):
        return manifest.read(out)
    return None


def summary(found: manifest.Manifest, seconds: float) -> str:
    text = (
        f"priced {found.priced:,} of {found.rows:,} rows ({found.rejected:,} rejected) with "
        f"{found.model_name} version {found.model_version} ({found.parts[0].runtime}) in "
        f"{seconds:.1f} s "
        f"({found.rows / max(seconds, 1e-9):,.0f} rows/s), {found.tasks} part(s)"
    )
    if found.skipped_lines:
        text += f"; {found.skipped_lines:,} malformed CSV line(s) skipped"
    return text


def timed(
    request: Request, env: Mapping[str, str] = os.environ
) -> tuple[manifest.Manifest | None, float]:
    began = time.perf_counter()
    found = run(request, env)
    return found, time.perf_counter() - began
