"""Where a rollout moves traffic: the local platform's release file, or a GCP stack.

Both edit their release with the stack files' own code (``infra.release.stack_edits``) and say,
after each change, which revision is stable, which is the newest (the canary or shadow) and
where each tag answers. Every change is idempotent: ``applied`` says whether the release
already is what an intent asked for, so a restarted controller never shifts traffic twice.

- ``LocalTarget``: ``$HOUSING_MLOPS_HOME/release.yaml``; the running ``nox -s stack`` starts a
  revision for a new model version (its reconciler lists it under ``housing-mlops:revisions``)
  and its splitter serves the tags under ``<api>/tags/<tag>``. ``--canary-faults`` sets the
  local-only ``housing-mlops:revisionFaults`` for the revision it starts.
- ``StackTarget``: ``Pulumi.<stack>.yaml`` and ``python -m infra.cli up <stack>``; the tag URLs
  and revision names are the stack's outputs, and requests carry an ID token for the service;
  ``request_counts`` reads each revision's requests from Cloud Monitoring (the cross-check).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from infra.release import stack_edits
from infra.release.traffic import CANARY_TAG, SHADOW_TAG, STABLE_TAG, Release, ReleaseError
from local_platform import release_state
from rollout.cloud_monitoring import RequestCountReader, google_access_token

ROOT = Path(__file__).resolve().parent.parent
SERVED = "x-served-revision"


class TargetError(RuntimeError):
    """The release can't be changed or read; the message says what to do."""


@dataclass(frozen=True)
class Snapshot:
    """The release as it stands, and where each side answers."""

    release: Release
    stable: str
    """The stable revision ("" when the newest serves alone)."""
    newest: str
    """The newest revision: the canary or the shadow."""
    tag_urls: dict[str, str]
    """Tag → base URL (``stable``, ``canary``, ``shadow``)."""
    revision_urls: dict[str, str]
    """Revision → its own base URL, where one exists (locally: each revision's process)."""
    faults: str = ""


@dataclass(frozen=True)
class Shift:
    """What a step asks of the release."""

    model_version: int
    canary_percent: int
    shadow_percent: int = 0
    faults: str = ""


class Target(Protocol):
    stack: str

    def snapshot(self) -> Snapshot: ...
    def shift(self, shift: Shift) -> Snapshot: ...
    def rollback(self) -> Snapshot: ...
    def promote(self) -> Snapshot: ...
    def headers(self, url: str) -> Mapping[str, str]: ...


def shifted(text: str, shift: Shift, live_revision: str) -> str:
    """The release text after a shift: the stack files' ``canary`` edit, then the shadow
    share (a shadow phase is a canary at 0% that the stable revision mirrors to). A smaller
    share goes first: a canary at 100% that kept mirroring would be refused."""
    before = stack_edits.read_release(text)
    if before is not None and before.shadow_percent > shift.shadow_percent:
        text = stack_edits.with_release(text, shadow_percent=shift.shadow_percent)
    edited = stack_edits.canary(text, shift.model_version, shift.canary_percent, live_revision)
    current = stack_edits.read_release(edited)
    if current is not None and current.shadow_percent != shift.shadow_percent:
        edited = stack_edits.with_release(edited, shadow_percent=shift.shadow_percent)
    return edited


class LocalTarget:
    """The local platform's release file, its reconciler's revisions and its splitter."""

    def __init__(
        self,
        home: Path,
        api_url: str,
        wait_s: float = 300.0,
        poll_s: float = 0.1,
    ):
        self.stack = "local"
        self.home = home
        self.path = release_state.path_in(home)
        self.api_url = api_url.rstrip("/")
        self.wait_s = wait_s
        self.poll_s = poll_s

    def state(self) -> release_state.ReleaseState:
        try:
            return release_state.read(self.path)
        except ReleaseError as exc:
            raise TargetError(str(exc)) from None

    def snapshot(self) -> Snapshot:
        state = self.state()
        if state.pending:
            raise TargetError(
                f"{self.path}: the release waits for a revision of model version "
                f"{state.release.model_version} (the running `nox -s stack` starts it)"
            )
        tags = state.tagged()
        return Snapshot(
            release=state.release,
            stable=str(tags.get(STABLE_TAG, "")),
            newest=str(state.newest),
            tag_urls={tag: f"{self.api_url}/tags/{tag}" for tag in tags},
            revision_urls={str(name): str(rev.url) for name, rev in state.revisions.items()},
            faults=str(state.revision_faults),
        )

    def applied(self, shift: Shift) -> bool:
        """Whether the release already is what ``shift`` asks, with its revision listed."""
        state = self.state()
        if state.pending:
            return False
        newest = state.revisions[state.newest]
        r = state.release
        return (r.model_version, r.canary_percent, r.shadow_percent, state.revision_faults) == (
            shift.model_version,
            shift.canary_percent,
            shift.shadow_percent,
            shift.faults,
        ) and (newest.model_version, newest.faults) == (shift.model_version, shift.faults)

    def shift(self, shift: Shift) -> Snapshot:
        from local_platform import revisions

        state = self.state()
        if not self.applied(shift):
            live = state.live if not state.pending else state.release.stable_revision
            sizes = revisions.log_sizes(
                self.home, [revisions.name_of(shift.model_version, shift.faults)]
            )

            def change(text: str) -> str:
                return release_state.with_faults(shifted(text, shift, live), shift.faults)

            try:
                release_state.edit(self.path, change)
                revisions.wait_listed(
                    self.home,
                    shift.model_version,
                    shift.faults,
                    timeout_s=self.wait_s,
                    log_offset=sizes,
                )
            except (ReleaseError, revisions.RevisionError) as exc:
                raise TargetError(str(exc)) from None
        snap = self.snapshot()
        tag = SHADOW_TAG if shift.canary_percent == 0 and shift.shadow_percent else CANARY_TAG
        self._wait_served(snap, tag, snap.newest)
        if snap.stable:
            self._wait_served(snap, STABLE_TAG, snap.stable)
        return snap

    def _wait_served(self, snap: Snapshot, tag: str, revision: str) -> None:
        """Until the splitter routes ``tag`` to ``revision`` (it re-reads the file on a timer)."""
        url = snap.tag_urls.get(tag)
        if url is None:
            raise TargetError(f"the release gives no revision the tag {tag!r}")
        deadline = time.monotonic() + self.wait_s
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=5).headers.get(SERVED) == revision:
                    return
            if time.monotonic() > deadline:
                raise TargetError(
                    f"waited {self.wait_s:.0f} s for the splitter at {self.api_url} to route "
                    f"tag {tag} to {revision}: is `nox -s stack` running?"
                )
            time.sleep(self.poll_s)

    def _edit(self, change: Callable[[str], str]) -> Snapshot:
        try:
            release_state.edit(self.path, change)
        except ReleaseError as exc:
            raise TargetError(str(exc)) from None
        return self.snapshot()

    def rollback(self) -> Snapshot:
        """Canary 0% and no shadow: the stable revision takes every request back."""
        return self._edit(
            lambda t: stack_edits.with_release(stack_edits.rollback(t), shadow_percent=0)
        )

    def promote(self) -> Snapshot:
        """The canary takes all traffic and becomes the stable revision."""
        newest = self.state().newest
        return self._edit(lambda t: stack_edits.promote(t, newest))

    def headers(self, url: str) -> Mapping[str, str]:
        return {}


class StackTarget:
    """A GCP stack: its stack file, ``pulumi up`` through ``infra.cli``, its outputs."""

    def __init__(self, stack: str, root: Path = ROOT, python: str = sys.executable):
        self.stack = stack
        self.root = root
        self.path = root / f"Pulumi.{stack}.yaml"
        self.python = python
        self._tokens: dict[str, Any] = {}

    def _outputs(self) -> dict[str, Any]:
        from infra import cli

        try:
            outputs = cli._stack(self.stack).outputs()
        except cli.CLIMissingError as exc:
            raise TargetError(str(exc)) from None
        return {key: value.value for key, value in outputs.items()}

    def snapshot(self) -> Snapshot:
        release = stack_edits.read_release(self.path.read_text())
        if release is None:
            raise TargetError(f"{self.path.name} has no release: deploy a first one")
        out = self._outputs()
        return Snapshot(
            release=release,
            stable=release.stable_revision,
            newest=str(out.get("canary_revision") or out.get("live_revision") or ""),
            tag_urls={str(k): str(v) for k, v in (out.get("tag_urls") or {}).items()},
            revision_urls={},
        )

    def _edit(self, change: Callable[[str], str]) -> None:
        from infra.config import ConfigError
        from infra.plan import config_from_text

        before = self.path.read_text()
        try:
            after = change(before)
            config_from_text(after, self.stack)  # the whole stack still valid, before writing
        except (ConfigError, ReleaseError) as exc:
            raise TargetError(f"{self.path.name}: {exc}") from None
        if after != before:
            self.path.write_text(after)
        self.up()

    def up(self) -> None:
        done = subprocess.run(
            [self.python, "-m", "infra.cli", "up", self.stack], cwd=self.root, check=False
        )
        if done.returncode != 0:
            raise TargetError(f"`python -m infra.cli up {self.stack}` failed; see its output")

    def shift(self, shift: Shift) -> Snapshot:
        if shift.faults:
            raise TargetError("--canary-faults is for the local platform only")
        snap = self.snapshot()
        r = snap.release
        if not (
            r.model_version == shift.model_version
            and r.canary_percent == shift.canary_percent
            and r.shadow_percent == shift.shadow_percent
        ):
            live = str(self._outputs().get("live_revision") or "")
            self._edit(lambda text: shifted(text, shift, live))
        return self.snapshot()

    def rollback(self) -> Snapshot:
        self._edit(
            lambda text: stack_edits.with_release(stack_edits.rollback(text), shadow_percent=0)
        )
        return self.snapshot()

    def promote(self) -> Snapshot:
        revision = str(self._outputs().get("canary_revision") or "")
        self._edit(lambda text: stack_edits.promote(text, revision))
        return self.snapshot()

    def request_counts(self) -> RequestCountReader:
        """The API service's per-revision request counts in Cloud Monitoring (the rollout's
        cross-check), as the caller's application-default credentials may read them."""
        from google.auth.exceptions import DefaultCredentialsError

        from infra.components.inference_service import SERVICE
        from infra.plan import config_from_text

        project = config_from_text(self.path.read_text(), self.stack).project
        try:
            token = google_access_token()
        except DefaultCredentialsError as exc:
            raise TargetError(
                f"the Cloud Monitoring cross-check needs Google credentials ({exc}): run "
                "`gcloud auth application-default login`, or pass --monitoring off"
            ) from None
        return RequestCountReader(project, SERVICE, token)

    def headers(self, url: str) -> Mapping[str, str]:
        """An ID token for the service (refreshed before it expires)."""
        from housing_platform.id_token import GoogleIdToken

        audience = url.split("/tags/")[0]
        token = self._tokens.get(audience)
        if token is None:
            token = self._tokens[audience] = GoogleIdToken(audience)
        return {"Authorization": f"Bearer {token()}"}
