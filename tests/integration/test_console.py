"""The console's four pages in a real headless Chromium, against the service process and the
Streamlit app, on a home with a champion and a challenger, a monitor report, a shadow report and
a rollout log: what each page shows is checked against the service's own answers, each page is
saved in test-artifacts/, and its render time after the service answers is printed.

The champion is the one the pipeline registered (with evaluate's reports attached); the
challenger comes from a second run that changes only the register step's settings, so its
evaluate is cached: the same model, and the test that register still attaches the reports.
The monitor report is built from the monitor's own types and written with its own
encoder; the shadow report and the rollout log are written with the release tools' own
writers (service/shadow_report.py, rollout/audit.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from devtools.browser import chromium, metric_shown, price_for_the_form
from housing_platform.artifact_store import LocalStore
from model_runtime.contract import EXAMPLE_HOUSE
from pipeline.catalog import EVALUATION_REPORTS
from pipeline.cli import main as pipeline_main
from tests.helpers import Server, free_port, serving
from tests.integration.conftest import run_service

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
MODEL = "housing-price"
WINDOWS = 4
STABLE = "housing-api-m1-0a1b2c3d"
CANARY = "housing-api-m2-4e5f6a7b"
STABLE_URL = "https://stable---housing-api-abc123-ew.a.run.app"
CANARY_URL = "https://canary---housing-api-abc123-ew.a.run.app"
IMAGE = "europe-west1-docker.pkg.dev/p/housing-mlops/service@sha256:" + "a" * 64


def register_challenger(home: Path, source: Path) -> str:
    """A second pipeline run that changes only the register step's settings (promotion by
    hand): every step before register is cached, evaluate included, and register registers a
    new version, aliased challenger. Returns what the run printed."""
    config = home / "manual.toml"
    config.write_text((home / "tiny.toml").read_text() + '\n[register]\npromotion = "manual"\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOUSING_MLOPS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert pipeline_main(["run", "--config", str(config), "--source", str(source)]) == 0
    return out.getvalue()


def write_reports(home: Path, champion: str) -> None:
    """A week of monitor windows (median_income drifting in the last two), a shadow report and
    a rollout log, in the artifact store."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import msgspec

    from pipeline.monitoring import drift, monitor

    store = LocalStore(home / "artifacts")
    end = datetime(2026, 11, 30, tzinfo=UTC)
    for i in range(WINDOWS):
        until = end - timedelta(days=WINDOWS - 1 - i)
        window = until.strftime("%Y-%m-%d")
        columns = [
            drift.ColumnDrift(
                feature=feature,
                kind="numeric",
                statistic="ks",
                value=value,
                threshold=0.1,
                drift=value > 0.1,
                psi=value,
                psi_threshold=0.1,
                current_rows=500,
                reference_rows=2400,
            )
            for feature, value in (
                ("median_income", 0.04 + 0.05 * i),
                ("housing_median_age", 0.03),
            )
        ]
        drifted = any(c.drift for c in columns)
        plots = []
        if drifted:
            fig, ax = plt.subplots(figsize=(4, 3))
            ax.hist([1, 2, 2, 3, 3, 3])
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            plt.close(fig)
            key = f"{monitor.REPORTS}{window}/v{champion}-median_income.png"
            store.write_bytes(key, buf.getvalue())
            plots.append(key)
        report = monitor.MonitorReport(
            model_name=MODEL,
            since=(until - timedelta(days=1)).isoformat(),
            until=until.isoformat(),
            window=window,
            generated_at=until.isoformat(),
            thresholds=drift.Thresholds(),
            versions=[
                drift.WindowDrift(
                    model_version=champion,
                    rows=500,
                    status="drift" if drifted else "no drift",
                    reason="median_income drifted" if drifted else "no input drifted",
                    columns=columns,
                )
            ],
            plots=plots,
            serving_version=champion,
        )
        store.write_bytes(f"{monitor.REPORTS}{window}.json", monitor.report_json(report))
        assert msgspec.json.decode(store.read_bytes(f"{monitor.REPORTS}{window}.json"))
    from model_runtime.agreement import Agreement
    from rollout.audit import AuditLog, new_rollout_id
    from service import shadow_report

    latency = shadow_report.Latency(n=400, p50_ms=12.0, p99_ms=41.0)
    shadow_report.write(
        store,
        shadow_report.ShadowReport(
            window="20261130T100000Z",
            since="2026-11-30T10:00:00+00:00",
            until="2026-11-30T10:05:00+00:00",
            stable_revision="housing-api-m1",
            stable_model_version=champion,
            shadow_revision="housing-api-m2",
            shadow_model_version=2,
            outcomes=shadow_report.Outcomes(
                mirrored=400, answered=400, timed_out=0, dropped=0, failed=0
            ),
            agreement=Agreement(
                n=400,
                mape=0.0,
                within_5pct=0.985,
                within_10pct=1.0,
                mean_signed_difference=0.0,
                spearman=1.0,
            ),
            stable_latency=latency,
            shadow_latency=latency,
            mean_batch_houses=1.0,
        ),
    )
    # A canary of version 2 at 10%, published as `infra.cli up` publishes a GCP stack's.
    from housing_platform import release_feed, traffic_split
    from infra.release.publication import from_stack
    from infra.release.traffic import Release

    feed, split = from_stack(
        Release(model_version=2, canary_percent=10, stable_revision=STABLE, image=IMAGE),
        {
            "live_revision": STABLE,
            "canary_revision": CANARY,
            "tag_urls": {"stable": STABLE_URL, "canary": CANARY_URL},
        },
    )
    release_feed.publish(store, feed)
    traffic_split.publish(store, split)
    log = AuditLog(store, "local", new_rollout_id())
    log.append("start", "console-test", model_version=2)
    log.append(
        "verdict",
        "console-test",
        step="canary 10%",
        decision="advance",
        outcome="pass",
        reason="errors 0.1% <= 1%",
    )
    log.append("verdict", "console-test", step="canary 50%", decision="rollback",
               outcome="fail", reason="p99 latency +45 ms > +30 ms")  # fmt: skip


@pytest.fixture(scope="module")
def second_run(model_home: Path, sample_csv: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the trained home (the shared one keeps its single version) after a second run
    that registered version 2 as challenger; and what that run printed."""
    home = tmp_path_factory.mktemp("console") / "home"
    shutil.copytree(model_home, home, ignore=shutil.ignore_patterns("*.lock", "wandb"))
    return home, register_challenger(home, sample_csv)


@pytest.fixture(scope="module")
def console_home(second_run: tuple[Path, str]) -> Path:
    """The home with a champion (1), a challenger (2) and the reports."""
    home, _ = second_run
    write_reports(home, "1")
    return home


def test_a_cached_evaluate_still_leaves_its_reports_on_the_version(second_run):
    """Before, evaluate's reports went to its own nested MLflow run only, and a cached evaluate
    logged nothing: version 2 here would have had none."""
    home, printed = second_run
    evaluate = next(line for line in printed.splitlines() if line.startswith("evaluate "))
    assert "hit" in evaluate or "cached" in evaluate, printed
    store = LocalStore(home / "artifacts")
    from model_runtime.exports import Export

    export = Export(store, f"models/{MODEL}/2")
    for key in EVALUATION_REPORTS:
        rel = "evaluation/" + key.removeprefix("reports/")
        assert export.read(rel) == store.read_bytes(key), rel


@pytest.fixture(scope="module")
def console_service(
    console_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("console-svc") / "service.log"
    with run_service({"HOUSING_MLOPS_HOME": str(console_home)}, log) as svc:
        yield svc


@pytest.fixture(scope="module")
def console_ui(console_service: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    argv = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "ui" / "app.py"),
        "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
    ]  # fmt: skip
    env = {**os.environ, "API_URL": console_service.url}
    log = tmp_path_factory.mktemp("console-ui") / "streamlit.log"
    with serving(argv, port, log=log, ready_path="/_stcore/health", env=env, cwd=ROOT) as ui:
        yield ui.url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    binary = os.environ.get("CHROMIUM") or shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.fail("chromium or chromedriver is missing: `nox -s tests` installs them with apt")
    with chromium(binary, driver_path, tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def answered_in(url: str, paths: list[str]) -> float:
    """Seconds the service takes to answer what a page asks (the page's own wait for it)."""
    began = time.perf_counter()
    for path in paths:
        assert httpx.get(url + path, timeout=30).status_code == 200, path
    return time.perf_counter() - began


def shown(driver: WebDriver, url: str, texts: list[str], timeout: float = 60) -> float:
    """Opens ``url`` and waits until every one of ``texts`` is visible; the seconds it took."""

    def visible(d: WebDriver) -> bool:
        for text in texts:
            has = f"contains(normalize-space(.), {json.dumps(text)})"
            # The innermost elements holding the text (not their ancestors), one shown.
            deepest = f"//*[{has} and not(*[{has}])]"
            found = d.find_elements(By.XPATH, deepest)
            if not any(e.is_displayed() for e in found):
                return False
        return True

    began = time.perf_counter()
    driver.get(url)
    WebDriverWait(driver, timeout).until(visible)
    return time.perf_counter() - began


def settle_and_save(driver: WebDriver, name: str) -> Path:
    """Waits for Streamlit to finish the run (its 'running' widget gone) and saves the page."""
    WebDriverWait(driver, 60).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget']")
    )
    ARTIFACTS.mkdir(exist_ok=True)
    driver.set_window_size(1400, 2200)
    WebDriverWait(driver, 60).until(
        lambda d: (
            not d.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget']")
            and d.execute_script(
                "return [...document.images].every(i => i.complete)"
                " && !document.querySelector(\"[data-testid*='Skeleton']\")"
                " && [...document.querySelectorAll(\"[data-testid='stVegaLiteChart']\")]"
                ".every(e => e.querySelector('canvas, svg'))"
            )
        )
    )
    path = ARTIFACTS / f"console-{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    return path


def report(page: str, service_s: float, page_s: float) -> None:
    print(
        f"\n{page}: the service answered in {service_s:.2f} s; the page showed its data "
        f"{max(0.0, page_s - service_s):.2f} s after that ({page_s:.2f} s from opening it)"
    )


def test_the_price_page_shows_the_price_and_its_typical_error(browser, console_ui, console_service):
    api = console_service.url
    service_s = answered_in(api, ["/api/v1/model", "/api/v1/operator/models/1/evaluation"])
    began = time.perf_counter()
    price = price_for_the_form(browser, console_ui, timeout=90)
    expected = httpx.post(api + "/api/v1/predict", json={"instances": [EXAMPLE_HOUSE]}).json()
    assert price == f"${expected['predictions'][0]['predicted_price']:,.0f}"
    evaluation = httpx.get(api + "/api/v1/operator/models/1/evaluation").json()
    band = next(g for g in evaluation["errors_by_income"] if g["group"] == "5")  # income 8.3
    typical = WebDriverWait(browser, 60).until(
        lambda d: metric_shown(d, "Typical error for houses like it")
    )
    # The house on the map drawn from the test houses' coordinates.
    WebDriverWait(browser, 60).until(
        lambda d: d.find_elements(
            By.CSS_SELECTOR,
            "[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg",
        )
    )
    page_s = time.perf_counter() - began
    assert typical == f"±${band['mae']:,.0f}"
    assert settle_and_save(browser, "price").stat().st_size > 10_000
    report("Price", service_s, page_s)


def test_the_models_page_matches_the_registry(browser, console_ui, console_service):
    api = console_service.url
    models = httpx.get(api + "/api/v1/operator/models").json()
    assert [v["aliases"] for v in models["versions"]] == [["challenger"], ["champion"]]
    mae = models["versions"][1]["test_metrics"]["mae"]
    service_s = answered_in(
        api, ["/api/v1/operator/models", "/api/v1/operator/models/1/evaluation"]
    )
    page_s = shown(
        browser,
        console_ui + "/models",
        ["@champion: version 1", "@challenger: version 2", f"${mae:,.0f}",
         "Typical error per income band", "What the model leans on"],
    )  # fmt: skip
    assert settle_and_save(browser, "models").stat().st_size > 10_000
    report("Models", service_s, page_s)


def test_the_releases_page_shows_the_audit_log_and_shadow(browser, console_ui, console_service):
    api = console_service.url
    service_s = answered_in(
        api, ["/api/v1/operator/release", "/api/v1/operator/shadow", "/api/v1/operator/rollouts"]
    )
    release = httpx.get(api + "/api/v1/operator/release").json()
    assert [(r["revision"], r["percent"]) for r in release["split"]["revisions"]] == [
        (STABLE, 90),
        (CANARY, 10),
    ]
    expected = ["canary 50%", "rollback. p99 latency +45 ms > +30 ms", "0.985"]
    expected += [STABLE, CANARY, "90%", "10%", "model version 2", STABLE_URL, CANARY_URL]
    page_s = shown(browser, console_ui + "/releases", expected)
    assert settle_and_save(browser, "releases").stat().st_size > 10_000
    report("Releases", service_s, page_s)


def test_the_monitoring_page_shows_drift_over_time(browser, console_ui, console_service):
    api = console_service.url
    service_s = answered_in(api, ["/api/v1/operator/monitoring"])
    latest = httpx.get(api + "/api/v1/operator/monitoring").json()["reports"][0]
    assert latest["window"] == "2026-11-30"
    page_s = shown(
        browser,
        console_ui + "/monitoring",
        [
            "Drift per input over time",
            "Latest window: 2026-11-30",
            "median_income drifted",
            "Retrains triggered",
        ],
    )
    assert settle_and_save(browser, "monitoring").stat().st_size > 10_000
    report("Monitoring", service_s, page_s)
