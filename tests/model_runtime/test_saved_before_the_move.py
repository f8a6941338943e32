"""A model registered before the custom transformers moved still loads and prices as it did.

``fixtures/saved_before_the_move/`` was written by the register step's own calls at commit
d222b9b (``fixtures/make_saved_before_the_move.py``): its skops file and MLmodel name
``pipeline.transformers.*`` types, and the prices it gave are kept beside it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from model_runtime.loader import ModelSource, from_export, read_model_folder

FIXTURES = Path(__file__).parent / "fixtures"
SAVED = FIXTURES / "saved_before_the_move"


def expected() -> tuple[pd.DataFrame, list[float]]:
    kept = json.loads((FIXTURES / "saved_before_the_move_prices.json").read_text())
    return pd.DataFrame(kept["rows"]), kept["prices"]


def test_a_model_saved_before_the_move_loads_and_gives_the_same_prices():
    mlmodel = (SAVED / "MLmodel").read_text()
    assert "pipeline.transformers.ClusterSimilarity" in mlmodel, "the old paths, or this is moot"
    assert "model_runtime" not in mlmodel
    model, example = read_model_folder(SAVED)
    rows, prices = expected()
    assert model.predict(rows).tolist() == pytest.approx(prices, rel=1e-12)
    assert example is not None
    assert len(example) == 3


def test_the_service_loader_serves_it_from_a_legacy_export(tmp_path, caplog):
    """An export without a manifest (written before manifests too) is read with one warning."""
    folder = tmp_path / "models" / "housing-price" / "champion"
    shutil.copytree(SAVED, folder)
    source = ModelSource(
        model_uri="models:/housing-price@champion", tracking_uri="", fallback=str(folder)
    )
    with caplog.at_level(logging.WARNING, logger="model_runtime.exports"):
        loaded = from_export(source)
    (warning,) = [r for r in caplog.records if r.name == "model_runtime.exports"]
    assert "no manifest.json" in warning.getMessage()
    assert loaded.fast is None
    model, _ = loaded.sklearn()
    rows, prices = expected()
    assert model.predict(rows).tolist() == pytest.approx(prices, rel=1e-12)
