"""``python -m pipeline profile --version N``: a reference profile for a version registered
before profiles existed, logged with it and carried into its export(s).

The profile is rebuilt from the artifact store's training and test sides, so it is refused when
the version was trained on other data than they were split from (its ``data_sha256`` tag
against ``reports/ingest.json``). Importances are measured again on the version's own model:
``reports/feature_importance.csv`` is the latest run's, not this version's.
"""

from __future__ import annotations

import json

from housing_platform.artifact_store import ArtifactStore, StorageError, frame_from_parquet
from pipeline import catalog
from pipeline.errors import PipelineError
from pipeline.monitoring import profile
from pipeline.settings import Settings


def backfill(settings: Settings, store: ArtifactStore, version: str) -> list[str]:
    """Build, log and export the profile of ``version``; returns the export prefixes written."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline import model_registry, promote
    from pipeline.cv import xy
    from pipeline.steps import evaluate, register

    reg = model_registry.Registry(settings.register.model_name)
    try:
        mv = reg.client.get_model_version(reg.name, version)
    except MlflowException:
        raise PipelineError(f"{reg.name} has no version {version}") from None
    try:
        ingest = json.loads(store.read_bytes(catalog.INGEST_REPORT))
        train = frame_from_parquet(store.read_bytes(catalog.TRAIN))
        test = frame_from_parquet(store.read_bytes(catalog.TEST))
    except StorageError as exc:
        raise PipelineError(
            f"no training data to profile version {version} from ({exc}): run the pipeline's "
            "first steps on the data it was trained on (`python -m pipeline run --steps "
            "ingest,validate,split --source …`)"
        ) from None
    trained_on = mv.tags.get("data_sha256", "")
    if trained_on and trained_on != ingest.get("sha256"):
        raise PipelineError(
            f"version {version} was trained on data {trained_on[:12]}…, the artifact store holds "
            f"{str(ingest.get('sha256'))[:12]}…: run `python -m pipeline run --steps "
            "ingest,validate,split --source <that data>` first"
        )
    model = mlflow.sklearn.load_model(f"models:/{reg.name}/{version}")
    X_test, y_test = xy(test)
    importance = evaluate.importances(model, X_test, y_test, settings.evaluate.permutation_repeats)
    reference = register.reference_profile(model, train, X_test, importance)
    profile.log_to_version(reg.name, version, reference)
    return promote.export(settings, store, version)
