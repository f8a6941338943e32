import pytest

from infra.release import stack_edits
from infra.release.traffic import ReleaseError

STACK = """\
# Production: changes here are reviewed.
config:
  gcp:project: housing-mlops-prod   # the GCP project
  gcp:region: europe-west1
  housing-mlops:release:
    # the model version the newest revision serves
    modelVersion: 6
    image: europe-docker.pkg.dev/p/r/service@sha256:aaa
    canaryPercent: 100
    stableRevision: ""
"""


def test_canary_changes_only_the_release_and_keeps_comments():
    new = stack_edits.canary(STACK, model_version=7, percent=10, live_revision="api-m6-1a2b3c4d")
    assert "# Production: changes here are reviewed." in new
    assert "# the GCP project" in new
    assert "# the model version the newest revision serves" in new
    release = stack_edits.read_release(new)
    assert release is not None
    assert (release.model_version, release.canary_percent, release.stable_revision) == (
        7,
        10,
        "api-m6-1a2b3c4d",
    )
    assert release.image.endswith("sha256:aaa")
    changed = [line for line in new.splitlines() if line not in STACK.splitlines()]
    assert changed == [
        "    modelVersion: 7",
        "    canaryPercent: 10",
        '    stableRevision: "api-m6-1a2b3c4d"',  # keeps the quoting it had
        "    stableImage: europe-docker.pkg.dev/p/r/service@sha256:aaa",  # the live one's image
    ]


def test_promote_makes_the_canary_stable_and_rollback_is_one_line():
    canaried = stack_edits.canary(STACK, 7, 10, "api-m6-1a2b3c4d")
    promoted = stack_edits.promote(canaried, "api-m7-5e6f7a8b")
    assert [line for line in promoted.splitlines() if line not in canaried.splitlines()] == [
        "    canaryPercent: 100",
        '    stableRevision: "api-m7-5e6f7a8b"',
    ]
    rolled_back = stack_edits.rollback(canaried)
    assert [line for line in rolled_back.splitlines() if line not in canaried.splitlines()] == [
        "    canaryPercent: 0"
    ]


def test_rollback_without_a_stable_revision_is_refused():
    with pytest.raises(ReleaseError, match="stableRevision is empty"):
        stack_edits.rollback(STACK)


def test_invalid_percent_is_refused():
    with pytest.raises(ReleaseError, match="canaryPercent must be between 0 and 100, got 120"):
        stack_edits.canary(STACK, 7, 120, "api-m6-1a2b3c4d")
    assert (
        stack_edits.read_release(stack_edits.canary(STACK, 7, 50, "api-m6-1a2b3c4d")).canary_percent
        == 50
    )


def test_shadow_percent_is_read_and_promote_ends_the_shadow_phase():
    shadowing = stack_edits.with_release(
        stack_edits.canary(STACK, 7, 0, "api-m6-1a2b3c4d"), shadow_percent=50
    )
    assert "    shadowPercent: 50" in shadowing.splitlines()
    release = stack_edits.read_release(shadowing)
    assert release is not None
    assert release.shadow_percent == 50
    promoted = stack_edits.promote(shadowing, "api-m7-5e6f7a8b")
    assert "    shadowPercent: 0" in promoted.splitlines()
    assert "shadowPercent" not in stack_edits.promote(
        stack_edits.canary(STACK, 7, 10, "api-m6-1a2b3c4d"), "api-m7-5e6f7a8b"
    )


def test_a_shadow_percent_out_of_range_is_refused():
    canaried = stack_edits.canary(STACK, 7, 0, "api-m6-1a2b3c4d")
    with pytest.raises(ReleaseError, match=r"release\.shadowPercent must be between 0 and 100"):
        stack_edits.with_release(canaried, shadow_percent=150)
