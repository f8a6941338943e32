"""Register: log the evaluated model to MLflow, tag it, alias it challenger, maybe promote it.

The challenger becomes champion when there is none yet, or when it beats the current champion
on this same test set by the configured margin (``register.promotion = "auto"``). Each version
is also exported to the artifact store, the service's fallback when MLflow is unreachable, with
its reference profile (what it was trained on, for the drift monitor) and evaluate's reports
(``evaluation/``: metrics, errors per group, importances, a test-side sample, plots) among its
files. The reports are read from the artifact store, so a cached evaluate, which logs nothing to
MLflow, still leaves them on the version.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import pandas as pd

from model_runtime import contract
from pipeline import catalog, model_registry, probe_set
from pipeline.cv import xy
from pipeline.monitoring import profile

if TYPE_CHECKING:
    from pipeline.step_context import StepContext


#: Where evaluate's reports sit in a version's files (and so in its export).
EVALUATION_FOLDER = "evaluation"


def version_tags(
    evaluation: dict[str, Any], ingest: dict[str, Any], wandb_path: str
) -> dict[str, str]:
    tags = {
        "git_sha": model_registry.git_sha(),
        "data_sha256": ingest["sha256"],
        "family": evaluation["family"],
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wandb_run": wandb_path,
    }
    tags.update({f"test_{k}": f"{v:.6g}" for k, v in evaluation["test_metrics"].items()})
    return tags


def reference_profile(
    model: Any, train: pd.DataFrame, X_test: pd.DataFrame, importance: pd.DataFrame
) -> profile.Profile:
    """What the version was trained on: its training inputs, its prices on the test side and
    the evaluate step's importances."""
    X_train, _ = xy(train)
    predictions = np.asarray(model.predict(X_test), dtype=float)
    return profile.build(
        X_train[list(contract.FEATURES)], predictions, importance, [contract.CATEGORICAL]
    )


def run(ctx: StepContext) -> dict[str, Any]:
    config = ctx.settings.register
    model = joblib.load(io.BytesIO(ctx.read_bytes(catalog.MODEL)))
    evaluation = ctx.read_json(catalog.EVALUATION)
    ingest = ctx.read_json(catalog.INGEST_REPORT)
    X_test, y_test = xy(ctx.read_frame(catalog.TEST))
    wandb_path = ctx.tracker.wandb_path if ctx.tracker else ""
    importance = pd.read_csv(io.BytesIO(ctx.read_bytes(catalog.FEATURE_IMPORTANCE)))
    reference = reference_profile(model, ctx.read_frame(catalog.TRAIN), X_test, importance)

    reg = model_registry.Registry(config.model_name)
    champion_metrics = reg.score(model_registry.CHAMPION, X_test, y_test)
    model_uri, fast_form = reg.log_model(model, X_test.head(5), check=X_test)
    run_id = ctx.tracker.run_id if ctx.tracker else ""
    tags = version_tags(evaluation, ingest, wandb_path) | {"fast_form": fast_form}
    version = reg.register(model_uri, tags)
    # Before the export is made: the export copies the logged model's files, profile included.
    profile.log_to_version(config.model_name, version, reference)
    reports = [
        (key.removeprefix("reports/"), ctx.read_bytes(key)) for key in catalog.EVALUATION_REPORTS
    ]
    model_registry.attach(reg, version, EVALUATION_FOLDER, reports)
    # Held-out houses and this version's served prices, for a rollout's price check.
    probe_set.attach(reg, version, model, X_test)

    challenger_rmse = evaluation["test_metrics"]["rmse"]
    champion_rmse = champion_metrics["rmse"] if champion_metrics else None
    promote, reason = model_registry.promotion_decision(
        challenger_rmse, champion_rmse, config.margin, config.promotion
    )
    reg.client.set_model_version_tag(config.model_name, version, "promotion", reason)
    # Each alias moves only once its export is published whole: a failure in between leaves
    # the aliases, and what they point at, as they were.
    files = model_registry.export_files(reg, version)
    ctx.publish(model_registry.export_prefix(reg.name, version), files)
    reg.set_alias(model_registry.CHALLENGER, version)
    if promote:
        ctx.publish(model_registry.export_prefix(reg.name, model_registry.CHAMPION), files)
        reg.set_alias(model_registry.CHAMPION, version)
    decision = {
        "model_name": config.model_name,
        "version": version,
        "model_uri": model_uri,
        "run_id": run_id,
        "promoted": promote,
        "reason": reason,
        "challenger_rmse": challenger_rmse,
        "champion_rmse": champion_rmse,
        "fast_form": fast_form,
    }
    ctx.write_json(catalog.REGISTRATION, decision)
    if ctx.tracker:
        ctx.tracker.params({"version": version, "promoted": promote, "reason": reason})
    return {"version": version, "promoted": promote}
