"""Batch benchmark: a million houses priced by `python -m pipeline batch`, on the grid and off it.

Houses are resampled from the data set (generated in a temporary folder, never committed) with
every count and the income jittered by up to 3% (kept within the contract's ranges); on the grid,
coordinates move by whole 0.01° steps (up to 3 each way), as houses at known places do; off the
grid, by a uniform amount within ±0.01° that leaves them between grid points, as real addresses
are. Each set is priced by `python -m pipeline batch --tasks <cores>` into parquet: wall time,
rows/s, the peak memory of its largest process (a task), and the share of houses off the grid.
Beside each, the same houses through the online service: `python -m service` on loopback (one
process, as on Cloud Run), 20,000 of them in requests of 1,000, two requests at a time: houses/s.

Needs a champion: it uses $HOUSING_MLOPS_HOME (default ./.housing-mlops), so run
`nox -s pipeline` first. $BENCH_BATCH_ROWS changes the million; $BENCH_BATCH_TASKS the tasks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from model_runtime.contract import FEATURES, NUMERIC_FEATURES, RANGES
from tests.helpers import free_port, http_status, running, wait_until

ROOT = Path(__file__).parents[2]
ROWS = int(os.environ.get("BENCH_BATCH_ROWS", "1000000"))
TASKS = int(os.environ.get("BENCH_BATCH_TASKS", str(os.cpu_count() or 1)))
ONLINE_ROWS = 20_000
REQUEST = 1_000
PREDICT = "/api/v1/predict"
JSON = {"content-type": "application/json"}
COUNTS = [n for n in NUMERIC_FEATURES if n not in ("longitude", "latitude")]

#: Runs a command and prints the peak resident memory of its largest process (KiB) last.
PEAK = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(rc)"
)


def houses(grid: bool, seed: int) -> pd.DataFrame:
    from pipeline.settings import IngestConfig
    from pipeline.steps import ingest

    data, _ = ingest.load(IngestConfig())
    rng = np.random.default_rng(seed)
    frame = data[list(FEATURES)].sample(ROWS, replace=True, random_state=seed)
    frame = frame.reset_index(drop=True)
    for name in COUNTS:
        jittered = frame[name] * rng.uniform(0.97, 1.03, ROWS)
        frame[name] = jittered.clip(RANGES[name].min, RANGES[name].max)
    for name in ("longitude", "latitude"):
        if grid:
            moved = frame[name] + rng.integers(-3, 4, ROWS) * 0.01
            frame[name] = moved.round(2)
        else:
            frame[name] = frame[name] + rng.uniform(0.0005, 0.0095, ROWS) * rng.choice(
                [-1, 1], ROWS
            )
        frame[name] = frame[name].clip(RANGES[name].min, RANGES[name].max)
    frame.insert(0, "house_id", np.arange(ROWS))
    return frame


def off_grid_share(frame: pd.DataFrame) -> float:
    scaled = frame[["longitude", "latitude"]].to_numpy() * 100
    return float(np.mean(np.any(np.abs(scaled - np.round(scaled)) > 1e-6, axis=1)))


def priced(src: Path, dst: Path, env: dict[str, str]) -> tuple[float, float, dict]:
    """Seconds, peak MiB of the largest process, and the manifest."""
    argv = [sys.executable, "-m", "pipeline", "batch", "--input", str(src), "--output", str(dst)]
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *argv, "--tasks", str(TASKS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"batch failed: {done.stderr.strip()}")
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return seconds, peak_kib / 1024, json.loads((dst / "_manifest.json").read_text())


def online(frame: pd.DataFrame, env: dict[str, str], log: Path) -> tuple[float, str]:
    """Houses/s through the online service: ``python -m service`` (one process, as on Cloud Run)
    on loopback, the prediction log off (a bench writes nothing to the home), answering
    ``ONLINE_ROWS`` of the same houses in requests of ``REQUEST``, two at a time (as the batch
    has two tasks), over keep-alive connections."""
    import httpx

    rows = frame[list(FEATURES)].head(ONLINE_ROWS).astype(object)
    records = rows.where(rows.notna(), None).to_dict("records")
    bodies = [
        json.dumps({"instances": records[i : i + REQUEST]}).encode()
        for i in range(0, len(records), REQUEST)
    ]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    served = env | {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "PREDICTION_LOG": "false",
        "MAX_INSTANCES": str(REQUEST),
    }
    argv = [sys.executable, "-m", "service"]
    with running(argv, log=log, env=served) as proc:
        status = wait_until(
            lambda: (http_status(base + "/ready", timeout=1) or 0) in (200, 503) or None,
            "the service answering /ready",
            process=proc,
            log=log,
        )
        if status and http_status(base + "/ready") != 200:
            sys.exit("the service has no model: run `nox -s pipeline` first")
        with httpx.Client(base_url=base, timeout=60) as client:
            info = client.get("/api/v1/model").json()
            client.post(PREDICT, content=bodies[0], headers=JSON).raise_for_status()  # warm
            began = time.perf_counter()
            with ThreadPoolExecutor(2) as pool:
                for answer in pool.map(
                    lambda body: client.post(PREDICT, content=body, headers=JSON), bodies
                ):
                    answer.raise_for_status()
            seconds = time.perf_counter() - began
    return len(records) / seconds, str(info.get("runtime", "?"))


def main() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    home = os.environ.get("HOUSING_MLOPS_HOME", ".housing-mlops")
    env = {
        **os.environ,
        "HOUSING_MLOPS_HOME": home,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    print(f"{ROWS:,} houses a set, {TASKS} task(s), {os.cpu_count()} CPU(s); home {home}")
    header = (
        f"{'set':<9} {'off grid':>8} {'seconds':>8} {'rows/s':>9} {'peak MiB':>9} "
        f"{'runtime':>12} {'online houses/s':>16}"
    )
    print(header)
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        for name, grid, seed in (("on grid", True, 1), ("off grid", False, 2)):
            frame = houses(grid, seed)
            src = Path(tmp) / f"{name.replace(' ', '-')}.parquet"
            frame.to_parquet(src, index=False, row_group_size=65_536)
            share = off_grid_share(frame)
            per_s, runtime = online(frame, env, Path(tmp) / "service.log")
            del frame
            seconds, peak, found = priced(src, Path(tmp) / f"{src.stem}-out", env)
            print(
                f"{name:<9} {share:>8.1%} {seconds:>8.1f} {found['rows'] / seconds:>9,.0f} "
                f"{peak:>9,.0f} {found['parts'][0]['runtime']:>12} {per_s:>16,.0f}"
                f"   ({found['rejected']:,} rejected, version {found['model_version']}, online "
                f"{runtime})"
            )


if __name__ == "__main__":
    main()
