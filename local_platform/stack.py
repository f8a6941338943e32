"""The whole platform on one machine: ``nox -s stack`` (``python -m local_platform.stack``).

MLflow (SQLite under the pipeline's home) → a model (trained only when no champion is
registered) → the inference service on the champion → the UI, all on loopback, each started
once the previous one answers its health check. Ctrl-C or SIGTERM stops all of them, newest
first, with their child processes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event

import httpx

from local_platform.local_settings import from_env

ROOT = Path(__file__).resolve().parent.parent
MODEL = "housing-price"


class StackError(RuntimeError):
    pass


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    url: str

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM to its process group (MLflow and uvicorn fork workers), SIGKILL if it lingers."""
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait)
                break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # children that outlived their parent


@dataclass
class Stack:
    home: Path
    ports: dict[str, int]
    env: dict[str, str]
    started: list[Process] = field(default_factory=list)
    stopping: Event = field(default_factory=Event)

    def url(self, part: str) -> str:
        return f"http://127.0.0.1:{self.ports[part]}"

    def start(self, name: str, args: list[str], env: dict[str, str], health: str) -> Process:
        log = (self.home / "logs" / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env | env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process = Process(name, proc, self.url(name))
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

    def has_champion(self) -> bool:
        answer = httpx.get(
            self.url("mlflow") + "/api/2.0/mlflow/registered-models/alias",
            params={"name": MODEL, "alias": "champion"},
            timeout=10,
        )
        return answer.status_code == 200

    def stop_all(self) -> None:
        self.stopping.set()
        for process in reversed(self.started):
            process.stop()
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
    if stack.has_champion():
        print("model   champion found in the registry", flush=True)
    else:
        print("model   no champion registered: training one (python -m pipeline run)", flush=True)
        done = subprocess.run(
            [python, "-m", "pipeline", "run", *pipeline_args], cwd=ROOT, env=stack.env | tracking
        )
        if done.returncode != 0 or not stack.has_champion():
            raise StackError("the pipeline did not register a champion; see its output above")
    stack.start(
        "api",
        [python, "-m", "service"],
        tracking | {"PORT": str(stack.ports["api"]), "HOST": "127.0.0.1"},
        "/ready",
    )
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
            run(stack, pipeline_args)
            print("ready: Ctrl-C stops all three", flush=True)
            while not stack.stopping.is_set():
                for process in stack.started:
                    if process.proc.poll() is not None:
                        raise StackError(f"{process.name} exited with {process.proc.returncode}")
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
