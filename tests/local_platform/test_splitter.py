"""The local traffic splitter against real servers on loopback: two stand-in revisions
(``standin.py``, each answering its name) behind ``python -m local_platform.splitter``, with the
release written by ``local_platform.release_state`` and the stack files' edits."""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from infra.release import stack_edits
from infra.release.traffic import Release
from local_platform import release_state
from local_platform.release_state import LocalRevision
from tests.helpers import (
    LOOPBACK,
    Server,
    accepts_connections,
    free_port,
    running,
    serving,
    tail,
    wait_until,
)
from tests.test_project import ROOT

STABLE, NEWEST = "housing-api-m6-aaaa", "housing-api-m7-bbbb"
APPLIED = "release applied:"
REJECTED = "release file rejected:"
CLIENTS = 8
#: Requests counted per steady phase.
PER_PHASE = 400
#: 0→10→50→100→0… : ten shifts.
SHIFTS = (10, 50, 100, 0, 10, 50, 100, 0, 10, 50)


@pytest.fixture(scope="module")
def revisions(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Two stand-in revisions on free loopback ports: name → base URL."""
    logs = tmp_path_factory.mktemp("revisions")
    with contextlib.ExitStack() as stack:
        urls = {}
        for name in (STABLE, NEWEST):
            port = free_port()
            argv = [sys.executable, "-m", "uvicorn", "tests.local_platform.standin:app"]
            argv += ["--host", LOOPBACK, "--port", str(port), "--no-access-log"]
            env = {"PATH": "/usr/bin:/bin", "REVISION_NAME": name}
            server = stack.enter_context(
                serving(argv, port, log=logs / f"{name}.log", ready_path="/", env=env, cwd=ROOT)
            )
            urls[name] = server.url
        yield urls


def release_text(urls: dict[str, str], percent: int) -> str:
    release = Release(
        model_version=7,
        image=release_state.LOCAL_IMAGE,
        canary_percent=percent,
        stable_revision=STABLE,
    )
    return release_state.render(
        release,
        {
            STABLE: LocalRevision(url=urls[STABLE], model_version=6),
            NEWEST: LocalRevision(url=urls[NEWEST], model_version=7),
        },
    )


@dataclass
class Splitter:
    server: Server
    release: Path

    def applied(self) -> int:
        return self.server.logs().count(APPLIED)

    def shift(self, change: Callable[[str], str]) -> None:
        """Edits the release file as ``canary``/``rollback`` would, and waits until the
        splitter has applied it."""
        before = self.applied()
        release_state.edit(self.release, change)
        wait_until(
            lambda: self.applied() > before,
            "the splitter applying the new release",
            process=self.server.proc,
            log=self.server.log,
        )


@contextlib.contextmanager
def splitter(home: Path, text: str | None) -> Iterator[Splitter]:
    release = release_state.path_in(home)
    if text is not None:
        release_state.write(release, text)
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOUSING_MLOPS_HOME": str(home),
        "PORT": str(port),
        "SPLITTER_CHECK_MS": "20",
    }
    log = home.parent / "splitter.log"
    argv = [sys.executable, "-m", "local_platform.splitter"]
    with running(argv, log=log, env=env, cwd=ROOT) as proc:
        server = Server(proc, f"http://{LOOPBACK}:{port}", log)
        wait_until(
            lambda: accepts_connections(port), "the splitter listening", process=proc, log=log
        )
        if text is not None:
            wait_until(lambda: APPLIED in tail(log), "the first release", process=proc, log=log)
        yield Splitter(server, release)


def served(response: httpx.Response) -> str:
    """The revision that answered; fails unless the header and the body agree."""
    assert response.status_code == 200, response.text
    revision = response.headers["x-served-revision"]
    assert response.json()["revision"] == revision
    return revision


@dataclass
class Load:
    """CLIENTS threads sending requests one after another until stopped; each result is
    (sent at, revision or None, what went wrong)."""

    url: str
    results: list[tuple[float, str | None, str]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stopping.is_set():
                request_id = uuid.uuid4().hex
                sent = time.monotonic()
                try:
                    r = client.get("/predict", headers={"X-Request-ID": request_id})
                    revision = served(r)
                    assert r.headers["x-request-id"] == request_id
                    assert r.json()["request_id"] == request_id
                    self.results.append((sent, revision, ""))
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

    def counted(self, start: float, n: int) -> Callable[[], bool]:
        return lambda: len(self.since(start)) >= n

    def since(self, start: float) -> list[tuple[float, str | None, str]]:
        return [r for r in list(self.results) if r[0] >= start]


def test_ten_shifts_under_load_fail_no_request_and_each_steady_share_matches(tmp_path, revisions):
    with (
        splitter(tmp_path / "home", release_text(revisions, 0)) as split,
        Load(split.server.url) as load,
    ):
        shares = []
        for shift, percent in enumerate((0, *SHIFTS)):
            if shift:
                split.shift(functools.partial(stack_edits.with_release, canary_percent=percent))
            start = time.monotonic()  # every request sent from now on is routed by `percent`
            wait_until(load.counted(start, PER_PHASE), f"{PER_PHASE} requests at {percent}%")
            phase = load.since(start)
            newest = sum(revision == NEWEST for _, revision, _ in phase) / len(phase)
            shares.append((percent, round(100 * newest, 1), len(phase)))
    failed = [error for _, revision, error in load.results if revision is None]
    print(f"\n{len(load.results)} requests, {len(failed)} failed; (percent, observed, n): {shares}")
    assert failed == []
    # The counter gives exactly p per 100 consecutive requests; the phase's edges can cut off at
    # most the requests in flight there (CLIENTS at each end).
    for percent, observed, n in shares:
        assert abs(observed - percent) <= 100 * (1 + 2 * CLIENTS) / n, shares
    assert split.server.logs().count(APPLIED) == 1 + len(SHIFTS)


def test_a_request_in_flight_finishes_on_the_revision_it_started_on(tmp_path, revisions):
    go = tmp_path / "go"
    with splitter(tmp_path / "home", release_text(revisions, 100)) as split:
        held: list[httpx.Response] = []
        thread = threading.Thread(
            target=lambda: held.append(
                httpx.get(f"{split.server.url}/hold", params={"until": str(go)}, timeout=60)
            )
        )
        thread.start()
        try:
            wait_until(lambda: Path(f"{go}.held").exists(), "the held request reaching a revision")
            split.shift(stack_edits.rollback)
            assert served(httpx.get(f"{split.server.url}/next")) == STABLE
        finally:
            go.touch()
            thread.join(timeout=60)
        assert served(held[0]) == NEWEST


def test_tag_urls_reach_one_revision_and_stream_bodies_both_ways(tmp_path, revisions):
    with splitter(tmp_path / "home", release_text(revisions, 0)) as split:
        url = split.server.url
        r = httpx.get(f"{url}/tags/stable/api/v1/x", params={"a": "1"})
        assert served(r) == STABLE
        assert (r.json()["path"], r.json()["query"]) == ("/api/v1/x", "a=1")
        assert served(httpx.get(f"{url}/tags/canary/")) == NEWEST
        assert served(httpx.get(f"{url}/tags/shadow")) == NEWEST
        body = b"x" * 3_000_000
        r = httpx.post(f"{url}/tags/canary/upload", content=iter([body[:1000], body[1000:]]))
        assert served(r) == NEWEST
        assert r.json()["received"] == len(body)
        r = httpx.get(f"{url}/tags/blue/")
        assert r.status_code == 404
        assert "tag URLs are /tags/<stable, canary, shadow>/" in r.json()["error"]
        assert {served(httpx.get(f"{url}/x")) for _ in range(20)} == {STABLE}


def test_no_release_or_no_reachable_revision_is_a_clear_503(tmp_path, revisions):
    dead = f"http://{LOOPBACK}:{free_port()}"
    with splitter(tmp_path / "home", None) as split:
        r = httpx.get(f"{split.server.url}/api/v1/predict")
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/json"
        assert "no release: write" in r.json()["error"]
        assert "release.yaml" in r.json()["error"]
        before = split.applied()
        release_state.write(split.release, release_text({**revisions, NEWEST: dead}, 100))
        wait_until(lambda: split.applied() > before, "the splitter applying the first release")
        r = httpx.get(f"{split.server.url}/api/v1/predict")
        assert r.status_code == 503
        assert r.headers["x-served-revision"] == NEWEST
        assert f"revision {NEWEST} at {dead} is not reachable" in r.json()["error"]


def test_a_bad_release_file_is_one_log_line_and_the_last_good_one_keeps_serving(
    tmp_path, revisions
):
    with splitter(tmp_path / "home", release_text(revisions, 0)) as split:
        bad = split.release.read_text().replace("canaryPercent: 0", "canaryPercnt: 100")
        release_state.write(split.release, bad)
        wait_until(lambda: REJECTED in split.server.logs(), "the bad file rejected in the log")
        assert {served(httpx.get(f"{split.server.url}/x")) for _ in range(10)} == {STABLE}
        release_state.write(split.release, release_text(revisions, 100))
        wait_until(lambda: split.applied() == 2, "the next good file applied")
        assert {served(httpx.get(f"{split.server.url}/x")) for _ in range(10)} == {NEWEST}
        rejected = [line for line in split.server.logs().splitlines() if REJECTED in line]
    assert len(rejected) == 1
    assert "`housing-mlops:release.canaryPercnt` is not a setting" in rejected[0]
    assert "did you mean `canaryPercent`?" in rejected[0]
    assert "keeping the last good release" in rejected[0]
