"""``python -m pipeline batch`` (and ``python -m batch_prediction``, what its local tasks run):
the arguments, and the run with one line on stderr for whatever stops it. The model stack is
imported only once the arguments are read."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="CSV or parquet: a path or gs://…")
    parser.add_argument(
        "--output",
        required=True,
        help="folder (a path or gs://…) for the parts and _manifest.json; a name ending in "
        ".csv writes CSV parts, any other parquet",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", help="model version to price with")
    which.add_argument("--alias", default="champion", help="model alias (default: champion)")
    parser.add_argument(
        "--tasks", type=int, help="local processes, each pricing its share (default 1)"
    )
    redo = parser.add_mutually_exclusive_group()
    redo.add_argument("--overwrite", action="store_true", help="replace an existing output")
    redo.add_argument(
        "--resume", action="store_true", help="re-do only the missing parts of the same run"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input-sha256", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from batch_prediction import job
    from batch_prediction.errors import BatchError
    from housing_platform.artifact_store import StorageError

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Why each model source failed is in the one error line; its log records would repeat it.
    # Quietened for this run only: a caller in the same process (a test, a notebook) keeps its own.
    loader_log = logging.getLogger("model_runtime.loader")
    level = loader_log.level
    loader_log.setLevel(logging.CRITICAL)
    try:
        return _run(args, job, (BatchError, StorageError))
    finally:
        loader_log.setLevel(level)


def _run(args: argparse.Namespace, job: Any, failures: tuple[type[Exception], ...]) -> int:
    request = job.Request(
        input=args.input,
        output=args.output,
        version=args.version,
        alias=args.alias,
        tasks=args.tasks,
        overwrite=args.overwrite,
        resume=args.resume,
        child=args.child,
        input_sha256=args.input_sha256,
    )
    try:
        found, seconds = job.timed(request, os.environ)
    except failures as exc:
        print(f"error: batch: {exc}", file=sys.stderr)
        return 1
    if found is not None and not args.child:
        print(job.summary(found, seconds))
        print(f"manifest: {args.output.rstrip('/')}/_manifest.json")
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m batch_prediction") -> int:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        prog=prog, description="Price a CSV or parquet file of houses with a model version."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
