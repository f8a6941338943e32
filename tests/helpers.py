"""What tests that start processes or servers share: a free loopback port, processes that are
always stopped (with their children, even when the test fails), loopback HTTP stand-ins served
from a thread, and waiting on an event — an HTTP answer, a line in a log, a port that accepts —
with a generous deadline, never a fixed sleep. Every server here binds 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx

LOOPBACK = "127.0.0.1"
#: How long a wait lasts before it fails: generous, for a slow machine shared with others. A
#: wait ends as soon as its event happens, so a fast machine never pays for it.
DEADLINE_S = 90.0
#: How long a stopped process gets to exit on SIGTERM before SIGKILL.
STOP_GRACE_S = 10.0

T = TypeVar("T")
ServerT = TypeVar("ServerT", bound=ThreadingHTTPServer)


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def tail(log: Path | None, chars: int = 3000) -> str:
    """The end of a log file, for a failure message ("" when there is none yet)."""
    if log is None or not log.is_file():
        return ""
    return log.read_text(errors="replace")[-chars:]


def wait_until(
    condition: Callable[[], T],
    what: str,
    timeout: float = DEADLINE_S,
    *,
    process: subprocess.Popen[Any] | None = None,
    log: Path | None = None,
) -> T:
    """Polls ``condition`` until it returns something truthy, and returns that. Fails at once
    when ``process`` exits first, and with ``what`` after ``timeout`` s; both failures show the
    end of ``log``."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{what}: the process exited with {process.returncode} first\n{tail(log)}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s\n{tail(log)}")
        time.sleep(0.05)


def http_status(url: str, timeout: float = 2) -> int | None:
    """The status a GET of ``url`` answers, or None when nothing answers (yet)."""
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.TransportError:
        return None


def accepts_connections(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((LOOPBACK, port)) == 0


def log_says(log: Path, text: str) -> Callable[[], bool]:
    """A condition for :func:`wait_until`: ``text`` is in ``log``."""
    return lambda: text in tail(log, chars=10**9)


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`; then the process group (a process
    :func:`running` started leads its own) is killed, so no child outlives it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group outlives its leader while children live


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    **popen: Any,
) -> Iterator[subprocess.Popen[Any]]:
    """``argv`` started in its own process group (stdout and stderr to ``log`` when given);
    stopped on exit, whatever happened, children included."""
    with contextlib.ExitStack() as stack:
        if log is not None:
            out = stack.enter_context(log.open("wb"))
            popen |= {"stdout": out, "stderr": subprocess.STDOUT}
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd, start_new_session=True, **popen)
    try:
        yield proc
    finally:
        stop(proc)
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream is not None:
                stream.close()


@dataclass
class Server:
    """A server process on loopback: its process, base URL and log."""

    proc: subprocess.Popen[Any]
    url: str
    log: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def logs(self) -> str:
        return tail(self.log, chars=10**9)


@contextlib.contextmanager
def serving(
    argv: Sequence[str],
    port: int,
    *,
    log: Path,
    ready_path: str,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = DEADLINE_S,
) -> Iterator[Server]:
    """``argv`` (which listens on ``port`` of 127.0.0.1), yielded once ``ready_path`` answers
    200; always stopped."""
    with running(argv, log=log, env=env, cwd=cwd) as proc:
        server = Server(proc, f"http://{LOOPBACK}:{port}", log)
        wait_until(
            lambda: http_status(server.url + ready_path) == 200,
            f"{' '.join(argv[:3])}: {ready_path} answering 200",
            timeout,
            process=proc,
            log=log,
        )
        yield server


def serve_module(
    module: str,
    env: dict[str, str],
    log: Path,
    ready_path: str,
    timeout: float = DEADLINE_S,
    python: str = sys.executable,
) -> contextlib.AbstractContextManager[Server]:
    """``python -m <module>`` (an image's CMD, outside Docker) on a free loopback port, given as
    PORT and HOST=127.0.0.1. It sees this process's environment without MLFLOW_TRACKING_URI
    (which mlflow.set_tracking_uri exports), plus ``env``."""
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env = {**inherited, **env, "PORT": str(port), "HOST": LOOPBACK}
    return serving(
        [python, "-m", module], port, log=log, ready_path=ready_path, env=full_env, timeout=timeout
    )


@contextlib.contextmanager
def serve_http(
    handler: Callable[..., BaseHTTPRequestHandler],
    server_class: type[ServerT] = ThreadingHTTPServer,  # type: ignore[assignment]
) -> Iterator[tuple[ServerT, str]]:
    """A stand-in HTTP server on a free loopback port, served from a daemon thread; yields it
    and its base URL, and shuts it down on exit."""
    server = server_class((LOOPBACK, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=STOP_GRACE_S)
