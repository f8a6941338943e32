"""The loaded model behind a typed call: houses in, prices out."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from pipeline import fast_model
from pipeline.schema import FEATURES, NUMERIC_FEATURES
from service.loader import Loaded, ModelMeta
from service.schemas import House

_NAN = math.nan
log = logging.getLogger("service.predictor")


def to_frame(houses: list[House]) -> pd.DataFrame:
    """The raw columns the model was trained on, in its order."""
    columns: dict[str, Any] = {}
    for name in FEATURES:
        values = [getattr(h, name) for h in houses]
        if name == "total_bedrooms":
            values = [_NAN if v is None else v for v in values]
        columns[name] = np.asarray(values, dtype=object if name == "ocean_proximity" else float)
    return pd.DataFrame(columns)


def to_arrays(houses: list[House]) -> dict[str, Any]:
    """The fast form's inputs, built straight from the decoded houses (no DataFrame); a null
    ``total_bedrooms`` becomes NaN in the float array."""
    numeric = np.array(
        [[getattr(h, name) for name in NUMERIC_FEATURES] for h in houses], dtype=np.float64
    )
    ocean = np.array([[h.ocean_proximity] for h in houses], dtype=object)
    return {fast_model.NUMERIC_INPUT: numeric, fast_model.CATEGORY_INPUT: ocean}


class Predictor:
    """Wraps the fitted model — its fast form when that agrees with scikit-learn on the logged
    example, else the scikit-learn Pipeline — and what the registry says about it."""

    def __init__(self, loaded: Loaded):
        self.model = loaded.model
        self.meta: ModelMeta = loaded.meta
        self.load_seconds = loaded.seconds
        self.runtime = "scikit-learn"
        self.warnings: list[str] = []
        self.fast: Any = None
        if loaded.fast is None:
            self.warnings.append("no fast form was registered with this version")
            return
        try:
            fast = fast_model.session(loaded.fast)
            if loaded.example is None:
                raise ValueError("the version has no input example to check it on")
            diff = fast_model.agreement(self.model, fast, loaded.example)
            if not diff <= fast_model.TOLERANCE:
                raise ValueError(
                    f"it differs from scikit-learn by {diff:.2g} on the logged example "
                    f"(tolerance {fast_model.TOLERANCE:g})"
                )
        except Exception as exc:
            message = f"fast form not used, serving scikit-learn: {exc}"
            self.warnings.append(message)
            log.warning(message)
            return
        self.fast = fast
        self.runtime = "onnxruntime"

    def predict(self, houses: list[House]) -> list[float]:
        if self.fast is None:
            predictions = self.model.predict(to_frame(houses))
            return [float(p) for p in np.asarray(predictions, dtype=float)]
        prices: list[float] = fast_model.predict(self.fast, to_arrays(houses)).tolist()
        return prices
