"""A home whose MLflow registry holds two versions of one small model: what real service
revisions pinned to versions need, without a whole pipeline run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from model_runtime import contract
from model_runtime.contract import FEATURES

#: The versions the registry holds (the same fitted model registered twice).
VERSIONS = (1, 2)


@pytest.fixture(scope="session")
def registry_home(tmp_path_factory: pytest.TempPathFactory, housing_sample: pd.DataFrame) -> Path:
    """A home with versions 1 and 2 registered (with their fast ONNX form) in its SQLite store,
    as the register step does; no champion alias, no export: revisions pin their version."""
    from pipeline.experiment_tracking import configure_mlflow
    from pipeline.model import FeatureSpec, build_model
    from pipeline.model_registry import Registry
    from pipeline.settings import load_settings

    home = tmp_path_factory.mktemp("registry-home")
    settings = load_settings(None, {"HOUSING_MLOPS_HOME": str(home)})
    X, y = housing_sample[list(FEATURES)], housing_sample[contract.TARGET]
    model = build_model(
        FeatureSpec(n_clusters=3),
        "hist_gradient_boosting",
        {"max_iter": 20, "target_transform": "log"},
    ).fit(X, y)
    import mlflow

    configure_mlflow(settings)
    registry = Registry(settings.register.model_name)
    with mlflow.start_run():
        uri, fast = registry.log_model(model, X.head(50))
    assert fast.startswith("onnx"), fast
    assert [registry.register(uri, {"test_rmse": "1"}) for _ in VERSIONS] == [
        str(v) for v in VERSIONS
    ]
    return home
