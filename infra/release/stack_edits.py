"""Edits the release section of a stack file (``Pulumi.<stack>.yaml``) the way a person would:
comments, key order and every other setting stay as they were, so the diff is the decision."""

from __future__ import annotations

import io
from typing import Any

import msgspec
from ruamel.yaml import YAML

from infra.release.traffic import Release, ReleaseError, validate

PROJECT = "housing-mlops"
RELEASE_KEY = f"{PROJECT}:release"
IMAGES_KEY = f"{PROJECT}:images"
IMAGE_PARTS = ("mlflow", "pipeline", "service", "ui")
#: Stack-config spelling of each Release field.
KEYS = {
    "model_version": "modelVersion",
    "image": "image",
    "canary_percent": "canaryPercent",
    "stable_revision": "stableRevision",
    "stable_image": "stableImage",
    "shadow_percent": "shadowPercent",
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


def read_images(text: str) -> dict[str, str]:
    """``images.*`` as written (empty parts included)."""
    data = _yaml().load(text) or {}
    return {k: str(v or "") for k, v in ((data.get("config") or {}).get(IMAGES_KEY) or {}).items()}


def effective_image(text: str, release: Release | None) -> str:
    """The image the newest revision runs: ``release.image``, else ``images.service``."""
    if release is not None and release.image:
        return release.image
    return read_images(text).get("service", "")


def with_release(text: str, **changes: Any) -> str:
    """The stack file's text with these release fields changed, everything else untouched."""
    yaml = _yaml()
    data = yaml.load(text) or {}
    config = data.setdefault("config", {})
    section = config.setdefault(RELEASE_KEY, {})
    for field, value in changes.items():
        section[KEYS[field]] = value
    edited = _dump(yaml, data)
    current = read_release(edited)
    if current is None:
        raise ReleaseError(f"{RELEASE_KEY} is missing")
    validate(msgspec.structs.replace(current, image=effective_image(edited, current)))
    return edited


def _dump(yaml: YAML, data: Any) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def canary(
    text: str, model_version: int, percent: int, live_revision: str, image: str | None = None
) -> str:
    """Start (or move) a canary: the new model version gets ``percent``, the live revision keeps
    the rest. With no release yet this is the first one: it must take all traffic."""
    current = read_release(text)
    if current is None and live_revision:
        raise ReleaseError(
            f"{RELEASE_KEY} is missing, so nothing serves yet: a first release takes all "
            "traffic (--percent 100) and has no stable revision"
        )
    if current is None and percent != 100:
        raise ReleaseError(
            f"{RELEASE_KEY} is missing: the first release takes all traffic, use --percent 100"
        )
    changes: dict[str, Any] = {"model_version": model_version, "canary_percent": percent}
    if current is not None:
        # The live revision runs the release's image when the newest took all traffic,
        # else the stable revision's.
        live_image = (
            effective_image(text, current)
            if current.canary_percent == 100
            else current.stable_image
        )
        changes |= {"stable_revision": live_revision, "stable_image": live_image}
    if image:
        changes["image"] = image
    return with_release(text, **changes)


def promote(text: str, revision: str) -> str:
    """The canary takes all traffic and becomes the stable revision: a later rollback (after,
    say, a new image) returns to it, not to the release before it. ``revision`` is the
    canary's name, which hashes resolved outputs and so comes from the stack's
    ``canary_revision`` output."""
    release = read_release(text)
    if release is None:
        raise ReleaseError(f"{RELEASE_KEY} is missing: there is no canary to promote")
    if not revision:
        raise ReleaseError(
            "no canary revision to promote: the stack's canary_revision output is empty "
            "(nothing is on trial), or name it with --revision"
        )
    # At 100% the stable revision serves nothing to mirror, so a shadow phase ends here.
    shadow: dict[str, Any] = {"shadow_percent": 0} if release.shadow_percent else {}
    return with_release(
        text,
        canary_percent=100,
        stable_revision=revision,
        stable_image=effective_image(text, release),
        **shadow,
    )


def pin(text: str, refs: dict[str, str]) -> str:
    """Point parts at images (``images.<part>``); a new service image also moves the release's
    image, so the next ``up`` deploys it as a new revision at the release's canary percent."""
    unknown = sorted(set(refs) - set(IMAGE_PARTS))
    if unknown:
        raise ReleaseError(
            f"unknown image part {unknown[0]!r}: choose from {', '.join(IMAGE_PARTS)}"
        )
    yaml = _yaml()
    data = yaml.load(text) or {}
    config = data.setdefault("config", {})
    images = config.get(IMAGES_KEY)
    if images is None:
        images = config[IMAGES_KEY] = {}
    for part, ref in refs.items():
        images[part] = ref
    release = config.get(RELEASE_KEY)
    if "service" in refs and release is not None and release.get("image"):
        release["image"] = refs["service"]
    return _dump(yaml, data)


def rollback(text: str) -> str:
    """The stable revision takes all traffic back; the canary stays reachable on its tag."""
    release = read_release(text)
    if release is None or not release.stable_revision:
        raise ReleaseError(
            f"{RELEASE_KEY}.stableRevision is empty: there is no earlier revision to roll back to"
        )
    return with_release(text, canary_percent=0)
