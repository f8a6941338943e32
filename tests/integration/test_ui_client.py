"""The UI's client and batch pricing against the real inference service."""

from __future__ import annotations

import contextlib
import http.server
from collections.abc import Iterator

import numpy as np
import pytest

from model_runtime import contract
from tests.helpers import free_port, serve_http
from ui.batch import missing_columns, price_table
from ui.client import ServiceClient, ServiceUnavailableError
from ui.settings import UISettings, from_env

STREAMLIT_PAGE = b"<!doctype html><html><head><title>Streamlit</title></head><body></body></html>"


@contextlib.contextmanager
def answering_html(
    status: int = 200, page: bytes = STREAMLIT_PAGE
) -> Iterator[tuple[str, list[str]]]:
    """A loopback server that answers every request with an HTML page, as Streamlit does (what
    the UI meets when API_URL points at the UI itself); yields its URL and the paths asked."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            asked.append(f"{self.command} {self.path}")
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            self.send_response(status)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def do_GET(self) -> None:
            self.answer()

        def do_POST(self) -> None:
            self.answer()

        def log_message(self, *args: object) -> None:
            pass

    with serve_http(Handler) as (_, url):
        yield url, asked


def test_an_answer_that_is_not_json_is_one_line_naming_api_url():
    with answering_html() as (url, asked):
        client = ServiceClient(UISettings(api_url=url, retries=3), sleep=lambda _: None)
        for call in (client.health, client.model, lambda: client.predict([{}])):
            with pytest.raises(ServiceUnavailableError) as err:
                call()
            message = str(err.value)
            assert f"service at {url} did not answer JSON (200, text/html; charset=utf-8)" in (
                message
            )
            assert "check API_URL" in message
            assert "\n" not in message
        client.close()
    # Something else answers at API_URL: asking again would not change that.
    assert asked == ["GET /health", "GET /api/v1/model", "POST /api/v1/predict"]


def test_a_proxys_error_page_is_retried_then_one_line():
    page = b"<html>\n<head><title>503 Service Unavailable</title></head>\n<body>\n</body>\n</html>"
    with answering_html(503, page) as (url, asked):
        client = ServiceClient(UISettings(api_url=url, retries=3), sleep=lambda _: None)
        with pytest.raises(ServiceUnavailableError) as err:
            client.model()
        client.close()
    assert len(asked) == 3
    assert "answered 503: <html> <head><title>503 Service Unavailable</title>" in str(err.value)
    assert "\n" not in str(err.value)


def test_table_with_bad_rows_prices_the_rest(service, housing_sample):
    frame = housing_sample[list(contract.FEATURES)].head(2500).copy()
    frame["latitude"] = frame["latitude"].astype(object)
    frame.loc[frame.index[10], "latitude"] = "north"
    frame.loc[frame.index[1200], "ocean_proximity"] = "MARS"
    frame.loc[frame.index[2499], "median_income"] = 99.0
    client = ServiceClient(UISettings(api_url=service.url))
    progress: list[float] = []
    priced, rejections = price_table(frame, client, on_progress=progress.append)
    client.close()
    assert rejections["row"].tolist() == [10, 1200, 2499]
    assert "latitude" in rejections["reason"][0]
    assert "ocean_proximity" in rejections["reason"][1]
    assert priced["predicted_price"].notna().sum() == 2497
    assert progress[-1] == 1.0
    assert len(progress) == 3
    assert np.isfinite(priced["predicted_price"].dropna()).all()


def test_missing_columns_are_named():
    import pandas as pd

    assert missing_columns(pd.DataFrame({"longitude": [1.0]}))[:2] == [
        "latitude",
        "housing_median_age",
    ]


def test_service_down_is_one_line_after_backoff():
    waits: list[float] = []
    client = ServiceClient(
        UISettings(api_url=f"http://127.0.0.1:{free_port()}", retries=3), sleep=waits.append
    )
    with pytest.raises(ServiceUnavailableError) as err:
        client.health()
    assert waits == [0.5, 1.0]
    assert "check API_URL" in str(err.value)
    assert "\n" not in str(err.value)


def test_every_request_carries_a_fresh_token_when_an_audience_is_set():
    """In both headers: Cloud Run's IAM reads X-Serverless-Authorization, the service's
    operator check the Authorization that Cloud Run passes on."""
    seen: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(
                (
                    self.headers.get("Authorization", ""),
                    self.headers.get("X-Serverless-Authorization", ""),
                )
            )
            body = b'{"status": "ok", "detail": ""}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    tokens = iter(["t1", "t2", "t3", "t4"])
    with serve_http(Handler) as (_, url):
        client = ServiceClient(
            UISettings(api_url=url, api_audience="https://api"), token=lambda: next(tokens)
        )
        assert client.health()[:2] == (True, True)
        client.close()
    assert seen == [("Bearer t1", "Bearer t1"), ("Bearer t2", "Bearer t2")]


def test_settings_from_environment():
    s = from_env({"API_URL": "http://svc:8080", "API_TIMEOUT_S": "2.5"})
    assert (s.api_url, s.timeout_s, s.api_audience) == ("http://svc:8080", 2.5, "")
