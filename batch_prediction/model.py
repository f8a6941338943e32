"""The model version a run prices with, loaded exactly as the service loads it: the service's
settings (MLFLOW_TRACKING_URI, HOUSING_MLOPS_HOME, ARTIFACT_URI, MODEL_FALLBACK_URI) and its
loader cascade (MLflow, then the export), served by the service's ``Predictor`` — the fast form
when it reproduces scikit-learn's prices, else scikit-learn."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batch_prediction.errors import BatchError
from housing_platform.settings_reader import SettingsError
from model_runtime import loader, onnx_runtime
from model_runtime.contract import CATEGORICAL, NUMERIC_FEATURES
from model_runtime.exports import DEFAULT_MODEL, export_prefix
from service.predictor import Predictor
from service.settings import from_env


def source(version: str | None, alias: str, env: Mapping[str, str]) -> loader.ModelSource:
    """Where the version (or the alias's version) is: a pinned version falls back to its own
    export, never the champion's, and an alias to its export in the artifact store (on a Cloud
    Run task, the bucket, not the task's disk), unless MODEL_FALLBACK_URI names one."""
    ref = f"{DEFAULT_MODEL}/{version}" if version else f"{DEFAULT_MODEL}@{alias}"
    try:
        settings = from_env({**env, "MODEL_URI": f"models:/{ref}"})
    except SettingsError as exc:
        raise BatchError(str(exc)) from None
    found = settings.model_source
    if not settings.fallback_uri:
        prefix = export_prefix(DEFAULT_MODEL, version or alias)
        export = f"{settings.store_uri.rstrip('/')}/{prefix}"
        found = msgspec.structs.replace(found, fallback=export)
    return found


def _what(version: str | None, alias: str) -> str:
    return f"version {version}" if version else f"@{alias}"


def resolve(version: str | None, alias: str, env: Mapping[str, str], gcs_client: Any = None) -> str:
    """The version number the run will price with (an alias is read once, so every task of
    the run uses the same version even if the alias moves meanwhile)."""
    order = loader.EXPORT_FIRST if version else loader.REGISTRY_FIRST
    found, reasons = loader.load(
        source(version, alias, env), lambda got: got.meta, gcs_client, order
    )
    if found is None:
        raise BatchError(
            f"model {DEFAULT_MODEL} {_what(version, alias)} can't be loaded: {'; '.join(reasons)}"
        )
    if version and found.version != version:
        raise BatchError(
            f"model {DEFAULT_MODEL} version {version} can't be loaded: the export found is "
            f"version {found.version}"
        )
    return str(found.version)


def load(
    version: str | None, alias: str, env: Mapping[str, str], gcs_client: Any = None
) -> Predictor:
    """The version (or the alias's) as the service would serve it. A pinned version is read
    from its export first (a batch run's tasks are all pinned), an alias from the registry."""
    order = loader.EXPORT_FIRST if version else loader.REGISTRY_FIRST
    predictor, reasons = loader.load(source(version, alias, env), Predictor, gcs_client, order)
    if predictor is None:
        raise BatchError(
            f"model {DEFAULT_MODEL} {_what(version, alias)} can't be loaded: {'; '.join(reasons)}"
        )
    if version and predictor.meta.version != version:
        raise BatchError(
            f"model {DEFAULT_MODEL} version {version} can't be loaded: the export found is "
            f"version {predictor.meta.version}"
        )
    return predictor


def prices(predictor: Predictor, feed: dict[str, NDArray[Any]]) -> NDArray[np.float64]:
    """Prices of the checked rows, by the form the predictor serves."""
    if not len(feed[onnx_runtime.NUMERIC_INPUT]):
        return np.empty(0)
    if predictor.fast is not None:
        return onnx_runtime.predict(predictor.fast, feed, onnx_runtime.BULK_CHUNK)
    frame = pd.DataFrame(feed[onnx_runtime.NUMERIC_INPUT], columns=list(NUMERIC_FEATURES))
    frame[CATEGORICAL] = feed[onnx_runtime.CATEGORY_INPUT][:, 0]
    return np.asarray(predictor.model.predict(frame), dtype=np.float64)
