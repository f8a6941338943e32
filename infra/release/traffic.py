"""Canary traffic for the inference service, from the release section of stack config.

Pure logic, no Pulumi: deterministic revision names and the traffic split, so a stack-config
diff (``release.canaryPercent: 10``) is all it takes to shift or roll back traffic.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import msgspec

STABLE_TAG = "stable"
CANARY_TAG = "canary"
#: The newest revision's tag while the stable revision mirrors requests to it.
SHADOW_TAG = "shadow"
#: Cloud Run revision names: lowercase letters, digits and hyphens, at most 63 characters.
_MAX_NAME = 63


class ReleaseError(ValueError):
    """A release setting is wrong; the message names the key and the fix."""


class Release(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    model_version: int
    """release.modelVersion: the registered model version the newest revision serves."""
    image: str = ""
    """release.image: the service image of the newest revision (by digest); default
    ``images.service``."""
    canary_percent: int = 100
    """release.canaryPercent: share of traffic for the newest revision, 0-100."""
    stable_revision: str = ""
    """release.stableRevision: the revision that keeps the rest; empty on a first deploy.
    ``promote`` sets it to the promoted revision, so a later rollback returns to the last good
    release, not to the one before it."""
    stable_image: str = ""
    """release.stableImage: the image the stable revision runs, kept by the registry's cleanup
    rules so a rollback always finds it (written by canary and promote)."""
    shadow_percent: int = 0
    """release.shadowPercent: share of the stable revision's prediction requests mirrored to
    the newest revision (its ``shadow`` tag), 0-100; 0 mirrors nothing."""


class TrafficTarget(msgspec.Struct, frozen=True):
    revision: str
    percent: int
    tag: str


def validate(release: Release) -> Release:
    if release.model_version < 1:
        raise ReleaseError(
            f"release.modelVersion must be a registered version >= 1, got {release.model_version}"
        )
    if not release.image:
        raise ReleaseError(
            "release.image is empty: set images.service (or release.image) to the service "
            "image, e.g. with `nox -s pin -- <stack> --image service=REF`"
        )
    if not 0 <= release.canary_percent <= 100:
        raise ReleaseError(
            f"release.canaryPercent must be between 0 and 100, got {release.canary_percent}"
        )
    if not 0 <= release.shadow_percent <= 100:
        raise ReleaseError(
            f"release.shadowPercent must be between 0 and 100, got {release.shadow_percent}"
        )
    if release.shadow_percent and release.canary_percent == 100:
        raise ReleaseError(
            f"release.shadowPercent is {release.shadow_percent} but release.canaryPercent is "
            "100: the stable revision serves nothing to mirror; set canaryPercent to 0 for a "
            "shadow phase, or shadowPercent to 0"
        )
    if release.canary_percent < 100 and not release.stable_revision:
        raise ReleaseError(
            f"release.canaryPercent is {release.canary_percent} but release.stableRevision is "
            "empty: name the revision that keeps the rest, or set the percent to 100"
        )
    return release


def template_hash(template: dict[str, Any]) -> str:
    """Short, stable hash of a revision template (image, env, resources…)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def revision_name(service: str, model_version: int, template: dict[str, Any]) -> str:
    """``<service>-m<version>-<hash>``: a changed template always gets a new name (Cloud Run
    refuses to reuse one), an unchanged template keeps its name (no churn)."""
    suffix = f"-m{model_version}-{template_hash(template)}"
    base = re.sub(r"[^a-z0-9-]+", "-", service.lower()).strip("-")
    return base[: _MAX_NAME - len(suffix)].rstrip("-") + suffix


def model_version_of(revision: str) -> int:
    """The model version a revision named by :func:`revision_name` serves; 0 when its name
    does not say (a revision made by hand)."""
    found = re.search(r"-m(\d+)-[0-9a-f]+$", revision)
    return int(found.group(1)) if found else 0


def split(release: Release, newest_revision: str) -> list[TrafficTarget]:
    """Traffic targets that always sum to 100: stable at 100-p, newest at p."""
    validate(release)
    p = release.canary_percent
    stable = release.stable_revision
    if not stable or stable == newest_revision:
        return [TrafficTarget(newest_revision, 100, CANARY_TAG)]
    return [
        TrafficTarget(stable, 100 - p, STABLE_TAG),
        TrafficTarget(newest_revision, p, CANARY_TAG),
    ]
