"""``python -m pipeline monitor``: drift of the served houses and prices against each model
version's reference profile, over one window of the prediction log.

A run reads the window's log and every logged version's profile, computes the report
(:func:`analyse`, which writes nothing), then publishes it (:func:`publish`): PNG plots of the
drifted columns, ``reports/monitor/<window>.md`` and last ``reports/monitor/<window>.json`` (the
JSON is what other tools read; its presence means the run's report is whole), a run in the MLflow
experiment ``monitoring``, a W&B run, and the compaction of the log's days that are over. A
failure while publishing removes what the run had written. Bad input (no log in the window, a
damaged log object, a version without a profile) stops the run before anything is written, with
one line naming it.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from model_runtime import contract, prediction_records
from pipeline.errors import PipelineError
from pipeline.monitoring import compaction, drift, feedback, retrain_trigger
from pipeline.monitoring import profile as profiles
from pipeline.monitoring.profile import PREDICTION
from pipeline.settings import MonitorConfig, Settings

if TYPE_CHECKING:
    import pandas as pd

    from housing_platform.artifact_store import ArtifactStore

log = logging.getLogger("pipeline.monitoring.monitor")

REPORTS = "reports/monitor/"
EXPERIMENT = "monitoring"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhd])\s*$")


class MonitorError(PipelineError):
    """The monitor can't run on this input; the message names it and the fix."""


class Window(msgspec.Struct, frozen=True, kw_only=True):
    since: datetime
    until: datetime

    @property
    def name(self) -> str:
        """The report's file name: both ends, to the second, in UTC."""
        fmt = "%Y-%m-%dT%H%M%SZ"
        return f"{self.since.astimezone(UTC):{fmt}}--{self.until.astimezone(UTC):{fmt}}"


class MonitorReport(msgspec.Struct, frozen=True, kw_only=True):
    """One run's report: per model version, every input's and the prices' drift entry."""

    model_name: str
    since: str
    until: str
    window: str
    generated_at: str
    thresholds: drift.Thresholds
    versions: list[drift.WindowDrift]
    plots: list[str] = []
    compacted: list[compaction.Compaction] = []
    serving_version: str = ""
    """The champion's version when the run began: the one the retrain trigger judges."""
    realised: list[feedback.VersionError] = []
    """Per version, the window's realised error from fed sold prices beside its test figures."""
    retrain: retrain_trigger.TriggerDecision | None = None
    """What the retrain trigger decided on this window (None: not asked, see README)."""

    @property
    def drifted(self) -> bool:
        return any(v.drifted for v in self.versions)


# -- the window -------------------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """``24h``, ``90m``, ``2d`` (or a bare number of hours)."""
    match = _DURATION.match(text)
    if match is None:
        try:
            return timedelta(hours=float(text))
        except ValueError:
            raise MonitorError(
                f"--window {text!r}: write a duration such as 24h, 90m or 2d"
            ) from None
    amount, unit = float(match[1]), match[2]
    return {
        "m": timedelta(minutes=amount),
        "h": timedelta(hours=amount),
        "d": timedelta(days=amount),
    }[unit]


def _instant(text: str, flag: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MonitorError(
            f"{flag} {text!r}: write an ISO 8601 time, e.g. 2026-11-30T12:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def resolve_window(
    config: MonitorConfig,
    now: datetime,
    window: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Window:
    """[since, until): ``--since``/``--until`` when given, else ``--window`` (or the configured
    hours) ending at ``--until`` or now."""
    if window and since:
        raise MonitorError("give --window or --since, not both")
    end = _instant(until, "--until") if until else now
    if since:
        start = _instant(since, "--since")
    else:
        start = end - (parse_duration(window) if window else timedelta(hours=config.window_hours))
    if start >= end:
        raise MonitorError(
            f"the window is empty: {start.isoformat()} is not before {end.isoformat()}"
        )
    return Window(since=start.astimezone(UTC), until=end.astimezone(UTC))


# -- the report, computed -------------------------------------------------------------------


def thresholds_of(config: MonitorConfig) -> drift.Thresholds:
    return drift.Thresholds(
        statistic=config.threshold,
        psi=config.psi_threshold,
        min_rows=config.min_rows,
        top_features=config.top_features,
    )


def columns_of(rows: pd.DataFrame) -> dict[str, Any]:
    """The columns drift is measured on: the nine inputs and the price."""
    columns: dict[str, Any] = {f: rows[f].to_numpy() for f in contract.NUMERIC_FEATURES}
    columns[contract.CATEGORICAL] = rows[contract.CATEGORICAL].tolist()
    columns[PREDICTION] = rows["price"].to_numpy(dtype=float)
    return columns


def analyse(
    store: ArtifactStore,
    settings: Settings,
    window: Window,
    model_version: str | None = None,
    now: datetime | None = None,
) -> tuple[MonitorReport, dict[str, tuple[profiles.Profile, pd.DataFrame]]]:
    """The report of one window (and, for the plots, each version's profile and rows). Reads
    only: every error happens here, before anything is written."""
    name = settings.register.model_name
    frame = prediction_records.read_window(store, window.since, window.until, model_version)
    if frame.empty:
        which = f" of version {model_version}" if model_version else ""
        raise MonitorError(
            f"no prediction log{which} between {window.since.isoformat()} and "
            f"{window.until.isoformat()} in {store.uri}/{prediction_records.PREFIX}: widen the "
            "window (--window, --since) or check that the service writes its log there"
        )
    versions = sorted({str(v) for v in frame["model_version"]}, key=_version_order)
    loaded = {v: profiles.read(store, name, v) for v in versions}
    thresholds = thresholds_of(settings.monitor)
    verdicts, inputs = [], {}
    for version in versions:
        rows = frame[frame["model_version"].astype(str) == version]
        rows = rows[np.isfinite(rows["price"].to_numpy(dtype=float))]
        inputs[version] = (loaded[version], rows)
        verdicts.append(
            drift.window_drift(loaded[version], version, columns_of(rows), len(rows), thresholds)
        )
    report = MonitorReport(
        model_name=name,
        since=window.since.isoformat(),
        until=window.until.isoformat(),
        window=window.name,
        generated_at=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
        thresholds=thresholds,
        versions=verdicts,
    )
    return report, inputs


def _version_order(v: str) -> tuple[int, str]:
    return (int(v), "") if v.isdigit() else (sys.maxsize, v)


# -- the report, written -----------------------------------------------------------------------


def to_markdown(report: MonitorReport) -> str:
    lines = [
        f"# Drift of {report.model_name}, {report.since} to {report.until}",
        "",
        f"Thresholds: decision statistic {report.thresholds.statistic} (normalised Wasserstein "
        f"for numbers, Jensen-Shannon distance for categories), PSI {report.thresholds.psi} "
        f"(for reading); a window needs {report.thresholds.min_rows} rows; it drifts when the "
        f"prices or one of the model's top {report.thresholds.top_features} inputs drift.",
    ]
    for v in report.versions:
        lines += ["", f"## Version {v.model_version}: {v.status.upper()} ({v.rows} rows)", ""]
        lines += [v.reason, "", "| column | statistic | value | threshold | drift | PSI | rows |"]
        lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
        for c in v.columns:
            mark = " (top)" if c.top_feature else ""
            lines.append(
                f"| {c.feature}{mark} | {c.statistic} | {c.value:.4f} | {c.threshold:g} | "
                f"{'**yes**' if c.drift else 'no'} | {c.psi:.4f} | {c.current_rows} |"
            )
    if report.realised:
        lines += ["", "## Realised error (sold prices fed back)", ""]
        lines += ["| version | labelled | RMSE | MAPE | within 10% | test RMSE | test MAPE |"]
        lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
        for e in report.realised:
            r, t = e.realised, e.test
            lines.append(
                f"| {e.model_version} | {r.n if r else 0} | "
                + (f"{r.rmse:,.0f} | {r.mape:.1%} | {r.within_10pct:.1%}" if r else "- | - | -")
                + f" | {_fig(t.get('rmse'), ',.0f')} | {_fig(t.get('mape'), '.1%')} |"
            )
    if report.retrain is not None:
        lines += [
            "",
            "## Retrain trigger",
            "",
            trigger_line(report.serving_version, report.retrain),
        ]
    if report.plots:
        lines += ["", "## Plots", ""] + [f"- `{p}`" for p in report.plots]
    if report.compacted:
        lines += ["", "## Log compaction", ""]
        lines += [
            f"- {c.day}, version {c.model_version}: {c.sources} objects → `{c.key}`"
            for c in report.compacted
        ]
    return "\n".join(lines) + "\n"


def trigger_line(serving: str, decision: retrain_trigger.TriggerDecision) -> str:
    verb = "would start" if decision.dry_run else "started"
    what = f"retrain {verb}" if decision.start else "no retrain"
    return f"trigger on the serving version {serving or '(none)'}: {what}: {decision.reason}"


def _fig(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: a statistic that can't be computed is null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def report_json(report: MonitorReport) -> bytes:
    import json

    return (
        json.dumps(
            _no_nan(msgspec.to_builtins(report)), indent=2, allow_nan=False, default=str
        ).encode()
        + b"\n"
    )


class Written:
    """Keys a run has written, removed again if the run fails part-way."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self.keys: list[str] = []

    def write(self, key: str, data: bytes) -> None:
        self.store.write_bytes(key, data)
        self.keys.append(key)

    def undo(self) -> None:
        for key in reversed(self.keys):
            try:
                self.store.delete(key)
            except Exception:  # pragma: no cover - best effort, the first error is reported
                log.warning("could not remove %s after a failed run", key)


def publish(
    store: ArtifactStore,
    settings: Settings,
    report: MonitorReport,
    inputs: dict[str, tuple[profiles.Profile, pd.DataFrame]],
    now: datetime,
    track: bool = True,
) -> tuple[MonitorReport, str]:
    """Plots, Markdown, then the JSON last; MLflow and W&B; then compaction. Returns the report
    as written (with its plots and compactions) and the JSON's key."""
    from pipeline.monitoring import plots

    written = Written(store)
    base = f"{REPORTS}{report.window}"
    try:
        figures: dict[str, Any] = {}
        for verdict in report.versions:
            ref, rows = inputs[verdict.model_version]
            for entry in verdict.columns:
                if entry.drift:
                    key = f"{base}/v{verdict.model_version}-{entry.feature}.png"
                    figure = plots.drift_figure(ref, entry, columns_of(rows)[entry.feature])
                    written.write(key, plots.png(figure))
                    figures[key] = figure
        report = msgspec.structs.replace(report, plots=sorted(figures))
        if track:
            tracked(settings, report, figures)
        plots.close(figures.values())
        json_key = f"{base}.json"
        written.write(f"{base}.md", to_markdown(report).encode())
        written.write(json_key, report_json(report))
    except BaseException:
        written.undo()
        raise
    # Compaction comes after the report is whole; it is its own atomic step per partition.
    days = compaction.days_between(
        report_since(report).date() - timedelta(days=1), report_until(report).date()
    )
    done = compaction.compact_days(store, days, now.astimezone(UTC).date())
    if done:
        report = msgspec.structs.replace(report, compacted=done)
        store.write_bytes(f"{base}.md", to_markdown(report).encode())
        store.write_bytes(json_key, report_json(report))
    return report, json_key


def report_since(report: MonitorReport) -> datetime:
    return datetime.fromisoformat(report.since)


def report_until(report: MonitorReport) -> datetime:
    return datetime.fromisoformat(report.until)


def metrics_of(report: MonitorReport) -> dict[str, float]:
    """One metric per version, column and figure: v3.median_income.value, …"""
    out: dict[str, float] = {}
    for v in report.versions:
        out[f"v{v.model_version}.rows"] = float(v.rows)
        out[f"v{v.model_version}.drift"] = float(v.drifted)
        for c in v.columns:
            stem = f"v{v.model_version}.{c.feature}"
            out[f"{stem}.value"] = c.value
            out[f"{stem}.psi"] = c.psi
            out[f"{stem}.drift"] = float(c.drift)
    return {k: v for k, v in out.items() if np.isfinite(v)}


def tracked(settings: Settings, report: MonitorReport, figures: dict[str, Any]) -> None:
    """A run in the MLflow experiment ``monitoring`` (metrics, the report, the plots) and a
    W&B run (offline unless a key is configured), as the pipeline's own tracker does."""
    import mlflow

    from pipeline.experiment_tracking import configure_mlflow

    monitoring = msgspec.structs.replace(
        settings, tracking=msgspec.structs.replace(settings.tracking, experiment=EXPERIMENT)
    )
    experiment_id = configure_mlflow(monitoring)
    metrics = metrics_of(report)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"monitor-{report.window}"):
        mlflow.set_tags(
            {"window": report.window, "model_name": report.model_name, "drift": report.drifted}
        )
        mlflow.log_params({"since": report.since, "until": report.until})
        mlflow.log_metrics(metrics)
        mlflow.log_dict(_no_nan(msgspec.to_builtins(report)), "monitor_report.json")
        for key, figure in figures.items():
            mlflow.log_figure(figure, key.rsplit("/", 1)[-1])
    t = settings.tracking
    if t.wandb_mode == "disabled":
        return
    import wandb

    run = wandb.init(
        project=t.wandb_project,
        entity=t.wandb_entity or None,
        mode=t.wandb_mode,
        dir=str(settings.home_path),
        job_type="monitor",
        name=f"monitor-{report.window}",
        config={"since": report.since, "until": report.until, "window": report.window},
        settings=wandb.Settings(
            silent=True, console="off", x_disable_stats=True, x_disable_meta=True
        ),
    )
    try:
        run.log({**metrics, **{k.rsplit("/", 1)[-1]: wandb.Image(f) for k, f in figures.items()}})
    finally:
        run.finish()


# -- the run -----------------------------------------------------------------------------------


#: Called with the computed report, before anything is published; returns the report to publish
#: (the retrain trigger and the realised error hook in here).
AfterReport = Callable[[MonitorReport], MonitorReport]


def run(
    settings: Settings,
    store: ArtifactStore,
    window: Window,
    model_version: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    track: bool = True,
    after_report: AfterReport | None = None,
) -> tuple[MonitorReport, str | None]:
    """One monitor run; returns the report and the key of its JSON (None on a dry run)."""
    now = now or datetime.now(UTC)
    if not dry_run:
        # A compaction stopped half-way leaves rows twice in the log: finish it before reading.
        compaction.finish_interrupted(
            store, compaction.days_between(window.since.date(), window.until.date())
        )
    report, inputs = analyse(store, settings, window, model_version, now)
    # After the report is computed: everything else reads this one typed object.
    if after_report is not None:
        report = after_report(report)
    if dry_run:
        return report, None
    return publish(store, settings, report, inputs, now, track=track)


def summary(report: MonitorReport) -> str:
    lines = [f"monitor {report.model_name} {report.since} → {report.until}"]
    for v in report.versions:
        lines.append(f"  version {v.model_version}: {v.status} ({v.rows} rows) — {v.reason}")
    return "\n".join(lines)


def serving_version(settings: Settings) -> str:
    """The champion's version in the registry MLflow points at; empty when there is none."""
    from pipeline.experiment_tracking import configure_mlflow
    from pipeline.model_registry import Registry

    configure_mlflow(settings)
    version = Registry(settings.register.model_name).version_by_alias("champion")
    return str(version.version) if version is not None else ""


def closing_the_loop(
    settings: Settings,
    store: ArtifactStore,
    window: Window,
    now: datetime,
    *,
    dry_run: bool,
    starter: retrain_trigger.Starter,
    champion: str,
    test_side: Callable[[str], dict[str, float]],
) -> AfterReport:
    """The report's consequences: every version's realised error from fed sold prices, and the
    retrain trigger's decision on the serving version's window (its drift status and realised
    MAPE). A champion absent from the window's log counts as "not enough data"."""

    def after(report: MonitorReport) -> MonitorReport:
        versions = [v.model_version for v in report.versions]
        realised = feedback.realised_vs_test(store, window.since, window.until, versions, test_side)
        served = next((v for v in report.versions if v.model_version == champion), None)
        mape = next(
            (e.realised.mape for e in realised if e.model_version == champion and e.realised),
            None,
        )
        outcome = retrain_trigger.Outcome(
            window=served.status if served is not None else "not enough data",
            realised_mape=mape,
        )
        decision = retrain_trigger.consider(
            store, settings, outcome, now, dry_run=dry_run, starter=starter
        )
        return msgspec.structs.replace(
            report, serving_version=champion, realised=realised, retrain=decision
        )

    return after


def main(settings: Settings, args: argparse.Namespace) -> int:
    """The CLI's ``monitor``: one line on stderr and exit 1 for bad input. A run over all the
    versions (no ``--model-version``) also asks the retrain trigger; a look at one version
    doesn't."""
    from housing_platform.artifact_store import StorageError, open_store

    try:
        now = datetime.now(UTC)
        window = resolve_window(settings.monitor, now, args.window, args.since, args.until)
        store = open_store(settings.store_uri)
        after = None
        if args.model_version is None:
            name = settings.register.model_name
            after = closing_the_loop(
                settings,
                store,
                window,
                now,
                dry_run=args.dry_run,
                starter=retrain_trigger.starter_for(settings, getattr(args, "config", None)),
                champion=serving_version(settings),
                test_side=lambda v: feedback.version_test_metrics(name, v),
            )
        report, key = run(
            settings, store, window, args.model_version, args.dry_run, now, after_report=after
        )
    except (PipelineError, prediction_records.PredictionLogError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary(report))
    if report.retrain is not None:
        verb = "would start" if report.retrain.dry_run else "started"
        what = f"retrain {verb}" if report.retrain.start else "no retrain"
        print(
            f"  trigger (version {report.serving_version or '-'}): {what} — {report.retrain.reason}"
        )
    print(f"report: {store.uri}/{key}" if key else "dry run: nothing written")
    return 0
