"""The newest model against the champion, as a Markdown table (the retrain workflow's summary).

Reads the test metrics the register step tags on each version (``test_rmse``, ``test_r2``…).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model_runtime.loader import metrics_of

#: Metrics shown, and whether lower is better.
METRICS = {"rmse": True, "mae": True, "mape": True, "r2": False}


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def comparison(challenger: Mapping[str, Any], champion: Mapping[str, Any] | None) -> str:
    """``challenger``/``champion``: {"version": …, "tags": {…}}; champion None before the first."""
    new = metrics_of(challenger["tags"])
    old = metrics_of(champion["tags"]) if champion else {}
    header = f"| metric | challenger v{challenger['version']} |"
    rule = "| --- | ---: |"
    if champion:
        header += f" champion v{champion['version']} | change |"
        rule += " ---: | --- |"
    lines = [header, rule]
    for metric, lower_is_better in METRICS.items():
        if metric not in new:
            continue
        row = f"| {metric} | {_number(new[metric])} |"
        if champion and metric in old:
            delta = new[metric] - old[metric]
            better = delta < 0 if lower_is_better else delta > 0
            verdict = "same" if delta == 0 else ("better" if better else "worse")
            relative = f"{delta / old[metric]:+.1%}" if old[metric] else f"{delta:+.4g}"
            row += f" {_number(old[metric])} | {relative} ({verdict}) |"
        lines.append(row)
    if champion is None:
        lines.append("\nNo champion yet: this version was promoted.")
    elif str(challenger["version"]) == str(champion["version"]):
        lines.append(f"\nv{champion['version']} is both challenger and champion.")
    return "\n".join(lines)
