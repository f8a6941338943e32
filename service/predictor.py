"""The loaded model behind a typed call: houses in, prices out."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from pipeline.schema import FEATURES
from service.loader import Loaded, ModelMeta
from service.schemas import House

_NAN = math.nan


def to_frame(houses: list[House]) -> pd.DataFrame:
    """The raw columns the model was trained on, in its order."""
    columns: dict[str, Any] = {}
    for name in FEATURES:
        values = [getattr(h, name) for h in houses]
        if name == "total_bedrooms":
            values = [_NAN if v is None else v for v in values]
        columns[name] = np.asarray(values, dtype=object if name == "ocean_proximity" else float)
    return pd.DataFrame(columns)


class Predictor:
    """Wraps the fitted scikit-learn Pipeline and what the registry says about it."""

    def __init__(self, loaded: Loaded):
        self.model = loaded.model
        self.meta: ModelMeta = loaded.meta
        self.load_seconds = loaded.seconds
        self.runtime = "scikit-learn"
        self.warnings: list[str] = []

    def predict(self, houses: list[House]) -> list[float]:
        predictions = self.model.predict(to_frame(houses))
        return [float(p) for p in np.asarray(predictions, dtype=float)]
