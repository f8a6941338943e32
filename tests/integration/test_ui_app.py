"""Each page of the Streamlit app (AppTest) against a real service process."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from model_runtime import contract
from tests.helpers import free_port
from tests.integration.test_ui_client import answering_html

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")


@pytest.fixture
def app(monkeypatch):
    def make(api_url: str) -> AppTest:
        monkeypatch.setenv("API_URL", api_url)
        monkeypatch.setenv("API_RETRIES", "2")
        import streamlit as st

        st.cache_resource.clear()
        return AppTest.from_file(APP, default_timeout=60)

    return make


def test_one_house_shows_the_services_own_price(app, service):
    at = app(service.url).run()
    at.form_submit_button[0].click().run()
    assert not at.exception
    shown = at.metric[0].value
    expected = httpx.post(
        service.url + "/api/v1/predict",
        json={
            "instances": [
                {
                    **{k: at.number_input(key=k).value for k in contract.NUMERIC_FEATURES},
                    "ocean_proximity": "NEAR BAY",
                }
            ]
        },
    ).json()["predictions"][0]["predicted_price"]
    assert shown == f"${expected:,.0f}"
    assert "version" in at.caption[0].value


def test_a_bad_value_names_the_field_in_plain_words(app, service):
    at = app(service.url).run()
    at.number_input(key="latitude").set_value(99.0)
    at.form_submit_button[0].click().run()
    assert [e.value for e in at.error] == [
        "Latitude must be between 32.4 and 42.1 (Expected `float` <= 42.1)."
    ]


def test_a_table_with_three_bad_rows(app, service, housing):
    frame = housing[list(contract.FEATURES)].head(2500).copy()
    frame["latitude"] = frame["latitude"].astype(object)
    frame.loc[5, "latitude"] = "north"
    frame.loc[1500, "ocean_proximity"] = "MARS"
    frame.loc[2400, "households"] = -1
    at = app(service.url).run()
    at.text_area(key="pasted").input(frame.to_csv(index=False)).run()
    at.button(key="price_table").click().run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.success[0].value == "Priced 2,497 of 2,500 houses."
    rejected = at.dataframe[0].value  # rejections come first
    assert rejected["row"].tolist() == [5, 1500, 2400]
    priced = at.dataframe[1].value
    assert priced["predicted_price"].notna().sum() == 2497


def test_model_page_and_service_down(app, service):
    at = app(service.url).run()
    assert "Live model" in [m.label for m in at.metric]
    down = app(f"http://127.0.0.1:{free_port()}").run()
    messages = [e.value for e in down.error]
    assert messages
    assert all("check API_URL" in m for m in messages)


def test_a_url_that_answers_html_is_one_line_on_every_page(app):
    """API_URL pointing at the UI itself (Streamlit answers HTML): each page says so in one
    line, no traceback."""
    table = ",".join(contract.FEATURES) + "\n-122.23,37.88,41,880,129,322,126,8.3252,NEAR BAY\n"
    shown: list[list[str]] = []
    with answering_html() as (url, _):
        at = app(url).run()  # the model page asks at once
        assert not at.exception, at.exception
        shown.append([e.value for e in at.error])
        steps = [
            lambda at: at.form_submit_button[0].click(),
            lambda at: at.text_area(key="pasted").input(table),
            lambda at: at.button(key="price_table").click(),
        ]
        for step in steps:
            step(at).run()
            assert not at.exception, at.exception
            shown.append([e.value for e in at.error])
    # The model page each time; one house after its submit; many houses after its button.
    assert [len(messages) for messages in shown] == [1, 2, 1, 2]
    for message in {m for messages in shown for m in messages}:
        assert f"service at {url} did not answer JSON (200, text/html" in message
        assert "\n" not in message
