"""The one service client the pages share (per Streamlit server process), and how a page says
in one line that something it needs is down."""

from __future__ import annotations

import os

import streamlit as st

from ui.client import ServiceClient, ServiceError
from ui.settings import from_env


@st.cache_resource
def client() -> ServiceClient:
    return ServiceClient(from_env(os.environ))


def down(exc: ServiceError) -> None:
    st.error(str(exc))
