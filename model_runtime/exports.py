"""Model exports in the artifact store: ``models/<name>/<version or alias>/``, each with a
manifest of its files' checksums, written last.

An export is the service's fallback when MLflow can't be reached, so it must never mix two
versions: when a new version had no ``model.onnx`` the old one stayed beside the new
``registry.json``, and the service served the old model's prices under the new version's label.
Every writer goes through ``publish``: the files, then the manifest, then what the manifest no
longer lists is removed. Readers go through ``Export``, which reads only listed files and refuses
one whose bytes don't match the manifest (a publish that failed half-way, or a hand edit).
Exports written before manifests existed are read with one warning;
``python -m pipeline export --version N`` rewrites one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from housing_platform.artifact_store import ArtifactStore, to_json

log = logging.getLogger("model_runtime.exports")

EXPORTS = "models/"
"""Where exports live in the artifact store (the register step's declared tree)."""
METADATA = "registry.json"
"""The version's name, number, run and tags, so a loader without the registry knows what it
serves."""
MANIFEST = "manifest.json"
DEFAULT_MODEL = "housing-price"


class ExportError(ValueError):
    """An export that can't be trusted; the message is one line naming it and the fix."""


def export_prefix(model_name: str, ref: str) -> str:
    """Where a model version (or an alias such as ``champion``) is exported."""
    return f"{EXPORTS}{model_name}/{ref}"


def _join(prefix: str, rel: str) -> str:
    return f"{prefix.rstrip('/')}/{rel}" if prefix else rel


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish(
    store: ArtifactStore, prefix: str, files: Sequence[tuple[str, bytes]], **about: Any
) -> dict[str, Any]:
    """Write an export: every file, then its manifest (the moment it becomes whole), then the
    removal of files from an earlier export that the manifest doesn't list. Returns the
    manifest."""
    names = [rel for rel, _ in files]
    if MANIFEST in names or len(set(names)) != len(names):
        raise ExportError(f"export {prefix}: file names must be unique and not {MANIFEST}")
    for rel, data in files:
        store.write_bytes(_join(prefix, rel), data)
    manifest = {
        "files": {rel: _digest(data) for rel, data in files},
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **about,
    }
    store.write_bytes(_join(prefix, MANIFEST), to_json(manifest))
    listed = {_join(prefix, rel) for rel in [*names, MANIFEST]}
    for key in store.list(prefix):
        if key not in listed:
            store.delete(key)
    return manifest


class Export:
    """One export, read through its manifest. ``store`` is rooted anywhere; ``prefix`` is the
    export's folder inside it ("" when the store is the folder itself)."""

    def __init__(self, store: ArtifactStore, prefix: str = "", where: str = ""):
        self.store = store
        self.prefix = prefix.rstrip("/")
        self.where = where or getattr(store, "uri", "") or prefix
        key = self._key(MANIFEST)
        self.manifest: dict[str, str] | None = None
        if store.exists(key):
            try:
                self.manifest = dict(json.loads(store.read_bytes(key))["files"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ExportError(f"export {self.where}: unreadable {MANIFEST} ({exc})") from None
        else:
            log.warning(
                "export %s has no %s (written before exports had one): its files are read "
                "unchecked; rewrite it with `python -m pipeline export --version N`",
                self.where,
                MANIFEST,
            )

    def _key(self, rel: str) -> str:
        return _join(self.prefix, rel)

    def files(self) -> list[str]:
        """The export's files (without the manifest)."""
        if self.manifest is not None:
            return sorted(self.manifest)
        start = f"{self.prefix}/" if self.prefix else ""
        return sorted(k.removeprefix(start) for k in self.store.list(self.prefix))

    def has(self, rel: str) -> bool:
        if self.manifest is not None:
            return rel in self.manifest
        return self.store.exists(self._key(rel))

    def read(self, rel: str) -> bytes:
        """A file's bytes, checked against the manifest."""
        if self.manifest is not None and rel not in self.manifest:
            raise ExportError(f"export {self.where}: {rel} is not in its {MANIFEST}")
        data = self.store.read_bytes(self._key(rel))
        if self.manifest is not None and _digest(data) != self.manifest[rel]:
            raise ExportError(
                f"export {self.where}: {rel} does not match its {MANIFEST} (a publish failed "
                "half-way, or the file was changed): re-export it with "
                "`python -m pipeline export --version N`"
            )
        return data
