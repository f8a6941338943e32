"""The reference profile: small, faithful, kept with each version, and backfilled for versions
registered before profiles existed."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

from housing_platform.artifact_store import LocalStore
from model_runtime import contract, exports
from pipeline.cli import main
from pipeline.monitoring import profile
from pipeline.settings import Settings, load_settings

TINY = """
[impute]
methods = ["median"]
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


def importances() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "feature": ["longitude", "median_income", "ocean_proximity", "population"],
            "rmse_increase": [9_000.0, 40_000.0, 12_000.0, 10.0],
        }
    )


@pytest.fixture(scope="module")
def full_profile(housing: pd.DataFrame) -> profile.Profile:
    return profile.build(
        housing[list(contract.FEATURES)],
        housing[contract.TARGET].to_numpy() * 0.97,
        importances(),
        [contract.CATEGORICAL],
    )


def test_a_profile_of_the_whole_data_set_fits_in_100_kb(full_profile):
    assert len(profile.encode(full_profile)) <= profile.MAX_BYTES


def test_a_profile_reads_back_as_written(full_profile):
    again = profile.decode(profile.encode(full_profile))
    assert again == full_profile
    assert set(again.numeric) == set(contract.NUMERIC_FEATURES)
    assert again.categorical[contract.CATEGORICAL].count == 20640


def test_inputs_with_few_values_are_kept_exactly(full_profile, housing):
    age = full_profile.numeric["housing_median_age"]
    assert age.discrete
    counts = housing["housing_median_age"].value_counts().sort_index()
    assert age.values == counts.index.tolist()
    assert age.counts == counts.tolist()


def test_category_counts_and_missing_values_are_counted(full_profile, housing):
    ocean = full_profile.categorical[contract.CATEGORICAL]
    assert ocean.counts == housing[contract.CATEGORICAL].value_counts().to_dict()
    bedrooms = full_profile.numeric["total_bedrooms"]
    assert bedrooms.missing == int(housing["total_bedrooms"].isna().sum()) > 0
    assert bedrooms.std == pytest.approx(float(np.std(housing["total_bedrooms"].dropna())))


def test_top_features_follow_the_importances(full_profile):
    assert full_profile.top_features(3) == ["median_income", "ocean_proximity", "longitude"]


def test_a_reference_too_small_for_evidentlys_large_sample_statistics_is_refused(housing):
    with pytest.raises(profile.ProfileError, match="1001"):
        profile.build(
            housing[list(contract.FEATURES)].head(500),
            np.ones(500),
            importances(),
            [contract.CATEGORICAL],
        )


def test_a_damaged_profile_is_named(tmp_path):
    with pytest.raises(profile.ProfileError, match="not a reference profile"):
        profile.decode(b'{"format": 1}', "models/m/1/reference_profile.json")


class Trained(NamedTuple):
    home: Path
    settings: Settings
    store: LocalStore


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, sample_csv: Path) -> Trained:
    """A home with version 1 registered by the pipeline (tiny config, trained once)."""
    home = tmp_path_factory.mktemp("profile-home")
    config = home / "tiny.toml"
    config.write_text(TINY)
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()):
        mp.setenv("HOUSING_MLOPS_HOME", str(home))
        assert main(["run", "--config", str(config), "--source", str(sample_csv)]) == 0
    settings = load_settings(config, {"HOUSING_MLOPS_HOME": str(home)})
    return Trained(home, settings, LocalStore(settings.store_uri))


def test_register_keeps_the_profile_with_the_version_and_its_exports(trained):
    name = trained.settings.register.model_name
    got = profile.read(trained.store, name, "1")
    assert got.model_version == "1"
    assert got.model_name == name
    test_rows = json.loads(trained.store.read_bytes("reports/evaluate.json"))["test_rows"]
    assert got.prediction_rows == test_rows
    assert (
        got.reference_rows
        == json.loads(trained.store.read_bytes("reports/evaluate.json"))["train_rows"]
    )
    saved = pd.read_csv(io.BytesIO(trained.store.read_bytes("reports/feature_importance.csv")))
    assert [i.feature for i in got.importances] == saved["feature"].tolist()
    assert [i.rmse_increase for i in got.importances] == pytest.approx(saved["rmse_increase"])
    # The champion's export (what the service falls back to) carries the same file.
    champion = exports.Export(trained.store, exports.export_prefix(name, "champion"))
    assert champion.has(profile.FILENAME)


def test_the_profile_is_an_artifact_of_the_versions_logged_model_in_mlflow(trained):
    import mlflow

    mlflow.set_tracking_uri(trained.settings.mlflow_uri)
    client = mlflow.MlflowClient()
    name = trained.settings.register.model_name
    with client_download(client, name, "1") as folder:
        assert (folder / profile.FILENAME).is_file()
        assert len((folder / profile.FILENAME).read_bytes()) <= profile.MAX_BYTES


@contextlib.contextmanager
def client_download(client, name: str, version: str):
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        yield Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=tmp))


def register_without_profile(trained: Trained) -> str:
    """A version as the register step made them before profiles: logged, registered,
    exported, no profile."""
    import joblib
    import mlflow

    from pipeline import model_registry
    from pipeline.cv import xy
    from pipeline.experiment_tracking import configure_mlflow

    configure_mlflow(trained.settings)
    model = joblib.load(io.BytesIO(trained.store.read_bytes("models/candidate.joblib")))
    X_test, _ = xy(pd.read_parquet(io.BytesIO(trained.store.read_bytes("data/test.parquet"))))
    reg = model_registry.Registry(trained.settings.register.model_name)
    with mlflow.start_run():
        uri, _ = reg.log_model(model, X_test.head(5))
    sha = json.loads(trained.store.read_bytes("reports/ingest.json"))["sha256"]
    version = reg.register(uri, {"data_sha256": sha})
    exports.publish(
        trained.store,
        model_registry.export_prefix(reg.name, version),
        model_registry.export_files(reg, version),
    )
    return version


def test_backfill_profiles_a_version_registered_before_profiles(trained, monkeypatch, capsys):
    version = register_without_profile(trained)
    name = trained.settings.register.model_name
    with pytest.raises(profile.ProfileError, match=f"profile --version {version}"):
        profile.read(trained.store, name, version)

    monkeypatch.setenv("HOUSING_MLOPS_HOME", str(trained.home))
    config = str(trained.home / "tiny.toml")
    assert main(["profile", "--config", config, "--version", version]) == 0
    assert f"models/{name}/{version}" in capsys.readouterr().out
    got = profile.read(trained.store, name, version)
    assert got.model_version == version
    assert {i.feature for i in got.importances} == set(contract.FEATURES)
    # The same model, the same data: the same reference as the pipeline's own profile.
    first = profile.read(trained.store, name, "1")
    assert got.numeric == first.numeric
    assert got.predictions == first.predictions


def test_backfill_of_an_unknown_version_is_one_line_and_fails(trained, monkeypatch, capsys):
    monkeypatch.setenv("HOUSING_MLOPS_HOME", str(trained.home))
    config = str(trained.home / "tiny.toml")
    assert main(["profile", "--config", config, "--version", "99"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "no version 99" in err
