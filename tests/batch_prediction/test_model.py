"""Where a batch run finds its model when MLflow can't answer: the artifact store's export of
the version or alias it was asked for, as on a Cloud Run task whose disk holds nothing."""

from __future__ import annotations

from batch_prediction.model import source

ENV = {"HOUSING_MLOPS_HOME": "/tmp/task-home", "ARTIFACT_URI": "gs://bucket/artifacts"}


def test_an_alias_falls_back_to_its_export_in_the_artifact_store_not_the_tasks_disk():
    found = source(None, "champion", ENV)
    assert found.model_uri == "models:/housing-price@champion"
    assert found.fallback == "gs://bucket/artifacts/models/housing-price/champion"


def test_a_pinned_version_falls_back_to_its_own_export_never_the_champions():
    found = source("7", "champion", ENV)
    assert found.model_uri == "models:/housing-price/7"
    assert found.fallback == "gs://bucket/artifacts/models/housing-price/7"


def test_a_named_fallback_wins():
    found = source("7", "champion", {**ENV, "MODEL_FALLBACK_URI": "gs://other/models/x"})
    assert found.fallback == "gs://other/models/x"
