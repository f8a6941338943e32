import pytest

from infra.release.traffic import Release, ReleaseError, model_version_of, revision_name, split

TEMPLATE = {
    "image": "europe-docker.pkg.dev/p/r/service@sha256:abc",
    "env": {"MODEL_URI": "models:/housing-price/7"},
}


def release(**kw):
    return Release(**{"model_version": 7, "image": TEMPLATE["image"], **kw})


@pytest.mark.parametrize("percent", [0, 10, 50, 100])
def test_traffic_sums_to_100_with_tags(percent):
    targets = split(release(canary_percent=percent, stable_revision="svc-m6-aaaa"), "svc-m7-bbbb")
    assert sum(t.percent for t in targets) == 100
    by_tag = {t.tag: t for t in targets}
    assert by_tag["canary"].revision == "svc-m7-bbbb"
    assert by_tag["canary"].percent == percent
    assert by_tag["stable"].revision == "svc-m6-aaaa"
    assert by_tag["stable"].percent == 100 - percent


def test_first_deploy_sends_everything_to_the_newest():
    assert [(t.revision, t.percent) for t in split(release(), "svc-m7-bbbb")] == [
        ("svc-m7-bbbb", 100)
    ]


def test_revision_names_are_stable_and_change_with_the_template():
    name = revision_name("housing-api", 7, TEMPLATE)
    assert name == revision_name("housing-api", 7, dict(reversed(TEMPLATE.items())))
    assert name.startswith("housing-api-m7-")
    assert revision_name("housing-api", 7, {**TEMPLATE, "image": "other"}) != name
    assert revision_name("housing-api", 8, TEMPLATE) != name
    long = revision_name("A_very_long_service_name" * 5, 123, TEMPLATE)
    assert len(long) <= 63
    assert long == long.lower()


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"canary_percent": 120}, "release.canaryPercent must be between 0 and 100, got 120"),
        ({"canary_percent": 10}, "release.stableRevision is empty"),
        ({"model_version": 0}, "release.modelVersion"),
        ({"image": ""}, "release.image"),
        (
            {"shadow_percent": 101, "canary_percent": 0, "stable_revision": "svc-m6-aaaa"},
            "release.shadowPercent must be between 0 and 100, got 101",
        ),
        (
            {"shadow_percent": -1, "canary_percent": 0, "stable_revision": "svc-m6-aaaa"},
            "release.shadowPercent must be between 0 and 100, got -1",
        ),
        ({"shadow_percent": 20}, "release.shadowPercent is 20 but release.canaryPercent is 100"),
    ],
)
def test_bad_release_names_the_key(kw, key):
    with pytest.raises(ReleaseError) as err:
        split(release(**kw), "svc-m7-bbbb")
    assert key in str(err.value)


def test_shadow_defaults_to_off_and_a_shadow_phase_keeps_all_traffic_on_stable():
    assert release().shadow_percent == 0
    shadowing = release(canary_percent=0, shadow_percent=100, stable_revision="svc-m6-aaaa")
    assert [(t.revision, t.percent) for t in split(shadowing, "svc-m7-bbbb")] == [
        ("svc-m6-aaaa", 100),
        ("svc-m7-bbbb", 0),
    ]


def test_a_revisions_name_tells_its_model_version():
    assert model_version_of(revision_name("housing-api", 12, TEMPLATE)) == 12
    assert model_version_of("housing-api-00042-xyz") == 0, "a revision made by hand"
