"""The local platform as a rollout sees it: a registry of two versions of one small model (each
with its probe set and export, as the register step leaves them), the traffic splitter process
and the stack's revision reconciler, which starts real service revisions as the release asks."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from housing_platform.artifact_store import LocalStore
from local_platform import release_state
from local_platform.revisions import Reconciler
from model_runtime import contract, exports
from model_runtime.contract import FEATURES
from tests.helpers import LOOPBACK, accepts_connections, free_port, running, tail, wait_until
from tests.test_project import ROOT

#: The versions the registry holds (the same fitted model registered twice).
VERSIONS = (1, 2)


@pytest.fixture(scope="session")
def rollout_home(tmp_path_factory: pytest.TempPathFactory, housing_sample: pd.DataFrame) -> Path:
    """A home with versions 1 and 2 registered, each with its probe set and exported to the
    artifact store; version 1 is the champion."""
    import mlflow

    from pipeline import model_registry, probe_set
    from pipeline.experiment_tracking import configure_mlflow
    from pipeline.model import FeatureSpec, build_model
    from pipeline.model_registry import Registry
    from pipeline.settings import load_settings

    home = tmp_path_factory.mktemp("rollout-home")
    settings = load_settings(None, {"HOUSING_MLOPS_HOME": str(home)})
    X, y = housing_sample[list(FEATURES)], housing_sample[contract.TARGET]
    model = build_model(FeatureSpec(n_clusters=3), "hist_gradient_boosting", {"max_iter": 20}).fit(
        X, y
    )
    configure_mlflow(settings)
    reg = Registry(settings.register.model_name)
    with mlflow.start_run():
        uri, fast = reg.log_model(model, X.head(50))
    assert fast.startswith("onnx"), fast
    store = LocalStore(home / "artifacts")
    for version in VERSIONS:
        v = reg.register(uri, {"test_rmse": "1"})
        assert v == str(version)
        probe_set.attach(reg, v, model, X.tail(500))
        files = model_registry.export_files(reg, v)
        exports.publish(store, model_registry.export_prefix(reg.name, v), files)
    reg.set_alias(model_registry.CHAMPION, "1")
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    return home


@dataclass
class LocalStack:
    home: Path
    api: str
    reconciler: Reconciler

    @property
    def store(self) -> LocalStore:
        return LocalStore(self.home / "artifacts")

    def state(self) -> release_state.ReleaseState:
        return release_state.read(release_state.path_in(self.home))


@pytest.fixture(scope="module")
def local_stack(
    rollout_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """The splitter and the reconciler on ``rollout_home``, with version 1 released to all
    traffic and its revision ready (a first release, as `nox -s stack` makes)."""
    path = release_state.path_in(rollout_home)
    release_state.write(path, release_state.render(release_state.first_release(1), {}))
    port = free_port()
    api = f"http://{LOOPBACK}:{port}"
    logs = tmp_path_factory.mktemp("stack-logs")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOUSING_MLOPS_HOME": str(rollout_home),
        "NO_GCE_CHECK": "True",
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
    }
    splitter_env = env | {"PORT": str(port), "SPLITTER_CHECK_MS": "20"}
    argv = [sys.executable, "-m", "local_platform.splitter"]
    lines: list[str] = []
    with running(argv, log=logs / "splitter.log", env=splitter_env, cwd=ROOT) as proc:
        wait_until(lambda: accepts_connections(port), "the splitter", process=proc)
        # Revisions write their prediction log every second, so latency evidence is current.
        # The shadow phase's feed is read every second, and reported on in 5-second windows.
        revision_env = env | {
            "PREDICTION_LOG_INTERVAL_SECONDS": "1",
            "LOG_LEVEL": "WARNING",
            "SHADOW_FEED_SECONDS": "1",
            "SHADOW_WINDOW_SECONDS": "5",
        }
        reconciler = Reconciler(
            home=rollout_home,
            env=revision_env,
            python=sys.executable,
            api_url=api,
            # The release feed and the split, as `nox -s stack` publishes them.
            store=LocalStore(rollout_home / "artifacts"),
            say=lines.append,
        )
        thread = threading.Thread(target=reconciler.watch, name="reconciler", daemon=True)
        thread.start()
        try:
            stack = LocalStack(rollout_home, api, reconciler)
            wait_until(
                lambda: not stack.state().pending,
                "the first revision listed",
                timeout=180,
                log=logs / "splitter.log",
            )
            yield stack
        finally:
            reconciler.stop_all()
            thread.join(timeout=30)
            print("\n".join(lines[-20:]), tail(logs / "splitter.log", 1000), sep="\n")
