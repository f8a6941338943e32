"""One figure per drifted column: the reference (from its profile) against the window.

Numbers are drawn as cumulative distributions (the profile holds quantiles, not rows, and the
Wasserstein distance is the area between these two curves); categories as side-by-side shares.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import numpy as np

from pipeline.monitoring.drift import ColumnDrift
from pipeline.monitoring.profile import PREDICTION, Profile


def drift_figure(profile: Profile, entry: ColumnDrift, current: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    title = f"{entry.feature}: {entry.statistic} {entry.value:.3f} (threshold {entry.threshold:g})"
    if entry.kind == "categorical":
        ref = profile.categorical[entry.feature].shares()
        values = [str(v) for v in current if v is not None and v == v]
        keys = sorted(set(ref) | set(values))
        shares = [values.count(k) / max(len(values), 1) for k in keys]
        x = np.arange(len(keys))
        ax.bar(x - 0.2, [ref.get(k, 0.0) for k in keys], 0.4, label="reference")
        ax.bar(x + 0.2, shares, 0.4, label="window")
        ax.set_xticks(x, keys, rotation=20)
        ax.set_ylabel("share of houses")
    else:
        ref_col = (
            profile.predictions if entry.feature == PREDICTION else profile.numeric[entry.feature]
        )
        if ref_col.values is not None and ref_col.counts is not None:
            xs = np.asarray(ref_col.values, dtype=float)
            ps = np.cumsum(ref_col.counts) / ref_col.count
            ax.step(xs, ps, where="post", label="reference")
        else:
            ax.plot(
                np.asarray(ref_col.quantiles, dtype=float), profile.grid.levels(), label="reference"
            )
        cur = np.sort(np.asarray(current, dtype=float))
        cur = cur[np.isfinite(cur)]
        ax.step(cur, np.arange(1, cur.size + 1) / max(cur.size, 1), where="post", label="window")
        ax.set_xlabel(entry.feature)
        ax.set_ylabel("cumulative share")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    return fig


def png(figure: Any) -> bytes:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def close(figures: Iterable[Any]) -> None:
    import matplotlib.pyplot as plt

    for figure in figures:
        plt.close(figure)
