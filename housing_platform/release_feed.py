"""The release feed: what the running stable revision needs to know about the release.

A Cloud Run revision's template is fixed once it exists (a new environment variable would make a
new revision), so the mirror target and share live in the artifact store instead, at
``releases/feed.json``. Whatever changes a release publishes it (the local stack's reconciler and
``infra.cli`` locally, ``infra.cli`` after ``pulumi up`` on GCP); the service's shadow mirror reads
it every few seconds. A missing feed means "no shadow phase"; a feed that can't be decoded is an
error naming the key, never a silent default.
"""

from __future__ import annotations

import time
from typing import Annotated

import msgspec

from housing_platform.artifact_store import ArtifactStore, read_if_present

#: Where the feed lives in the artifact store.
KEY = "releases/feed.json"


class ReleaseFeedError(ValueError):
    """The published feed is unreadable; the message names the key and the fix."""


class ReleaseFeed(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    stable_revision: str = ""
    """The revision that serves users and mirrors a share of its requests."""
    shadow_percent: Annotated[int, msgspec.Meta(ge=0, le=100)] = 0
    """Share of the stable revision's prediction requests mirrored to the shadow, 0-100."""
    shadow_url: str = ""
    """The shadow tag URL (``https://shadow---housing-api-….run.app``, or the local splitter's
    ``<api>/tags/shadow``); mirrored requests go to ``<shadow_url>/api/v1/predict``."""
    shadow_revision: str = ""
    """The revision behind the shadow tag."""
    shadow_model_version: Annotated[int, msgspec.Meta(ge=0)] = 0
    """The registered model version the shadow serves (the MLflow run the reports log to)."""
    updated_at: float = 0.0
    """When it was published (Unix seconds)."""

    @property
    def mirroring(self) -> bool:
        """True when the stable revision should mirror anything at all."""
        return self.shadow_percent > 0 and bool(self.shadow_url)


def publish(store: ArtifactStore, feed: ReleaseFeed) -> ReleaseFeed:
    """Writes ``feed`` (stamped with the time now when it has none) atomically; returns it."""
    if not feed.updated_at:
        feed = msgspec.structs.replace(feed, updated_at=time.time())
    store.write_bytes(KEY, msgspec.json.format(msgspec.json.encode(feed), indent=2))
    return feed


def decode(data: bytes, source: str = KEY) -> ReleaseFeed:
    """The feed in ``data``; raises ReleaseFeedError naming the field that is wrong."""
    try:
        return msgspec.json.decode(data, type=ReleaseFeed)
    except msgspec.DecodeError as exc:
        message, _, at = str(exc).rpartition(" - at `$.")
        where = f"`{at.rstrip('`')}`: " if message else ""
        raise ReleaseFeedError(
            f"{source}: {where}{message or exc}. Publish it again with "
            "housing_platform.release_feed.publish (a release command does), or delete it to "
            "stop mirroring"
        ) from None


def read(store: ArtifactStore) -> ReleaseFeed | None:
    """The published feed, or None when nothing has been published."""
    data = read_if_present(store, KEY)
    return None if data is None else decode(data, f"{store.uri}/{KEY}")
