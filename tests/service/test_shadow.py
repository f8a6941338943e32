"""The shadow mirror's pure parts: which requests are mirrored, where to, and the window report."""

from __future__ import annotations

import math

import pytest

from housing_platform.artifact_store import LocalStore
from housing_platform.release_feed import ReleaseFeed
from service import shadow_report
from service.shadow import Sampler, audience_for, target_of
from service.shadow_report import Outcomes

FEED = ReleaseFeed(
    stable_revision="housing-api-m6-aaaa",
    shadow_percent=25,
    shadow_url="http://127.0.0.1:8080/tags/shadow/",
    shadow_revision="housing-api-m7-bbbb",
    shadow_model_version=7,
)


@pytest.mark.parametrize("percent", [0, 1, 25, 33, 50, 99, 100])
def test_the_sampler_mirrors_exactly_the_share_asked(percent):
    sampler = Sampler()
    assert sum(sampler.pick(percent) for _ in range(10_000)) == percent * 100


def test_the_stable_revision_mirrors_to_the_shadow_predict_route():
    target = target_of(FEED, "housing-api-m6-aaaa", {"Authorization": "Bearer t"})
    assert target is not None
    assert target.url == "http://127.0.0.1:8080/tags/shadow/api/v1/predict"
    assert (target.percent, target.revision, target.model_version) == (
        25,
        "housing-api-m7-bbbb",
        7,
    )
    assert target.headers == {"Authorization": "Bearer t"}


@pytest.mark.parametrize(
    ("feed", "revision"),
    [
        (None, "housing-api-m6-aaaa"),
        (FEED, "housing-api-m7-bbbb"),  # the shadow reads the same feed: never to itself
        (FEED, "housing-api-m5-cccc"),  # an older revision still running
    ],
)
def test_only_the_feeds_stable_revision_mirrors(feed, revision):
    assert target_of(feed, revision) is None


def test_a_share_of_zero_or_no_url_mirrors_nothing():
    assert target_of(ReleaseFeed(stable_revision="s", shadow_url="http://x"), "s") is None
    assert target_of(ReleaseFeed(stable_revision="s", shadow_percent=50), "s") is None


def test_the_id_token_audience_is_the_services_own_url():
    assert (
        audience_for("https://shadow---housing-api-abc123-ew.a.run.app")
        == "https://housing-api-abc123-ew.a.run.app"
    )
    assert audience_for("https://housing-api-abc123-ew.a.run.app/x") == (
        "https://housing-api-abc123-ew.a.run.app"
    )


def report(stable, shadow, shadow_latency_ms=(10.0, 20.0), **outcomes):
    counts = {"answered": len(shadow), "timed_out": 0, "dropped": 0, "failed": 0, **outcomes}
    return shadow_report.build(
        start=1_764_525_600.0,  # 2025-11-30T18:00:00Z
        end=1_764_525_900.0,
        stable_revision="housing-api-m6-aaaa",
        stable_model_version="6",
        shadow_revision="housing-api-m7-bbbb",
        shadow_model_version=7,
        outcomes=Outcomes(mirrored=sum(counts.values()), **counts),
        stable_prices=stable,
        shadow_prices=shadow,
        stable_latency_ms=[float(i) for i in range(1, 101)],
        shadow_latency_ms=list(shadow_latency_ms),
    )


def test_a_shadow_pricing_ten_percent_higher_is_reported_as_such(tmp_path):
    stable = [100_000.0, 200_000.0, 300_000.0, 450_000.0]
    r = report(stable, [p * 1.1 for p in stable], timed_out=2)
    assert r.agreement.mape == pytest.approx(0.1)
    assert r.agreement.within_5pct == 0.0
    assert r.agreement.mean_signed_difference == pytest.approx(26_250.0)
    assert r.agreement.spearman == pytest.approx(1.0)
    assert (r.outcomes.mirrored, r.outcomes.answered, r.outcomes.timed_out) == (6, 4, 2)
    assert (r.stable_latency.p50_ms, r.stable_latency.p99_ms) == (50.5, 99.01)
    assert r.shadow_latency.p50_ms == 15.0
    assert r.mean_batch_houses == 2.0
    assert r.window == "20251130T180000Z"
    store = LocalStore(tmp_path)
    where = shadow_report.write(store, r)
    assert where == "shadow/7/20251130T180000Z.json"
    assert shadow_report.read(store, where) == r


def test_the_same_model_agrees_fully_and_every_figure_goes_to_mlflow():
    stable = [100_000.0, 200_000.0, 300_000.0]
    r = report(stable, stable)
    assert (r.agreement.mape, r.agreement.within_5pct, r.agreement.within_10pct) == (0, 1, 1)
    figures = shadow_report.metrics(r)
    assert figures["shadow_mape"] == 0.0
    assert figures["shadow_houses_compared"] == 3.0
    assert all(math.isfinite(v) for v in figures.values())


def test_a_window_with_no_answer_reports_no_figures_rather_than_zeros():
    r = report([], [], shadow_latency_ms=(), failed=5)
    assert r.agreement.n == 0
    assert r.agreement.mape is None
    assert r.shadow_latency.p99_ms is None
    assert "shadow_mape" not in shadow_report.metrics(r)
    assert shadow_report.metrics(r)["shadow_failed"] == 5.0
