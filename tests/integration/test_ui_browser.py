"""End to end in a real headless Chromium: the form, the service, the price on the page."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from devtools.browser import chromium, price_for_the_form
from model_runtime.contract import EXAMPLE_HOUSE
from tests.helpers import free_port, serving

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
def streamlit_url(service, tmp_path):
    port = free_port()
    argv = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "ui" / "app.py"),
        "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
    ]  # fmt: skip
    env = {**os.environ, "API_URL": service.url}
    log = tmp_path / "streamlit.log"
    with serving(argv, port, log=log, ready_path="/_stcore/health", env=env, cwd=ROOT) as ui:
        yield ui.url


def test_form_to_price_in_a_browser(streamlit_url, service, tmp_path):
    # `nox -s tests` finds (or installs) a working browser and names it in CHROMIUM.
    browser = os.environ.get("CHROMIUM") or shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.fail("chromium or chromedriver is missing: `nox -s tests` installs them with apt")
    with chromium(browser, driver_path, tmp_path / "chromium-profile") as driver:
        shown = price_for_the_form(driver, streamlit_url, timeout=60)
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "ui-one-house.png"))
    expected = httpx.post(
        service.url + "/api/v1/predict", json={"instances": [EXAMPLE_HOUSE]}
    ).json()
    assert shown == f"${expected['predictions'][0]['predicted_price']:,.0f}"
    assert (ARTIFACTS / "ui-one-house.png").stat().st_size > 10_000
