"""The shadow mirror between real processes: a stable ``python -m service`` mirroring to a second
service (same model, or a drill pricing 10% higher) or to a stand-in challenger that dies or
answers after 2 s. Houses are counted on both sides' ``/metrics``; the reports are read from the
artifact store and MLflow."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import msgspec
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from housing_platform import release_feed
from housing_platform.artifact_store import LocalStore
from housing_platform.release_feed import ReleaseFeed
from model_runtime.contract import FEATURES
from service import shadow_report
from tests.helpers import LOOPBACK, Server, free_port, serve_module, serving, wait_until
from tests.local_platform.conftest import registry_home  # noqa: F401  (the fixture)

STABLE = "housing-api-m1-stable"
SHADOW = "housing-api-m2-shadow"
OUTCOMES = ("answered", "timed_out", "dropped", "failed")
#: A service's start on a machine shared with other suites (two load models from MLflow at once).
START_S = 300.0


def counts(server: Server) -> dict[str, float]:
    """The mirror's figures on a server's /metrics: mirrored, pending, percent and each outcome."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "housing_shadow_mirrored_houses_total":
                found["mirrored"] = sample.value
            elif sample.name == "housing_shadow_houses_total":
                found[sample.labels["outcome"]] = sample.value
            elif sample.name == "housing_shadow_pending_houses":
                found["pending"] = sample.value
            elif sample.name == "housing_shadow_percent":
                found["percent"] = sample.value
    return found


def settled(server: Server, mirrored: int) -> dict[str, float]:
    """Waits until ``mirrored`` houses were mirrored and each has its outcome."""

    def done() -> dict[str, float] | None:
        c = counts(server)
        return c if c.get("mirrored") == mirrored and c.get("pending") == 0 else None

    found = wait_until(done, f"{mirrored} mirrored houses settled", log=server.log)
    assert found is not None
    return found


def houses(sample: pd.DataFrame, n: int) -> list[dict[str, object]]:
    rows = sample[list(FEATURES)].head(n).astype(object)
    return [
        {str(k): (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
        for row in rows.to_dict("records")
    ]


def send(server: Server, batches: list[list[dict[str, object]]]) -> list[int]:
    """Each batch as one predict request, eight at a time; the statuses."""
    with httpx.Client(base_url=server.url, timeout=30) as client, ThreadPoolExecutor(8) as pool:
        return list(
            pool.map(
                lambda b: client.post("/api/v1/predict", json={"instances": b}).status_code,
                batches,
            )
        )


def mirror_to(store: LocalStore, url: str, percent: int = 100, version: int = 2) -> None:
    release_feed.publish(
        store,
        ReleaseFeed(
            stable_revision=STABLE,
            shadow_percent=percent,
            shadow_url=url,
            shadow_revision=SHADOW,
            shadow_model_version=version,
        ),
    )


def stable_env(home: Path, artifacts: Path, **extra: str) -> dict[str, str]:
    return {
        "HOUSING_MLOPS_HOME": str(home),
        "MODEL_URI": "models:/housing-price/1",
        "K_REVISION": STABLE,
        "ARTIFACT_URI": str(artifacts),
        "PREDICTION_LOG": "false",
        "SHADOW_FEED_SECONDS": "0.1",
        **extra,
    }


@contextlib.contextmanager
def challenger(tmp_path: Path, delay_ms: int) -> Iterator[Server]:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "tests.service.shadow_challenger:app"]
    argv += ["--host", LOOPBACK, "--port", str(port), "--no-access-log"]
    env = {**os.environ, "DELAY_MS": str(delay_ms)}
    with serving(argv, port, log=tmp_path / "challenger.log", ready_path="/ready", env=env) as s:
        yield s


@pytest.mark.parametrize(
    ("faults", "mape"), [("", 0.0), ("price_factor=1.1", 0.1)], ids=["same-model", "10pct-higher"]
)
def test_a_shadow_of_the_same_model_agrees_and_one_pricing_10pct_higher_shows_it(
    registry_home,  # noqa: F811
    housing_sample,
    tmp_path,
    faults,
    mape,
):
    artifacts = tmp_path / "artifacts"
    store = LocalStore(artifacts)
    tracking = f"sqlite:///{registry_home / 'mlflow.db'}"
    shadow_env = {
        **stable_env(registry_home, artifacts),
        "MODEL_URI": "models:/housing-price/2",
        "K_REVISION": SHADOW,
        "HOUSING_FAULTS": faults,
    }
    env = stable_env(
        registry_home,
        artifacts,
        SHADOW_WINDOW_SECONDS="1",
        SHADOW_TIMEOUT_SECONDS="10",  # about agreement: a busy machine's slow answer still counts
        MLFLOW_TRACKING_URI=tracking,
    )
    with (
        serve_module("service", shadow_env, tmp_path / "shadow.log", "/ready", START_S) as shadow,
        serve_module("service", env, tmp_path / "stable.log", "/ready", START_S) as stable,
    ):
        mirror_to(store, shadow.url)
        wait_until(lambda: counts(stable).get("percent") == 100, "mirroring on", log=stable.log)
        sample = houses(housing_sample, 300)
        batches = [[h] for h in sample[:100]] + [sample[i : i + 10] for i in range(100, 300, 10)]
        assert set(send(stable, batches)) == {200}
        c = settled(stable, 300)
        assert {k: c[k] for k in OUTCOMES} == {
            "answered": 300,
            "timed_out": 0,
            "dropped": 0,
            "failed": 0,
        }

        def reports() -> list[shadow_report.ShadowReport] | None:
            found = [shadow_report.read(store, k) for k in store.list("shadow/2")]
            return found if sum(r.outcomes.mirrored for r in found) == 300 else None

        found = wait_until(reports, "reports of all 300 houses", log=stable.log) or []
        assert counts(shadow)["mirrored"] == 0  # the shadow reads the feed too, never mirrors
    assert sum(r.agreement.n for r in found) == 300
    for r in found:
        assert (r.stable_revision, r.shadow_revision, r.shadow_model_version) == (
            STABLE,
            SHADOW,
            2,
        )
        assert r.agreement.mape == pytest.approx(mape, abs=1e-6)
        assert r.outcomes.answered == r.outcomes.mirrored
        assert r.stable_latency.p99_ms is not None
        assert r.shadow_latency.p99_ms is not None
        if mape == 0.0:
            assert (r.agreement.within_5pct, r.agreement.within_10pct) == (1.0, 1.0)
            assert r.agreement.mean_signed_difference == pytest.approx(0.0, abs=1e-6)
        else:
            assert r.agreement.within_5pct == 0.0
            assert (r.agreement.mean_signed_difference or 0) > 0
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    run_id = str(client.get_model_version("housing-price", "2").run_id)
    # Versions 1 and 2 share one run here, which other tests' reports log to as well.
    logged = {m.step: m.value for m in client.get_metric_history(run_id, "shadow_mape")}
    for r in found:
        assert logged[int(pd.Timestamp(r.since).timestamp())] == pytest.approx(mape, abs=1e-6)


def test_a_challenger_killed_mid_mirroring_costs_the_stable_revision_nothing(
    registry_home,  # noqa: F811
    housing_sample,
    tmp_path,
):
    artifacts = tmp_path / "artifacts"
    env = stable_env(registry_home, artifacts, SHADOW_TIMEOUT_SECONDS="0.5")
    sample = houses(housing_sample, 150)
    with serve_module("service", env, tmp_path / "stable.log", "/ready", START_S) as stable:
        with challenger(tmp_path, 0) as target:
            mirror_to(LocalStore(artifacts), target.url)
            wait_until(lambda: counts(stable).get("percent") == 100, "on", log=stable.log)
            assert set(send(stable, [[h] for h in sample[:50]])) == {200}
            assert settled(stable, 50)["answered"] == 50
        assert set(send(stable, [[h] for h in sample[50:]])) == {200}
        c = settled(stable, 150)
    assert c["answered"] == 50
    assert c["failed"] + c["timed_out"] + c["dropped"] == 100
    assert c["failed"] > 0


def test_a_challenger_answering_after_2_s_times_out_and_drops_counted_never_delaying_stable(
    registry_home,  # noqa: F811
    housing_sample,
    tmp_path,
):
    artifacts = tmp_path / "artifacts"
    env = stable_env(
        registry_home,
        artifacts,
        SHADOW_TIMEOUT_SECONDS="0.5",
        SHADOW_CONCURRENCY="2",
        SHADOW_CAPACITY_HOUSES="4",
        SHADOW_WINDOW_SECONDS="1",
    )
    sample = houses(housing_sample, 200)
    with (
        challenger(tmp_path, 2000) as target,
        serve_module("service", env, tmp_path / "stable.log", "/ready", START_S) as stable,
    ):
        mirror_to(LocalStore(artifacts), target.url, version=9)
        wait_until(lambda: counts(stable).get("percent") == 100, "on", log=stable.log)
        # Requests of 5 houses never fit the queue of 4: dropped whatever the timing.
        batches = [[h] for h in sample[:150]] + [sample[i : i + 5] for i in range(150, 200, 5)]
        assert set(send(stable, batches)) == {200}
        c = settled(stable, 200)
        assert c["timed_out"] > 0
        assert c["dropped"] >= 50
        assert c["answered"] == 0
        assert c["timed_out"] + c["dropped"] + c["failed"] == 200
        store = LocalStore(artifacts)

        def reported() -> int | None:
            total = sum(
                shadow_report.read(store, k).outcomes.mirrored for k in store.list("shadow/9")
            )
            return total if total == 200 else None

        wait_until(reported, "reports of all 200 houses", log=stable.log)
    for key in store.list("shadow/9"):
        r = msgspec.json.decode(store.read_bytes(key))
        assert r["agreement"]["n"] == 0
        assert r["agreement"]["mape"] is None
