"""MLflow Model Registry adapter: log, register, alias, promote, export.

The registered model is the whole fitted scikit-learn Pipeline, saved with skops (no pickle)
and an explicit list of the project's trusted types, so it loads anywhere the project's
package is installed: ``mlflow.pyfunc.load_model("models:/housing-price@champion")``.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from housing_platform.artifact_store import to_json
from model_runtime import exports
from model_runtime.exports import export_prefix
from pipeline.metrics import regression_metrics

log = logging.getLogger("pipeline.model_registry")
__all__ = ["Registry", "export_files", "export_prefix", "version_metadata"]

CHAMPION = "champion"
CHALLENGER = "challenger"
ARTIFACT_PATH = "model"
#: Written beside an exported model: what the registry knows, for loaders that can't ask it.
METADATA_FILE = exports.METADATA
#: Modules whose types a saved model may hold; anything else in the model is refused.
TRUSTED_PREFIXES = (
    "model_runtime.transformers.",
    "sklearn.",
    "numpy.",
    "builtins.",
    "scipy.",
    "collections.",
)
RUNTIME_PACKAGES = ("scikit-learn", "numpy", "pandas", "scipy", "skops")


def pip_requirements() -> list[str]:
    """Exact versions of what the model needs at inference (MLflow would otherwise guess)."""
    return [f"{name}=={metadata.version(name)}" for name in RUNTIME_PACKAGES]


def trusted_types(model: Any) -> list[str]:
    """Types skops would refuse to load, after checking each one is ours or a library's."""
    import skops.io

    untrusted = set(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
    # skops trusts scikit-learn estimators it knew at import time, which depends on import order
    # (experimental ones such as IterativeImputer): list every estimator in the model explicitly.
    untrusted |= _estimator_types(model)
    foreign = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if foreign:
        raise ValueError(f"model holds types from outside the project and its libraries: {foreign}")
    return sorted(untrusted)


def _estimator_types(model: Any) -> set[str]:
    found = [model, *model.get_params(deep=True).values()] if hasattr(model, "get_params") else []
    return {
        f"{type(obj).__module__}.{type(obj).__qualname__}"
        for obj in found
        if hasattr(obj, "get_params") and not isinstance(obj, type)
    }


def git_sha(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
            cwd=cwd,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def promotion_decision(
    challenger_rmse: float, champion_rmse: float | None, margin: float, policy: str
) -> tuple[bool, str]:
    """Whether the challenger becomes champion, and why, in words for the log and the tag."""
    if policy == "manual":
        return False, "promotion is manual: run `python -m pipeline promote`"
    if champion_rmse is None:
        return True, "no champion yet"
    needed = champion_rmse * (1 - margin)
    if challenger_rmse <= needed:
        return True, (
            f"challenger RMSE {challenger_rmse:,.0f} beats champion {champion_rmse:,.0f} "
            f"by the margin {margin:.1%}"
        )
    return False, (
        f"challenger RMSE {challenger_rmse:,.0f} does not beat champion {champion_rmse:,.0f} "
        f"by the margin {margin:.1%} (needs <= {needed:,.0f})"
    )


class Registry:
    """The project's view of one registered model."""

    def __init__(self, name: str):
        from mlflow import MlflowClient

        self.name = name
        self.client = MlflowClient()

    def log_model(
        self, model: Any, example: pd.DataFrame, check: pd.DataFrame | None = None
    ) -> tuple[str, str]:
        """Log the fitted pipeline in the active run, and its fast form beside it when that
        agrees with it on ``check`` (default: the example); returns the model URI and what
        became of the fast form (a version tag)."""
        import mlflow
        from mlflow.models import infer_signature

        signature = infer_signature(example, np.asarray(model.predict(example)))
        info = mlflow.sklearn.log_model(
            model,
            name=ARTIFACT_PATH,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=trusted_types(model),
        )
        fast = self.log_fast_form(model, info.model_id, example if check is None else check)
        return str(info.model_uri), fast

    def log_fast_form(self, model: Any, model_id: str, rows: pd.DataFrame) -> str:
        """The ONNX form as an artifact of the same logged model (so the registered version
        carries both), only when it agrees with scikit-learn on ``rows``; it keeps some of them
        with scikit-learn's prices, for the service's check at load."""
        from model_runtime import onnx_runtime
        from pipeline import onnx_reference, onnx_translation

        try:
            onnx_bytes = onnx_translation.to_onnx(model)
        except onnx_translation.NotConvertibleError as exc:
            log.warning("no fast form: %s", exc)
            return f"none: {exc}"[:250]
        diff = onnx_runtime.agreement(model, onnx_runtime.session(onnx_bytes), rows)
        if not diff <= onnx_runtime.TOLERANCE:
            log.warning("fast form disagrees with scikit-learn by %.3g; not logged", diff)
            return f"none: differs from scikit-learn by {diff:.2g} on {len(rows)} rows"
        kept = onnx_reference.reference_rows(rows)
        onnx_bytes = onnx_reference.with_reference(onnx_bytes, model, kept)
        with tempfile.TemporaryDirectory(prefix="housing-onnx-") as tmp:
            path = Path(tmp) / onnx_runtime.FILENAME
            path.write_bytes(onnx_bytes)
            self.client.log_model_artifact(model_id, str(path))
        return f"onnx: max relative difference {diff:.1e} on {len(rows)} rows"

    def register(self, model_uri: str, tags: dict[str, str]) -> str:
        import mlflow

        version = mlflow.register_model(model_uri, self.name, tags=tags)
        return str(version.version)

    def version_by_alias(self, alias: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.name, alias, version)

    def score(self, alias: str, X: pd.DataFrame, y: pd.Series) -> dict[str, float] | None:
        """Metrics of the version behind ``alias`` on these rows; None if there is none."""
        import mlflow

        if self.version_by_alias(alias) is None:
            return None
        model = mlflow.sklearn.load_model(f"models:/{self.name}@{alias}")
        return regression_metrics(y, model.predict(X))

    @contextlib.contextmanager
    def download(self, version: str) -> Iterator[Path]:
        """The model's files (MLmodel, model.skops, …) in a temporary folder, removed after."""
        import mlflow

        with tempfile.TemporaryDirectory(prefix="housing-model-") as target:
            local = mlflow.artifacts.download_artifacts(
                f"models:/{self.name}/{version}", dst_path=target
            )
            yield Path(local)


def model_id_of(mv: Any) -> str:
    """The logged model behind a registered version: MLflow 3 registers a logged model by its
    URI, ``models:/<model id>``, and does not always fill in ``model_id`` on the version."""
    source = str(mv.source or "")
    return str(mv.model_id or "") or (
        source.removeprefix("models:/") if source.startswith("models:/m-") else ""
    )


def attach(reg: Registry, version: str, folder: str, files: list[tuple[str, bytes]]) -> None:
    """Log ``files`` (relative path, bytes) under ``folder/`` of the version's logged model, so
    its downloads and exports carry them. Before the export is made."""
    model_id = model_id_of(reg.client.get_model_version(reg.name, version))
    if not model_id:
        raise ValueError(
            f"model {reg.name} version {version} has no logged model to hold {folder}/"
        )
    with tempfile.TemporaryDirectory(prefix="housing-attach-") as tmp:
        for rel, data in files:
            path = Path(tmp) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        reg.client.log_model_artifacts(model_id, tmp, folder)


def export_files(reg: Registry, version: str) -> list[tuple[str, bytes]]:
    """(relative path, bytes) of a version's exported form: its MLflow model folder plus
    ``registry.json``, so a loader without the registry still knows what it serves."""
    with reg.download(version) as local:
        files = [
            (str(path.relative_to(local)), path.read_bytes())
            for path in sorted(local.rglob("*"))
            if path.is_file()
        ]
    files.append((METADATA_FILE, to_json(version_metadata(reg, version))))
    return files


def version_metadata(reg: Registry, version: str) -> dict[str, Any]:
    """Name, version, run id and tags of a registered version, as plain data."""
    mv = reg.client.get_model_version(reg.name, version)
    return {
        "name": reg.name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "tags": dict(mv.tags),
    }
