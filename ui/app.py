"""The operator's console (Streamlit, multipage): Price, Models, Releases, Monitoring.

It talks to the inference service over HTTP only: `streamlit run ui/app.py` (`nox -s ui`). Each
page is a module of this package (``ui/*_page.py``), so the image's installed package holds them
all and this file is the only script.
"""

from __future__ import annotations

import streamlit as st

from ui import models_page, monitoring_page, price_page, releases_page

PAGES = (
    st.Page(price_page.render, title="Price", url_path="price", default=True),
    st.Page(models_page.render, title="Models", url_path="models"),
    st.Page(releases_page.render, title="Releases", url_path="releases"),
    st.Page(monitoring_page.render, title="Monitoring", url_path="monitoring"),
)


def main() -> None:
    st.set_page_config(page_title="housing-mlops", layout="wide")
    page = st.navigation(list(PAGES))
    st.title(f"California house prices · {page.title}")
    page.run()


main()
