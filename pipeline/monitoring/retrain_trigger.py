"""The retrain trigger: when the monitor's windows say the live model has drifted (or its realised
error is too high), start one retrain on data that reflects the change — once per incident.

Three layers:

- :func:`decide` — pure: the run-by-run history, this window's outcome, the settings, the last
  retrain and whether a pipeline is running in, a :class:`Decision` with its reason out.
- The state record in the artifact store: ``monitor/state.json`` (every run's outcome and
  decision, newest last) and ``monitor/retrains/<time>.json`` (one per retrain started), both
  written atomically.
- Two starters behind :class:`Starter`: :class:`LocalStarter` (``python -m pipeline run`` in a
  child process, which holds ``<home>/pipeline.lock`` as every run does: ``pipeline.run_lock``)
  and :class:`CloudRunStarter` (the ``housing-pipeline`` Cloud Run job, run with overrides
  through the Admin API v2).

:func:`consider` ties them together; it is what the monitor run calls once per window.

Rules (README: The retrain trigger):

- A window is *alarming* when it drifted, or its realised MAPE is above ``monitor.max_mape``.
- A drift incident is ``monitor.consecutive`` drifted windows in a row; a "not enough data" window
  neither extends nor breaks a run (a quiet night between two drifted days is still one
  incident, and it proves nothing either way). A not-drifted window ends the incident.
- One retrain per incident: once one has started, no other starts until a calm window ends the
  incident, and never within ``monitor.cooldown_hours`` of the last start.
- No start while another pipeline execution runs, nor when ``monitor.retrain_source`` is empty,
  nor when its bytes have the checksum of the data the last training read (nothing new to learn;
  nothing is registered and the reason says so).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from pipeline import run_lock
from pipeline.errors import PipelineError
from pipeline.monitoring.drift import Status

if TYPE_CHECKING:
    from housing_platform.artifact_store import ArtifactStore
    from pipeline.settings import MonitorConfig, Settings

STATE = "monitor/state.json"
RETRAINS = "monitor/retrains/"
#: Runs kept in ``monitor/state.json`` (the newest); enough for any ``consecutive`` setting.
HISTORY_KEPT = 1000
#: How long a started child may take to hold the pipeline lock (its imports, on a busy machine).
LOCK_DEADLINE_S = 300.0

#: A window's outcome for the serving version, in the drift report's words
#: (``pipeline.monitoring.drift.Status``: ``WindowDrift.status``).
Window = Status


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What the monitor found in one window, for the model version that serves (the champion):
    ``Outcome(window=report_row.status, realised_mape=realised.mape if realised else None)``."""

    window: Window
    realised_mape: float | None = None
    """The window's realised MAPE (a share) from feedback labels; None when no label arrived."""


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One monitor run in the history: its outcome and what the trigger decided."""

    time: str
    """When the run decided (ISO 8601, UTC)."""
    window: Window
    realised_mape: float | None = None
    alarm: bool = False
    """Whether the window was alarming (drifted, or its realised MAPE above the limit)."""
    started: bool = False
    """Whether this run started a retrain."""
    reason: str = ""


class State(msgspec.Struct, kw_only=True):
    history: list[Entry] = []
    last_retrain: str = ""
    """ISO time of the last retrain started; empty = never."""
    last_retrain_sha256: str = ""
    """Checksum of the data the last retrain was started on."""


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    start: bool
    reason: str
    streak: int
    """Drifted windows in the current run, this one included (not-enough-data windows skipped)."""
    alarm: bool = False
    """This window is alarming: it drifted, or its realised MAPE is above the limit."""


def drift_streak(windows: Sequence[Window]) -> int:
    """Drifted windows at the end of ``windows`` (oldest first); "not enough data" is skipped,
    "no drift" ends the count."""
    streak = 0
    for window in reversed(windows):
        if window == "drift":
            streak += 1
        elif window == "no drift":
            break
    return streak


def _incident_started(history: Sequence[Entry]) -> Entry | None:
    """The entry that started a retrain in the current incident, if any: the incident is what
    came after the last calm window (not drifted, realised MAPE within the limit or unknown)."""
    for entry in reversed(history):
        if entry.started:
            return entry
        if entry.window == "no drift" and not entry.alarm:
            return None
    return None


def decide(
    history: Sequence[Entry],
    outcome: Outcome,
    config: MonitorConfig,
    *,
    now: datetime,
    last_retrain: datetime | None,
    pipeline_running: bool,
    source_unchanged: bool = False,
) -> Decision:
    """Whether this window starts a retrain, and why (pure: see the module's rules).
    ``history`` is the earlier runs, oldest first; ``source_unchanged`` says the retrain source's
    checksum equals the last training data's (checked by the caller only when all else allows a
    start, since it reads the data)."""
    streak = drift_streak([e.window for e in history] + [outcome.window])
    mape = outcome.realised_mape
    mape_alarm = config.max_mape is not None and mape is not None and mape > config.max_mape
    alarm = outcome.window == "drift" or mape_alarm
    if streak >= config.consecutive:
        why = f"{streak} drifted window(s) in a row (monitor.consecutive = {config.consecutive})"
    elif mape is not None and config.max_mape is not None and mape_alarm:
        why = f"realised MAPE {mape:.1%} above monitor.max_mape {config.max_mape:.1%}"
    else:
        calm = f"{streak} drifted window(s) in a row of {config.consecutive} needed"
        if mape is not None:
            limit = "unset" if config.max_mape is None else f"{config.max_mape:.1%}"
            calm += f"; realised MAPE {mape:.1%} (limit {limit})"
        return Decision(start=False, reason=f"no retrain: {calm}", streak=streak, alarm=alarm)
    if not config.retrain_source:
        return _no(
            f"{why}, but monitor.retrain_source is empty: set it to the refreshed labelled data "
            "(MONITOR_RETRAIN_SOURCE) to let the monitor retrain",
            streak,
            alarm,
        )
    earlier = _incident_started(history)
    if earlier is not None:
        return _no(
            f"{why}; this incident's retrain already started at {earlier.time}", streak, alarm
        )
    if last_retrain is not None and now < last_retrain + timedelta(hours=config.cooldown_hours):
        until = last_retrain + timedelta(hours=config.cooldown_hours)
        return _no(
            f"{why}; cooling down after the retrain of {last_retrain.isoformat()} until "
            f"{until.isoformat()} (monitor.cooldown_hours = {config.cooldown_hours:g})",
            streak,
            alarm,
        )
    if pipeline_running:
        return _no(
            f"{why}; a pipeline execution is running: the next run will decide", streak, alarm
        )
    if source_unchanged:
        return _no(
            f"{why}; {config.retrain_source} has the same sha256 as the data the last training "
            "read: nothing new to train on, nothing registered (refresh the source)",
            streak,
            alarm,
        )
    return Decision(
        start=True, reason=f"retrain on {config.retrain_source}: {why}", streak=streak, alarm=alarm
    )


def _no(reason: str, streak: int, alarm: bool) -> Decision:
    return Decision(start=False, reason=f"no retrain: {reason}", streak=streak, alarm=alarm)


# --- the state record ------------------------------------------------------------------------


def read_state(store: ArtifactStore) -> State:
    """The trigger's record; an empty one before the first run. A damaged record is an error:
    deciding without it could start a second retrain for one incident."""
    if not store.exists(STATE):
        return State()
    try:
        return msgspec.json.decode(store.read_bytes(STATE), type=State)
    except msgspec.DecodeError as exc:
        raise PipelineError(
            f"monitor: {STATE} in {store.uri} can't be read ({exc}); fix or delete it (the "
            "retrain history is lost with it)"
        ) from None


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


# --- the starters ----------------------------------------------------------------------------


class Started(msgspec.Struct, frozen=True, kw_only=True):
    """A retrain that was started: where to follow it."""

    how: str
    """ "local" or "cloud-run"."""
    ref: str
    """The child's pid and log (local), or the execution's name (Cloud Run)."""


class Starter(Protocol):
    def running(self) -> bool:
        """Whether a pipeline execution runs now."""
        ...

    def start(self, source: str, sha256: str) -> Started:
        """Start ``python -m pipeline run`` on ``source`` (its bytes checked against ``sha256``)."""
        ...


def pipeline_args(source: str, sha256: str) -> list[str]:
    """The pipeline's arguments for a retrain: every step re-run (ingest re-reads the source even
    when its path is unchanged), on exactly the bytes the trigger checked."""
    return ["run", "--source", source, "--sha256", sha256, "--force"]


class LocalStarter:
    """Runs the pipeline in a child process of this machine, detached, logging to
    ``<home>/monitor/retrain-<time>.log``. A pipeline "runs" while a process holds the home's
    pipeline lock (``pipeline.run_lock``): this starter's child, or any other run."""

    def __init__(
        self,
        home: Path,
        config_file: str | None = None,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
    ):
        self.home = home
        self.config_file = config_file
        self.python = python
        self.env = env

    def running(self) -> bool:
        return run_lock.is_held(self.home)

    def start(self, source: str, sha256: str) -> Started:
        if self.running():
            raise PipelineError("monitor: a pipeline execution holds the lock")
        self.home.mkdir(parents=True, exist_ok=True)
        logs = self.home / "monitor"
        logs.mkdir(exist_ok=True)
        log = logs / f"retrain-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}.log"
        argv = [self.python, "-m", "pipeline", *pipeline_args(source, sha256)]
        if self.config_file:
            argv += ["--config", self.config_file]
        env = {**os.environ, **(self.env or {}), "HOUSING_MLOPS_HOME": str(self.home)}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        # Started means running: wait until the child holds the lock (or has already ended), so
        # the next monitor run can't start a second one in between.
        deadline = time.monotonic() + LOCK_DEADLINE_S
        while not self.running():
            if proc.poll() is not None:
                raise PipelineError(
                    f"monitor: the retrain ended at once (exit {proc.returncode}); see {log}"
                )
            if time.monotonic() > deadline:
                raise PipelineError(f"monitor: the retrain took no lock in time; see {log}")
            time.sleep(0.05)
        return Started(how="local", ref=f"pid {proc.pid}, log {log}")


API = "https://run.googleapis.com/v2"


class CloudRunStarter:
    """Runs the ``housing-pipeline`` Cloud Run job with the retrain's arguments, through the Cloud
    Run Admin API v2 (``POST …/jobs/<job>:run`` with ``overrides.containerOverrides``). ``session``
    is an authorised ``requests`` session (google-auth's ``AuthorizedSession``); ``api`` lets a
    test point it at a loopback stand-in."""

    def __init__(self, job: str, session: Any, api: str = API, timeout_s: float = 30.0):
        self.job = job.strip("/")
        self.session = session
        self.api = api.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.session.request(method, url, timeout=self.timeout_s, **kwargs)
        except Exception as exc:  # requests' and google-auth's errors alike
            raise PipelineError(f"monitor: Cloud Run API unreachable ({url}): {exc}") from None
        if response.status_code >= 400:
            text = " ".join(response.text.split())[:300]
            raise PipelineError(
                f"monitor: Cloud Run API answered {response.status_code} for {method} {url}: {text}"
            )
        body: dict[str, Any] = response.json() if response.content else {}
        return body

    def running(self) -> bool:
        """Whether any execution of the job has not completed (listing every page)."""
        url = f"{self.api}/{self.job}/executions"
        token = ""
        while True:
            params = {"pageToken": token} if token else {}
            page = self._call("GET", url, params=params)
            if any(not e.get("completionTime") for e in page.get("executions", [])):
                return True
            token = page.get("nextPageToken", "")
            if not token:
                return False

    def start(self, source: str, sha256: str) -> Started:
        body = {"overrides": {"containerOverrides": [{"args": pipeline_args(source, sha256)}]}}
        operation = self._call("POST", f"{self.api}/{self.job}:run", json=body)
        execution = operation.get("metadata", {}).get("name") or operation.get("name", "")
        return Started(how="cloud-run", ref=str(execution))


def starter_for(settings: Settings, config_file: str | None = None) -> Starter:
    """Cloud Run when ``monitor.pipeline_job`` names a job, else this machine."""
    if settings.monitor.pipeline_job:
        import google.auth
        from google.auth.transport.requests import AuthorizedSession

        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
        return CloudRunStarter(settings.monitor.pipeline_job, AuthorizedSession(credentials))
    return LocalStarter(settings.home_path, config_file)


# --- the entry point -------------------------------------------------------------------------


class TriggerDecision(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`consider` decided and did, for the monitor's report."""

    start: bool
    """Whether a retrain was (or, on a dry run, would be) started."""
    reason: str
    streak: int
    dry_run: bool = False
    started: Started | None = None
    record: str = ""
    """The ``monitor/retrains/…json`` written for a start; empty otherwise."""


def source_sha256(source: str, timeout_s: float = 30.0, gcs_client: Any = None) -> str:
    """Checksum of the csv behind ``source``, read as the ingest step reads it."""
    from housing_platform.artifact_store import sha256
    from pipeline.steps import ingest

    return sha256(ingest.fetch(source, timeout_s, gcs_client))


def last_training_sha256(store: ArtifactStore, state: State) -> set[str]:
    """Checksums of the data the last training read: the ingest report's, and the last retrain's
    (which may still be running)."""
    from pipeline import catalog

    found = {state.last_retrain_sha256} - {""}
    if store.exists(catalog.INGEST_REPORT):
        found.add(str(json.loads(store.read_bytes(catalog.INGEST_REPORT)).get("sha256", "")))
    return found - {""}


def consider(
    store: ArtifactStore,
    settings: Settings,
    outcome: Outcome,
    now: datetime,
    *,
    dry_run: bool,
    starter: Starter,
    checksum: Callable[[str], str] | None = None,
) -> TriggerDecision:
    """Decide on this window and act: the monitor run's one call to the trigger.

    Reads ``monitor/state.json``; on a start, checks the retrain source's checksum (``checksum``,
    default: read it as ingest does) against the last training data's, starts the retrain with
    ``starter`` and writes ``monitor/retrains/<time>.json``; appends this run to the history.
    ``dry_run``: decides and says what it would do, starts nothing and writes nothing.
    ``outcome`` is the serving (champion) version's window. A starter that fails raises
    :class:`PipelineError` after the run is recorded as not started (the next run retries)."""
    config = settings.monitor
    state = read_state(store)
    last = datetime.fromisoformat(state.last_retrain) if state.last_retrain else None
    decision = decide(
        state.history, outcome, config, now=now, last_retrain=last, pipeline_running=False
    )
    digest = ""
    if decision.start:  # only now ask the starter and read the data: both cost a call
        running = starter.running()
        unchanged = False
        if not running:
            digest = (checksum or (lambda s: source_sha256(s, settings.ingest.timeout_s)))(
                config.retrain_source
            )
            unchanged = digest in last_training_sha256(store, state)
        decision = decide(
            state.history,
            outcome,
            config,
            now=now,
            last_retrain=last,
            pipeline_running=running,
            source_unchanged=unchanged,
        )
    if dry_run:
        reason = ("would start: " if decision.start else "") + decision.reason
        return TriggerDecision(
            start=decision.start, reason=reason, streak=decision.streak, dry_run=True
        )
    started: Started | None = None
    record = ""
    failure: PipelineError | None = None
    if decision.start:
        try:
            started = starter.start(config.retrain_source, digest)
        except PipelineError as exc:
            failure = exc
    entry = Entry(
        time=_iso(now),
        window=outcome.window,
        realised_mape=outcome.realised_mape,
        alarm=decision.alarm,
        started=started is not None,
        reason=decision.reason if failure is None else f"retrain failed to start: {failure}",
    )
    if started is not None:
        record = f"{RETRAINS}{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
        store.write_bytes(
            record,
            msgspec.json.encode(
                {
                    "time": _iso(now),
                    "reason": decision.reason,
                    "source": config.retrain_source,
                    "sha256": digest,
                    "started": started,
                }
            ),
        )
        state.last_retrain = _iso(now)
        state.last_retrain_sha256 = digest
    state.history = [*state.history, entry][-HISTORY_KEPT:]
    store.write_bytes(STATE, msgspec.json.encode(state))
    if failure is not None:
        raise failure
    return TriggerDecision(
        start=started is not None,
        reason=entry.reason,
        streak=decision.streak,
        started=started,
        record=record,
    )
