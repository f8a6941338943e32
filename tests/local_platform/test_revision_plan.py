"""The reconciler's plan, pure: which revisions a release asks for, which to start and which to
retire, from the release file's text and the names that run."""

from __future__ import annotations

from infra.release import stack_edits
from local_platform import release_state
from local_platform.release_state import LocalRevision
from local_platform.revisions import Spec, feed_of, name_of, plan, split_of

R6, R7 = name_of(6), name_of(7)
API = "http://127.0.0.1:8080"


def listed(*names: str) -> dict[str, LocalRevision]:
    return {
        n: LocalRevision(url=f"http://127.0.0.1:{8081 + i}", model_version=int(n.split("-m")[1][0]))
        for i, n in enumerate(names)
    }


def first(version: int = 6, *names: str) -> str:
    return release_state.render(release_state.first_release(version), listed(*names))


def test_a_first_release_asks_for_one_revision_of_its_version():
    todo = plan(release_state.parse(first()), running=())
    assert todo.wanted == todo.start == (Spec(R6, 6),)
    assert todo.stop == ()


def test_a_canary_starts_the_new_version_and_keeps_the_stable_one_running():
    text = stack_edits.canary(first(6, R6), 7, 10, R6)
    todo = plan(release_state.parse(text), running={R6})
    assert todo.wanted == (Spec(R6, 6), Spec(R7, 7))
    assert (todo.start, todo.stop) == ((Spec(R7, 7),), ())


def test_faults_make_a_new_revision_of_the_same_version():
    text = release_state.with_faults(stack_edits.canary(first(6, R6), 6, 10, R6), "delay_ms=200")
    todo = plan(release_state.parse(text), running={R6})
    faulty = name_of(6, "delay_ms=200")
    assert faulty != R6
    assert todo.start == (Spec(faulty, 6, "delay_ms=200"),)


def test_promote_retires_the_old_stable_revision_and_a_restart_starts_what_is_listed():
    text = release_state.with_revisions(stack_edits.canary(first(6, R6), 7, 10, R6), listed(R6, R7))
    promoted = release_state.parse(stack_edits.promote(text, R7))
    todo = plan(promoted, running={R6, R7})
    assert (todo.wanted, todo.start, todo.stop) == ((Spec(R7, 7),), (), (R6,))
    # A stack started again on the same file: the listed stable and newest, under their names.
    rolled_back = release_state.parse(stack_edits.rollback(text))
    assert plan(rolled_back, running=()).start == (Spec(R6, 6), Spec(R7, 7))


def test_a_canary_back_to_the_stable_version_reuses_the_running_revision():
    text = release_state.with_revisions(stack_edits.canary(first(6, R6), 7, 10, R6), listed(R6, R7))
    back = release_state.parse(stack_edits.canary(text, 6, 10, R6))
    todo = plan(back, running={R6, R7})
    assert (todo.wanted, todo.start, todo.stop) == ((Spec(R6, 6),), (), (R7,))


def test_the_feed_names_the_stable_revision_and_the_shadow_tag_url():
    text = release_state.with_revisions(stack_edits.canary(first(6, R6), 7, 0, R6), listed(R6, R7))
    state = release_state.parse(stack_edits.with_release(text, shadow_percent=25))
    feed = feed_of(state, API)
    assert (feed.stable_revision, feed.shadow_revision, feed.shadow_model_version) == (R6, R7, 7)
    assert (feed.shadow_percent, feed.shadow_url) == (25, f"{API}/tags/shadow")
    assert feed.mirroring
    alone = feed_of(release_state.parse(first(6, R6)), API)
    assert (alone.stable_revision, alone.shadow_url, alone.mirroring) == (R6, "", False)


def test_the_split_shows_each_revisions_version_share_and_tag_urls():
    text = release_state.with_revisions(stack_edits.canary(first(6, R6), 7, 10, R6), listed(R6, R7))
    split = split_of(release_state.parse(text), API)
    rows = [
        (r.revision, r.model_version, r.percent, [t.tag for t in r.tags]) for r in split.revisions
    ]
    assert rows == [(R6, 6, 90, ["stable"]), (R7, 7, 10, ["canary", "shadow"])]
    assert split.revisions[1].tags[0].url == f"{API}/tags/canary"
    alone = split_of(release_state.parse(first(6, R6)), API)
    assert [(r.revision, r.percent) for r in alone.revisions] == [(R6, 100)]
