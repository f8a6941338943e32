"""Pipeline benchmark: the default run cold (fresh home), then again with nothing changed.

Prints per-step seconds for both runs, wall times including interpreter start-up, and the
warm/cold ratio. Run through `nox -s bench -- pipeline`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_COLD_S = 300.0
TARGET_WARM_S = 15.0


def run_once(home: Path) -> tuple[float, dict[str, tuple[str, float]]]:
    env = {**os.environ, "HOUSING_MLOPS_HOME": str(home)}
    began = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "run"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - began
    if out.returncode != 0:
        sys.exit(f"pipeline failed:\n{out.stderr[-2000:]}")
    steps: dict[str, tuple[str, float]] = {}
    table = out.stdout.split("step       status")[1].splitlines()[2:]
    for line in table:
        parts = line.split()
        if len(parts) == 3 and not line.startswith(("-", "total")):
            steps[parts[0]] = (parts[1], float(parts[2]))
    return wall, steps


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="housing-bench-") as tmp:
        home = Path(tmp)
        cold_wall, cold = run_once(home)
        warm_wall, warm = run_once(home)
        evaluation = (home / "artifacts/reports/evaluate.json").read_text()
    print(f"{'step':<10} {'cold s':>8} {'warm s':>8}  warm status")
    for name, (_, seconds) in cold.items():
        status, warm_s = warm[name]
        print(f"{name:<10} {seconds:>8.2f} {warm_s:>8.2f}  {status}")
    print(f"{'wall':<10} {cold_wall:>8.1f} {warm_wall:>8.1f}")
    print(
        f"cold run {cold_wall:.1f}s (target < {TARGET_COLD_S:.0f}s): "
        f"{'OK' if cold_wall < TARGET_COLD_S else 'OVER'}"
    )
    print(
        f"warm run {warm_wall:.1f}s (target < {TARGET_WARM_S:.0f}s): "
        f"{'OK' if warm_wall < TARGET_WARM_S else 'OVER'}"
    )
    print(f"warm/cold ratio: {warm_wall / cold_wall:.3f}")
    print("test metrics:", evaluation.split('"test_metrics":')[1].split("}")[0].strip() + "}")


if __name__ == "__main__":
    main()
