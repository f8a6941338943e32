"""The app in process (Litestar's TestClient, no server, no model file): what its OpenAPI document
promises is what it does. A stand-in predictor prices every house at 1.0, so schema-valid bodies
answer 200 and the rest 400."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from model_runtime.contract import EXAMPLE_HOUSE, OCEAN_PROXIMITY
from model_runtime.loader import ModelMeta
from service.app import create_app
from service.settings import ServiceSettings

MAX_INSTANCES = 7


class OneDollar:
    """A predictor that prices every house at 1.0."""

    meta = ModelMeta(name="housing-price", version="3", alias="champion", run_id="r")

    def predict(self, houses: list[object]) -> list[float]:
        return [1.0] * len(houses)


def serving_app() -> Litestar:
    return create_app(ServiceSettings(max_instances=MAX_INSTANCES), predictor=OneDollar())


@pytest.fixture(scope="module")
def client() -> TestClient[Litestar]:
    return TestClient(serving_app())


@pytest.fixture(scope="module")
def spec(client: TestClient[Litestar]) -> dict:
    return client.get("/docs/openapi.json").json()


def predict(client: TestClient[Litestar], instances: object) -> int:
    return client.post("/api/v1/predict", json={"instances": instances}).status_code


def test_the_published_category_schema_accepts_exactly_what_the_service_accepts(client, spec):
    """Every string is either valid for the published ``ocean_proximity`` schema and priced, or
    invalid for it and rejected: a client generated from the document meets no surprise."""
    published = Draft202012Validator(
        spec["components"]["schemas"]["House"]["properties"]["ocean_proximity"]
    )
    spellings = [
        *OCEAN_PROXIMITY,
        "near bay",
        "near_bay",
        " Near Bay ",
        "NEAR\tBAY\n",
        "<1h__ocean",
        "",
        " ",
        "NEARBAY",
        "NEAR-BAY",
        "MARS",
        "near\u00a0bay",  # a no-break space
        "\u0131nland",  # a dotless i, which str.upper() turns into I
        "NEAR BAY" + " " * 30,
    ]
    for value in spellings:
        assert published.is_valid(value) == (
            predict(client, [{**EXAMPLE_HOUSE, "ocean_proximity": value}]) == 200
        ), repr(value)


def _respelled(category: str, separator: str, case: str, pad: str) -> str:
    words = [getattr(word, case)() for word in category.split(" ")]
    return pad + separator.join(words) + pad


respellings = st.builds(
    _respelled,
    st.sampled_from([*OCEAN_PROXIMITY, "NEARBAY", "MARS", ""]),
    st.sampled_from([" ", "_", "  ", "\t", "\n", " _ ", "", "-", "\u00a0", "\u2003"]),
    st.sampled_from(["upper", "lower", "title", "swapcase"]),
    st.sampled_from(["", " ", "_", "\r\n", "\u00a0", "."]),
)


@settings(max_examples=150, deadline=None)
@given(value=st.one_of(respellings, st.text(max_size=12)))
def test_any_string_is_accepted_by_both_or_by_neither(client, spec, value):
    published = Draft202012Validator(
        spec["components"]["schemas"]["House"]["properties"]["ocean_proximity"]
    )
    status = predict(client, [{**EXAMPLE_HOUSE, "ocean_proximity": value}])
    assert status in (200, 400)
    assert published.is_valid(value) == (status == 200)


def test_the_batch_limit_is_published_from_the_setting_the_service_enforces(client, spec):
    instances = spec["components"]["schemas"]["PredictRequest"]["properties"]["instances"]
    assert (instances.get("minItems"), instances.get("maxItems")) == (1, MAX_INSTANCES)
    assert predict(client, [EXAMPLE_HOUSE] * MAX_INSTANCES) == 200
    assert predict(client, [EXAMPLE_HOUSE] * (MAX_INSTANCES + 1)) == 400
    assert predict(client, []) == 400


def test_metrics_answer_the_prometheus_text_format_the_document_names(client, spec):
    documented = list(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"])
    assert documented == ["text/plain; version=0.0.4"]
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    assert {"housing_predictions", "housing_model_version", "http_requests_in_flight"} <= names


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "TRACE"])
def test_a_method_not_allowed_names_the_allowed_ones(client, spec, method):
    """RFC 9110: a 405 carries ``Allow``; it lists the methods the document gives the path."""
    for path, operations in spec["paths"].items():
        answer = client.request(method, path)
        assert answer.status_code == 405, path
        allowed = {m.strip().lower() for m in answer.headers.get("allow", "").split(",")}
        assert allowed - {"options", "head"} == set(operations), path
        assert json.loads(answer.text)["status_code"] == 405
