"""The Price page: price one house or a table of houses, see which model answers.

Today's pricing, plus the model's typical error for houses like the one priced (the test-side
error of its income band, for the version that answered), the house on a map drawn from the
data's own coordinates (no tile server is reachable), and a histogram of a table's prices.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import streamlit as st

from model_runtime.contract import EXAMPLE_HOUSE, OCEAN_PROXIMITY, RANGES
from ui import charts
from ui.batch import missing_columns, price_table
from ui.client import ServiceError
from ui.connection import client, down
from ui.messages import explain, label
from ui.wording import band_words, metric_words, typical_error_for

DEFAULTS = {k: v for k, v in EXAMPLE_HOUSE.items() if k != "ocean_proximity"}


def one_house() -> None:
    st.subheader("Price one house")
    form_col, result_col = st.columns([3, 2])
    with form_col:
        values, submitted = house_form()
    if submitted:
        with result_col:
            show_price(values)


def house_form() -> tuple[dict[str, object], bool]:
    with st.form("house"):
        values: dict[str, object] = {}
        cols = st.columns(2)
        for i, (field, default) in enumerate(DEFAULTS.items()):
            r = RANGES[field]
            values[field] = cols[i % 2].number_input(
                label(field),
                value=float(default),
                min_value=None,
                max_value=None,
                help=f"{r.description}; allowed {r.min:g} to {r.max:g}",
                key=field,
            )
        values["ocean_proximity"] = st.selectbox(
            label("ocean_proximity"), OCEAN_PROXIMITY, index=3, key="ocean_proximity"
        )
        submitted = st.form_submit_button("Predict price")
    return values, submitted


def show_price(values: dict[str, object]) -> None:
    try:
        response = client().predict([values])
    except ServiceError as exc:
        down(exc)
        return
    if response.status_code == 400:
        for line in explain(response.json()):
            st.error(line)
        return
    if response.status_code != 200:
        st.error(str(client().refused(response, "one house")))
        return
    body = response.json()
    price = body["predictions"][0]["predicted_price"]
    st.metric("Predicted price", f"${price:,.0f}")
    model = body["model"]
    st.caption(f"Answered by {model['name']} version {model['version']} (@{model['alias']})")
    evaluation = version_evaluation(str(model["version"]))
    if isinstance(evaluation, str):
        st.warning(f"No typical error or map: {evaluation}")
        return
    typical = typical_error_for(evaluation["errors_by_income"], float(str(values["median_income"])))
    if typical is not None:
        band, error = typical
        st.metric(
            "Typical error for houses like it",
            f"±${error:,.0f}",
            help=f"mean absolute error of version {model['version']} on test houses with "
            f"{band_words(band)} (income band {band})",
        )
    house = pd.DataFrame({"longitude": [values["longitude"]], "latitude": [values["latitude"]]})
    st.altair_chart(
        charts.california(sample_frame(evaluation), house, width=360, height=400),
        key="house_map",
        width="content",
    )


@st.cache_data(ttl=60, show_spinner=False)
def _evaluation(version: str) -> dict[str, Any]:
    return client().operator(f"models/{version}/evaluation")


def version_evaluation(version: str) -> dict[str, Any] | str:
    """A version's evaluation from the service, or the one line saying why there is none."""
    try:
        return _evaluation(version)
    except ServiceError as exc:
        return str(exc)


def served_version() -> str:
    """The version the service serves ("" when it can't say)."""
    try:
        return str(client().model().get("version", ""))
    except ServiceError:
        return ""


def sample_frame(evaluation: dict[str, Any]) -> pd.DataFrame:
    columns = ["longitude", "latitude", "actual", "predicted", "ocean_proximity", "income_band"]
    return pd.DataFrame(evaluation.get("sample", []), columns=columns)


def many_houses() -> None:
    st.subheader("Price many houses")
    upload = st.file_uploader("CSV with the data set's columns", type=["csv"])
    pasted = st.text_area("…or paste CSV rows (with the header line)", key="pasted")
    text = upload.getvalue().decode() if upload is not None else pasted
    if not text or not st.button("Price the table", key="price_table"):
        return
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        st.error(f"That is not a CSV table: {exc}")
        return
    missing = missing_columns(frame)
    if missing:
        st.error(f"Missing column(s): {', '.join(missing)}")
        return
    bar = st.progress(0.0, text="Pricing…")

    def progress(fraction: float) -> None:
        bar.progress(fraction, text=f"Pricing… {fraction:.0%}")

    try:
        priced, rejections = price_table(frame, client(), progress)
    except ServiceError as exc:
        down(exc)
        return
    ok = priced["predicted_price"].notna()
    st.success(f"Priced {int(ok.sum()):,} of {len(priced):,} houses.")
    if len(rejections):
        st.warning(f"{len(rejections):,} row(s) rejected:")
        st.dataframe(rejections, hide_index=True, key="rejections")
    st.dataframe(priced, hide_index=True, key="priced")
    points = pd.DataFrame(
        {
            "lat": pd.to_numeric(priced.loc[ok, "latitude"], errors="coerce"),
            "lon": pd.to_numeric(priced.loc[ok, "longitude"], errors="coerce"),
            "predicted_price": priced.loc[ok, "predicted_price"].astype(float),
        }
    ).dropna()
    if len(points):
        st.altair_chart(charts.price_histogram(points["predicted_price"]), key="price_histogram")
        houses = points.rename(columns={"lat": "latitude", "lon": "longitude"})
        evaluation = version_evaluation(served_version())
        background = sample_frame(evaluation) if isinstance(evaluation, dict) else houses
        st.altair_chart(
            charts.california(background, houses, color="predicted_price"),
            key="table_map",
            width="content",
        )
    st.download_button(
        "Download CSV with predicted_price",
        priced.to_csv(index=False),
        "predictions.csv",
        "text/csv",
    )


def model_page() -> None:
    st.subheader("Model")
    try:
        alive, ready, detail = client().health()
        state = f"{'alive' if alive else 'down'}, {'ready' if ready else 'not ready'}"
        st.write(f"Service: {state} — {detail}")
        if not ready:
            return
        info = client().model()
    except ServiceError as exc:
        down(exc)
        return
    st.metric(
        "Live model",
        f"{info['name']} v{info['version']}",
        help=f"alias @{info['alias']}, {info['source']}",
    )
    st.write(f"Trained {info['trained_at'] or 'at an unknown date'}")
    words = metric_words(info["test_metrics"])
    for col, (name, value, meaning) in zip(st.columns(max(1, len(words))), words, strict=False):
        col.metric(name, value, help=meaning)
    st.dataframe(pd.DataFrame(info["input_ranges"]).T, key="ranges")


def render() -> None:
    one, many, model = st.tabs(["One house", "Many houses", "Model"])
    with one:
        one_house()
    with many:
        many_houses()
    with model:
        model_page()
