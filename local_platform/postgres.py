"""A throwaway PostgreSQL cluster (initdb + pg_ctl) on loopback: the local stand-in for Cloud SQL,
used by ``nox -s mlflow -- --postgres`` and by the tests."""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

USER = "housing"


class PostgresUnavailableError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _owner() -> dict[str, Any]:
    """initdb refuses to run as root: as root, run the server as an unprivileged account."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": pw.pw_uid, "group": pw.pw_gid}
    raise PostgresUnavailableError("running as root with no 'postgres' or 'nobody' account")


@contextlib.contextmanager
def cluster(databases: Sequence[str] = ("mlflow", "optuna")) -> Iterator[str]:
    """Start a cluster with these databases; yields ``postgresql+psycopg2://housing@127.0.0.1:
    <port>`` (append ``/<database>``). Stopped and deleted on exit, whatever happens."""
    for tool in ("initdb", "pg_ctl"):
        if shutil.which(tool) is None:
            raise PostgresUnavailableError(
                f"{tool} is not on PATH: install the PostgreSQL server binaries (v15+), e.g. "
                "`apt-get install postgresql`, and add their bin folder to PATH"
            )
    owner = _owner()
    root = Path(tempfile.mkdtemp(prefix="housing-pg-"))
    if owner:
        os.chown(root, owner["user"], owner["group"])
    data = root / "data"
    env = {**os.environ, "LC_ALL": "C"}
    run = functools.partial(subprocess.run, capture_output=True, env=env, cwd=root, **owner)
    started = False
    try:
        run(["initdb", "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"], check=True)
        port = free_port()
        opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
        log = str(root / "log")
        run(["pg_ctl", "-D", str(data), "-o", opts, "-l", log, "-w", "start"], check=True)
        started = True
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            for database in databases:
                cur.execute(f'CREATE DATABASE "{database}"')
        conn.close()
        yield f"postgresql+psycopg2://{USER}@127.0.0.1:{port}"
    finally:
        if started:
            run(["pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"], check=False)
        shutil.rmtree(root, ignore_errors=True)
