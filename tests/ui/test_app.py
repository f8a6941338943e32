"""The Streamlit page (AppTest) when the service refuses a batch: one line, no traceback."""

from __future__ import annotations

import contextlib
import http.server
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from model_runtime.contract import FEATURES
from tests.helpers import serve_http

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
TABLE = ",".join(FEATURES) + "\n-122.23,37.88,41,880,129,322,126,8.3252,NEAR BAY\n"


@contextlib.contextmanager
def refusing_service() -> Iterator[str]:
    """A loopback stand-in of the service: not ready, publishes its limits, and answers every
    predict 413, as a proxy with a smaller body limit in front of the service would."""
    answers = {
        "/health": (200, {"status": "ok", "detail": ""}),
        "/ready": (503, {"status": "not ready", "detail": "stand-in"}),
        "/api/v1/model": (200, {"max_instances": 1000, "max_body_bytes": 1_048_576}),
        "/api/v1/predict": (
            413,
            {"status_code": 413, "detail": "Request Entity Too Large", "errors": []},
        ),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            status, body = answers[self.path]
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self.answer()

        def do_POST(self) -> None:
            self.answer()

        def log_message(self, *args: object) -> None:
            pass

    with serve_http(Handler) as (_, url):
        yield url


def test_a_413_is_one_line_on_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamlit as st

    with refusing_service() as url:
        monkeypatch.setenv("API_URL", url)
        st.cache_resource.clear()
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.text_area(key="pasted").input(TABLE).run()
        at.button(key="price_table").click().run()
    assert not at.exception, at.exception
    refused = [e.value for e in at.error if "413" in e.value]
    assert refused == [
        f"The prediction service at {url} answered 413 to a batch of 1 house: Request Entity "
        "Too Large; check MAX_BODY_BYTES on the service (it accepts less than GET /api/v1/model "
        "publishes) and the body limit of any proxy in front of it."
    ]
