"""The MLflow tracking server on a laptop: the container's entry point (``tracking_server``) run
over the pipeline's local store, one worker, loopback only. ``nox -s mlflow`` runs it."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from local_platform.local_settings import from_env
from local_platform.postgres import cluster as postgres_cluster


def serve(postgres: bool, home: Path, port: int) -> int:
    """The laptop setup: SQLite (or a throwaway PostgreSQL) under the pipeline's home, one
    worker, loopback only; Ctrl-C stops the server and the database."""
    env = dict(os.environ)
    env |= {"ARTIFACTS_DESTINATION": str(home / "mlartifacts"), "PORT": str(port)}
    env.setdefault("HOST", "127.0.0.1")
    home.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if postgres:
            base = stack.enter_context(postgres_cluster(("mlflow", "optuna")))
            env["BACKEND_STORE_URI"] = f"{base}/mlflow"
            print(f"PostgreSQL (throwaway): {base}/mlflow, Optuna: {base}/optuna", flush=True)
        else:
            env["BACKEND_STORE_URI"] = f"sqlite:///{home / 'mlflow.db'}"
        proc = subprocess.Popen([sys.executable, "-m", "tracking_server.server"], env=env)
        print(f"MLflow: http://{env['HOST']}:{port} (Ctrl-C stops it)", flush=True)
        # Explicit handlers: a background shell starts us with SIGINT ignored.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: proc.terminate())
        code = proc.wait()
        return 0 if code in (0, -signal.SIGTERM) else code
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local_platform.mlflow_server", description=__doc__
    )
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL backend")
    parser.add_argument("--port", type=int, default=5000, help="default 5000")
    args = parser.parse_args(argv)
    home = from_env(os.environ).home_path
    return serve(args.postgres, home, args.port)


if __name__ == "__main__":
    sys.exit(main())
