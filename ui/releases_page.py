"""The Releases page: the live traffic split (revisions, model versions, percents, tag URLs),
the published release feed (shadow phase), the shadow agreement reports and the rollout audit
log as a timeline of verdicts with their reasons.

The records are written by the release tooling; this page reads them through the service and
shows what they hold, naming the fields it knows (time, step, verdict, reasons) and listing the
rest, so a record with more fields still shows whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from ui.client import ServiceError
from ui.connection import client

TIME_FIELDS = ("at", "time", "timestamp", "decided_at", "started_at", "updated_at", "generated_at")
VERDICT_FIELDS = ("decision", "verdict", "outcome", "status", "action")
STEP_FIELDS = ("step", "phase", "stage", "event", "kind")
REASON_FIELDS = ("reasons", "reason", "why", "detail")


def first(record: Mapping[str, Any], fields: Sequence[str]) -> Any:
    """The first of ``fields`` the record holds as text, a number or a list of text; the audit
    log's records (rollout/audit.py) keep what they say under ``data``."""
    merged = {**record, **(record.get("data") or {})}
    for field in fields:
        value = merged.get(field)
        if value in (None, "", []) or isinstance(value, dict):
            continue
        return value
    return None


def numbers(report: Mapping[str, Any]) -> dict[str, float]:
    """A report's figures, nested ones one level down (``agreement within 5pct``)."""
    out: dict[str, float] = {}
    for key, value in report.items():
        if isinstance(value, dict):
            for inner, v in value.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    out[f"{key} {inner}".replace("_", " ")] = float(v)
        elif isinstance(value, int | float) and not isinstance(value, bool) and key != "key":
            out[key.replace("_", " ")] = float(value)
    return out


def when(value: Any) -> str:
    """A record's time as ISO text (Unix seconds are converted)."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
    return str(value or "")


def reasons_text(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return str(value or "")


def timeline(entries: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per audit record: time, step, verdict, reasons; oldest first."""
    rows = [
        {
            "time": when(first(e, TIME_FIELDS)),
            "step": str(first(e, STEP_FIELDS) or ""),
            "verdict": str(first(e, VERDICT_FIELDS) or ""),
            "reasons": reasons_text(first(e, REASON_FIELDS)),
        }
        for e in entries
    ]
    frame = pd.DataFrame(rows, columns=["time", "step", "verdict", "reasons"])
    return frame.sort_values("time", kind="stable", ignore_index=True)


def timeline_chart(frame: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(frame.assign(when=pd.to_datetime(frame["time"], errors="coerce", utc=True)))
        .mark_circle(size=160)
        .encode(
            x=alt.X("when:T", title="time"),
            y=alt.Y("verdict:N", title="verdict"),
            color=alt.Color("verdict:N", legend=None),
            tooltip=["time:N", "step:N", "verdict:N", "reasons:N"],
        )
        .properties(title="Rollout steps", height=180)
    )


def split_frame(split: Mapping[str, Any]) -> pd.DataFrame:
    """One row per serving or tagged revision: its name, model version, percent and tags."""
    rows = [
        {
            "revision": r["revision"],
            "model version": int(r.get("model_version") or 0),
            "percent": int(r.get("percent") or 0),
            "tags": ", ".join(t["tag"] for t in r.get("tags") or []),
        }
        for r in split.get("revisions") or []
    ]
    return pd.DataFrame(rows, columns=["revision", "model version", "percent", "tags"])


def split_chart(frame: pd.DataFrame) -> alt.Chart:
    """The requests each revision answers, as one stacked bar of 100%."""
    return (
        alt.Chart(frame.assign(share=frame["percent"] / 100, traffic="requests"))
        .mark_bar(size=28)
        .encode(
            x=alt.X(
                "share:Q",
                title="share of requests",
                stack="zero",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1]),
            ),
            y=alt.Y("traffic:N", title=None, axis=None),
            color=alt.Color("revision:N", legend=alt.Legend(orient="bottom", title=None)),
            tooltip=["revision:N", "model version:Q", "percent:Q", "tags:N"],
        )
        .properties(title="Live traffic split", height=60)
    )


def split_section(split: Mapping[str, Any] | None) -> None:
    if not split or not split.get("revisions"):
        st.info("No traffic split published yet (releases/split.json): a release command does.")
        return
    frame = split_frame(split)
    st.altair_chart(split_chart(frame), key="traffic_split")
    for r in split["revisions"]:
        tags = " · ".join(f"{t['tag']}: {t['url']}" for t in r.get("tags") or [] if t.get("url"))
        version = int(r.get("model_version") or 0)
        served = f"model version {version}" if version else "model version unknown"
        st.markdown(
            f"**{r['revision']}** — {served} — {int(r.get('percent') or 0)}% of requests"
            + (f"  \n{tags}" if tags else "")
        )
    updated = split.get("updated_at")
    if updated:
        st.caption(f"Published {when(updated)}")


def release_section() -> None:
    st.subheader("Live release")
    try:
        release = client().operator("release")
    except ServiceError as exc:
        st.error(str(exc))
        return
    split_section(release.get("split"))
    if not release.get("published"):
        st.info("No rollout yet: no release has been published (releases/feed.json).")
        return
    feed = release.get("feed") or {}
    shown = {k: (when(v) if k.endswith("_at") else v) for k, v in feed.items()}
    with st.expander("Release feed (what the stable revision mirrors)"):
        st.table(pd.DataFrame({"field": list(shown), "value": [str(v) for v in shown.values()]}))


def shadow_section() -> None:
    st.subheader("Shadow agreement")
    try:
        entries = client().operator("shadow")["entries"]
    except ServiceError as exc:
        st.error(str(exc))
        return
    if not entries:
        st.info("No shadow report yet.")
        return
    latest = entries[0]
    figures = numbers(latest)
    cols = st.columns(max(1, min(4, len(figures))))
    for i, (name, value) in enumerate(figures.items()):
        cols[i % len(cols)].metric(name, f"{value:,.4g}")
    st.caption(f"Latest of {len(entries)} report(s): {latest['key']}")
    with st.expander("The latest report as written"):
        st.json(latest)


def rollout_section() -> None:
    st.subheader("Rollout audit log")
    try:
        entries = client().operator("rollouts")["entries"]
    except ServiceError as exc:
        st.error(str(exc))
        return
    if not entries:
        st.info("No rollout yet: the audit log is empty.")
        return
    frame = timeline(entries)
    st.altair_chart(timeline_chart(frame), key="rollout_timeline")
    for row in frame.itertuples():
        said = ". ".join(part for part in (str(row.verdict), str(row.reasons)) if part)
        st.markdown(f"`{row.time}` **{row.step}**" + (f": {said}" if said else ""))


def render() -> None:
    release_section()
    shadow_section()
    rollout_section()
