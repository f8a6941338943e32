"""The UI's client and batch pricing against the real inference service."""

from __future__ import annotations

import http.server
import threading

import numpy as np
import pytest

from pipeline import schema
from tests.conftest import free_port
from ui.batch import missing_columns, price_table
from ui.client import ServiceClient, ServiceUnavailableError
from ui.settings import UISettings, from_env


def test_table_with_bad_rows_prices_the_rest(service, housing_sample):
    frame = housing_sample[list(schema.FEATURES)].head(2500).copy()
    frame["latitude"] = frame["latitude"].astype(object)
    frame.loc[frame.index[10], "latitude"] = "north"
    frame.loc[frame.index[1200], "ocean_proximity"] = "MARS"
    frame.loc[frame.index[2499], "median_income"] = 99.0
    client = ServiceClient(UISettings(api_url=service.url))
    progress: list[float] = []
    priced, rejections = price_table(frame, client, batch_size=1000, on_progress=progress.append)
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
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            body = b'{"status": "ok", "detail": ""}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tokens = iter(["t1", "t2", "t3", "t4"])
    try:
        client = ServiceClient(
            UISettings(
                api_url=f"http://127.0.0.1:{server.server_address[1]}", api_audience="https://api"
            ),
            token=lambda: next(tokens),
        )
        assert client.health()[:2] == (True, True)
        client.close()
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["Bearer t1", "Bearer t2"]


def test_settings_from_environment():
    s = from_env({"API_URL": "http://svc:8080", "API_TIMEOUT_S": "2.5"})
    assert (s.api_url, s.timeout_s, s.api_audience) == ("http://svc:8080", 2.5, "")
