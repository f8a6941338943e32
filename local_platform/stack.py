"""The whole platform on one machine: ``nox -s stack`` (``python -m local_platform.stack``).

MLflow (SQLite under the pipeline's home) → a model (trained only when no champion is
registered) → the service's revisions (``local_platform.revisions``) as the release in
``$HOUSING_MLOPS_HOME/release.yaml`` asks (with no file yet, a first release of the champion's
version is written) → the traffic splitter on the api port, in front of them → the UI, all on
loopback, each started once the previous one answers its health check. While it runs, a thread
keeps the revisions matching the release file (``infra.cli canary|promote|rollback local``
edits it), and ``$HOUSING_MLOPS_HOME/stack.json`` says where it answers (``running``). Ctrl-C or
SIGTERM stops all of them, newest first, with their child processes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event

import httpx
import msgspec

from housing_platform.artifact_store import LocalStore
from local_platform import release_state
from local_platform.local_settings import from_env
from local_platform.processes import ROOT, Process, alive, spawn
from local_platform.revisions import Reconciler, RevisionError

MODEL = "housing-price"
#: Where the running stack says where it answers (removed when it stops).
STACK_FILE = "stack.json"

__all__ = ["ROOT", "Process", "RunningStack", "Stack", "StackError", "main", "running"]


class StackError(RuntimeError):
    pass


class RunningStack(msgspec.Struct, frozen=True, kw_only=True):
    """``$HOUSING_MLOPS_HOME/stack.json``: the stack process and its URLs."""

    pid: int
    api: str
    """The splitter: ``<api>/…`` by the release's split, ``<api>/tags/<tag>/…`` by tag."""
    mlflow: str
    ui: str


def running(home: Path) -> RunningStack | None:
    """The stack running on ``home``, or None when none is (no file, or its process is gone).
    It is written once the stack is ready, so a caller may poll this to wait for one."""
    try:
        found = msgspec.json.decode((home / STACK_FILE).read_bytes(), type=RunningStack)
    except (FileNotFoundError, msgspec.DecodeError):
        return None
    return found if alive(found.pid) else None


@dataclass
class Stack:
    home: Path
    ports: dict[str, int]
    env: dict[str, str]
    started: list[Process] = field(default_factory=list)
    stopping: Event = field(default_factory=Event)
    reconciler: Reconciler | None = None

    def url(self, part: str) -> str:
        return f"http://127.0.0.1:{self.ports[part]}"

    def start(self, name: str, args: list[str], env: dict[str, str], health: str) -> Process:
        process = spawn(
            name, args, self.env | env, self.home / "logs" / f"{name}.log", self.url(name)
        )
        self.started.append(process)
        self.wait_healthy(process, health)
        print(f"{name:7} {process.url}", flush=True)
        return process

    def wait_healthy(self, process: Process, path: str, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.stopping.is_set():
            if process.proc.poll() is not None:
                raise StackError(
                    f"{process.name} exited with {process.proc.returncode}; see "
                    f"{self.home / 'logs' / (process.name + '.log')}"
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(process.url + path, timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise StackError(f"{process.name} not healthy on {path} after {timeout_s:.0f} s")
            self.stopping.wait(0.3)
        raise StackError("stopped while starting")

    def champion(self) -> int | None:
        """The champion's registered version, None when there is none."""
        answer = httpx.get(
            self.url("mlflow") + "/api/2.0/mlflow/registered-models/alias",
            params={"name": MODEL, "alias": "champion"},
            timeout=10,
        )
        if answer.status_code != 200:
            return None
        return int(answer.json()["model_version"]["version"])

    def stop_all(self) -> None:
        """Newest first; the revisions just after what stands in front of them."""
        self.stopping.set()
        for process in reversed(self.started):
            if process.name == "mlflow" and self.reconciler is not None:
                self.reconciler.stop_all()
            process.stop()
        if self.reconciler is not None:
            self.reconciler.stop_all()
        self.started.clear()


def run(stack: Stack, pipeline_args: list[str]) -> None:
    python = sys.executable
    tracking = {"MLFLOW_TRACKING_URI": stack.url("mlflow")}
    stack.start(
        "mlflow",
        [python, "-m", "local_platform.mlflow_server", "--port", str(stack.ports["mlflow"])],
        {},
        "/health",
    )
    champion = stack.champion()
    if champion is not None:
        print("model   champion found in the registry", flush=True)
    else:
        print("model   no champion registered: training one (python -m pipeline run)", flush=True)
        done = subprocess.run(
            [python, "-m", "pipeline", "run", *pipeline_args], cwd=ROOT, env=stack.env | tracking
        )
        champion = stack.champion() if done.returncode == 0 else None
        if champion is None:
            raise StackError("the pipeline did not register a champion; see its output above")
    start_releases(stack, champion, stack.env | tracking)
    streamlit = [
        python,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "ui" / "app.py"),
        "--server.address=127.0.0.1",
        f"--server.port={stack.ports['ui']}",
        "--server.headless=true",
    ]
    stack.start("ui", streamlit, {"API_URL": stack.url("api")}, "/_stcore/health")


def start_releases(stack: Stack, champion: int, env: dict[str, str]) -> None:
    """The revisions the release asks for (a first release of ``champion`` when there is no
    release file), then the splitter in front of them on the api port, then the thread that
    keeps them matching the file."""
    path = release_state.path_in(stack.home)
    if not path.exists():
        first = release_state.render(release_state.first_release(champion), {})
        release_state.write(path, first)
        print(f"release first release written: model version {champion} ({path})", flush=True)
    reconciler = Reconciler(
        stack.home,
        env,
        sys.executable,
        api_url=stack.url("api"),
        store=LocalStore(stack.home / "artifacts"),
        say=lambda line: print(f"release {line}", flush=True),
        stopping=stack.stopping,
    )
    stack.reconciler = reconciler
    try:
        reconciler.sync()  # the stale URLs of an earlier run are replaced before any request
    except (RevisionError, release_state.ReleaseError) as exc:
        raise StackError(" ".join(str(exc).split())) from None
    stack.start(
        "api",
        [sys.executable, "-m", "local_platform.splitter"],
        {"PORT": str(stack.ports["api"]), "HOST": "127.0.0.1"},
        "/ready",
    )
    threading.Thread(target=reconciler.watch, name="reconciler", daemon=True).start()


@contextlib.contextmanager
def announced(stack: Stack) -> Iterator[None]:
    """``stack.json`` while the stack is ready; removed when it stops."""
    path = stack.home / STACK_FILE
    found = running(stack.home)
    if found is not None:
        raise StackError(
            f"a stack already runs on {stack.home} (pid {found.pid}, api {found.api}): stop it "
            "first, or set HOUSING_MLOPS_HOME to another folder"
        )
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError, msgspec.DecodeError):
            if msgspec.json.decode(path.read_bytes(), type=RunningStack).pid == os.getpid():
                path.unlink()


def announce(stack: Stack) -> None:
    about = RunningStack(
        pid=os.getpid(), api=stack.url("api"), mlflow=stack.url("mlflow"), ui=stack.url("ui")
    )
    release_state.write(stack.home / STACK_FILE, msgspec.json.encode(about).decode())


@contextlib.contextmanager
def signals_stop(stack: Stack) -> Iterator[None]:
    """SIGINT and SIGTERM end the wait (a background shell starts us with SIGINT ignored)."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stack.stopping.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_platform.stack", description=__doc__)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--api-port", type=int, default=8080)
    parser.add_argument("--ui-port", type=int, default=8501)
    # Anything else (--config FILE, --source …) goes to `pipeline run` when a model is trained.
    args, pipeline_args = parser.parse_known_args(argv)
    home = from_env(os.environ).home_path
    (home / "logs").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ) | {"HOUSING_MLOPS_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    ports = {"mlflow": args.mlflow_port, "api": args.api_port, "ui": args.ui_port}
    stack = Stack(home, ports, env)
    with signals_stop(stack):
        try:
            with announced(stack):
                run(stack, pipeline_args)
                announce(stack)
                print(f"ready: Ctrl-C stops all three (release: {stack.home / 'release.yaml'})")
                sys.stdout.flush()
                while not stack.stopping.is_set():
                    for process in stack.started:
                        if process.proc.poll() is not None:
                            raise StackError(
                                f"{process.name} exited with {process.proc.returncode}"
                            )
                    if stack.reconciler is not None and stack.reconciler.exited():
                        raise StackError(stack.reconciler.exited())
                    stack.stopping.wait(1.0)
        except StackError as exc:
            if not stack.stopping.is_set():
                print(f"stack: {exc}", file=sys.stderr)
                return 1
        finally:
            stack.stop_all()
            print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
