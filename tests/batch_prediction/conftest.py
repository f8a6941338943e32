"""A stand-in model and input files for the batch job's units: the run's logic (shares, parts,
manifest, flags) doesn't depend on which model prices; the real model's prices are checked in
tests/integration/test_batch.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from model_runtime.contract import FEATURES
from model_runtime.loader import ModelMeta


class Formula:
    """A 'model' whose price is a formula of the inputs, so a wrong row order shows."""

    def predict(self, frame: pd.DataFrame) -> Any:
        bedrooms = frame["total_bedrooms"].fillna(-1.0)
        return frame["median_income"] * 100_000 + frame["latitude"] + bedrooms / 1000


class StandIn:
    runtime = "stand-in"
    fast = None

    def __init__(self, version: str):
        self.meta = ModelMeta(name="housing-price", version=version)
        self.model = Formula()


class StandInModels:
    """What ``job.run`` asks of ``batch_prediction.model``, with the alias naming ``version``."""

    def __init__(self, version: str = "3"):
        self.version = version
        self.loads = 0

    def resolve(self, version: str | None, alias: str, env: Any, gcs_client: Any = None) -> str:
        return version or self.version

    def load(self, version: str | None, alias: str, env: Any, gcs_client: Any = None) -> StandIn:
        self.loads += 1
        return StandIn(version or self.version)


@pytest.fixture
def models() -> StandInModels:
    return StandInModels()


@pytest.fixture(scope="session")
def houses(housing_sample: pd.DataFrame) -> pd.DataFrame:
    """1,000 houses with an id column in front, a missing bedroom count and two bad rows."""
    frame = housing_sample.head(1000)[list(FEATURES)].copy()
    frame.insert(0, "house_id", [f"h{i:04d}" for i in range(len(frame))])
    frame["ocean_proximity"] = frame["ocean_proximity"].astype(object)
    frame.loc[frame.index[1], "total_bedrooms"] = np.nan
    frame.loc[frame.index[10], "latitude"] = 50.0
    frame.loc[frame.index[20], "ocean_proximity"] = "on the moon"
    frame.loc[frame.index[30], "ocean_proximity"] = " near_bay "
    return frame.reset_index(drop=True)


@pytest.fixture
def houses_csv(houses: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "in" / "houses.csv"
    path.parent.mkdir()
    houses.to_csv(path, index=False)
    return path


@pytest.fixture
def houses_parquet(houses: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "in" / "houses.parquet"
    path.parent.mkdir(exist_ok=True)
    houses.to_parquet(path, index=False, row_group_size=128)
    return path
