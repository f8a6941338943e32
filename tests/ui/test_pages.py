"""The console's pages (AppTest) against a loopback stand-in of the service's operator
endpoints: metrics in words and units, champion beside challenger, and one line naming the
source when the service says a source is down."""

from __future__ import annotations

import contextlib
import http.server
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import serve_http
from ui import charts, releases_page
from ui.wording import band_words, income_band, metric_words, typical_error_for

METRICS = {"mae": 25320.4, "rmse": 39396.2, "within_10pct": 0.41, "mape": 0.172, "r2": 0.83}
GROUPS = [
    {"group": "1", "rows": 40, "mae": 21000, "rmse": 30000, "mape": 0.3, "within_10pct": 0.3},
    {"group": "5", "rows": 90, "mae": 52000, "rmse": 70000, "mape": 0.12, "within_10pct": 0.5},
]
EVALUATION: dict[str, Any] = {
    "name": "housing-price",
    "version": "2",
    "family": "hist_gradient_boosting",
    "test_rows": 600,
    "test_metrics": METRICS,
    "errors_by_income": GROUPS,
    "errors_by_ocean_proximity": [{**GROUPS[0], "group": "INLAND"}],
    "importances": [{"feature": "median_income", "rmse_increase": 40000.0, "std": 900.0}],
    "sample": [
        {
            "longitude": -122.2,
            "latitude": 37.8,
            "median_income": 8.3,
            "income_band": "5",
            "ocean_proximity": "NEAR BAY",
            "actual": 452600.0,
            "predicted": 430000.0,
        }
    ],
    "plots": [],
}
MODELS = {
    "name": "housing-price",
    "served_version": "2",
    "versions": [
        {
            "version": "3",
            "aliases": ["challenger"],
            "trained_at": "2026-11-30T10:00:00+00:00",
            "family": "hist_gradient_boosting",
            "test_metrics": {**METRICS, "mae": 24100.0},
            "promotion": "",
        },
        {
            "version": "2",
            "aliases": ["champion"],
            "trained_at": "2026-11-29T10:00:00+00:00",
            "family": "hist_gradient_boosting",
            "test_metrics": METRICS,
            "promotion": "no champion yet",
        },
    ],
}
REGISTRY_DOWN = (
    503,
    {
        "status_code": 503,
        "detail": "model registry (MLflow at http://127.0.0.1:1) failed: ConnectionError",
        "source": "model registry",
    },
)


@contextlib.contextmanager
def operator_service(answers: dict[str, tuple[int, Any]]) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = answers.get(urlparse(self.path).path, (404, {"detail": "no"}))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    with serve_http(Handler) as (_, url):
        yield url


def page(module: str, url: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    import streamlit as st

    monkeypatch.setenv("API_URL", url)
    monkeypatch.setenv("API_RETRIES", "1")
    st.cache_resource.clear()
    st.cache_data.clear()
    script = f"from ui import {module}\n{module}.render()\n"
    return AppTest.from_string(script, default_timeout=60).run()


def test_metrics_read_in_words_and_units():
    words = {label: value for label, value, _ in metric_words(METRICS)}
    assert words == {
        "Typical error": "$25,320",
        "RMSE": "$39,396",
        "Houses within 10%": "41%",
        "Relative error": "17.2%",
        "Variation explained": "83%",
    }


@pytest.mark.parametrize(
    ("income", "band"), [(0.5, "1"), (1.5, "1"), (1.6, "2"), (5.9, "4"), (8.3, "5"), (15.0, "5")]
)
def test_a_house_gets_the_pipelines_income_band(income, band):
    assert income_band(income) == band


def test_the_typical_error_is_its_bands():
    assert typical_error_for(GROUPS, 8.3) == ("5", 52000.0)
    assert typical_error_for(GROUPS, 2.0) is None
    assert band_words("5") == "median income above $60,000"
    assert band_words("2") == "median income $15,000 to $30,000"


def test_the_models_page_sets_champion_beside_challenger(monkeypatch):
    answers = {
        "/api/v1/operator/models": (200, MODELS),
        "/api/v1/operator/models/2/evaluation": (200, EVALUATION),
    }
    with operator_service(answers) as url:
        at = page("models_page", url, monkeypatch)
    assert not at.exception, at.exception
    shown = [(m.label, m.value) for m in at.metric]
    # Champion's column first, then the challenger's.
    assert shown[0] == ("Typical error", "$25,320")
    assert ("Typical error", "$24,100") in shown[5:]
    assert ("RMSE", "$39,396") in shown
    table = at.dataframe[0].value
    assert list(table["aliases"]) == ["@challenger", "@champion"]
    assert list(table["typical error"]) == ["$24,100", "$25,320"]
    assert at.selectbox(key="version").value == "2"
    assert len(at.get("vega_lite_chart")) == 5


def test_a_source_down_is_one_line_naming_it(monkeypatch):
    with operator_service({"/api/v1/operator/models": REGISTRY_DOWN}) as url:
        at = page("models_page", url, monkeypatch)
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [
        "The model registry is down: model registry (MLflow at http://127.0.0.1:1) failed: "
        "ConnectionError"
    ]


def test_the_releases_page_says_there_is_no_rollout_yet(monkeypatch):
    answers = {
        "/api/v1/operator/release": (
            200,
            {"published": False, "feed": None, "key": "releases/feed.json", "split": None},
        ),
        "/api/v1/operator/shadow": (200, {"kind": "shadow report", "prefix": "s", "entries": []}),
        "/api/v1/operator/rollouts": (200, {"kind": "rollout", "prefix": "r", "entries": []}),
    }
    with operator_service(answers) as url:
        at = page("releases_page", url, monkeypatch)
    assert not at.exception, at.exception
    said = [i.value for i in at.info]
    assert said[0].startswith("No traffic split published yet")
    assert said[1].startswith("No rollout yet")
    assert said[2] == "No shadow report yet."


def test_the_audit_log_reads_as_a_timeline_of_verdicts():
    entries: list[dict[str, Any]] = [
        {"key": "b", "at": 1764500000, "step": "canary 50%", "verdict": "rollback",
         "reasons": ["errors 2.1% > 1%", "p99 +40 ms"]},
        {"key": "a", "at": "2025-11-30T10:00:00+00:00", "step": "canary 10%", "verdict": "pass"},
    ]  # fmt: skip
    frame = releases_page.timeline(entries)
    assert list(frame["step"]) == ["canary 10%", "canary 50%"]
    assert list(frame["verdict"]) == ["pass", "rollback"]
    assert frame["reasons"][1] == "errors 2.1% > 1%; p99 +40 ms"


def test_drift_points_follow_the_serving_version_over_windows():
    column = {"feature": "median_income", "value": 0.2, "threshold": 0.1, "drift": True}
    reports = [
        {"until": "2026-11-30", "serving_version": "2",
         "versions": [{"model_version": "2", "columns": [column]},
                      {"model_version": "1", "columns": [column]}]},
        {"until": "2026-11-29", "serving_version": "2",
         "versions": [{"model_version": "2", "columns": [{**column, "value": 0.05}]}]},
    ]  # fmt: skip
    points = charts.drift_points(reports)
    assert list(points["ratio"]) == [2.0, 0.5]
    assert set(points["model_version"]) == {"2"}


def test_the_rollout_controllers_own_records_read_as_steps():
    """Records as rollout/audit.py writes them: what they say sits under ``data``."""
    import msgspec

    from rollout.audit import Record

    records = [
        Record(seq=1, time=1764500000.0, kind="start", holder="h", data={"model_version": 2}),
        Record(seq=2, time=1764500060.0, kind="verdict", holder="h",
               data={"step": "canary 5%", "decision": "rollback", "outcome": "fail",
                     "reason": "errors 2.0% > 1.0%", "verdict": {"outcome": "fail"}}),
    ]  # fmt: skip
    frame = releases_page.timeline([msgspec.to_builtins(r) for r in reversed(records)])
    assert list(frame["step"]) == ["start", "canary 5%"]
    assert list(frame["verdict"]) == ["", "rollback"]
    assert frame["reasons"][1] == "errors 2.0% > 1.0%"
    assert frame["time"][1] == "2025-11-30T10:54:20+00:00"


def test_a_shadow_reports_nested_figures_are_shown():
    report = {"key": "shadow/3/w.json", "window": "w", "agreement": {"n": 400, "within_5pct": 0.9},
              "outcomes": {"mirrored": 410}, "mean_batch_houses": 1.0, "ok": True}  # fmt: skip
    assert releases_page.numbers(report) == {
        "agreement n": 400.0,
        "agreement within 5pct": 0.9,
        "outcomes mirrored": 410.0,
        "mean batch houses": 1.0,
    }


def test_every_chart_is_a_valid_vega_lite_spec():
    """altair checks a chart against Vega-Lite's schema only when it is drawn: a wrong
    parameter (``format`` on a colour) broke the table's map on the page."""
    import pandas as pd

    sample = pd.DataFrame(EVALUATION["sample"])
    houses = sample.assign(predicted_price=sample["predicted"])
    drawn = [
        charts.california(sample, houses.head(1)),
        charts.california(sample, houses, color="predicted_price"),
        charts.predicted_vs_actual(sample),
        charts.residuals(sample),
        charts.group_errors(GROUPS, "t", "income band"),
        charts.importances(EVALUATION["importances"]),
        charts.price_histogram(houses["predicted_price"]),
        charts.drift_over_time(
            charts.drift_points([{"until": "2026-11-30", "serving_version": "2",
                                  "versions": [{"model_version": "2", "columns": [
                                      {"feature": "a", "value": 0.2, "threshold": 0.1}]}]}])
        ),
    ]  # fmt: skip
    for chart in drawn:
        assert chart.to_dict()["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
