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
      housing-mlops:revisionFaults: ""   # local only: HOUSING_FAULTS of the next new revision
      housing-mlops:revisions:
        housing-api-m6-1a2b3c4d: {url: "http://127.0.0.1:8081", modelVersion: 6}
        housing-api-m7-5e6f7a8b: {url: "http://127.0.0.1:8082", modelVersion: 7}

The release section is what people (``infra.cli … local``) and the rollout controller edit; the
revisions section only the running stack writes (``local_platform.revisions``). The newest
revision is the last one listed (as on Cloud Run, the latest created). When the release asks for
a model version (or ``revisionFaults``) that the newest listed revision does not serve, the state
is *pending*: the edit is written, the stack starts that revision and lists it last, and until
then ``targets()`` refuses, so the splitter keeps routing by the last release it could apply (as
Cloud Run keeps traffic where it was until a new revision is ready).

Reads check every key (an unknown one is named, with the keys that exist); writes go to a
temporary file in the same folder and are renamed over the old one, so a reader sees the old file
or the new one, never half of one; ``edit`` holds a lock file beside it, so the stack's writes and
a person's (or the controller's) never undo each other.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
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
    validate,
)
from service.faults import FaultSpecError
from service.faults import parse as parse_faults

FILE_NAME = "release.yaml"
REVISIONS_KEY = f"{stack_edits.PROJECT}:revisions"
#: Local only: the HOUSING_FAULTS spec a revision created while it is set runs with (drills).
FAULTS_KEY = f"{stack_edits.PROJECT}:revisionFaults"
#: The sections a local release file may hold.
SECTIONS = (stack_edits.RELEASE_KEY, FAULTS_KEY, REVISIONS_KEY)
REVISION_FIELDS = ["url", "modelVersion", "faults"]
#: Tag URLs: ``/tags/<tag>/…`` reaches that tag's revision.
TAGS = (STABLE_TAG, CANARY_TAG, SHADOW_TAG)
#: The image a local revision "runs": this checkout.
LOCAL_IMAGE = "local"


class ReleaseStateError(ReleaseError):
    """The local release file is wrong; the message names the file, the key and the fix."""


class LocalRevision(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    url: str
    """Where the revision answers, e.g. ``http://127.0.0.1:8081``."""
    model_version: int = msgspec.field(name="modelVersion")
    """The registered model version it serves."""
    faults: str = ""
    """The HOUSING_FAULTS it runs with (``revisionFaults`` when it was created); none: omitted."""


class ReleaseState(msgspec.Struct, frozen=True):
    release: Release
    revisions: dict[str, LocalRevision]
    """Revision name → where it answers, in creation order (the last one is the newest)."""
    revision_faults: str = ""
    """``revisionFaults``: what a revision created now runs with."""

    @property
    def newest(self) -> str:
        """The newest listed revision ("" before the first is listed)."""
        return list(self.revisions)[-1] if self.revisions else ""

    @property
    def pending(self) -> bool:
        """The release asks for a revision the stack has not listed yet (see the module)."""
        if not self.revisions:
            return True
        newest = self.revisions[self.newest]
        return (newest.model_version, newest.faults) != (
            self.release.model_version,
            self.revision_faults,
        )

    def targets(self) -> list[TrafficTarget]:
        """Cloud Run's traffic split for this release (``infra.release.traffic.split``); raises
        ReleaseStateError while the release is pending."""
        if self.pending:
            faults = f" with faults {self.revision_faults!r}" if self.revision_faults else ""
            raise ReleaseStateError(
                f"the release asks for model version {self.release.model_version}{faults}, which "
                "no listed revision serves yet: the running stack (`nox -s stack`) starts it and "
                "lists it last"
            )
        return split(self.release, self.newest)

    @property
    def live(self) -> str:
        """The revision that serves users now (the stack output ``live_revision`` on GCP)."""
        targets = self.targets()
        if len(targets) == 1 or self.release.canary_percent == 100:
            return self.newest
        return self.release.stable_revision

    @property
    def on_trial(self) -> str:
        """The canary (the stack output ``canary_revision``), "" when none is on trial."""
        return "" if self.live == self.newest else self.newest

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
    faults = _plain(config.get(FAULTS_KEY) or "")
    if not isinstance(faults, str):
        raise fail(f"`{FAULTS_KEY}`: expected a HOUSING_FAULTS spec such as 'error_rate=0.05'")
    try:
        parse_faults(faults)
    except FaultSpecError as exc:
        raise fail(f"`{FAULTS_KEY}`: {exc}") from None
    raw_revisions = config.get(REVISIONS_KEY) or {}
    revisions = {}
    for name, entry in raw_revisions.items():
        where = f"{REVISIONS_KEY}.{name}"
        for key in entry or {}:
            if key not in REVISION_FIELDS:
                raise fail(_known(f"{where}.{key}", key, REVISION_FIELDS))
        revisions[str(name)] = _convert(dict(entry or {}), LocalRevision, where, fail)
    state = ReleaseState(release, revisions, faults.strip())
    stable = release.stable_revision
    if stable and stable not in revisions:
        raise fail(
            f"`{stack_edits.RELEASE_KEY}.stableRevision` is {stable!r}, which is not under "
            f"`{REVISIONS_KEY}`: add its url and modelVersion there"
        )
    try:
        # The stack files' own checks (percent ranges, a stable revision…).
        if state.pending:
            validate(release)
        else:
            state.targets()
    except ReleaseError as exc:
        raise fail(str(exc)) from None
    return state


def _convert(
    raw: dict[str, Any], kind: type[Any], where: str, fail: Callable[[str], ReleaseStateError]
) -> Any:
    try:
        return msgspec.convert(_plain(raw), kind)
    except msgspec.ValidationError as exc:
        message, _, at = str(exc).rpartition(" - at `$")
        key = f"{where}{at.rstrip('`')}" if message else where
        raise fail(f"`{key}`: {message or exc}") from None


def _plain(value: Any) -> Any:
    """ruamel's scalars (``SingleQuotedScalarString``, ``ScalarFloat``…) as plain builtins, so
    what is read can be encoded again (msgspec keeps a ``str`` subclass as it is)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


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


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Holds the exclusive lock beside ``path`` (``.release.yaml.lock``): one read-change-write
    at a time, across processes."""
    lock = path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


def edit(path: Path, change: Callable[[str], str]) -> ReleaseState:
    """Applies an edit of the stack files' code (``lambda t: stack_edits.rollback(t)``) to the
    local release file under its lock, checks the result and writes it atomically; returns the
    new state (pending when it asks for a revision the stack has yet to start)."""
    with locked(path):
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ReleaseStateError(
                f"{path}: no local release yet; `nox -s stack` writes the first one"
            ) from None
        edited = change(text)
        state = parse(edited, str(path))
        if edited != text:
            write(path, edited)
        return state


def with_faults(text: str, spec: str) -> str:
    """The file's text with ``revisionFaults`` set (removed when empty). Change it in the same
    edit as the model version (``lambda t: with_faults(stack_edits.canary(t, …), spec)``): set
    alone, it asks for a new revision of the version already served."""
    yaml = stack_edits._yaml()
    data = yaml.load(text) or {}
    config = data.setdefault("config", {})
    if spec.strip():
        config[FAULTS_KEY] = spec.strip()
    else:
        config.pop(FAULTS_KEY, None)
    return stack_edits._dump(yaml, data)


def with_revisions(text: str, revisions: Mapping[str, LocalRevision]) -> str:
    """The file's text with the revisions section replaced by ``revisions`` (in their order)."""
    yaml = stack_edits._yaml()
    data = yaml.load(text) or {}
    config = data.setdefault("config", {})
    config[REVISIONS_KEY] = {name: msgspec.to_builtins(r) for name, r in revisions.items()}
    return stack_edits._dump(yaml, data)


def with_revision(text: str, name: str, url: str, model_version: int) -> str:
    """The file's text with revision ``name`` listed last (the newest), everything else kept."""
    yaml = stack_edits._yaml()
    data = yaml.load(text) or {}
    config = data.setdefault("config", {})
    revisions = config.setdefault(REVISIONS_KEY, {})
    revisions.pop(name, None)
    revisions[name] = {"url": url, "modelVersion": model_version}
    return stack_edits._dump(yaml, data)


def first_release(model_version: int) -> Release:
    """A first release: all traffic to a revision of ``model_version``, nothing stable yet."""
    return Release(model_version=model_version, image=LOCAL_IMAGE, canary_percent=100)


def render(release: Release, revisions: Mapping[str, LocalRevision]) -> str:
    """A new local release file (the first release, with no revision yet, or a test's)."""
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
