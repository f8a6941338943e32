"""Headless Chromium driven the way a user drives the UI: shared by the browser test and the
image check, so both read the page the same way."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)


@contextmanager
def chromium(binary: str, driver_path: str, profile: Path) -> Iterator[WebDriver]:
    """A headless Chromium with its own profile folder, always quit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=DriverService(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def metric_shown(driver: WebDriver, label: str) -> str | None:
    """The visible value of the metric with this label, or None while it isn't on screen.

    Streamlit renders every tab's elements at once (the Model tab has a metric too), and a
    hidden element's text is empty: so the metric is found by its label, and only once it is
    displayed with a value."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        for metric in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMetric']"):
            name = metric.find_element(By.CSS_SELECTOR, "[data-testid='stMetricLabel']")
            value = metric.find_element(By.CSS_SELECTOR, "[data-testid='stMetricValue']")
            if name.text.strip() == label and value.is_displayed() and value.text.strip():
                return str(value.text.strip())
    except StaleElementReferenceException:
        return None  # Streamlit re-rendered while we read: look again
    return None


def price_for_the_form(driver: WebDriver, ui_url: str, timeout: float) -> str:
    """Open the UI, press 'Predict price' on its default house, and return the price shown.

    Waits on the page's elements (Streamlit renders over a websocket), never a fixed sleep."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(ui_url)
    wait = WebDriverWait(driver, timeout)
    button = wait.until(
        ec.element_to_be_clickable((By.XPATH, "//button[.//p[text()='Predict price']]"))
    )
    button.click()
    return str(wait.until(lambda d: metric_shown(d, "Predicted price")))


#: The console's pages (ui/app.py): URL path and title.
PAGES = {"price": "Price", "models": "Models", "releases": "Releases", "monitoring": "Monitoring"}


def open_pages(driver: WebDriver, ui_url: str, timeout: float) -> list[str]:
    """Opens every page of the console and waits for its title; returns the one-line messages
    each shows (a source down, say). Fails on a page that shows a traceback."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    said = []
    for path, title in PAGES.items():
        driver.get(f"{ui_url.rstrip('/')}/{path}")

        def titled(d: WebDriver, t: str = title) -> bool:
            return any(
                h.is_displayed() and h.text.strip().endswith(t)
                for h in d.find_elements(By.CSS_SELECTOR, "h1")
            )

        WebDriverWait(driver, timeout).until(titled)
        if driver.find_elements(By.CSS_SELECTOR, "[data-testid='stException']"):
            raise RuntimeError(f"the {title} page shows a traceback")
        said += [
            f"{title}: {e.text.strip()}"
            for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stAlert']")
        ]
    return said
