"""The served model reaches the routes by dependency injection: an app built with a predictor
answers with that predictor's prices through the HTTP layer, each app with its own, and one
without a model answers 503 saying why."""

from __future__ import annotations

from typing import ClassVar

from litestar.testing import TestClient

from model_runtime.contract import EXAMPLE_HOUSE
from model_runtime.loader import ModelMeta
from service.app import create_app
from service.settings import ServiceSettings


class Fixed:
    """A stand-in predictor: every house at ``price``, its version named after it."""

    runtime = "stand-in"
    warnings: ClassVar[list[str]] = []

    def __init__(self, price: float):
        self.price = price
        self.meta = ModelMeta(name="housing-price", version=f"{price:g}", alias="champion")

    def predict(self, houses: list) -> list[float]:
        return [self.price] * len(houses)


def test_an_app_built_with_a_predictor_serves_its_prices_over_http():
    settings = ServiceSettings(max_instances=20, max_body_bytes=65_536, prediction_log=False)
    with (
        TestClient(create_app(settings, predictor=Fixed(7))) as seven,
        TestClient(create_app(settings, predictor=Fixed(9))) as nine,
    ):
        for client, price in ((seven, 7.0), (nine, 9.0)):
            answer = client.post("/api/v1/predict", json={"instances": [EXAMPLE_HOUSE] * 20})
            assert answer.status_code == 200
            assert [p["predicted_price"] for p in answer.json()["predictions"]] == [price] * 20
            assert answer.headers["x-model-version"] == f"{price:g}"
            assert client.get("/ready").json() == {
                "status": "ready",
                "detail": f"housing-price v{price:g}",
            }
        info = seven.get("/api/v1/model").json()
        assert (info["max_instances"], info["max_body_bytes"]) == (20, 65_536)
        assert info["runtime"] == "stand-in"


def test_without_a_model_the_routes_that_need_one_answer_503_saying_why():
    client = TestClient(create_app(ServiceSettings()))  # the lifespan, which loads, never runs
    for answer in (
        client.post("/api/v1/predict", json={"instances": [EXAMPLE_HOUSE]}),
        client.get("/api/v1/model"),
    ):
        assert answer.status_code == 503
        assert answer.json()["detail"] == "no model loaded: still loading"
    assert client.get("/ready").status_code == 503
    assert client.get("/health").status_code == 200
