"""Fault injection for release drills (HOUSING_FAULTS), in process against ``create_app`` with a
stand-in predictor: the faults a drill asks for are what clients see (and /metrics counts), a
wrong spec stops the start naming the key, and production never injects."""

from __future__ import annotations

import time
from typing import cast

import anyio
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from housing_platform.settings_reader import SettingsError
from model_runtime.contract import EXAMPLE_HOUSE
from model_runtime.loader import ModelMeta
from service.app import create_app
from service.faults import INJECTED, FaultInjector, FaultPlan, FaultSpecError, parse
from service.predictor import Predictor
from service.schemas import RequestError
from service.settings import ServiceSettings, from_env

PREDICT = "/api/v1/predict"
BODY = {"instances": [EXAMPLE_HOUSE, EXAMPLE_HOUSE]}


class Hundred:
    """A predictor that prices every house at 100.0."""

    meta = ModelMeta(name="housing-price", version="5", alias="canary", run_id="r")
    runtime = "stand-in"

    def predict(self, houses: list[object]) -> list[float]:
        return [100.0] * len(houses)


def drill(faults: str) -> TestClient[Litestar]:
    settings = ServiceSettings(prediction_log=False, faults=faults, environment="dev")
    return TestClient(create_app(settings, predictor=cast(Predictor, Hundred())))


def predict_5xx_count(client: TestClient[Litestar], status: str) -> float:
    """Prediction requests /metrics has counted with ``status`` (the registry is the process's:
    tests compare before and after)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if (
                s.name == "housing_requests_total"
                and s.labels.get("path") == PREDICT
                and s.labels.get("status_code") == status
            ):
                return s.value
    return 0.0


# -- through the app ----------------------------------------------------------------------------


def test_error_rate_1_fails_every_prediction_with_the_injected_body_counted_as_5xx():
    with drill("error_rate=1") as client:
        before = predict_5xx_count(client, "503")
        answers = [client.post(PREDICT, json=BODY) for _ in range(5)]
        assert [a.status_code for a in answers] == [503] * 5
        assert all(
            a.json() == {"status_code": 503, "detail": INJECTED, "errors": []} for a in answers
        )
        assert predict_5xx_count(client, "503") - before == 5
        # Only predictions: the probes' other routes still answer.
        assert client.get("/ready").status_code == 200


def test_the_injected_status_can_be_500():
    with drill("error_rate=1,error_status=500") as client:
        before = predict_5xx_count(client, "500")
        answer = client.post(PREDICT, json=BODY)
        assert (answer.status_code, answer.json()["detail"]) == (500, INJECTED)
        assert predict_5xx_count(client, "500") - before == 1


def test_a_seeded_error_rate_fails_that_share_of_requests_the_same_way_every_start():
    def statuses() -> list[int]:
        with drill("error_rate=0.25,seed=7") as client:
            return [client.post(PREDICT, json=BODY).status_code for _ in range(200)]

    first = statuses()
    assert first == statuses()
    assert 30 <= first.count(503) <= 70
    assert set(first) == {200, 503}


def test_price_factor_scales_every_price():
    with drill("price_factor=1.1") as client:
        answer = client.post(PREDICT, json=BODY)
    assert answer.status_code == 200
    assert [p["predicted_price"] for p in answer.json()["predictions"]] == pytest.approx(
        [110.0, 110.0], rel=1e-12
    )


def test_delay_ms_holds_each_prediction_that_long():
    with drill("delay_ms=150") as client:
        began = time.perf_counter()
        answer = client.post(PREDICT, json=BODY)
        took = time.perf_counter() - began
    assert answer.status_code == 200
    assert took >= 0.15


def test_no_faults_answers_the_models_prices():
    with drill("") as client:
        answer = client.post(PREDICT, json=BODY)
    assert [p["predicted_price"] for p in answer.json()["predictions"]] == [100.0, 100.0]


def test_a_client_mistake_is_still_a_400_not_an_injected_fault():
    with drill("error_rate=1") as client:
        assert client.post(PREDICT, json={"instances": []}).status_code == 400


# -- the injector -------------------------------------------------------------------------------


def test_the_delay_is_an_asynchronous_sleep_of_delay_ms():
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    injector = FaultInjector(parse("delay_ms=200"), sleep=sleep)
    anyio.run(injector.before)
    assert slept == [0.2]


def test_an_injected_error_is_raised_before_the_model_is_called():
    injector = FaultInjector(parse("error_rate=1"))
    with pytest.raises(RequestError) as raised:
        anyio.run(injector.before)
    assert (raised.value.status, raised.value.detail) == (503, INJECTED)


# -- the spec -----------------------------------------------------------------------------------


def test_a_spec_parses_to_its_plan_and_empty_is_no_fault():
    assert parse(" error_rate=0.05, delay_ms=200 ,price_factor=1.1,") == FaultPlan(
        error_rate=0.05, delay_ms=200.0, price_factor=1.1
    )
    assert parse("") == FaultPlan()
    assert not parse("").active
    assert parse("delay_ms=1").active


@pytest.mark.parametrize(
    ("spec", "key", "expected"),
    [
        ("errors=0.05", "errors", "one of the keys error_rate, error_status, delay_ms"),
        ("eror_rate=0.05", "eror_rate", "did you mean `error_rate`?"),
        ("error_rate=1.5", "error_rate", "`error_rate` to be a share between 0 and 1"),
        ("error_rate=lots", "error_rate", "`error_rate` to be a share between 0 and 1"),
        ("delay_ms=-1", "delay_ms", "`delay_ms` to be milliseconds, at least 0"),
        ("price_factor=0", "price_factor", "`price_factor` to be a number above 0"),
        ("error_status=404", "error_status", "`error_status` to be 500 or 503"),
        ("delay_ms", "delay_ms", "`delay_ms=<value>`"),
        ("delay_ms=1,delay_ms=2", "delay_ms", "`delay_ms` once, not twice"),
    ],
)
def test_a_bad_spec_names_its_key(spec, key, expected):
    with pytest.raises(FaultSpecError) as raised:
        parse(spec)
    assert raised.value.key == key
    assert expected in raised.value.expected


def test_a_bad_spec_stops_the_start_naming_the_key_and_the_fix():
    with pytest.raises(SettingsError) as raised:
        from_env({"HOUSING_FAULTS": "error_rate=1.5"})
    assert str(raised.value) == (
        "HOUSING_FAULTS: expected `error_rate` to be a share between 0 and 1 (0.05: one request "
        "in 20 fails), got 'error_rate=1.5'. Fix HOUSING_FAULTS in the environment, or unset it "
        "for the default (empty)."
    )


def test_faults_are_off_by_default_and_read_from_housing_faults():
    assert from_env({}).fault_plan == FaultPlan()
    assert from_env({}).environment == "local"
    s = from_env({"HOUSING_FAULTS": "price_factor=1.1", "ENVIRONMENT": "dev"})
    assert s.fault_plan.price_factor == 1.1


@pytest.mark.parametrize("environment", ["prod", "production", "Production"])
def test_production_refuses_to_start_with_faults(environment):
    with pytest.raises(SettingsError, match=r"^HOUSING_FAULTS: expected no faults where "):
        from_env({"HOUSING_FAULTS": "error_rate=0.05", "ENVIRONMENT": environment})
    settings = ServiceSettings(faults="delay_ms=200", environment=environment)
    with pytest.raises(ValueError, match="unset HOUSING_FAULTS"):
        create_app(settings, predictor=cast(Predictor, Hundred()))
    # Without faults, production starts.
    assert from_env({"ENVIRONMENT": environment}).production
