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
    runtime = "stand-in"

    def predict(self, houses: list[object]) -> list[float]:
        return [1.0] * len(houses)


def serving_app() -> Litestar:
    settings = ServiceSettings(max_instances=MAX_INSTANCES, prediction_log=False)
    return create_app(settings, predictor=OneDollar())


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


# What the HTTP layer answers on its own (moved from the real-server tests: no model, no server).


def test_client_mistakes_are_4xx_with_the_field_named(client):
    def post(content: bytes, content_type: str = "application/json"):
        return client.post(
            "/api/v1/predict", content=content, headers={"content-type": content_type}
        )

    bad = client.post(
        "/api/v1/predict",
        json={
            "instances": [
                EXAMPLE_HOUSE,
                {**EXAMPLE_HOUSE, "latitude": "x"},
                {**EXAMPLE_HOUSE, "median_income": 99},
            ]
        },
    )
    assert bad.status_code == 400
    assert [e["loc"] for e in bad.json()["errors"]] == [
        "instances[1].latitude",
        "instances[2].median_income",
    ]
    malformed = post(b'{"instances": [')
    assert malformed.status_code == 400
    assert "malformed JSON" in malformed.json()["detail"]
    nan = post(json.dumps({"instances": [{**EXAMPLE_HOUSE, "population": float("nan")}]}).encode())
    assert nan.status_code == 400
    assert "malformed JSON" in nan.json()["detail"]
    csv = post(b"x", "text/csv")
    assert csv.status_code == 415
    assert csv.json()["detail"] == "content type must be application/json, got text/csv"
    huge = post(b" " * (ServiceSettings().max_body_bytes + 1))
    assert huge.status_code == 413
    assert huge.json()["status_code"] == 413
    missing = client.get("/api/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["status_code"] == 404


def test_an_answer_carries_the_callers_request_id_or_a_new_one(client):
    assert client.get("/health", headers={"x-request-id": "req-1"}).headers["x-request-id"] == (
        "req-1"
    )
    first, second = (client.get("/health").headers["x-request-id"] for _ in range(2))
    assert first != second
    priced = client.post("/api/v1/predict", json={"instances": [EXAMPLE_HOUSE]})
    assert priced.headers["x-model-version"] == OneDollar.meta.version


def test_the_docs_work_offline(client, spec):
    page = client.get("/docs").text
    assert "cdn" not in page
    assert "unpkg" not in page
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"):
        assert f"/static/swagger/{asset}" in page
        assert client.get(f"/static/swagger/{asset}").status_code == 200
    assert spec["paths"]["/api/v1/predict"]["post"]["operationId"] == "predict"


HOUSE_FIELDS = list(EXAMPLE_HOUSE)
json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)
mutated_house = st.dictionaries(
    st.sampled_from([*HOUSE_FIELDS, "extra"]), json_values, max_size=4
).map(lambda d: {**EXAMPLE_HOUSE, **d})
bodies = st.one_of(
    json_values.map(lambda v: {"instances": v}),
    st.lists(mutated_house, max_size=4).map(lambda v: {"instances": v}),
    json_values,
)


@settings(max_examples=150, deadline=None)
@given(body=bodies)
def test_no_body_makes_a_5xx_and_every_answer_keeps_its_schema(client, body):
    response = client.post(
        "/api/v1/predict", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code in (200, 400), response.text
    payload = response.json()
    if response.status_code == 200:
        assert len(payload["predictions"]) == len(body["instances"])
    else:
        assert set(payload) == {"status_code", "detail", "errors"}
        assert all(set(e) == {"loc", "msg"} for e in payload["errors"])
