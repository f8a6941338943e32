"""The local Cloud Run: revisions of the service started and stopped to match ``release.yaml``.

Each revision is ``python -m service`` on a free loopback port, its model pinned to one
registry version (``MODEL_URI=models:/housing-price/<v>``, that version's export as fallback,
as on Cloud Run) and ``K_REVISION`` set to its name, so the prediction log says who served what.
A name is ``infra.release.traffic.revision_name`` of the version and its faults: the same
release asks for the same name, a new version or ``revisionFaults`` for a new one.

The ``Reconciler`` (a thread of ``nox -s stack``) watches the file's stat as the splitter does
and, when it changes: starts the revisions the release refers to that do not run (the newest it
asks for, and the stable one), waits for each one's ``/ready``, lists them (newest last, through
``release_state.edit``), publishes the release feed, and only then stops revisions no tag or
split refers to any more, after ``drain_s`` (the splitter re-reads the file every 100 ms; the
service drains its requests in flight on SIGTERM). A revision that never becomes ready is not
listed (the splitter keeps the last release it could apply), its log ends with ``FAILED``, and it
is not started again until the release asks for something else: nothing starts twice.

Who waits on a change (``infra.cli canary … local``, the rollout controller) calls
``wait_listed``: it returns the name of the newest revision once it serves the version, or
raises ``RevisionError`` with the reason.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from housing_platform import release_feed, traffic_split
from housing_platform.artifact_store import ArtifactStore
from infra.release import publication
from infra.release.traffic import ReleaseError, revision_name
from local_platform import release_state
from local_platform.processes import LOOPBACK, Process, alive, free_port, spawn
from local_platform.release_state import LocalRevision, ReleaseState
from model_runtime.exports import DEFAULT_MODEL, export_prefix

SERVICE = "housing-api"
#: The line that ends a revision's log when it never became ready.
FAILED = "local_platform: revision failed:"
#: How long a revision may take to answer ``/ready`` (it loads its model first).
READY_TIMEOUT_S = 300.0


class RevisionError(RuntimeError):
    """A revision did not start, or stopped; the message names it and its log."""


@dataclass(frozen=True)
class Spec:
    """A revision as the release asks for it."""

    name: str
    model_version: int
    faults: str = ""


@dataclass(frozen=True)
class Plan:
    wanted: tuple[Spec, ...]
    """The revisions the release refers to, as they are to be listed: the newest last."""
    start: tuple[Spec, ...]
    """Those of them that do not run."""
    stop: tuple[str, ...]
    """Running revisions nothing refers to."""


def name_of(model_version: int, faults: str = "") -> str:
    """The revision name for a version and its faults (``housing-api-m7-1a2b3c4d``)."""
    return revision_name(
        SERVICE, model_version, {"image": release_state.LOCAL_IMAGE, "faults": faults}
    )


def plan(state: ReleaseState, running: Collection[str]) -> Plan:
    """What to start and stop so that the revisions match the release (pure)."""
    desired = (state.release.model_version, state.revision_faults)
    listed = {
        (r.model_version, r.faults): name
        for name, r in state.revisions.items()
        if name in running or not state.pending
    }
    # Pending: a revision of the version may run already (the stable one, say); else a new one.
    newest_name = listed.get(desired) or name_of(*desired) if state.pending else state.newest
    newest = Spec(newest_name, *desired)
    wanted = [newest]
    stable = state.release.stable_revision
    if stable and stable != newest.name:
        known = state.revisions[stable]
        wanted.insert(0, Spec(stable, known.model_version, known.faults))
    names = {spec.name for spec in wanted}
    return Plan(
        tuple(wanted),
        tuple(spec for spec in wanted if spec.name not in running),
        tuple(name for name in running if name not in names),
    )


def tag_urls(state: ReleaseState, api_url: str) -> dict[str, str]:
    """The splitter's URL of each tag the release gives a revision."""
    return {tag: f"{api_url.rstrip('/')}/tags/{tag}" for tag in state.tagged()} if api_url else {}


def versions(state: ReleaseState) -> dict[str, int]:
    return {name: revision.model_version for name, revision in state.revisions.items()}


def feed_of(state: ReleaseState, api_url: str) -> release_feed.ReleaseFeed:
    """The release feed of an applied (not pending) release: who serves, who shadows it."""
    return publication.release_feed(
        state.release, state.newest, state.tagged(), tag_urls(state, api_url), versions(state)
    )


def split_of(state: ReleaseState, api_url: str) -> traffic_split.TrafficSplit:
    """The live split of an applied release, with the splitter's tag URLs."""
    return publication.operator_split(
        state.targets(), state.tagged(), tag_urls(state, api_url), versions(state)
    )


def log_path(home: Path, name: str) -> Path:
    return home / "logs" / f"{name}.log"


def revision_env(home: Path, spec: Spec, port: int) -> dict[str, str]:
    """What a revision's process sets on top of the stack's environment."""
    export = home / "artifacts" / export_prefix(DEFAULT_MODEL, str(spec.model_version))
    return {
        "MODEL_URI": f"models:/{DEFAULT_MODEL}/{spec.model_version}",
        "MODEL_FALLBACK_URI": str(export),
        "K_REVISION": spec.name,
        "HOUSING_FAULTS": spec.faults,
        "HOST": LOOPBACK,
        "PORT": str(port),
    }


def wait_ready(process: Process, log: Path, timeout_s: float, stopping: threading.Event) -> None:
    """Returns once the revision answers ``/ready`` with 200; raises RevisionError when it exits,
    answers that it has no model (its first answer comes after the load), or times out."""
    deadline = time.monotonic() + timeout_s
    while not stopping.is_set():
        if process.proc.poll() is not None:
            raise RevisionError(
                f"revision {process.name} exited with {process.proc.returncode}; see {log}"
            )
        with contextlib.suppress(httpx.TransportError):
            answer = httpx.get(process.url + "/ready", timeout=5)
            if answer.status_code == 200:
                return
            raise RevisionError(
                f"revision {process.name} is not ready: {answer.text[:500]}; see {log}"
            )
        if time.monotonic() > deadline:
            raise RevisionError(
                f"revision {process.name} not ready after {timeout_s:.0f} s; see {log}"
            )
        stopping.wait(0.2)
    raise RevisionError(f"revision {process.name}: the stack stopped while it started")


@dataclass
class Reconciler:
    """Keeps the revisions matching ``<home>/release.yaml`` (see the module's docstring)."""

    home: Path
    env: Mapping[str, str]
    """The stack's environment, which every revision starts from (tracking URI, home…)."""
    python: str
    api_url: str = ""
    """The splitter's URL, for the shadow tag URL in the release feed."""
    store: ArtifactStore | None = None
    """Where the release feed is published; None publishes nothing."""
    check_s: float = 0.1
    drain_s: float = 2.0
    ready_timeout_s: float = READY_TIMEOUT_S
    say: Callable[[str], None] = print
    running: dict[str, tuple[Spec, Process]] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    _failed: set[str] = field(default_factory=set)
    _retiring: list[threading.Thread] = field(default_factory=list)
    _published: release_feed.ReleaseFeed | None = None
    _split: traffic_split.TrafficSplit | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def path(self) -> Path:
        return release_state.path_in(self.home)

    def sync(self) -> ReleaseState:
        """One pass: start, list, publish, then retire; returns the state as written. Raises
        ReleaseError for a bad file and RevisionError for a revision that did not start."""
        with self._lock:
            state = release_state.read(self.path)
            todo = plan(state, self.running)
            if todo.wanted[-1].name not in self._failed:
                self._failed.clear()  # the release asks for something else: anything may retry
            for spec in todo.start:
                if spec.name in self._failed:
                    raise RevisionError(
                        f"revision {spec.name} failed to start before and is not started again "
                        f"until the release changes; see {log_path(self.home, spec.name)}"
                    )
                self._start(spec)
            state = release_state.edit(self.path, self._relist)
            if state.pending:
                return state  # the release changed while revisions started: the next pass
            self._publish(state)
            for name in plan(state, self.running).stop:
                self._retire(name)
            return state

    def _start(self, spec: Spec) -> None:
        port = free_port()
        log = log_path(self.home, spec.name)
        env = dict(self.env) | revision_env(self.home, spec, port)
        argv = [self.python, "-m", "service"]
        process = spawn(spec.name, argv, env, log, f"http://{LOOPBACK}:{port}")
        faults = f", faults {spec.faults}" if spec.faults else ""
        self.say(f"revision {spec.name} (model version {spec.model_version}{faults}) starting")
        try:
            wait_ready(process, log, self.ready_timeout_s, self.stopping)
        except RevisionError as exc:
            process.stop()
            self._failed.add(spec.name)
            with log.open("a") as out:
                out.write(f"{FAILED} {exc}\n")
            raise
        self.running[spec.name] = (spec, process)
        self.say(f"revision {spec.name} {process.url}")

    def _relist(self, text: str) -> str:
        """The file's text with the running revisions it refers to listed, newest last; as it
        was while one of them does not run (the release changed meanwhile)."""
        todo = plan(release_state.parse(text, str(self.path)), self.running)
        if todo.start:
            return text
        listing = {
            spec.name: LocalRevision(
                url=self.running[spec.name][1].url,
                model_version=spec.model_version,
                faults=spec.faults,
            )
            for spec in todo.wanted
        }
        return release_state.with_revisions(text, listing)

    def _publish(self, state: ReleaseState) -> None:
        if self.store is None:
            return
        feed = feed_of(state, self.api_url)
        if feed != self._published:
            release_feed.publish(self.store, feed)
            self._published = feed
        split = split_of(state, self.api_url)
        if split != self._split:
            traffic_split.publish(self.store, split)
            self._split = split

    def _retire(self, name: str) -> None:
        """Stops a revision nothing refers to, once the splitter has long stopped sending it
        requests; the service drains those in flight on SIGTERM."""
        _, process = self.running.pop(name)

        def retire() -> None:
            self.stopping.wait(self.drain_s)
            process.stop()
            self.say(f"revision {name} stopped (nothing refers to it)")

        thread = threading.Thread(target=retire, name=f"retire-{name}", daemon=True)
        thread.start()
        self._retiring.append(thread)

    def watch(self) -> None:
        """Runs ``sync`` whenever the file's stat changes, until ``stopping``; each failure is
        one line, and the revisions stay as they were."""
        seen: tuple[int, int, int] | None = None
        while not self.stopping.is_set():
            try:
                st = self.path.stat()
                now: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
            except FileNotFoundError:
                now = None
            if now != seen:
                seen = now
                try:
                    self.sync()
                except (ReleaseError, RevisionError) as exc:
                    if not self.stopping.is_set():
                        self.say(f"release: {' '.join(str(exc).split())}")
                except Exception as exc:  # the thread outlives any one pass: say it, go on
                    if not self.stopping.is_set():
                        self.say(f"release: {type(exc).__name__}: {' '.join(str(exc).split())}")
            self.stopping.wait(self.check_s)

    def exited(self) -> str:
        """A message for a listed revision that exited on its own, "" when all run."""
        for name, (_, process) in list(self.running.items()):
            if process.proc.poll() is not None:
                log = log_path(self.home, name)
                return f"revision {name} exited with {process.proc.returncode}; see {log}"
        return ""

    def stop_all(self) -> None:
        self.stopping.set()
        with self._lock:  # a pass in progress ends (its start is interrupted) before this
            for thread in self._retiring:
                thread.join()
            for _, process in reversed(list(self.running.values())):
                process.stop()
            self.running.clear()


def wait_listed(
    home: Path,
    model_version: int,
    faults: str = "",
    *,
    timeout_s: float = READY_TIMEOUT_S,
    stack_pid: int | None = None,
    log_offset: Mapping[str, int] | None = None,
) -> str:
    """Waits until the newest listed revision serves ``model_version`` with ``faults`` (the
    release applied, the splitter routing by it) and returns its name. Raises RevisionError
    when the revision failed to start (its log's ``FAILED`` line after ``log_offset``, the
    log's size before the change), when the stack (``stack_pid``) stops, or on timeout."""
    path = release_state.path_in(home)
    name = name_of(model_version, faults)
    log = log_path(home, name)
    since = (log_offset or {}).get(name, 0)
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(FileNotFoundError, ReleaseError):
            state = release_state.read(path)
            newest = state.revisions.get(state.newest)
            served = None if newest is None else (newest.model_version, newest.faults)
            if not state.pending and served == (model_version, faults):
                return state.newest
        if log.is_file():
            with log.open("rb") as read:
                read.seek(since)
                for line in read.read().decode(errors="replace").splitlines():
                    if line.startswith(FAILED):
                        raise RevisionError(line.removeprefix(FAILED).strip())
        if stack_pid is not None and not alive(stack_pid):
            raise RevisionError(
                f"the stack stopped before revision {name} was listed; start it with `nox -s stack`"
            )
        if time.monotonic() > deadline:
            raise RevisionError(
                f"revision {name} (model version {model_version}) not listed after "
                f"{timeout_s:.0f} s; see {log}"
            )
        time.sleep(0.1)


def log_sizes(home: Path, names: Collection[str]) -> dict[str, int]:
    """Each revision log's size now: what ``wait_listed`` reads beyond."""
    sizes = {}
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            sizes[name] = log_path(home, name).stat().st_size
    return sizes
