"""Command line: ``python -m pipeline run|promote|export|report|steps``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from housing_platform.settings_reader import SettingsError
from pipeline import catalog
from pipeline.settings import Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the training pipeline (cached steps are skipped)")
    run.add_argument(
        "--steps", help=f"comma-separated steps to run: {','.join(catalog.STEP_NAMES)}"
    )
    run.add_argument("--from", dest="start", metavar="STEP", help="run from this step onward")
    run.add_argument("--config", help="TOML file of settings (see README)")
    run.add_argument("--source", help="data: path, https:// URL (csv or .tgz) or gs:// URI")
    run.add_argument("--sha256", help="expected sha256 of the source csv")
    run.add_argument("--workers", type=int, help="local tune worker processes on one study")
    run.add_argument("--force", action="store_true", help="ignore the cache, run every step")

    promote = sub.add_parser("promote", help="make a registered version the champion")
    promote.add_argument("--config", help="TOML file of settings")
    promote.add_argument("--version", help="model version (default: the current challenger)")

    export = sub.add_parser("export", help="rewrite a version's export, with its manifest")
    export.add_argument("--config", help="TOML file of settings")
    export.add_argument("--version", required=True, help="model version")

    report = sub.add_parser("report", help="the challenger's test metrics against the champion")
    report.add_argument("--config", help="TOML file of settings")

    replay = sub.add_parser(
        "replay", help="price the logged houses with another version, against what was served"
    )
    replay.add_argument("--config", help="TOML file of settings")
    replay.add_argument("--version", required=True, help="model version to price them with")
    replay.add_argument(
        "--window", help="how far back from now, e.g. 24h, 90m, 2d (monitor.window_hours)"
    )

    feedback = sub.add_parser("feedback", help="join sold prices to the logged predictions")
    feedback.add_argument("--config", help="TOML file of settings")
    feedback.add_argument(
        "--labels", required=True, help="CSV or parquet: request_id or the nine inputs, and price"
    )
    feedback.add_argument(
        "--since", help="oldest prediction the labels may belong to, ISO 8601 (default: 90 days)"
    )

    profile = sub.add_parser(
        "profile", help="log a reference profile with a version registered before profiles"
    )
    profile.add_argument("--config", help="TOML file of settings")
    profile.add_argument("--version", required=True, help="model version")

    monitor = sub.add_parser(
        "monitor", help="drift of the logged inputs and prices against each version's profile"
    )
    monitor.add_argument("--config", help="TOML file of settings")
    monitor.add_argument(
        "--window", help="how far back from now, e.g. 24h, 90m, 2d (monitor.window_hours)"
    )
    monitor.add_argument("--since", help="window start, ISO 8601 (UTC unless it says)")
    monitor.add_argument("--until", help="window end, ISO 8601 (default: now)")
    monitor.add_argument("--model-version", help="only this version (default: every one logged)")
    monitor.add_argument(
        "--dry-run", action="store_true", help="compute and print; write, log and compact nothing"
    )

    # Listed here; its arguments are batch_prediction's own (main hands them over unparsed).
    sub.add_parser(
        "batch", help="price a CSV or parquet file of houses with a model version", add_help=False
    )

    sub.add_parser("steps", help="list the steps with what each reads and writes")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[tuple[str, ...], Any] = {
        ("ingest", "source"): getattr(args, "source", None),
        ("ingest", "sha256"): getattr(args, "sha256", None),
        ("tune", "workers"): getattr(args, "workers", None),
    }
    return load_settings(args.config, os.environ, overrides)


def _run(args: argparse.Namespace) -> int:
    from housing_platform.artifact_store import open_store
    from pipeline.experiment_tracking import Tracker
    from pipeline.orchestrator import run_pipeline, summary_table

    settings = _settings(args)
    settings.home_path.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.store_uri)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()] if args.steps else None
    print(f"housing-mlops pipeline: home {settings.home_path}, artifacts {store.uri}", flush=True)
    results = run_pipeline(
        settings,
        store,
        Tracker(settings),
        steps=steps,
        start=args.start,
        force=args.force,
        echo=lambda line: print(line, flush=True),
    )
    print(summary_table(results), flush=True)
    return 0


def _promote(args: argparse.Namespace) -> int:
    from housing_platform.artifact_store import open_store
    from pipeline import model_registry
    from pipeline.experiment_tracking import configure_mlflow
    from pipeline.promote import promote

    settings = _settings(args)
    configure_mlflow(settings)
    version = promote(settings, open_store(settings.store_uri), args.version)
    print(f"{settings.register.model_name} version {version} is now @{model_registry.CHAMPION}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from housing_platform.artifact_store import open_store
    from pipeline.experiment_tracking import configure_mlflow
    from pipeline.promote import export

    settings = _settings(args)
    configure_mlflow(settings)
    for prefix in export(settings, open_store(settings.store_uri), args.version):
        print(f"exported {prefix} (with its manifest)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pipeline import model_registry
    from pipeline.experiment_tracking import configure_mlflow
    from pipeline.report import comparison

    settings = _settings(args)
    configure_mlflow(settings)
    reg = model_registry.Registry(settings.register.model_name)
    found = {
        alias: model_registry.version_metadata(reg, str(v.version))
        for alias in (model_registry.CHALLENGER, model_registry.CHAMPION)
        if (v := reg.version_by_alias(alias)) is not None
    }
    if model_registry.CHALLENGER not in found:
        print(f"error: no @{model_registry.CHALLENGER} version of {reg.name}", file=sys.stderr)
        return 1
    print(comparison(found[model_registry.CHALLENGER], found.get(model_registry.CHAMPION)))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from housing_platform.artifact_store import open_store
    from pipeline.monitoring import replay

    settings = _settings(args)
    report, key = replay.run(
        settings, open_store(settings.store_uri), args.version, hours=args.window
    )
    print(replay.summary(report))
    print(f"report: {key}")
    return 0


def _feedback(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from housing_platform.artifact_store import open_store
    from pipeline.monitoring import feedback

    settings = _settings(args)
    until = datetime.now(UTC)
    since = until - timedelta(days=feedback.LOOKBACK_DAYS)
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            print(f"error: --since {args.since!r} is not an ISO 8601 time", file=sys.stderr)
            return 2
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
    result, key = feedback.feed(open_store(settings.store_uri), args.labels, since, until)
    print(
        f"joined {len(result.joined)} of {result.labels} label(s) "
        f"({result.by_request_id} by request id, {result.by_inputs} by inputs; "
        f"{result.unmatched} unmatched): {key}"
    )
    return 0


def _profile(args: argparse.Namespace) -> int:
    from housing_platform.artifact_store import open_store
    from pipeline.experiment_tracking import configure_mlflow
    from pipeline.monitoring.backfill import backfill

    settings = _settings(args)
    configure_mlflow(settings)
    for prefix in backfill(settings, open_store(settings.store_uri), args.version):
        print(f"profiled version {args.version}: {prefix} carries it")
    return 0


def _monitor(args: argparse.Namespace) -> int:
    from pipeline.monitoring import monitor

    return monitor.main(_settings(args), args)


def _steps() -> int:
    for spec in catalog.CATALOG:
        print(f"{spec.name:<9} reads: {', '.join(spec.inputs) or '-'}")
        print(f"{'':<9} writes: {', '.join(spec.outputs)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.errors import PipelineError

    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["batch"]:  # imported only for this command
        from batch_prediction.cli import main as batch

        return batch(given[1:], prog="python -m pipeline batch")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "promote":
            return _promote(args)
        if args.command == "report":
            return _report(args)
        if args.command == "export":
            return _export(args)
        if args.command == "replay":
            return _replay(args)
        if args.command == "feedback":
            return _feedback(args)
        if args.command == "profile":
            return _profile(args)
        if args.command == "monitor":
            return _monitor(args)
        return _steps()
    except (PipelineError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
