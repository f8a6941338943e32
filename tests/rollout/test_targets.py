"""The rollout's release edits on copies of both stack files: each step, a shadow phase and a
rollback leave a stack file the whole stack's config check accepts, and change only the
release."""

from __future__ import annotations

import pytest

from infra.plan import config_from_text
from infra.release import stack_edits
from rollout.targets import Shift, shifted
from tests.test_project import ROOT

LIVE = "housing-api-m1-aaaaaaaa"
IMAGE = "europe-west1-docker.pkg.dev/p/r/service@sha256:" + "1" * 64


def first_release(stack: str) -> str:
    """A copy of the stack file with a first release (version 1 takes all traffic)."""
    text = (ROOT / f"Pulumi.{stack}.yaml").read_text()
    return stack_edits.canary(text, 1, 100, "", IMAGE)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_step_then_a_rollback_keeps_the_stack_file_valid(stack):
    text = first_release(stack)
    for percent in (5, 25, 50, 100):
        text = shifted(text, Shift(2, percent), LIVE)
        release = stack_edits.read_release(text)
        assert release is not None
        assert (release.model_version, release.canary_percent) == (2, percent)
        assert release.stable_revision == LIVE
        config_from_text(text, stack)
    rolled = stack_edits.with_release(stack_edits.rollback(text), shadow_percent=0)
    release = stack_edits.read_release(rolled)
    assert release is not None
    assert (release.canary_percent, release.shadow_percent) == (0, 0)
    config_from_text(rolled, stack)
    before = [line for line in first_release(stack).splitlines() if "release" not in line]
    assert [line for line in rolled.splitlines() if "release" not in line][:20] == before[:20]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_shadow_phase_mirrors_and_serves_no_one(stack):
    # A shadow phase needs the service made for it first (CPU after answers, invoker grant).
    service = "  housing-mlops:service:\n"
    text = first_release(stack).replace(service, service + "    shadowing: true\n", 1)
    assert "shadowing: true" in text
    text = shifted(text, Shift(2, 0, shadow_percent=100), LIVE)
    release = stack_edits.read_release(text)
    assert release is not None
    assert (release.canary_percent, release.shadow_percent) == (0, 100)
    config_from_text(text, stack)
    after = shifted(text, Shift(2, 5), LIVE)  # the first canary step ends the shadow phase
    release = stack_edits.read_release(after)
    assert release is not None
    assert (release.canary_percent, release.shadow_percent) == (5, 0)
    # Straight to all traffic: a canary at 100% can't keep mirroring, so the share goes first.
    whole = stack_edits.read_release(shifted(text, Shift(2, 100), LIVE))
    assert whole is not None
    assert (whole.canary_percent, whole.shadow_percent) == (100, 0)


def test_a_stacks_cross_check_without_google_credentials_says_how_to_get_them(
    tmp_path, monkeypatch
):
    from rollout.targets import StackTarget, TargetError

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud login either
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(TargetError) as caught:
        StackTarget("dev", ROOT).request_counts()
    message = str(caught.value)
    assert "gcloud auth application-default login" in message
    assert "--monitoring off" in message
