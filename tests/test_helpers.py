"""tests/helpers.py keeps its promises — a process is stopped with its children whatever the test
did, a wait fails at once when what it waits on died — and the suite starts processes and servers
through it only."""

from __future__ import annotations

import http.server
import re
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import running, serve_http, serving, wait_until

TESTS = Path(__file__).parent


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed orphan may wait for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_process_and_its_children_are_stopped_when_the_test_fails(tmp_path):
    log = tmp_path / "parent.log"
    spawn = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print(child.pid, flush=True); time.sleep(600)"
    )
    started: dict[str, int] = {}

    def a_failing_test() -> None:
        with running([sys.executable, "-c", spawn], log=log) as parent:
            started["parent"] = parent.pid
            started["child"] = int(wait_until(lambda: log.read_text().strip(), "a pid", log=log))
            assert alive(started["parent"])
            assert alive(started["child"])
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match="the test failed"):
        a_failing_test()
    assert not alive(started["parent"])
    wait_until(lambda: not alive(started["child"]), "the child gone", 30)


def test_a_wait_fails_at_once_when_its_process_exits(tmp_path):
    log = tmp_path / "server.log"
    argv = [sys.executable, "-c", "print('no port for you')"]
    with (
        running(argv, log=log) as proc,
        pytest.raises(RuntimeError, match=r"exited with 0 first\n.*no port for you"),
    ):
        wait_until(lambda: False, "a port", process=proc, log=log)


def test_a_server_that_never_gets_ready_fails_with_its_log(tmp_path):
    argv = [sys.executable, "-c", "import sys; sys.exit('cannot bind')"]
    log = tmp_path / "server.log"
    with (
        pytest.raises(RuntimeError, match="cannot bind"),
        serving(argv, 9, log=log, ready_path="/health"),
    ):
        pytest.fail("never ready")


def test_a_stand_in_server_answers_on_loopback_until_the_block_ends():
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with serve_http(Hello) as (_, url):
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url).status_code == 204
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=2)


#: What only tests/helpers.py may do: start a process, sleep a fixed time, serve HTTP itself.
STARTS_OR_SLEEPS = re.compile(r"subprocess\.Popen\(|\bPopen\(|time\.sleep\(|HTTPServer\(\(")


def test_the_suite_starts_processes_and_servers_only_through_the_helpers():
    found = [
        f"{path.relative_to(TESTS)}:{number}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        if path.name not in {"helpers.py", "test_helpers.py"}
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if STARTS_OR_SLEEPS.search(line)
    ]
    assert found == [], "use tests/helpers.py (running, serving, serve_http, wait_until)"
