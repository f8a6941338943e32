"""The Monitoring page: drift per input over time, the latest report's verdict and plots,
realised error beside the test-side error when feedback exists, and the retrains started."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ui import charts
from ui.client import ServiceError
from ui.connection import client
from ui.wording import money, share


def realised_table(report: dict[str, Any]) -> pd.DataFrame:
    """Per version: labelled houses, realised RMSE and within-10% beside the test set's."""
    rows = []
    for entry in report.get("realised", []):
        realised = entry.get("realised") or {}
        test = entry.get("test") or {}
        rows.append(
            {
                "version": entry.get("model_version"),
                "labelled houses": realised.get("n", 0),
                "RMSE now": money(realised["rmse"]) if "rmse" in realised else "no labels yet",
                "RMSE on test": money(test["rmse"]) if "rmse" in test else "",
                "within 10% now": share(realised["within_10pct"])
                if "within_10pct" in realised
                else "",
                "within 10% on test": share(test["within_10pct"]) if "within_10pct" in test else "",
            }
        )
    return pd.DataFrame(rows)


def latest_section(report: dict[str, Any]) -> None:
    st.subheader(f"Latest window: {report.get('window', '')}")
    st.caption(
        f"{report.get('since', '')} to {report.get('until', '')}, serving version "
        f"{report.get('serving_version') or 'unknown'}; generated {report.get('generated_at', '')}"
    )
    for verdict in report.get("versions", []):
        line = (
            f"Version {verdict.get('model_version')}: {verdict.get('status')} on "
            f"{verdict.get('rows', 0):,} priced houses. {verdict.get('reason', '')}"
        )
        (st.warning if verdict.get("status") == "drift" else st.success)(line)
    realised = realised_table(report)
    if len(realised):
        st.markdown("**Realised error (houses whose sale price came back)**")
        st.dataframe(realised, hide_index=True, key="realised")
    else:
        st.caption("No realised error: no feedback (sale prices) in this window.")
    plots = report.get("plots", [])
    if plots:
        st.markdown("**The report's drift plots**")
        cols = st.columns(min(3, len(plots)))
        for i, key in enumerate(plots):
            try:
                cols[i % len(cols)].image(client().plot(key), caption=key.rsplit("/", 1)[-1])
            except ServiceError as exc:
                st.warning(str(exc))


def render() -> None:
    try:
        monitoring = client().operator("monitoring")
    except ServiceError as exc:
        st.error(str(exc))
        return
    reports = monitoring["reports"]
    if not reports:
        st.info("No monitor report yet: run `python -m pipeline monitor`.")
    else:
        points = charts.drift_points(reports)
        if len(points):
            st.altair_chart(charts.drift_over_time(points), key="drift_over_time")
        latest_section(reports[0])
    st.subheader("Retrains triggered")
    retrains = monitoring["retrains"]
    if not retrains:
        st.caption("None: the monitor has not started a retrain.")
    else:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "record": r.get("key"),
                        "reason": r.get("reason", ""),
                        "how": (r.get("started") or {}).get("how", r.get("how", "")),
                    }
                    for r in retrains
                ]
            ),
            hide_index=True,
            key="retrains",
        )
