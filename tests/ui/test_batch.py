"""Batch pricing splits a table by the limits the service publishes in GET /api/v1/model, against
the service app in process (Litestar's TestClient: the real limits, enforced), and an answer that
is neither prices nor rejected houses is one line, not a traceback."""

from __future__ import annotations

import json
from typing import ClassVar

import httpx
import pandas as pd
import pytest
from litestar.testing import TestClient

from model_runtime.contract import EXAMPLE_HOUSE, FEATURES
from model_runtime.loader import ModelMeta
from service.app import create_app
from service.settings import ServiceSettings
from ui.batch import ENVELOPE_BYTES, batches, price_table
from ui.client import ServiceClient, ServiceLimits, ServiceRefusedError, predict_body
from ui.settings import UISettings


class ByIncome:
    """A stand-in predictor: a house's price is its median income times 100,000."""

    meta = ModelMeta(name="housing-price", version="5", alias="champion", run_id="r")
    runtime = "stand-in"
    warnings: ClassVar[list[str]] = []

    def predict(self, houses: list) -> list[float]:
        return [h.median_income * 100_000 for h in houses]


class Recording(ServiceClient):
    """The client, remembering the size and length of every predict body it sends."""

    sent: list[tuple[int, int]]

    def predict(self, instances):  # type: ignore[no-untyped-def]
        self.sent.append((len(predict_body(instances)), len(instances)))
        return super().predict(instances)


def table(rows: int) -> pd.DataFrame:
    frame = pd.DataFrame([EXAMPLE_HOUSE] * rows)[list(FEATURES)]
    frame["median_income"] = [1.0 + i / 100 for i in range(rows)]
    return frame


def in_process(settings: ServiceSettings) -> Recording:
    app = create_app(settings, predictor=ByIncome())
    client = Recording(UISettings(api_url="http://testserver.local"), http=TestClient(app))
    client.sent = []
    return client


@pytest.mark.parametrize(
    ("max_instances", "max_body_bytes"),
    [(7, 1_048_576), (1000, 1024), (3, 2048)],
    ids=["by-count", "by-size", "both"],
)
def test_a_table_is_split_by_the_limits_the_service_publishes(max_instances, max_body_bytes):
    client = in_process(ServiceSettings(max_instances=max_instances, max_body_bytes=max_body_bytes))
    frame = table(50)
    progress: list[float] = []
    priced, rejections = price_table(frame, client, on_progress=progress.append)
    assert rejections.empty
    assert priced["predicted_price"].tolist() == pytest.approx(
        (frame["median_income"] * 100_000).tolist()
    )
    assert sum(count for _, count in client.sent) == 50
    assert all(size <= max_body_bytes for size, _ in client.sent)
    assert all(count <= max_instances for _, count in client.sent)
    # Full batches: no fewer requests than the limits allow.
    house = len(predict_body([frame.iloc[0].to_dict()])) - ENVELOPE_BYTES
    per_body = (max_body_bytes - ENVELOPE_BYTES + 1) // (house + 1)
    assert len(client.sent) == -(-50 // min(max_instances, per_body))
    assert progress[-1] == 1.0
    assert len(progress) == len(client.sent)


def test_batches_never_exceed_either_limit():
    sizes = [100, 300, 50, 900, 10, 10, 10, 10, 2000, 10]
    groups, too_large = batches(sizes, ServiceLimits(max_instances=3, max_body_bytes=1000))
    assert too_large == [8]
    assert groups == [[0, 1, 2], [3, 4, 5], [6, 7, 9]]
    for group in groups:
        body = ENVELOPE_BYTES + sum(sizes[p] for p in group) + len(group) - 1
        assert body <= 1000
    unlimited, _ = batches(sizes, ServiceLimits(max_instances=4))
    assert unlimited == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_row_larger_than_any_request_is_rejected_and_the_rest_priced():
    client = in_process(ServiceSettings(max_instances=10, max_body_bytes=1024))
    frame = table(3).astype({"ocean_proximity": object})
    frame.loc[1, "ocean_proximity"] = "NEAR BAY" + " " * 2000
    priced, rejections = price_table(frame, client)
    assert rejections["row"].tolist() == [1]
    assert "more than the service accepts in one request (1,024" in rejections["reason"][0]
    assert priced["predicted_price"].notna().tolist() == [True, False, True]


LIMITS = {"max_instances": 1000, "max_body_bytes": 1_048_576}


def answering(status: int, body: dict) -> ServiceClient:
    """A client of a fake service that publishes LIMITS and answers every predict with
    ``status`` and ``body`` (what a proxy or a canary with other limits may do)."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/model":
            return httpx.Response(200, json=LIMITS)
        return httpx.Response(status, json=body)

    http = httpx.Client(base_url="http://svc.test", transport=httpx.MockTransport(handle))
    return ServiceClient(
        UISettings(api_url="http://svc.test", retries=2), sleep=lambda _: None, http=http
    )


@pytest.mark.parametrize(
    ("status", "detail", "fix"),
    [
        (413, "Request Entity Too Large", "check MAX_BODY_BYTES on the service"),
        (500, "internal error", "see the service's logs, then try again"),
        (415, "content type must be application/json", "check API_URL"),
    ],
)
def test_an_error_answer_is_one_line_with_the_status_and_the_fix(status, detail, fix):
    client = answering(status, {"status_code": status, "detail": detail, "errors": []})
    with pytest.raises(ServiceRefusedError) as caught:
        price_table(table(3), client)
    message = str(caught.value)
    assert message.startswith(
        f"The prediction service at http://svc.test answered {status} to a batch of 3 houses: "
        f"{detail}; "
    )
    assert message.endswith(f"{fix}.") or f"{fix} " in message
    assert "\n" not in message


def test_a_service_that_publishes_no_limits_is_one_line():
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=json.dumps({"name": "other"}).encode(),
            headers={"content-type": "application/json"},
        )

    http = httpx.Client(base_url="http://svc.test", transport=httpx.MockTransport(handle))
    client = ServiceClient(UISettings(api_url="http://svc.test"), http=http)
    with pytest.raises(ServiceRefusedError, match=r"does not publish its limits .* check API_URL"):
        client.limits()
