"""The local release file: the stack files' Release and their edits, revisions by name, every
wrong key named with its fix, and writes that a reader never sees half-done."""

from __future__ import annotations

import pytest

from infra.release import stack_edits
from infra.release.traffic import Release
from local_platform import release_state
from local_platform.release_state import LocalRevision, ReleaseStateError

M6, M7 = "housing-api-m6-1a2b3c4d", "housing-api-m7-5e6f7a8b"
REVISIONS = {
    M6: LocalRevision(url="http://127.0.0.1:8081", model_version=6),
    M7: LocalRevision(url="http://127.0.0.1:8082", model_version=7),
}


def text(**release: object) -> str:
    fields = {"model_version": 7, "image": release_state.LOCAL_IMAGE, "canary_percent": 10}
    fields |= {"stable_revision": M6} | release
    return release_state.render(Release(**fields), REVISIONS)  # type: ignore[arg-type]


def test_a_written_release_reads_back_with_its_split_and_tags():
    state = release_state.parse(text())
    assert state.newest == M7
    assert state.revisions[M6].url == "http://127.0.0.1:8081"
    assert [(t.revision, t.percent, t.tag) for t in state.targets()] == [
        (M6, 90, "stable"),
        (M7, 10, "canary"),
    ]
    assert state.tagged() == {"stable": M6, "canary": M7, "shadow": M7}


def test_a_first_release_has_only_the_canary_tag():
    state = release_state.parse(text(canary_percent=100, stable_revision=""))
    assert [(t.revision, t.percent) for t in state.targets()] == [(M7, 100)]
    assert state.tagged() == {"canary": M7}


def test_the_stack_files_edits_edit_it(tmp_path):
    path = tmp_path / "release.yaml"
    release_state.write(path, text(canary_percent=100, stable_revision=""))
    state = release_state.edit(path, lambda t: stack_edits.canary(t, 7, 0, M6))
    assert (state.release.canary_percent, state.release.stable_revision) == (0, M6)
    state = release_state.edit(path, lambda t: stack_edits.with_release(t, canary_percent=50))
    assert state.release.canary_percent == 50
    assert release_state.edit(path, stack_edits.rollback).release.canary_percent == 0
    state = release_state.edit(path, lambda t: stack_edits.promote(t, M7))
    assert (state.release.canary_percent, state.release.stable_revision) == (100, M7)
    assert release_state.read(path) == state


def test_a_new_revision_is_listed_last_and_becomes_the_newest():
    edited = release_state.with_revision(
        text(canary_percent=0), "housing-api-m8-00000000", "http://127.0.0.1:8083", 8
    )
    pending = release_state.parse(edited)
    assert pending.pending
    with pytest.raises(ReleaseStateError, match="asks for model version 7, which no listed"):
        pending.targets()
    state = release_state.parse(stack_edits.canary(edited, 8, 5, M7))
    assert not state.pending
    assert state.newest == "housing-api-m8-00000000"
    assert state.tagged() == {
        "stable": M7,
        "canary": "housing-api-m8-00000000",
        "shadow": "housing-api-m8-00000000",
    }


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace("canaryPercent:", "canaryPercnt:"),
            "`housing-mlops:release.canaryPercnt` is not a setting; did you mean `canaryPercent`?",
        ),
        (
            lambda t: t.replace("url:", "uri:"),
            f"`housing-mlops:revisions.{M6}.uri` is not a setting; did you mean `url`?",
        ),
        (
            lambda t: t.replace("housing-mlops:revisions", "housing-mlops:revision"),
            "`housing-mlops:revision` is not a setting; did you mean `housing-mlops:revisions`?",
        ),
        (
            lambda t: t.replace("canaryPercent: 10", "canaryPercent: ten"),
            "`housing-mlops:release.canaryPercent`: Expected `int`, got `str`",
        ),
        (
            lambda t: t.replace("canaryPercent: 10", "canaryPercent: 120"),
            "release.canaryPercent must be between 0 and 100, got 120",
        ),
        (
            lambda t: t.replace(f"stableRevision: {M6}", "stableRevision: housing-api-m5"),
            "stableRevision` is 'housing-api-m5', which is not under `housing-mlops:revisions`",
        ),
        (lambda t: t + "extra: 1\n", "expected one mapping, `config:`"),
        (lambda t: t.replace("modelVersion: 6", "modelVersion: six"), f"{M6}.modelVersion`"),
    ],
)
def test_a_wrong_key_is_named_with_its_fix(edit, message):
    with pytest.raises(ReleaseStateError) as err:
        release_state.parse(edit(text()), "home/release.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("home/release.yaml: ")
    assert str(err.value).endswith("Fix it in home/release.yaml")


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(ReleaseStateError, match="no local release yet"):
        release_state.read(tmp_path / "release.yaml")


def test_a_write_replaces_the_file_in_one_rename_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "home" / "release.yaml"
    release_state.write(path, text())
    before = path.stat().st_ino
    release_state.write(path, text(canary_percent=50))
    assert path.stat().st_ino != before  # a new file renamed over the old one
    assert release_state.read(path).release.canary_percent == 50
    assert [p.name for p in path.parent.iterdir()] == ["release.yaml"]


def test_a_refused_edit_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "release.yaml"
    release_state.write(path, text())
    before = path.read_text()
    with pytest.raises(ReleaseStateError, match="shadowPercent must be between 0 and 100"):
        release_state.edit(path, lambda t: t.replace("shadowPercent: 0", "shadowPercent: 300"))
    assert path.read_text() == before


def test_a_release_ahead_of_its_revisions_is_pending_until_the_stack_lists_one(tmp_path):
    """What `canary … local` writes: the release asks for version 8 (with faults) before any
    revision serves it; the splitter can't route by it (targets refuse) until one is listed."""
    path = tmp_path / "release.yaml"
    release_state.write(path, text(canary_percent=100, stable_revision=""))
    state = release_state.edit(
        path,
        lambda t: release_state.with_faults(stack_edits.canary(t, 8, 10, M7), "error_rate=0.05"),
    )
    assert state.pending
    assert (state.release.model_version, state.revision_faults) == (8, "error_rate=0.05")
    with pytest.raises(ReleaseStateError, match=r"version 8 with faults 'error_rate=0\.05'"):
        state.targets()
    m8 = LocalRevision(url="http://127.0.0.1:8083", model_version=8, faults="error_rate=0.05")
    state = release_state.edit(
        path, lambda t: release_state.with_revisions(t, {M7: REVISIONS[M7], "m8": m8})
    )
    assert not state.pending
    assert (state.live, state.on_trial) == (M7, "m8")
    assert state.tagged() == {"stable": M7, "canary": "m8", "shadow": "m8"}
    assert "revisionFaults: error_rate=0.05" in path.read_text()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("error_rat=0.05", "did you mean `error_rate`?"),
        ("delay_ms=-1", "delay_ms: expected `delay_ms` to be milliseconds, at least 0"),
    ],
)
def test_a_wrong_fault_spec_is_named(spec, message):
    with pytest.raises(ReleaseStateError) as err:
        release_state.parse(release_state.with_faults(text(), spec), "release.yaml")
    assert "`housing-mlops:revisionFaults`: " in str(err.value)
    assert message in str(err.value)
