"""Cloud Monitoring's request counts per Cloud Run revision: the GCP cross-check of a step.

On Cloud Run a revision has no URL of its own, so the controller's error evidence there is its
probes' answers. Cloud Run also reports every request each revision answered, users' included,
as ``run.googleapis.com/request_count`` by ``response_code_class``: sampled every 60 s and visible
up to 180 s later. The controller reads those counts for a step's window as they arrive and
judges their 5xx with the same test as the probes', so errors that only users' requests meet
(a house the probes never send) still roll the step back, minutes late.

``query`` and ``parse`` are pure; ``RequestCountReader`` is the thin HTTP adapter (the REST API,
so no client library joins the rollout's dependencies).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from rollout.evidence import Counts, EvidenceError

API = "https://monitoring.googleapis.com/v3"
METRIC = "run.googleapis.com/request_count"
SCOPE = "https://www.googleapis.com/auth/monitoring.read"
#: Cloud Run samples request counts every minute; the points are summed per revision and class.
ALIGNMENT_S = 60
#: How late a point may become visible (Cloud Monitoring's documented latency for the metric).
VISIBLE_AFTER_S = 180


class RequestCounts(msgspec.Struct, frozen=True):
    """Each revision's requests and 5xx in a window, and how far the data reached."""

    counts: dict[str, Counts]
    through: float = 0.0
    """The end of the newest point read (Unix seconds); 0 when none had arrived yet."""

    def of(self, revision: str) -> Counts:
        return self.counts.get(revision, Counts())

    def covers(self, t: float) -> bool:
        """Whether every request answered before ``t`` is surely counted. A point ends its
        alignment period, which may hold only part of the minute Cloud Run sampled last, so a
        whole period more is asked for."""
        return self.through - ALIGNMENT_S >= t


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def query(service: str, revisions: Iterable[str], since: float, until: float) -> dict[str, Any]:
    """``timeSeries.list``'s parameters: the service's request counts for ``revisions``, one
    minute per point, summed per revision and response class."""
    names = " OR ".join(f'resource.labels.revision_name = "{r}"' for r in sorted(set(revisions)))
    return {
        "filter": (
            f'metric.type = "{METRIC}" AND resource.type = "cloud_run_revision" '
            f'AND resource.labels.service_name = "{service}" AND ({names})'
        ),
        "interval.startTime": rfc3339(since),
        "interval.endTime": rfc3339(until),
        "aggregation.alignmentPeriod": f"{ALIGNMENT_S}s",
        "aggregation.perSeriesAligner": "ALIGN_DELTA",
        "aggregation.crossSeriesReducer": "REDUCE_SUM",
        "aggregation.groupByFields": [
            "resource.labels.revision_name",
            "metric.labels.response_code_class",
        ],
        "view": "FULL",
    }


def parse(pages: Sequence[Mapping[str, Any]]) -> RequestCounts:
    """The counts in ``timeSeries.list`` answers (one per page); an unknown shape is an
    ``EvidenceError`` naming what was missing, never a silent zero."""
    requests: dict[str, int] = {}
    errors: dict[str, int] = {}
    through = 0.0
    for page in pages:
        for series in page.get("timeSeries", ()):
            try:
                revision = series["resource"]["labels"]["revision_name"]
                code_class = str(
                    series.get("metric", {}).get("labels", {}).get("response_code_class", "")
                )
                for point in series.get("points", ()):
                    n = int(point["value"].get("int64Value", 0))
                    through = max(through, _epoch(point["interval"]["endTime"]))
                    requests[revision] = requests.get(revision, 0) + n
                    if code_class.startswith("5"):
                        errors[revision] = errors.get(revision, 0) + n
            except (KeyError, TypeError, ValueError) as exc:
                raise EvidenceError(
                    f"Cloud Monitoring answered a time series without {exc}: {series!r:.200}"
                ) from None
    return RequestCounts(
        {r: Counts(n, errors.get(r, 0)) for r, n in requests.items()}, through=through
    )


class RequestCountReader:
    """Reads a service's per-revision request counts from Cloud Monitoring's REST API.

    ``token`` gives an OAuth access token with the monitoring read scope (refreshed by its
    owner); ``api`` is Cloud Monitoring's, or a local stand-in in tests."""

    def __init__(
        self,
        project: str,
        service: str,
        token: Callable[[], str],
        api: str = API,
        timeout_s: float = 10.0,
    ):
        self.url = f"{api.rstrip('/')}/projects/{project}/timeSeries"
        self.service = service
        self.token = token
        self.timeout_s = timeout_s

    def __call__(self, revisions: Sequence[str], since: float, until: float) -> RequestCounts:
        params = query(self.service, revisions, since, until)
        pages: list[dict[str, Any]] = []
        while True:
            try:
                r = httpx.get(
                    self.url,
                    params=params,
                    headers={"Authorization": f"Bearer {self.token()}"},
                    timeout=self.timeout_s,
                )
                r.raise_for_status()
                page = r.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise EvidenceError(f"Cloud Monitoring at {self.url} failed: {exc}") from None
            pages.append(page)
            if not page.get("nextPageToken"):
                return parse(pages)
            params = {**params, "pageToken": page["nextPageToken"]}


def google_access_token(scope: str = SCOPE) -> Callable[[], str]:
    """The caller's application-default credentials as an access token for ``scope``, refreshed
    when it is about to expire (a rollout outlives an hour's token)."""
    import google.auth
    import google.auth.transport.requests

    credentials, _ = google.auth.default(scopes=[scope])
    request = google.auth.transport.requests.Request()

    def token() -> str:
        if not credentials.valid:
            credentials.refresh(request)
        return str(credentials.token)

    return token
