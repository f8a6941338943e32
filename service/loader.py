"""Finds the model at start-up: MLflow registry first, then the artifact-store export, else none.

Each attempt is logged; a failure moves on to the next source, so the process always starts and
says through ``/ready`` and ``/api/v1/model`` what it is serving, or why it serves nothing.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from pipeline.report import metrics_of
from service.settings import ServiceSettings

log = logging.getLogger("service.loader")


class ModelMeta(msgspec.Struct, kw_only=True):
    name: str = ""
    version: str = ""
    alias: str = ""
    run_id: str = ""
    source: str = ""
    trained_at: str = ""
    test_metrics: dict[str, float] = {}


class Loaded(msgspec.Struct):
    model: Any
    meta: ModelMeta
    seconds: float
    fast: bytes | None = None
    """The ONNX form logged beside the sklearn model, if the registry has one."""
    example: Any = None
    """The input example logged with the model (a DataFrame), for the agreement check."""


def read_model_folder(local: Path) -> tuple[Any, bytes | None, Any]:
    """The sklearn model, its fast form and its input example, from an MLflow model folder."""
    import mlflow
    from mlflow.models import Model

    from pipeline.fast_model import FILENAME

    model = mlflow.sklearn.load_model(str(local))
    fast_file = local / FILENAME
    fast = fast_file.read_bytes() if fast_file.is_file() else None
    try:
        example = Model.load(str(local)).load_input_example(str(local))
    except Exception:  # an example that can't be read only costs the fast path
        example = None
    return model, fast, example


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


def from_mlflow(settings: ServiceSettings) -> Loaded:
    import mlflow
    from mlflow import MlflowClient

    began = time.perf_counter()
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient()
    name, version, alias = parse_models_uri(settings.model_uri)
    if alias:
        mv = client.get_model_version_by_alias(name, alias)
    else:
        mv = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory(prefix="housing-serve-") as target:
        local = mlflow.artifacts.download_artifacts(f"models:/{name}/{mv.version}", dst_path=target)
        model, fast, example = read_model_folder(Path(local))
    info = {"name": name, "version": mv.version, "run_id": mv.run_id, "tags": dict(mv.tags)}
    meta = _meta(info, alias, f"mlflow:{settings.model_uri}")
    return Loaded(model, meta, time.perf_counter() - began, fast, example)


def _fetch_gcs_folder(uri: str, client: Any, target: Path) -> Path:
    from pipeline.storage import open_store

    store = open_store(uri, client)
    keys = store.list()
    if not keys:
        raise FileNotFoundError(f"no model files under {uri}")
    for key in keys:
        path = target / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.read_bytes(key))
    return target


def from_export(settings: ServiceSettings, gcs_client: Any = None) -> Loaded:
    began = time.perf_counter()
    uri = settings.fallback
    with tempfile.TemporaryDirectory(prefix="housing-serve-") as tmp:
        local = (
            _fetch_gcs_folder(uri, gcs_client, Path(tmp)) if uri.startswith("gs://") else Path(uri)
        )
        if not (local / "MLmodel").is_file():
            raise FileNotFoundError(f"{uri} holds no MLflow model (no MLmodel file)")
        model, fast, example = read_model_folder(local)
        meta_file = local / "registry.json"
        info: dict[str, Any] = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    meta = _meta(info, parse_models_uri(settings.model_uri)[2], f"export:{uri}")
    return Loaded(model, meta, time.perf_counter() - began, fast, example)


def load(settings: ServiceSettings, gcs_client: Any = None) -> tuple[Loaded | None, list[str]]:
    """The model by the cascade, and why each earlier source was passed over."""
    reasons: list[str] = []
    for source in ("mlflow", "export"):
        try:
            loaded = (
                from_mlflow(settings) if source == "mlflow" else from_export(settings, gcs_client)
            )
        except Exception as exc:
            reason = f"{source}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            log.warning("model source failed", extra={"json_fields": {"reason": reason}})
            reasons.append(reason)
            continue
        log.info(
            "model loaded",
            extra={
                "json_fields": {
                    "source": loaded.meta.source,
                    "version": loaded.meta.version,
                    "seconds": round(loaded.seconds, 3),
                }
            },
        )
        return loaded, reasons
    log.error("no model could be loaded", extra={"json_fields": {"reasons": reasons}})
    return None, reasons
