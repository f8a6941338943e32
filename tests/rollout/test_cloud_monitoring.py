"""The GCP cross-check: Cloud Monitoring's per-revision request counts, asked for and read the
way the API answers (against a stand-in on loopback), and judged with the errors test."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rollout import judge
from rollout.cloud_monitoring import RequestCountReader, RequestCounts, parse, query
from rollout.evidence import Counts, EvidenceError
from tests.rollout.fake_monitoring import FakeMonitoring, serving

SINCE = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC).timestamp()
UNTIL = SINCE + 300


def test_the_query_asks_for_the_services_revisions_per_minute_by_response_class():
    params = query("housing-api", ["api-00002-new", "api-00001-old"], SINCE, UNTIL)
    f = params["filter"]
    assert 'metric.type = "run.googleapis.com/request_count"' in f
    assert 'resource.type = "cloud_run_revision"' in f
    assert 'resource.labels.service_name = "housing-api"' in f
    assert 'revision_name = "api-00001-old" OR resource.labels.revision_name = "api-00002-new"' in f
    assert params["interval.startTime"] == "2026-12-01T09:00:00Z"
    assert params["interval.endTime"] == "2026-12-01T09:05:00Z"
    assert params["aggregation.perSeriesAligner"] == "ALIGN_DELTA"
    assert params["aggregation.crossSeriesReducer"] == "REDUCE_SUM"
    assert set(params["aggregation.groupByFields"]) == {
        "resource.labels.revision_name",
        "metric.labels.response_code_class",
    }


def _series(revision: str, code_class: str, *points: tuple[str, int]) -> dict:
    return {
        "metric": {"labels": {"response_code_class": code_class}},
        "resource": {"labels": {"revision_name": revision}},
        "points": [
            {"interval": {"startTime": end, "endTime": end}, "value": {"int64Value": str(n)}}
            for end, n in points
        ],
    }


def test_counts_are_summed_per_revision_with_5xx_as_errors_and_the_newest_point_kept():
    pages = [
        {
            "timeSeries": [
                _series("new", "2xx", ("2026-12-01T09:01:00Z", 900), ("2026-12-01T09:02:00Z", 950)),
                _series("new", "5xx", ("2026-12-01T09:02:00Z", 100)),
                _series("new", "4xx", ("2026-12-01T09:02:00Z", 7)),
            ]
        },
        {"timeSeries": [_series("old", "2xx", ("2026-12-01T09:03:00Z", 5000))]},
    ]
    counts = parse(pages)
    assert counts.of("new") == Counts(requests=1957, errors=100)
    assert counts.of("old") == Counts(requests=5000, errors=0)
    assert counts.of("absent") == Counts()
    assert counts.through == datetime(2026, 12, 1, 9, 3, tzinfo=UTC).timestamp()
    assert parse([{}]).through == 0.0  # nothing arrived yet: no evidence, not "no errors"


def test_the_counts_cover_a_moment_only_a_whole_alignment_period_after_it():
    counts = RequestCounts({}, through=UNTIL)
    assert counts.covers(UNTIL - 60)
    assert not counts.covers(UNTIL - 59)
    assert not RequestCounts({}).covers(SINCE)  # nothing arrived yet


def test_a_time_series_of_another_shape_is_an_error_naming_what_is_missing():
    with pytest.raises(EvidenceError, match="revision_name"):
        parse([{"timeSeries": [{"resource": {"labels": {}}, "points": []}]}])


def test_the_reader_sends_its_token_and_query_and_follows_every_page():
    fake = FakeMonitoring(counts={f"rev-{i}": (1000, i) for i in range(5)}, page_size=3)
    with serving(fake):
        reader = RequestCountReader("my-project", "housing-api", lambda: "tok-1", api=fake.url)
        counts = reader([f"rev-{i}" for i in range(5)], SINCE, UNTIL)
    assert counts.counts == {f"rev-{i}": Counts(1000, i) for i in range(5)}
    assert len(fake.sent) >= 2  # 9 series, 3 a page
    assert {s.path for s in fake.sent} == {"/v3/projects/my-project/timeSeries"}
    assert {s.authorization for s in fake.sent} == {"Bearer tok-1"}
    first = fake.sent[0].params
    assert first["aggregation.groupByFields"] == [
        "resource.labels.revision_name",
        "metric.labels.response_code_class",
    ]
    assert "pageToken" not in first
    assert "pageToken" in fake.sent[-1].params


def test_a_refused_read_is_an_evidence_error_naming_the_url():
    fake = FakeMonitoring(status=403)
    with serving(fake):
        reader = RequestCountReader("p", "housing-api", lambda: "t", api=fake.url)
        with pytest.raises(EvidenceError, match=r"Cloud Monitoring at http://127\.0\.0\.1:.*403"):
            reader(["a"], SINCE, UNTIL)


LIMITS = judge.JudgeLimits()


def _verdict(outcome: judge.Outcome, reason: str = "every check passed") -> judge.Verdict:
    return judge.Verdict(outcome=outcome, reason=reason, checks=(), limits=LIMITS)


def _errors(canary: tuple[int, int], stable: tuple[int, int]) -> judge.ErrorEvidence:
    return judge.ErrorEvidence(
        canary_requests=canary[0],
        canary_errors=canary[1],
        stable_requests=stable[0],
        stable_errors=stable[1],
    )


def test_users_errors_in_the_counts_fail_a_step_the_probes_passed():
    crossed = judge.cross_checked(_verdict("pass"), _errors((2000, 100), (6000, 0)), covered=True)
    assert crossed.outcome == "fail"
    assert crossed.reason.startswith("monitoring: Cloud Monitoring: canary 100/2000 5xx")
    assert crossed.checks[-1].name == "monitoring"
    both = judge.cross_checked(
        _verdict("fail", "prices: off"), _errors((2000, 100), (6000, 0)), covered=False
    )
    assert both.outcome == "fail"
    assert both.reason.startswith("prices: off; monitoring: ")


def test_a_passing_step_waits_until_the_counts_cover_its_window_unless_told_not_to():
    clean = _errors((2000, 1), (6000, 3))
    waiting = judge.cross_checked(_verdict("pass"), clean, covered=False)
    assert waiting.outcome == "inconclusive"
    assert "waiting for Cloud Monitoring" in waiting.reason
    assert judge.cross_checked(_verdict("pass"), None, covered=False).outcome == "inconclusive"
    assert judge.cross_checked(_verdict("pass"), clean, covered=True).outcome == "pass"
    assert judge.cross_checked(_verdict("pass"), None, covered=False, wait=False).outcome == "pass"


def test_too_few_counted_requests_never_fail_or_hold_a_covered_step():
    few = _errors((40, 4), (60, 0))  # 10% errors, but under min_requests a side
    crossed = judge.cross_checked(_verdict("pass"), few, covered=True)
    assert crossed.outcome == "pass"
    assert crossed.checks[-1].outcome == "inconclusive"


def test_a_stack_rollout_waits_for_the_counts_and_its_deadline_leaves_room_for_them():
    from rollout.cli import parser, plan_of

    stack = plan_of(parser().parse_args(["dev", "--model-version", "3", "--interval", "2m"]))
    assert stack.monitoring == "wait"
    assert stack.deadline_s == 120 + 600
    local = plan_of(parser().parse_args(["local", "--model-version", "3"]))
    assert (local.monitoring, local.deadline_s) == ("off", 300)
    checked = plan_of(parser().parse_args(["dev", "--model-version", "3", "--monitoring", "check"]))
    assert (checked.monitoring, checked.deadline_s) == ("check", 300)


def test_a_deadline_too_short_for_the_counts_is_refused_naming_both_ways_out(tmp_path, capsys):
    from rollout.cli import main

    argv = ["dev", "--model-version", "3", "--interval", "60s", "--deadline", "5m"]
    assert main(argv, env={"HOUSING_MLOPS_HOME": str(tmp_path)}) == 2
    err = capsys.readouterr().err
    assert "--deadline: a step waits up to 6 min for Cloud Monitoring's counts" in err
    assert "(420s)" in err
    assert "--monitoring check" in err
    assert not (tmp_path / "artifacts").exists()  # refused before any lease or log
