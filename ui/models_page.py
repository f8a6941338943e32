"""The Models page: every registered version with its aliases and test metrics in words,
champion beside challenger, and the selected version's evaluation drawn from its data."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ui import charts
from ui.client import ServiceError
from ui.connection import client
from ui.wording import metric_words, money, share

CHAMPION = "champion"
CHALLENGER = "challenger"


def versions_table(versions: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per version, metrics in units."""
    rows = []
    for v in versions:
        m = v.get("test_metrics", {})
        rows.append(
            {
                "version": v["version"],
                "aliases": ", ".join(f"@{a}" for a in v.get("aliases", [])),
                "typical error": money(m["mae"]) if "mae" in m else "",
                "RMSE": money(m["rmse"]) if "rmse" in m else "",
                "within 10%": share(m["within_10pct"]) if "within_10pct" in m else "",
                "family": v.get("family", ""),
                "trained": v.get("trained_at", ""),
            }
        )
    return pd.DataFrame(rows)


def by_alias(versions: list[dict[str, Any]], alias: str) -> dict[str, Any] | None:
    return next((v for v in versions if alias in v.get("aliases", [])), None)


def side_by_side(versions: list[dict[str, Any]]) -> None:
    champion, challenger = by_alias(versions, CHAMPION), by_alias(versions, CHALLENGER)
    for alias, version in ((CHAMPION, champion), (CHALLENGER, challenger)):
        if version is None:
            st.markdown(f"**@{alias}**: none")
            continue
        st.markdown(f"**@{alias}: version {version['version']}** ({version.get('family', '')})")
        words = metric_words(version.get("test_metrics", {}))
        for col, (name, value, meaning) in zip(st.columns(max(1, len(words))), words, strict=False):
            col.metric(name, value, help=meaning)
    if champion and challenger and champion["version"] == challenger["version"]:
        st.caption("The challenger is the champion: the newest version was promoted.")


def evaluation_charts(evaluation: dict[str, Any]) -> None:
    sample = pd.DataFrame(evaluation.get("sample", []))
    if len(sample):
        a, b = st.columns(2)
        a.altair_chart(charts.predicted_vs_actual(sample), key="predicted_vs_actual")
        b.altair_chart(charts.residuals(sample), key="residuals")
    else:
        st.info("This version's evaluation keeps no test-side sample: no scatter plots.")
    a, b = st.columns(2)
    a.altair_chart(
        charts.group_errors(
            evaluation["errors_by_income"], "Typical error per income band", "income band"
        ),
        key="errors_by_income",
    )
    b.altair_chart(
        charts.group_errors(
            evaluation["errors_by_ocean_proximity"],
            "Typical error per ocean proximity",
            "ocean proximity",
        ),
        key="errors_by_ocean",
    )
    st.altair_chart(charts.importances(evaluation["importances"]), key="importances")
    if evaluation.get("plots"):
        with st.expander("The evaluate step's own plots (PNG)"):
            for key in evaluation["plots"]:
                try:
                    st.image(client().plot(key), caption=key.rsplit("/", 1)[-1])
                except ServiceError as exc:
                    st.warning(str(exc))


def render() -> None:
    try:
        models = client().operator("models")
    except ServiceError as exc:
        st.error(str(exc))
        return
    versions = models["versions"]
    if not versions:
        st.info(f"No version of {models['name']} is registered yet: run the pipeline.")
        return
    served = models.get("served_version", "")
    st.write(
        f"{models['name']}: {len(versions)} registered version(s); this service answers with "
        f"version {served or 'none'}."
    )
    st.dataframe(versions_table(versions), hide_index=True, key="versions")
    side_by_side(versions)
    numbers = [v["version"] for v in versions]
    champion = by_alias(versions, CHAMPION)
    start = numbers.index(champion["version"]) if champion else 0
    chosen = st.selectbox("Version to look at", numbers, index=start, key="version")
    try:
        evaluation = client().operator(f"models/{chosen}/evaluation")
    except ServiceError as exc:
        st.warning(f"No evaluation for version {chosen}: {exc}")
        return
    st.subheader(f"Version {chosen} on its {evaluation.get('test_rows', 0):,} test houses")
    evaluation_charts(evaluation)
