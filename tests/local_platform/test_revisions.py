"""The local stack's releases with real revisions: ``python -m service`` processes pinned to
registry versions behind the splitter, kept matching ``release.yaml`` by the reconciler, and
driven by ``python -m infra.cli canary|rollback|promote local`` as a person would."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import pytest

from housing_platform import release_feed
from housing_platform.artifact_store import LocalStore
from infra import cli
from infra.release import stack_edits
from local_platform import release_state, revisions, stack
from local_platform.revisions import name_of
from model_runtime.contract import EXAMPLE_HOUSE
from tests.helpers import accepts_connections, free_port, wait_until

R1, R2 = name_of(1), name_of(2)
CLIENTS = 4
PER_PHASE = 60
#: Ten shifts of the canary's percent, under load.
SHIFTS = (50, 100, 0, 10, 50, 100, 0, 10, 50, 20)


@pytest.fixture
def local_stack(
    registry_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[stack.Stack]:
    """``nox -s stack``'s release part as the stack runs it (revisions, the splitter on the api
    port, the reconciler's thread, ``stack.json``), without the MLflow server and the UI: the
    revisions read the registry's SQLite store directly. The first release is version 1."""
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {
        "HOUSING_MLOPS_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{registry_home / 'mlflow.db'}",
        "SPLITTER_CHECK_MS": "20",
        "DRAIN_SECONDS": "2",
    }
    monkeypatch.setenv("HOUSING_MLOPS_HOME", str(home))  # what infra.cli reads
    ports = {"api": free_port(), "mlflow": free_port(), "ui": free_port()}
    running = stack.Stack(home, ports, env)
    with stack.announced(running):
        try:
            stack.start_releases(running, 1, env)
            assert running.reconciler is not None
            running.reconciler.drain_s = 0.5
            stack.announce(running)
            yield running
        finally:
            running.stop_all()
    assert stack.running(home) is None, "stack.json is removed when the stack stops"


def served(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-served-revision"]


def model_version(api: str, path: str = "") -> tuple[str, str]:
    """(revision, model version) of the revision that answers ``<api><path>/api/v1/model``."""
    answer = httpx.get(f"{api}{path}/api/v1/model", timeout=30)
    return served(answer), answer.json()["version"]


def cli_main(*argv: str) -> int:
    return cli.main(list(argv))


@dataclass
class Load:
    """CLIENTS threads pricing a house through the splitter until stopped; each result is
    (sent at, revision or None, what went wrong)."""

    url: str
    results: list[tuple[float, str | None, str]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stopping.is_set():
                sent = time.monotonic()
                try:
                    r = client.post("/api/v1/predict", json={"instances": [EXAMPLE_HOUSE]})
                    assert r.json()["predictions"][0]["predicted_price"] > 0, r.text
                    self.results.append((sent, served(r), ""))
                except Exception as exc:  # every failure is counted, none ends the load
                    self.results.append((sent, None, repr(exc)))

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.client) for _ in range(CLIENTS)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def since(self, start: float) -> list[tuple[float, str | None, str]]:
        return [r for r in list(self.results) if r[0] >= start]

    def counted(self, start: float, n: int) -> Callable[[], bool]:
        return lambda: len(self.since(start)) >= n


def applied(home: Path) -> int:
    """How many releases the splitter (the stack's ``api`` part) has applied."""
    log = home / "logs" / "api.log"
    return log.read_text().count("release applied:") if log.is_file() else 0


def more_than(home: Path, before: int) -> bool:
    return applied(home) > before


def test_a_canary_starts_a_second_revision_and_promote_retires_the_first_losing_no_request(
    local_stack, capsys
):
    home, api = local_stack.home, local_stack.url("api")
    path = release_state.path_in(home)
    reconciler = local_stack.reconciler
    assert reconciler is not None
    # The first release: one revision of version 1, answering on the api port.
    assert list(release_state.read(path).revisions) == [R1]
    assert model_version(api) == (R1, "1")
    r1_url = release_state.read(path).revisions[R1].url

    # A canary of version 2 at 20%: a second revision, listed last, on the canary tag.
    assert cli_main("canary", "local", "--model-version", "2", "--percent", "20") == 0
    out = capsys.readouterr().out
    assert f"canary: {R2} serves model version 2 at 20%" in out
    state = release_state.read(path)
    assert list(state.revisions) == [R1, R2]
    assert (state.live, state.on_trial) == (R1, R2)
    assert model_version(api, "/tags/canary") == (R2, "2")
    assert model_version(api, "/tags/stable") == (R1, "1")
    wait_until(lambda: applied(home) >= 2, "the splitter applying the canary")
    # The counter gives the newest exactly p of every 100 consecutive requests.
    shares = [served(httpx.get(f"{api}/api/v1/model", timeout=30)) for _ in range(100)]
    assert shares.count(R2) == 20
    feed = release_feed.read(LocalStore(home / "artifacts"))
    assert feed is not None
    assert (feed.stable_revision, feed.shadow_revision, feed.shadow_model_version) == (R1, R2, 2)
    assert feed.shadow_url == f"{api}/tags/shadow"

    with Load(api) as load:
        # Ten shifts of the split under load, then a rollback and a promote, which retires R1.
        phases = []
        for percent in (*SHIFTS, "rollback", "promote"):
            before = applied(home)
            if percent == "rollback":
                assert cli_main("rollback", "local") == 0
            elif percent == "promote":
                assert cli_main("promote", "local") == 0
            else:
                change = functools.partial(stack_edits.with_release, canary_percent=percent)
                release_state.edit(path, change)
            wait_until(functools.partial(more_than, home, before), f"applying {percent}")
            start = time.monotonic()
            wait_until(load.counted(start, PER_PHASE), f"{PER_PHASE} requests at {percent}")
            phases.append((percent, {r for _, r, _ in load.since(start)}))
        wait_until(lambda: R1 not in reconciler.running, "R1 retired")
        wait_until(lambda: not accepts_connections(int(r1_url.rsplit(":", 1)[1])), "R1 stopped")
        start = time.monotonic()
        wait_until(load.counted(start, PER_PHASE), "requests after R1 stopped")
    failed = [error for _, revision, error in load.results if revision is None]
    with capsys.disabled():
        print(f"\n{len(load.results)} requests, {len(failed)} failed; phases {phases}")
    assert failed == []
    assert dict(phases)["rollback"] == {R1}
    assert {r for _, r, _ in load.since(start)} == {R2}

    state = release_state.read(path)
    assert list(state.revisions) == [R2]
    assert (state.release.stable_revision, state.release.canary_percent) == (R2, 100)
    assert model_version(api) == (R2, "2")
    out += capsys.readouterr().out
    starts = [line for line in out.splitlines() if line.endswith("starting")]
    assert starts == [f"release revision {R2} (model version 2) starting"], "none twice"
    assert f"revision {R1} stopped (nothing refers to it)" in out

    # A version that can't be served: one line naming the revision and its log; traffic never
    # moved, and the file is put back.
    code = cli_main("canary", "local", "--model-version", "9", "--percent", "10")
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith(f"canary: revision {name_of(9)} is not ready:"), err
    assert "\n" not in err
    assert f"see {revisions.log_path(home, name_of(9))}" in err
    assert err.endswith("release.yaml is back as it was")
    assert release_state.read(path) == state
    assert model_version(api) == (R2, "2")
    assert list(reconciler.running) == [R2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["canary", "local", "--model-version", "2", "--percent", "10"], "`nox -s stack`"),
        (["promote", "local"], "no local stack runs on"),
        (
            ["canary", "local", "--model-version", "2", "--percent", "10", "--canary-faults", "x"],
            "canary: --canary-faults: x: expected one of the keys error_rate",
        ),
        (
            ["canary", "local", "--model-version", "2", "--percent", "10", "--image", "r@sha"],
            "canary: --image has no meaning on the local stack",
        ),
        (["up", "local"], "up: the local stack has no Pulumi program to up: run `nox -s stack`"),
        (
            ["canary", "dev", "--model-version", "2", "--percent", "10", "--canary-faults", "x=1"],
            "--canary-faults is for the local stack",
        ),
    ],
)
def test_the_local_target_without_a_stack_or_with_a_bad_flag_is_one_line(
    argv, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HOUSING_MLOPS_HOME", str(tmp_path / "home"))
    assert cli_main(*argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "\n" not in err
    assert not (tmp_path / "home" / "release.yaml").exists()


def test_the_stack_file_says_none_runs_once_its_process_is_gone(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert stack.running(home) is None
    about = stack.RunningStack(pid=os.getpid(), api="http://a", mlflow="http://m", ui="http://u")
    release_state.write(home / stack.STACK_FILE, msgspec.json.encode(about).decode())
    assert stack.running(home) == about
    gone = msgspec.structs.replace(about, pid=2**22 + 7)  # above any pid_max: never a process
    release_state.write(home / stack.STACK_FILE, msgspec.json.encode(gone).decode())
    assert stack.running(home) is None
