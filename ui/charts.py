"""The console's charts, drawn from the data the service serves (altair, which Streamlit
brings). Pure: data in, chart out; the pages only place them.

No tile server is reachable from the UI, so maps draw California from the data's own
coordinates: thousands of test-side houses trace the state's shape well enough to place a house.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import pandas as pd

#: Pixels per degree of longitude; latitude is scaled by 1/cos(37°) to keep California's shape.
MAP_WIDTH = 420
MAP_HEIGHT = 460


def california(
    background: pd.DataFrame,
    houses: pd.DataFrame,
    color: str | None = None,
    width: int = MAP_WIDTH,
    height: int = MAP_HEIGHT,
) -> alt.LayerChart | alt.FacetChart:
    """``houses`` (longitude, latitude[, color field]) over the grey shape the ``background``
    houses trace, in an equirectangular projection centred on California."""
    projection = {"type": "equirectangular"}
    base = (
        alt.Chart(background[["longitude", "latitude"]])
        .mark_circle(size=6, color="#c8c8c8", opacity=0.6)
        .encode(longitude="longitude:Q", latitude="latitude:Q")
        .project(**projection)
    )
    marks = alt.Chart(houses).mark_circle(size=90 if len(houses) < 5 else 18, opacity=0.9)
    if color:
        top = (
            alt.Chart(houses)
            .mark_circle(size=18, opacity=0.8)
            .encode(
                longitude="longitude:Q",
                latitude="latitude:Q",
                color=alt.Color(
                    f"{color}:Q", title="predicted price (USD)", legend=alt.Legend(format="$,.0f")
                ),
                tooltip=[alt.Tooltip(f"{color}:Q", format="$,.0f")],
            )
        )
    else:
        top = marks.encode(
            longitude="longitude:Q", latitude="latitude:Q", color=alt.value("#d62728")
        )
    return alt.layer(base, top.project(**projection)).properties(width=MAP_WIDTH, height=MAP_HEIGHT)


def predicted_vs_actual(sample: pd.DataFrame) -> alt.LayerChart | alt.FacetChart:
    hi = float(max(sample["actual"].max(), sample["predicted"].max()))
    diagonal = pd.DataFrame({"actual": [0.0, hi], "predicted": [0.0, hi]})
    points = (
        alt.Chart(sample)
        .mark_circle(size=12, opacity=0.4)
        .encode(
            x=alt.X("actual:Q", title="actual price (USD)", axis=alt.Axis(format="$,.0f")),
            y=alt.Y("predicted:Q", title="predicted price (USD)", axis=alt.Axis(format="$,.0f")),
            tooltip=[
                alt.Tooltip("actual:Q", format="$,.0f"),
                alt.Tooltip("predicted:Q", format="$,.0f"),
                "ocean_proximity:N",
            ],
        )
    )
    line = alt.Chart(diagonal).mark_line(color="black").encode(x="actual:Q", y="predicted:Q")
    return alt.layer(points, line).properties(title="Predicted vs actual (test houses)")


def residuals(sample: pd.DataFrame) -> alt.LayerChart | alt.FacetChart:
    frame = sample.assign(residual=sample["actual"] - sample["predicted"])
    points = (
        alt.Chart(frame)
        .mark_circle(size=12, opacity=0.4)
        .encode(
            x=alt.X("predicted:Q", title="predicted price (USD)", axis=alt.Axis(format="$,.0f")),
            y=alt.Y("residual:Q", title="actual - predicted (USD)", axis=alt.Axis(format="$,.0f")),
        )
    )
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="black").encode(y="y:Q")
    return alt.layer(points, zero).properties(title="Residuals (test houses)")


def group_errors(rows: Sequence[Mapping[str, Any]], title: str, group: str) -> alt.Chart:
    frame = pd.DataFrame(list(rows))
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("group:N", title=group, sort=None),
            y=alt.Y("mae:Q", title="typical error (USD)", axis=alt.Axis(format="$,.0f")),
            tooltip=[
                alt.Tooltip("group:N", title=group),
                alt.Tooltip("mae:Q", title="typical error", format="$,.0f"),
                alt.Tooltip("rmse:Q", title="RMSE", format="$,.0f"),
                alt.Tooltip("rows:Q", title="test houses"),
            ],
        )
        .properties(title=title)
    )


def importances(rows: Sequence[Mapping[str, Any]]) -> alt.Chart:
    frame = pd.DataFrame(list(rows))
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X(
                "rmse_increase:Q",
                title="RMSE lost when shuffled (USD)",
                axis=alt.Axis(format="$,.0f"),
            ),
            y=alt.Y("feature:N", sort="-x", title=None),
        )
        .properties(title="What the model leans on")
    )


def price_histogram(prices: pd.Series) -> alt.Chart:
    frame = pd.DataFrame({"predicted_price": prices.astype(float)})
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X(
                "predicted_price:Q",
                bin=alt.Bin(maxbins=30),
                title="predicted price (USD)",
                axis=alt.Axis(format="$,.0f"),
            ),
            y=alt.Y("count():Q", title="houses"),
        )
        .properties(title="Predicted prices")
    )


def drift_over_time(points: pd.DataFrame) -> alt.LayerChart | alt.FacetChart:
    """``points``: window end, feature, value, threshold, drift — one line per input."""
    lines = (
        alt.Chart(points)
        .mark_line(point=True)
        .encode(
            x=alt.X("until:T", title="window end"),
            y=alt.Y("ratio:Q", title="drift statistic / its threshold"),
            color=alt.Color("feature:N", title="input"),
            tooltip=["feature:N", "until:T", "value:Q", "threshold:Q", "drift:N"],
        )
    )
    limit = alt.Chart(pd.DataFrame({"y": [1.0]})).mark_rule(color="red", strokeDash=[4, 4])
    return alt.layer(lines, limit.encode(y="y:Q")).properties(
        title="Drift per input over time (above the red line: drift)"
    )


def drift_points(reports: Sequence[Mapping[str, Any]], version: str | None = None) -> pd.DataFrame:
    """One row per (report, input) of the serving (or given) version: the statistic against
    its threshold, for :func:`drift_over_time`."""
    rows = []
    for report in reports:
        wanted = version or str(report.get("serving_version") or "")
        for verdict in report.get("versions", []):
            if wanted and str(verdict.get("model_version")) != wanted:
                continue
            for column in verdict.get("columns", []):
                threshold = float(column.get("threshold") or 0.0)
                value = float(column.get("value") or 0.0)
                rows.append(
                    {
                        "until": report.get("until"),
                        "feature": column.get("feature"),
                        "value": value,
                        "threshold": threshold,
                        "ratio": value / threshold if threshold else 0.0,
                        "drift": bool(column.get("drift")),
                        "model_version": str(verdict.get("model_version")),
                    }
                )
    return pd.DataFrame(
        rows,
        columns=["until", "feature", "value", "threshold", "ratio", "drift", "model_version"],
    )
