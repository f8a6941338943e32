"""Fixtures that start real servers: a trained model home and the inference service process."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.cli import main as pipeline_main
from tests.helpers import Server, serve_module

TINY = """
[impute]
methods = ["knn", "median"]
[features]
cluster_candidates = [8]
[select]
families = ["hist_gradient_boosting"]
cv_folds = 2
[tune]
n_trials = 2
cv_folds = 2
[evaluate]
permutation_repeats = 1
"""


@pytest.fixture(scope="session")
def model_home(tmp_path_factory: pytest.TempPathFactory, sample_csv: Path) -> Path:
    """A pipeline home with a champion registered in its SQLite MLflow store and exported."""
    home = tmp_path_factory.mktemp("served")
    config = home / "tiny.toml"
    config.write_text(TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOUSING_MLOPS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert pipeline_main(["run", "--config", str(config), "--source", str(sample_csv)]) == 0
    return home


def run_service(env: dict[str, str], log: Path) -> contextlib.AbstractContextManager[Server]:
    """``python -m service`` (as `nox -s serve` and the image run it), once ``/ready`` answers."""
    return serve_module("service", env, log, "/ready")


@pytest.fixture
def start_service(
    tmp_path: Path,
) -> Callable[[dict[str, str]], contextlib.AbstractContextManager[Server]]:
    """Starts the service with an environment of the test's; each start logs to its own file."""
    starts = itertools.count()
    return lambda env: run_service(env, tmp_path / f"service-{next(starts)}.log")


@pytest.fixture(scope="module")
def service(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service serving the champion from the local store, as `nox -s serve` does."""
    log = tmp_path_factory.mktemp("svc") / "service.log"
    with run_service({"HOUSING_MLOPS_HOME": str(model_home)}, log) as svc:
        yield svc
