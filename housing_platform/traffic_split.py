"""The live traffic split, published for operators: which revisions serve, the model version
each runs, its share of requests and its tag URLs.

Whatever changes a release publishes it beside the release feed, at ``releases/split.json``
(the local stack after each change it applies, ``infra.cli`` after each ``up``); the service's
operator endpoint serves it to the console. A document of its own, not fields of the feed:
running revisions read the feed with unknown fields refused, and a revision must never stop
mirroring because newer tooling wrote more than it knows.
"""

from __future__ import annotations

import time
from typing import Annotated

import msgspec

from housing_platform.artifact_store import ArtifactStore, read_if_present

KEY = "releases/split.json"


class TagUrl(msgspec.Struct, frozen=True):
    tag: str
    """``stable``, ``canary`` or ``shadow``."""
    url: str
    """Reaches this revision alone (``https://<tag>---housing-api-….run.app``, or the local
    splitter's ``<api>/tags/<tag>``)."""


class ServingRevision(msgspec.Struct, frozen=True, kw_only=True):
    revision: str
    model_version: Annotated[int, msgspec.Meta(ge=0)]
    percent: Annotated[int, msgspec.Meta(ge=0, le=100)]
    """Share of requests it answers."""
    tags: list[TagUrl] = []


class TrafficSplit(msgspec.Struct, frozen=True, kw_only=True):
    revisions: list[ServingRevision]
    """Stable first, then the newest; the percents sum to 100."""
    updated_at: float = 0.0


def publish(store: ArtifactStore, split: TrafficSplit) -> TrafficSplit:
    """Writes ``split`` (stamped with the time now when it has none) in one object."""
    if sum(r.percent for r in split.revisions) != 100:
        raise ValueError(f"a traffic split must sum to 100%: {split.revisions}")
    if not split.updated_at:
        split = msgspec.structs.replace(split, updated_at=time.time())
    store.write_bytes(KEY, msgspec.json.format(msgspec.json.encode(split), indent=2))
    return split


def read(store: ArtifactStore) -> TrafficSplit | None:
    """The published split, or None when nothing has been published."""
    data = read_if_present(store, KEY)
    return None if data is None else msgspec.json.decode(data, type=TrafficSplit)
