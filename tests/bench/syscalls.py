"""System calls per request of a real server, counted with strace.

The server runs under ``strace -f`` (every thread, and the server a child of strace, which
Ubuntu's ``ptrace_scope=1`` allows, unlike attaching to a running process); what it does between
two marker requests (``GET /health`` with an ``x-request-id`` of ``BEGIN…``/``END…``) is counted,
thread by thread and call by call, and divided by the requests strace saw it read. The load is
``connections`` keep-alive connections of one request at a time each, from an asyncio client fast
enough to keep the traced server busy (as wrk would; a slower client leaves the server idle between
requests, and an idle event loop makes an ``epoll_wait`` per request that a busy one shares).
Used by the service bench and by tests/integration/test_prediction_log_syscalls.py.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_CALL = re.compile(r"^(\d+)\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


def strace_argv(trace: Path) -> list[str]:
    """The prefix that runs a command under strace, every thread, into ``trace``."""
    exe = shutil.which("strace")
    if exe is None:
        raise FileNotFoundError("strace is not installed (apt-get install strace)")
    return [exe, "-f", "-qq", "-s", "120", "-o", str(trace)]


def ptrace_refused() -> str:
    """Why strace can't trace here ('' when it can): containers may deny ptrace."""
    done = subprocess.run(
        [*strace_argv(Path("/dev/null")), "true"], capture_output=True, text=True, check=False
    )
    return "" if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


@dataclass
class Count:
    """System calls between the marks: of the whole process, and of the event loop's thread
    (the request path; the other threads are the log writers and uvicorn's idle helpers)."""

    requests: int
    calls: collections.Counter[str]
    loop_calls: collections.Counter[str]

    def per_request(self, name: str | None = None, *, loop_only: bool = False) -> float:
        """Calls per request: all of them, or of one system call."""
        calls = self.loop_calls if loop_only else self.calls
        n = sum(calls.values()) if name is None else calls[name]
        return n / self.requests

    def table(self, top: int = 8, *, loop_only: bool = False) -> str:
        calls = self.loop_calls if loop_only else self.calls
        return ", ".join(f"{name} {n / self.requests:.2f}" for name, n in calls.most_common(top))


def count(trace: Path, mark: str, path: str) -> Count:
    """The calls between the marks of ``mark``, and the ``POST path`` requests among them."""
    lines = trace.read_text(errors="replace").splitlines()
    begin = next(i for i, line in enumerate(lines) if f"BEGIN{mark}" in line)
    end = next(i for i, line in enumerate(lines) if f"END{mark}" in line)
    loop_thread = lines[begin].split(maxsplit=1)[0]  # the thread that read the mark
    calls: collections.Counter[str] = collections.Counter()
    loop_calls: collections.Counter[str] = collections.Counter()
    requests = 0
    for line in lines[begin + 1 : end]:
        match = _CALL.match(line)
        if match is None:
            continue
        thread, name = match.groups()
        if name.startswith("recv") and f"POST {path} " in line:
            requests += 1  # its data may be on the "resumed" half of a call
        if "resumed>" in line:  # the second half of a call already counted
            continue
        calls[name] += 1
        if thread == loop_thread:
            loop_calls[name] += 1
    if not requests:
        raise ValueError(f"no POST {path} between the marks in {trace}")
    return Count(requests, calls, loop_calls)


def _request(method: str, path: str, host: str, body: bytes = b"", request_id: str = "") -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    if body:
        head += ["content-type: application/json", f"content-length: {len(body)}"]
    if request_id:
        head.append(f"x-request-id: {request_id}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = _CONTENT_LENGTH.search(head)
    await reader.readexactly(int(length.group(1)) if length else 0)
    return int(head.split(b" ", 2)[1])


async def _load(port: int, request: bytes, connections: int, total: int) -> list[int]:
    async def connection(n: int) -> list[int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return [await _exchange(reader, writer, request) for _ in range(n)]
        finally:
            writer.close()

    share = [total // connections + (i < total % connections) for i in range(connections)]
    results = await asyncio.gather(*(connection(n) for n in share))
    return [status for statuses in results for status in statuses]


async def _marked(port: int, mark: str, request: bytes, connections: int, total: int) -> None:
    async def health(request_id: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await _exchange(reader, writer, _request("GET", "/health", host, request_id=request_id))
        finally:
            writer.close()

    host = f"127.0.0.1:{port}"
    await health(f"BEGIN{mark}")
    statuses = await _load(port, request, connections, total)
    await health(f"END{mark}")
    wrong = collections.Counter(s for s in statuses if s != 200)
    if wrong:
        raise RuntimeError(f"answers other than 200 under load: {dict(wrong)}")


def measure(
    port: int,
    trace: Path,
    path: str,
    body: bytes,
    *,
    connections: int = 8,
    requests: int = 3000,
    warm_up: int = 200,
    wait: Callable[[Callable[[], bool], str], object] | None = None,
) -> Count:
    """Loads the server on ``port`` (running under :func:`strace_argv` into ``trace``) with
    ``requests`` POSTs of ``body`` to ``path`` and counts its system calls per request.
    ``wait(condition, what)`` waits for strace to have written the end mark."""
    host = f"127.0.0.1:{port}"
    request = _request("POST", path, host, body)
    asyncio.run(_load(port, request, connections, warm_up))
    mark = uuid.uuid4().hex
    asyncio.run(_marked(port, mark, request, connections, requests))
    if wait is not None:
        wait(lambda: f"END{mark}" in trace.read_text(errors="replace"), "strace's end mark")
    return count(trace, mark, path)
