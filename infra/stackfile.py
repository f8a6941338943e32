"""Edits the release section of a stack file (``Pulumi.<stack>.yaml``) the way a person would:
comments, key order and every other setting stay as they were, so the diff is the decision."""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML

from infra.traffic import Release, ReleaseError, validate

PROJECT = "housing-mlops"
RELEASE_KEY = f"{PROJECT}:release"
#: Stack-config spelling of each Release field.
KEYS = {
    "model_version": "modelVersion",
    "image": "image",
    "canary_percent": "canaryPercent",
    "stable_revision": "stableRevision",
}


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long image reference
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def read_release(text: str) -> Release | None:
    """The release in a stack file's text, or None before the first one."""
    data = _yaml().load(text) or {}
    raw = (data.get("config") or {}).get(RELEASE_KEY)
    if raw is None:
        return None
    values = {field: raw[key] for field, key in KEYS.items() if key in raw}
    try:
        return Release(**values)
    except TypeError as exc:
        raise ReleaseError(f"{RELEASE_KEY}: {exc}; set modelVersion and image") from None


def with_release(text: str, **changes: Any) -> str:
    """The stack file's text with these release fields changed, everything else untouched."""
    yaml = _yaml()
    data = yaml.load(text) or {}
    config = data.setdefault("config", {})
    section = config.setdefault(RELEASE_KEY, {})
    for field, value in changes.items():
        section[KEYS[field]] = value
    current = read_release(_dump(yaml, data))
    if current is None:
        raise ReleaseError(f"{RELEASE_KEY} is missing")
    validate(current)
    return _dump(yaml, data)


def _dump(yaml: YAML, data: Any) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def canary(
    text: str, model_version: int, percent: int, live_revision: str, image: str | None = None
) -> str:
    """Start (or move) a canary: the new model version gets ``percent``, the live revision keeps
    the rest."""
    changes: dict[str, Any] = {
        "model_version": model_version,
        "canary_percent": percent,
        "stable_revision": live_revision,
    }
    if image:
        changes["image"] = image
    return with_release(text, **changes)


def promote(text: str) -> str:
    """The canary takes all traffic."""
    return with_release(text, canary_percent=100)


def rollback(text: str) -> str:
    """The stable revision takes all traffic back; the canary stays reachable on its tag."""
    release = read_release(text)
    if release is None or not release.stable_revision:
        raise ReleaseError(
            f"{RELEASE_KEY}.stableRevision is empty: there is no earlier revision to roll back to"
        )
    return with_release(text, canary_percent=0)
