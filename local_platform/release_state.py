"""The local platform's release: ``$HOUSING_MLOPS_HOME/release.yaml``.

The file has a stack file's layout, so the code that edits ``Pulumi.<stack>.yaml``
(``infra.release.stack_edits``: ``canary``, ``promote``, ``rollback``) edits it unchanged, and its
release is the stack files' ``Release``. What Cloud Run knows by itself — which revisions exist
and where they answer — is one more section, ``housing-mlops:revisions``, in creation order::

    config:
      housing-mlops:release:
        modelVersion: 7
        image: local            # locally every revision runs this checkout
        canaryPercent: 10
        shadowPercent: 0
        stableRevision: housing-api-m6-1a2b3c4d
      housing-mlops:revisions:
        housing-api-m6-1a2b3c4d: {url: "http://127.0.0.1:8081", modelVersion: 6}
        housing-api-m7-5e6f7a8b: {url: "http://127.0.0.1:8082", modelVersion: 7}

The newest revision is the last one listed (as on Cloud Run, the latest created); it must serve
``release.modelVersion``. Reads check every key (an unknown one is named, with the keys that
exist); writes go to a temporary file in the same folder and are renamed over the old one, so a
reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from infra.release import stack_edits
from infra.release.traffic import (
    CANARY_TAG,
    SHADOW_TAG,
    STABLE_TAG,
    Release,
    ReleaseError,
    TrafficTarget,
    split,
)

FILE_NAME = "release.yaml"
REVISIONS_KEY = f"{stack_edits.PROJECT}:revisions"
#: The sections a local release file may hold.
SECTIONS = (stack_edits.RELEASE_KEY, REVISIONS_KEY)
#: Tag URLs: ``/tags/<tag>/…`` reaches that tag's revision.
TAGS = (STABLE_TAG, CANARY_TAG, SHADOW_TAG)
#: The image a local revision "runs": this checkout.
LOCAL_IMAGE = "local"


class ReleaseStateError(ReleaseError):
    """The local release file is wrong; the message names the file, the key and the fix."""


class LocalRevision(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str
    """Where the revision answers, e.g. ``http://127.0.0.1:8081``."""
    model_version: int = msgspec.field(name="modelVersion")
    """The registered model version it serves."""


class ReleaseState(msgspec.Struct, frozen=True):
    release: Release
    revisions: dict[str, LocalRevision]
    """Revision name → where it answers, in creation order (the last one is the newest)."""

    @property
    def newest(self) -> str:
        return list(self.revisions)[-1]

    def targets(self) -> list[TrafficTarget]:
        """Cloud Run's traffic split for this release (``infra.release.traffic.split``)."""
        return split(self.release, self.newest)

    def tagged(self) -> dict[str, str]:
        """Tag → revision, as Cloud Run tags them: ``stable`` and ``canary`` as in the split,
        ``shadow`` the newest revision whenever a different stable revision serves."""
        tags = {t.tag: t.revision for t in self.targets()}
        if STABLE_TAG in tags:
            tags[SHADOW_TAG] = self.newest
        return tags


def path_in(home: Path) -> Path:
    return home / FILE_NAME


def _known(key: str, given: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(given, known, n=1)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return f"`{key}` is not a setting; {hint}known: {', '.join(known)}"


def parse(text: str, source: str = FILE_NAME) -> ReleaseState:
    """The release state in a local release file's text; raises ReleaseStateError."""

    def fail(message: str) -> ReleaseStateError:
        return ReleaseStateError(f"{source}: {message}. Fix it in {source}")

    try:
        data = stack_edits._yaml().load(text) or {}
    except Exception as exc:  # ruamel's parser and scanner errors share no public base
        raise fail(f"not YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, Mapping) or set(data) - {"config"}:
        raise fail(f"expected one mapping, `config:`, holding {' and '.join(SECTIONS)}")
    config = data.get("config") or {}
    for key in config:
        if key not in SECTIONS:
            raise fail(_known(key, key, list(SECTIONS)))
    raw_release = config.get(stack_edits.RELEASE_KEY)
    if not raw_release:
        raise fail(f"`{stack_edits.RELEASE_KEY}` is missing: nothing is released yet")
    fields = list(stack_edits.KEYS.values())
    for key in raw_release:
        if key not in fields:
            raise fail(_known(f"{stack_edits.RELEASE_KEY}.{key}", key, fields))
    release = _convert(dict(raw_release), Release, stack_edits.RELEASE_KEY, fail)
    raw_revisions = config.get(REVISIONS_KEY) or {}
    if not raw_revisions:
        raise fail(f"`{REVISIONS_KEY}` is empty: list each revision's url and modelVersion")
    revisions = {}
    for name, entry in raw_revisions.items():
        where = f"{REVISIONS_KEY}.{name}"
        for key in entry or {}:
            if key not in ("url", "modelVersion"):
                raise fail(_known(f"{where}.{key}", key, ["url", "modelVersion"]))
        revisions[str(name)] = _convert(dict(entry or {}), LocalRevision, where, fail)
    state = ReleaseState(release, revisions)
    newest = revisions[state.newest]
    if newest.model_version != release.model_version:
        raise fail(
            f"`{stack_edits.RELEASE_KEY}.modelVersion` is {release.model_version} but the newest "
            f"revision, {state.newest}, serves version {newest.model_version}: list a revision "
            f"of version {release.model_version} last, or set modelVersion back"
        )
    stable = release.stable_revision
    if stable and stable not in revisions:
        raise fail(
            f"`{stack_edits.RELEASE_KEY}.stableRevision` is {stable!r}, which is not under "
            f"`{REVISIONS_KEY}`: add its url and modelVersion there"
        )
    try:
        state.targets()  # the stack files' own checks (percent ranges, a stable revision…)
    except ReleaseError as exc:
        raise fail(str(exc)) from None
    return state


def _convert(
    raw: dict[str, Any], kind: type[Any], where: str, fail: Callable[[str], ReleaseStateError]
) -> Any:
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        message, _, at = str(exc).rpartition(" - at `$")
        key = f"{where}{at.rstrip('`')}" if message else where
        raise fail(f"`{key}`: {message or exc}") from None


def read(path: Path) -> ReleaseState:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ReleaseStateError(
            f"{path}: no local release yet; start revisions and write their release there"
        ) from None
    return parse(text, str(path))


def write(path: Path, text: str) -> None:
    """Replaces ``path`` with ``text`` in one rename (a temporary file in the same folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise


def edit(path: Path, change: Callable[[str], str]) -> ReleaseState:
    """Applies an edit of the stack files' code (``lambda t: stack_edits.rollback(t)``) to the
    local release file, checks the result and writes it atomically; returns the new state."""
    text = path.read_text()
    edited = change(text)
    state = parse(edited, str(path))
    write(path, edited)
    return state


def with_revision(text: str, name: str, url: str, model_version: int) -> str:
    """The file's text with revision ``name`` listed last (the newest), everything else kept."""
    yaml = stack_edits._yaml()
    data = yaml.load(text) or {}
    config = data.setdefault("config", {})
    revisions = config.setdefault(REVISIONS_KEY, {})
    revisions.pop(name, None)
    revisions[name] = {"url": url, "modelVersion": model_version}
    return stack_edits._dump(yaml, data)


def render(release: Release, revisions: Mapping[str, LocalRevision]) -> str:
    """A new local release file (the first release, or a test's)."""
    fields = msgspec.to_builtins(release)
    return stack_edits._dump(
        stack_edits._yaml(),
        {
            "config": {
                stack_edits.RELEASE_KEY: fields,
                REVISIONS_KEY: {name: msgspec.to_builtins(r) for name, r in revisions.items()},
            }
        },
    )
