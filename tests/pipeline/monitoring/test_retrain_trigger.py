"""The retrain trigger: when a retrain starts, that one incident starts one, and the two starters
(a local child process holding the pipeline lock, the Cloud Run job through its Admin API)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from housing_platform.artifact_store import LocalStore, sha256
from pipeline import run_lock
from pipeline.errors import PipelineError
from pipeline.monitoring import retrain_trigger as rt
from pipeline.monitoring.retrain_trigger import Entry, Outcome
from pipeline.settings import MonitorConfig, Settings
from tests.helpers import serve_http, wait_until

T0 = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
SOURCE = "data/refreshed.csv"
CONFIG = MonitorConfig(consecutive=2, max_mape=0.25, retrain_source=SOURCE, cooldown_hours=24)


def history(*windows: str) -> list[Entry]:
    return [
        Entry(time=(T0 + timedelta(hours=i)).isoformat(), window=w, alarm=w == "drift")  # type: ignore[arg-type]
        for i, w in enumerate(windows)
    ]


def decide(earlier: list[Entry], window: str, mape: float | None = None, **kw: Any) -> rt.Decision:
    kw.setdefault("now", T0 + timedelta(days=10))
    kw.setdefault("last_retrain", None)
    kw.setdefault("pipeline_running", False)
    config = kw.pop("config", CONFIG)
    return rt.decide(earlier, Outcome(window=window, realised_mape=mape), config, **kw)  # type: ignore[arg-type]


# --- the pure decision ---------------------------------------------------------------------------


def test_consecutive_drifted_windows_start_a_retrain():
    assert not decide([], "drift").start
    d = decide(history("drift"), "drift")
    assert d.start
    assert d.streak == 2
    assert d.reason.startswith(f"retrain on {SOURCE}: 2 drifted window(s) in a row")


def test_not_enough_data_neither_extends_nor_breaks_a_run_of_drifted_windows():
    assert decide(history("drift", "not enough data"), "drift").start
    assert not decide(history("not enough data", "not enough data"), "drift").start
    assert decide(history("drift", "drift"), "not enough data").streak == 2


def test_a_calm_window_breaks_the_run():
    d = decide(history("drift", "no drift"), "drift")
    assert not d.start
    assert d.streak == 1


def test_realised_mape_above_the_limit_starts_a_retrain_without_drift():
    d = decide([], "no drift", mape=0.30)
    assert d.start
    assert "realised MAPE 30.0% above monitor.max_mape 25.0%" in d.reason
    assert not decide([], "no drift", mape=0.25).start
    no_limit = MonitorConfig(consecutive=2, retrain_source=SOURCE)
    assert not decide([], "no drift", mape=0.9, config=no_limit).start


def test_no_retrain_source_means_no_retrain_and_says_how_to_set_it():
    d = decide(history("drift"), "drift", config=MonitorConfig(consecutive=2))
    assert not d.start
    assert "MONITOR_RETRAIN_SOURCE" in d.reason


def test_one_retrain_per_incident_even_after_the_cooldown():
    earlier = [*history("drift"), Entry(time="t1", window="drift", alarm=True, started=True)]
    d = decide([*earlier, *history("drift", "not enough data")], "drift")
    assert not d.start
    assert "this incident's retrain already started at t1" in d.reason
    # a calm window ends the incident: the next run of drifted windows is a new one
    assert decide([*earlier, *history("no drift", "drift")], "drift").start


def test_cooldown_holds_back_a_new_incident():
    last = T0 + timedelta(days=10) - timedelta(hours=3)
    d = decide(history("no drift", "drift"), "drift", last_retrain=last)
    assert not d.start
    assert "cooling down" in d.reason
    assert decide(history("drift"), "drift", last_retrain=last - timedelta(hours=22)).start


def test_no_start_while_a_pipeline_runs_or_on_the_same_data():
    d = decide(history("drift"), "drift", pipeline_running=True)
    assert not d.start
    assert "a pipeline execution is running" in d.reason
    d = decide(history("drift"), "drift", source_unchanged=True)
    assert not d.start
    assert "same sha256" in d.reason
    assert "nothing registered" in d.reason


# --- consider: state, records, dry run -----------------------------------------------------------


class FakeStarter:
    def __init__(self, running: bool = False):
        self.is_running = running
        self.starts: list[tuple[str, str]] = []

    def running(self) -> bool:
        return self.is_running

    def start(self, source: str, sha: str) -> rt.Started:
        self.starts.append((source, sha))
        return rt.Started(how="local", ref=f"fake {len(self.starts)}")


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


SETTINGS = Settings(monitor=MonitorConfig(consecutive=2, retrain_source=SOURCE, cooldown_hours=0))


def run(store, window: str, hour: int, starter, *, dry_run=False, digest="new", mape=None):
    return rt.consider(
        store,
        SETTINGS,
        Outcome(window=window, realised_mape=mape),  # type: ignore[arg-type]
        T0 + timedelta(hours=hour),
        dry_run=dry_run,
        starter=starter,
        checksum=lambda source: digest,
    )


def test_ten_drifted_windows_in_a_row_start_one_retrain(store):
    starter = FakeStarter()
    decisions = [run(store, "drift", h, starter) for h in range(10)]
    assert [d.start for d in decisions] == [False, True] + [False] * 8
    assert starter.starts == [(SOURCE, "new")]
    assert store.list(rt.RETRAINS) == [decisions[1].record]
    record = json.loads(store.read_bytes(decisions[1].record))
    assert record["source"] == SOURCE
    assert record["sha256"] == "new"
    state = rt.read_state(store)
    assert len(state.history) == 10
    assert [e.started for e in state.history].count(True) == 1
    assert state.last_retrain == (T0 + timedelta(hours=1)).isoformat()
    # the drift calms, then returns: a new incident, a new retrain (on data refreshed again)
    run(store, "no drift", 10, starter)
    again = [run(store, "drift", h, starter, digest="newer").start for h in (11, 12)]
    assert again == [False, True]
    assert len(starter.starts) == 2


def test_dry_run_says_what_it_would_do_and_changes_nothing(store):
    starter = FakeStarter()
    run(store, "drift", 0, starter)
    before = {k: store.read_bytes(k) for k in store.list()}
    d = run(store, "drift", 1, starter, dry_run=True)
    assert d.start
    assert d.dry_run
    assert d.reason.startswith("would start: retrain on")
    assert starter.starts == []
    assert {k: store.read_bytes(k) for k in store.list()} == before


def test_no_retrain_while_a_pipeline_runs_then_one_when_it_ends(store):
    starter = FakeStarter(running=True)
    run(store, "drift", 0, starter)
    assert not run(store, "drift", 1, starter).start
    starter.is_running = False
    assert run(store, "drift", 2, starter).start
    assert len(starter.starts) == 1


def test_the_same_data_as_the_last_training_registers_nothing(store):
    store.write_bytes("reports/ingest.json", json.dumps({"sha256": "old"}).encode())
    starter = FakeStarter()
    run(store, "drift", 0, starter, digest="old")
    d = run(store, "drift", 1, starter, digest="old")
    assert not d.start
    assert "same sha256" in d.reason
    assert starter.starts == []
    assert store.list(rt.RETRAINS) == []
    assert run(store, "drift", 2, starter, digest="refreshed").start


def test_a_starter_that_fails_is_recorded_and_retried_next_run(store):
    class Failing(FakeStarter):
        def start(self, source: str, sha: str) -> rt.Started:
            raise PipelineError("monitor: Cloud Run API answered 403")

    run(store, "drift", 0, FakeStarter())
    with pytest.raises(PipelineError, match="403"):
        run(store, "drift", 1, Failing())
    assert rt.read_state(store).history[-1].reason.startswith("retrain failed to start")
    assert run(store, "drift", 2, FakeStarter()).start


def test_a_damaged_state_record_is_an_error_not_a_fresh_start(store):
    store.write_bytes(rt.STATE, b"{not json")
    with pytest.raises(PipelineError, match=r"monitor/state\.json"):
        run(store, "drift", 0, FakeStarter())


def test_the_source_checksum_is_the_bytes_ingest_reads(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_bytes(b"a,b\n1,2\n")
    assert rt.source_sha256(str(csv)) == sha256(b"a,b\n1,2\n")


# --- the local starter ---------------------------------------------------------------------------


def test_the_local_starter_runs_the_pipeline_and_holds_the_lock_while_it_runs(tmp_path):
    """The child (a stand-in for ``python``) takes the pipeline lock as every run does, records
    its arguments and blocks on a FIFO until the test releases it; the pipeline counts as
    running exactly while the child lives, and a second start is refused meanwhile."""
    fifo, argv_file = tmp_path / "release", tmp_path / "argv.json"
    os.mkfifo(fifo)
    fake = tmp_path / "python"
    fake.write_text(
        f"#!{sys.executable}\nimport json, os, sys\nfrom pathlib import Path\n"
        "from pipeline.run_lock import holding\n"
        "with holding(Path(os.environ['HOUSING_MLOPS_HOME'])):\n"
        f"    open({str(argv_file)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        f"    open({str(fifo)!r}).read()\n"
    )
    fake.chmod(0o755)
    starter = rt.LocalStarter(tmp_path / "home", config_file="c.toml", python=str(fake))
    assert not starter.running()
    started = starter.start(SOURCE, "abc")  # returns once the child holds the lock
    pid = int(started.ref.split()[1].rstrip(","))
    try:
        assert starter.running()
        with pytest.raises(PipelineError, match="holds the lock"):
            starter.start(SOURCE, "abc")
        with (
            pytest.raises(PipelineError, match="another pipeline run is using"),
            run_lock.holding(tmp_path / "home"),
        ):
            pass
        wait_until(lambda: argv_file.exists() and argv_file.read_text(), "the arguments written")
        args = json.loads(argv_file.read_text())
        assert args == ["-m", "pipeline", *rt.pipeline_args(SOURCE, "abc"), "--config", "c.toml"]
        assert "--force" in args
        fd = os.open(fifo, os.O_WRONLY)
        os.close(fd)
        wait_until(lambda: not starter.running(), "the lock released when the child exits")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def test_a_child_that_ends_at_once_is_an_error_naming_its_log(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\nimport sys\nsys.exit(3)\n")
    fake.chmod(0o755)
    starter = rt.LocalStarter(tmp_path / "home", python=str(fake))
    with pytest.raises(PipelineError, match=r"ended at once \(exit 3\); see .*retrain-"):
        starter.start(SOURCE, "abc")


# --- the Cloud Run starter -----------------------------------------------------------------------

JOB = "projects/p/locations/europe-west1/jobs/housing-pipeline"


class CloudRunStandIn(BaseHTTPRequestHandler):
    """The Admin API's two calls: list executions (two pages) and run with overrides."""

    calls: ClassVar[list[tuple[str, str, Any]]] = []
    pages: ClassVar[dict[str, dict[str, Any]]] = {}
    status: ClassVar[int] = 200

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path, None))
        token = self.path.partition("pageToken=")[2]
        self._answer(self.pages[token])

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(("POST", self.path, body))
        self._answer({"name": "operations/1", "metadata": {"name": f"{JOB}/executions/x-1"}})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def cloud_run():
    CloudRunStandIn.calls = []
    CloudRunStandIn.status = 200
    with serve_http(CloudRunStandIn) as (_, url):
        yield rt.CloudRunStarter(JOB, requests.Session(), api=f"{url}/v2")


def test_cloud_run_lists_every_page_of_executions_for_a_running_one(cloud_run):
    done = {"completionTime": "2026-11-30T00:00:00Z"}
    CloudRunStandIn.pages = {
        "": {"executions": [done], "nextPageToken": "p2"},
        "p2": {"executions": [done, {"name": "e"}]},
    }
    assert cloud_run.running()
    assert [c[1] for c in CloudRunStandIn.calls] == [
        f"/v2/{JOB}/executions",
        f"/v2/{JOB}/executions?pageToken=p2",
    ]
    CloudRunStandIn.pages = {"": {"executions": [done]}}
    assert not cloud_run.running()


def test_cloud_run_runs_the_job_with_the_retrain_arguments(cloud_run):
    started = cloud_run.start(SOURCE, "abc")
    assert started == rt.Started(how="cloud-run", ref=f"{JOB}/executions/x-1")
    method, path, body = CloudRunStandIn.calls[-1]
    assert (method, path) == ("POST", f"/v2/{JOB}:run")
    override = body["overrides"]["containerOverrides"][0]
    assert override["args"] == rt.pipeline_args(SOURCE, "abc")


def test_a_refused_cloud_run_call_is_one_line_naming_the_status(cloud_run):
    CloudRunStandIn.status = 403
    with pytest.raises(PipelineError) as err:
        cloud_run.start(SOURCE, "abc")
    assert "answered 403" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_calm_run_asks_neither_the_pipeline_nor_the_data(store):
    """The Cloud Run API and the source are only consulted when a retrain is due: an API outage
    doesn't break the monitor's ordinary runs."""

    class Unreachable(FakeStarter):
        def running(self) -> bool:
            raise PipelineError("monitor: Cloud Run API unreachable")

    def no_read(source: str) -> str:
        raise AssertionError("the source was read")

    d = rt.consider(
        store,
        SETTINGS,
        Outcome(window="drift"),
        T0,
        dry_run=False,
        starter=Unreachable(),
        checksum=no_read,
    )
    assert not d.start
    assert d.streak == 1
