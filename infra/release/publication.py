"""What a release publishes in the artifact store once it is applied: the release feed (what
the stable revision mirrors, ``housing_platform.release_feed``) and the live traffic split (what
the console shows, ``housing_platform.traffic_split``).

Pure: the local stack builds them from its release file, ``infra.cli`` from a stack file's
release and the outputs of the ``up`` that applied it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from housing_platform.release_feed import ReleaseFeed
from housing_platform.traffic_split import ServingRevision, TagUrl, TrafficSplit
from infra.release.traffic import (
    CANARY_TAG,
    SHADOW_TAG,
    STABLE_TAG,
    Release,
    TrafficTarget,
    model_version_of,
    split,
)


def operator_split(
    targets: list[TrafficTarget],
    tagged: Mapping[str, str],
    tag_urls: Mapping[str, str],
    versions: Mapping[str, int],
) -> TrafficSplit:
    """The split as operators read it: each revision that serves or is tagged, with its model
    version (``versions``, else read from its name), percent and tag URLs."""
    percents = {t.revision: t.percent for t in targets}
    order = [t.revision for t in targets] + [r for r in tagged.values() if r not in percents]
    rows = []
    for revision in dict.fromkeys(order):
        tags = [
            TagUrl(tag, tag_urls.get(tag, ""))
            for tag, tagged_revision in tagged.items()
            if tagged_revision == revision
        ]
        rows.append(
            ServingRevision(
                revision=revision,
                model_version=versions.get(revision) or model_version_of(revision),
                percent=percents.get(revision, 0),
                tags=tags,
            )
        )
    return TrafficSplit(revisions=rows)


def release_feed(
    release: Release,
    newest: str,
    tagged: Mapping[str, str],
    tag_urls: Mapping[str, str],
    versions: Mapping[str, int],
) -> ReleaseFeed:
    """What the stable revision needs: who it is, and the revision under the ``shadow`` tag
    it mirrors ``release.shadowPercent`` of its requests to, if any."""
    shadow = tagged.get(SHADOW_TAG, "")
    return ReleaseFeed(
        stable_revision=tagged.get(STABLE_TAG, newest),
        shadow_percent=release.shadow_percent if shadow else 0,
        shadow_url=tag_urls.get(SHADOW_TAG, "") if shadow else "",
        shadow_revision=shadow,
        shadow_model_version=(versions.get(shadow) or model_version_of(shadow)) if shadow else 0,
    )


def from_stack(release: Release, outputs: Mapping[str, Any]) -> tuple[ReleaseFeed, TrafficSplit]:
    """The feed and split of a GCP stack after ``up``: its release and the outputs
    ``live_revision``, ``canary_revision`` and ``tag_urls``. A shadow phase on Cloud Run is the
    canary at 0%, mirrored to through its ``canary`` tag URL."""
    live = str(outputs.get("live_revision") or "")
    newest = str(outputs.get("canary_revision") or "") or live
    tag_urls = {str(k): str(v) for k, v in (outputs.get("tag_urls") or {}).items()}
    targets = split(release, newest)
    tagged = {t.tag: t.revision for t in targets}
    if release.shadow_percent and STABLE_TAG in tagged:
        tagged[SHADOW_TAG] = newest
        tag_urls[SHADOW_TAG] = tag_urls.get(CANARY_TAG, "")
    versions = {newest: release.model_version}
    return (
        release_feed(release, newest, tagged, tag_urls, versions),
        operator_split(targets, tagged, tag_urls, versions),
    )
