"""The Streamlit app: price one house, price a table of houses, see which model is live.

It talks to the inference service over HTTP only: `streamlit run ui/app.py` (`nox -s ui`).
"""

from __future__ import annotations

import io
import os

import pandas as pd
import streamlit as st

from model_runtime.contract import EXAMPLE_HOUSE, OCEAN_PROXIMITY, RANGES
from ui.batch import missing_columns, price_table
from ui.client import ServiceClient, ServiceError
from ui.messages import explain, label
from ui.settings import from_env

DEFAULTS = {k: v for k, v in EXAMPLE_HOUSE.items() if k != "ocean_proximity"}


@st.cache_resource
def client() -> ServiceClient:
    return ServiceClient(from_env(os.environ))


def down(exc: ServiceError) -> None:
    st.error(str(exc))


def one_house() -> None:
    st.subheader("Price one house")
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
    if not submitted:
        return
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
    st.map(pd.DataFrame({"lat": [values["latitude"]], "lon": [values["longitude"]]}), zoom=8)


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
        scaled = (points["predicted_price"] - points["predicted_price"].min()) / max(
            1.0, float(points["predicted_price"].max() - points["predicted_price"].min())
        )
        points = points.assign(
            color=[f"#{int(255 * s):02x}40{int(255 * (1 - s)):02x}" for s in scaled]
        )
        st.map(points[["lat", "lon", "color"]], color="color", size=20)
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
    st.dataframe(pd.DataFrame([info["test_metrics"]]), hide_index=True, key="metrics")
    st.dataframe(pd.DataFrame(info["input_ranges"]).T, key="ranges")


def main() -> None:
    st.set_page_config(page_title="housing-mlops", layout="wide")
    st.title("California house prices")
    one, many, model = st.tabs(["One house", "Many houses", "Model"])
    with one:
        one_house()
    with many:
        many_houses()
    with model:
        model_page()


main()
