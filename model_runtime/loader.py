"""Finds the model at start-up: MLflow registry first, then the artifact-store export, else none.

Each attempt is logged; a failure moves on to the next source, so the process always starts and
says through ``/ready`` and ``/api/v1/model`` what it is serving, or why it serves nothing.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from model_runtime.exports import METADATA

log = logging.getLogger("model_runtime.loader")
T = TypeVar("T")


class ModelSource(msgspec.Struct, frozen=True, kw_only=True):
    """Where a model is loaded from: the registry's URI and tracking server, then the export."""

    model_uri: str
    """``models:/name@alias`` or ``models:/name/<version>``."""
    tracking_uri: str
    fallback: str
    """The export folder (a path or ``gs://…``) read when the registry can't be."""


def metrics_of(tags: dict[str, str]) -> dict[str, float]:
    """The ``test_*`` tags of a model version as numbers (a tag that isn't one is skipped)."""
    out = {}
    for key, value in tags.items():
        if key.startswith("test_"):
            try:
                out[key.removeprefix("test_")] = float(value)
            except ValueError:
                continue
    return out


class ModelMeta(msgspec.Struct, kw_only=True):
    name: str = ""
    version: str = ""
    alias: str = ""
    run_id: str = ""
    source: str = ""
    trained_at: str = ""
    test_metrics: dict[str, float] = {}


SklearnForm = tuple[Any, Any]
"""The fitted sklearn Pipeline and its logged input example (a DataFrame, or None)."""


class Loaded(msgspec.Struct):
    meta: ModelMeta
    fast: bytes | None
    """The ONNX form logged beside the sklearn model, if the version has one."""
    sklearn: Callable[[], SklearnForm]
    """Fetches and loads the sklearn model: only called when the fast form can't serve, since
    it is most of a start-up (seconds, against milliseconds for the graph)."""


def read_model_folder(local: Path) -> SklearnForm:
    """The sklearn model and its input example, from an MLflow model folder."""
    import mlflow
    from mlflow.models import Model

    model = mlflow.sklearn.load_model(str(local))
    try:
        example = Model.load(str(local)).load_input_example(str(local))
    except Exception:  # an example that can't be read only costs the fast path's check
        example = None
    return model, example


def _meta(info: dict[str, Any], alias: str, source: str) -> ModelMeta:
    """What the service reports about a version, from the registry's name/version/run/tags."""
    tags = info.get("tags", {})
    return ModelMeta(
        name=info.get("name", ""),
        version=str(info.get("version", "")),
        alias=alias,
        run_id=info.get("run_id") or "",
        source=source,
        trained_at=tags.get("trained_at", ""),
        test_metrics=metrics_of(tags),
    )


def parse_models_uri(uri: str) -> tuple[str, str, str]:
    """``models:/name@alias`` → (name, "", alias); ``models:/name/3`` → (name, "3", "")."""
    path = uri.removeprefix("models:/")
    if "@" in path:
        name, _, alias = path.partition("@")
        return name, "", alias
    name, _, version = path.partition("/")
    return name, version, ""


def from_mlflow(source: ModelSource) -> Loaded:
    import mlflow
    from mlflow import MlflowClient

    from model_runtime.onnx_runtime import FILENAME

    mlflow.set_tracking_uri(source.tracking_uri)
    client = MlflowClient()
    name, version, alias = parse_models_uri(source.model_uri)
    if alias:
        mv = client.get_model_version_by_alias(name, alias)
    else:
        mv = client.get_model_version(name, version)
    uri = f"models:/{name}/{mv.version}"
    fast: bytes | None = None
    files = {Path(f.path).name for f in mlflow.artifacts.list_artifacts(artifact_uri=uri)}
    if FILENAME in files:  # a failed download fails this source, as any other error would
        with tempfile.TemporaryDirectory(prefix="housing-serve-") as target:
            local = mlflow.artifacts.download_artifacts(f"{uri}/{FILENAME}", dst_path=target)
            fast = Path(local).read_bytes()

    def sklearn() -> SklearnForm:
        with tempfile.TemporaryDirectory(prefix="housing-serve-") as target:
            local = mlflow.artifacts.download_artifacts(uri, dst_path=target)
            return read_model_folder(Path(local))

    info = {"name": name, "version": mv.version, "run_id": mv.run_id, "tags": dict(mv.tags)}
    return Loaded(_meta(info, alias, f"mlflow:{source.model_uri}"), fast, sklearn)


def from_export(source: ModelSource, gcs_client: Any = None) -> Loaded:
    """The export at ``MODEL_FALLBACK_URI``, read through its manifest: an export whose files
    don't match it (a publish that failed half-way) is refused, never served mixed."""
    from housing_platform.artifact_store import LocalStore, open_store
    from model_runtime.exports import Export
    from model_runtime.onnx_runtime import FILENAME

    uri = source.fallback
    export = Export(open_store(uri, gcs_client), where=uri)
    if not export.has("MLmodel"):
        raise FileNotFoundError(f"{uri} holds no MLflow model (no MLmodel file)")
    fast = export.read(FILENAME) if export.has(FILENAME) else None
    info: dict[str, Any] = json.loads(export.read(METADATA)) if export.has(METADATA) else {}

    def sklearn() -> SklearnForm:
        with tempfile.TemporaryDirectory(prefix="housing-serve-") as tmp:
            local = LocalStore(tmp)
            for rel in export.files():
                local.write_bytes(rel, export.read(rel))
            return read_model_folder(Path(tmp))

    meta = _meta(info, parse_models_uri(source.model_uri)[2], f"export:{uri}")
    return Loaded(meta, fast, sklearn)


#: The cascade: the registry, then the export.
REGISTRY_FIRST = ("mlflow", "export")
#: For a pinned version: its export is the same files and never moves, and reading it spares a
#: process MLflow's import and a registry query (seconds, for each of a batch run's tasks).
EXPORT_FIRST = ("export", "mlflow")


def load(
    source: ModelSource,
    prepare: Callable[[Loaded], T],
    gcs_client: Any = None,
    order: tuple[str, ...] = REGISTRY_FIRST,
) -> tuple[T | None, list[str]]:
    """The model by the cascade, made servable by ``prepare``, and why each earlier source was
    passed over (a source whose model can't be prepared is passed over too)."""
    reasons: list[str] = []
    for origin in order:
        began = time.perf_counter()
        try:
            loaded = from_mlflow(source) if origin == "mlflow" else from_export(source, gcs_client)
            servable = prepare(loaded)
        except Exception as exc:
            reason = f"{origin}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            log.warning("model source failed", extra={"json_fields": {"reason": reason}})
            reasons.append(reason)
            continue
        log.info(
            "model loaded",
            extra={
                "json_fields": {
                    "source": loaded.meta.source,
                    "version": loaded.meta.version,
                    "seconds": round(time.perf_counter() - began, 3),
                }
            },
        )
        return servable, reasons
    log.error("no model could be loaded", extra={"json_fields": {"reasons": reasons}})
    return None, reasons
