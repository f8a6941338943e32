"""A stand-in for Cloud Monitoring's ``projects.timeSeries.list`` on loopback: it answers the
request counts it is given, per revision and response class, in the API's JSON shape (values as
``int64Value`` strings, one point a minute, ``nextPageToken`` paging), and keeps every request
it was sent so a test can check the query."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.helpers import serve_http


@dataclass
class Sent:
    path: str
    params: dict[str, list[str]]
    authorization: str


@dataclass
class FakeMonitoring:
    """``counts[revision] = (requests, 5xx)``; ``through`` is the end of the newest point (Unix
    seconds; None: the time of the request); ``status`` other than 200 answers that error."""

    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    through: float | None = None
    status: int = 200
    page_size: int = 100
    sent: list[Sent] = field(default_factory=list)
    url: str = ""

    def series(self, params: dict[str, list[str]]) -> list[dict[str, Any]]:
        asked = set(re.findall(r'revision_name = "([^"]+)"', params["filter"][0]))
        end = self.through if self.through is not None else datetime.now(UTC).timestamp()
        stamp = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        start = datetime.fromtimestamp(end - 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out = []
        for revision, (requests, errors) in sorted(self.counts.items()):
            if revision not in asked:
                continue
            for code_class, n in (("2xx", requests - errors), ("5xx", errors)):
                if n:
                    out.append(
                        {
                            "metric": {
                                "type": "run.googleapis.com/request_count",
                                "labels": {"response_code_class": code_class},
                            },
                            "resource": {
                                "type": "cloud_run_revision",
                                "labels": {"revision_name": revision, "project_id": "p"},
                            },
                            "metricKind": "DELTA",
                            "valueType": "INT64",
                            "points": [
                                {
                                    "interval": {"startTime": start, "endTime": stamp},
                                    "value": {"int64Value": str(n)},
                                }
                            ],
                        }
                    )
        return out

    def answer(self, params: dict[str, list[str]]) -> dict[str, Any]:
        series = self.series(params)
        offset = int(params.get("pageToken", ["0"])[0])
        page: dict[str, Any] = {"timeSeries": series[offset : offset + self.page_size]}
        if offset + self.page_size < len(series):
            page["nextPageToken"] = str(offset + self.page_size)
        return page


@contextmanager
def serving(fake: FakeMonitoring) -> Iterator[FakeMonitoring]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            split = urlsplit(self.path)
            params = parse_qs(split.query)
            fake.sent.append(Sent(split.path, params, self.headers.get("Authorization", "")))
            if fake.status != 200:
                body = json.dumps({"error": {"code": fake.status, "message": "denied"}}).encode()
                status = fake.status
            else:
                body, status = json.dumps(fake.answer(params)).encode(), 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serve_http(Handler) as (_, url):
        fake.url = f"{url}/v3"
        yield fake
