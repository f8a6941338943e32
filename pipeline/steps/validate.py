"""Validate: types, ranges, categories and duplicates; bad rows are quarantined with a reason."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from model_runtime import contract
from pipeline import catalog
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.step_context import StepContext


def check(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into (valid, quarantined); quarantined rows carry a ``reason`` column."""
    reasons = pd.Series([""] * len(frame), index=frame.index, dtype=object)

    def flag(mask: pd.Series, reason: str) -> None:
        reasons[mask] = reasons[mask].where(reasons[mask] == "", reasons[mask] + "; ") + reason

    clean = frame.copy()
    for column in (*contract.NUMERIC_FEATURES, contract.TARGET):
        values = pd.to_numeric(frame[column], errors="coerce")
        not_numeric = values.isna() & frame[column].notna()
        flag(not_numeric, f"{column}: not a number")
        if column not in contract.NULLABLE:
            flag(values.isna() & frame[column].isna(), f"{column}: missing")
        flag(~np.isfinite(values.fillna(0.0)), f"{column}: not finite")
        bounds = contract.RANGES[column]
        out = values.notna() & ((values < bounds.min) | (values > bounds.max))
        flag(out, f"{column}: outside [{bounds.min:g}, {bounds.max:g}]")
        clean[column] = values.astype(float)

    category = frame[contract.CATEGORICAL].astype("string")
    known = category.isin(contract.OCEAN_PROXIMITY)
    flag(~known.fillna(False).astype(bool), f"{contract.CATEGORICAL}: unknown category")
    bedrooms_over = clean["total_bedrooms"] > clean["total_rooms"]
    flag(bedrooms_over.fillna(False), "total_bedrooms: more than total_rooms")
    duplicated = frame.drop(columns=[contract.ROW_ID]).duplicated(keep="first")
    flag(duplicated, "duplicate of an earlier row")

    bad = reasons != ""
    quarantined = frame[bad].astype(str).assign(reason=reasons[bad])
    clean[contract.CATEGORICAL] = category.astype(str)
    return clean[~bad].reset_index(drop=True), quarantined.reset_index(drop=True)


def report(valid: pd.DataFrame, quarantined: pd.DataFrame, max_bad_share: float) -> dict[str, Any]:
    total = len(valid) + len(quarantined)
    reasons = (
        quarantined["reason"].str.split("; ").explode().value_counts().to_dict()
        if len(quarantined)
        else {}
    )
    return {
        "rows": total,
        "valid": len(valid),
        "quarantined": len(quarantined),
        "bad_share": len(quarantined) / total if total else 1.0,
        "max_bad_share": max_bad_share,
        "reasons": {str(k): int(v) for k, v in reasons.items()},
        "missing": {c: int(valid[c].isna().sum()) for c in contract.FEATURES},
    }


def summary_markdown(rep: dict[str, Any]) -> str:
    lines = [
        "# Validation",
        "",
        f"{rep['valid']:,} of {rep['rows']:,} rows valid; {rep['quarantined']:,} quarantined "
        f"({rep['bad_share']:.2%}, limit {rep['max_bad_share']:.2%}).",
        "",
    ]
    if rep["reasons"]:
        lines += ["| reason | rows |", "| --- | ---: |"]
        lines += [f"| {k} | {v:,} |" for k, v in rep["reasons"].items()]
    missing = {k: v for k, v in rep["missing"].items() if v}
    if missing:
        lines += ["", "Missing values left for the model to impute: "]
        lines += [f"- {k}: {v:,}" for k, v in missing.items()]
    return "\n".join(lines) + "\n"


def run(ctx: StepContext) -> dict[str, Any]:
    raw = ctx.read_frame(catalog.RAW)
    valid, quarantined = check(raw)
    limit = ctx.settings.validate.max_bad_share
    rep = report(valid, quarantined, limit)
    if ctx.tracker:
        ctx.tracker.metrics({"valid": rep["valid"], "quarantined": rep["quarantined"]})
    if rep["bad_share"] > limit:
        top = ", ".join(f"{k} ({v})" for k, v in list(rep["reasons"].items())[:3])
        raise PipelineError(
            f"validate: {rep['quarantined']:,} of {rep['rows']:,} rows are bad "
            f"({rep['bad_share']:.1%} > validate.max_bad_share {limit:.1%}); top reasons: {top}"
        )
    ctx.write_frame(catalog.VALIDATED, valid)
    ctx.write_frame(catalog.QUARANTINE, quarantined)
    ctx.write_json("reports/validate.json", rep)
    ctx.write_bytes("reports/validate.md", summary_markdown(rep).encode())
    return {"valid": rep["valid"], "quarantined": rep["quarantined"]}
