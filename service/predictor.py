"""The loaded model behind a typed call: houses in, prices out."""

from __future__ import annotations

import logging
import math
import operator
from typing import Any

import numpy as np
import pandas as pd

from model_runtime import onnx_runtime
from model_runtime.contract import FEATURES, NUMERIC_FEATURES
from model_runtime.loader import Loaded, ModelMeta
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


_numeric = operator.attrgetter(*NUMERIC_FEATURES)


def to_arrays(houses: list[House]) -> dict[str, Any]:
    """The fast form's inputs, built straight from the decoded houses (no DataFrame); a null
    ``total_bedrooms`` becomes NaN in the float array."""
    numeric = np.array([_numeric(h) for h in houses], dtype=np.float64)
    ocean = np.array([[h.ocean_proximity] for h in houses], dtype=object)
    return {onnx_runtime.NUMERIC_INPUT: numeric, onnx_runtime.CATEGORY_INPUT: ocean}


class Predictor:
    """Wraps the fitted model — its fast form when that reproduces scikit-learn's prices, else
    the scikit-learn Pipeline — and what the registry says about it."""

    def __init__(self, loaded: Loaded):
        self.meta: ModelMeta = loaded.meta
        self.runtime = "scikit-learn"
        self.warnings: list[str] = []
        self.model: Any = None
        self.fast: Any = None
        if loaded.fast is None:
            self.warnings.append("no fast form was registered with this version")
        else:
            try:
                self.fast = self._checked(loaded)
                self.runtime = "onnxruntime"
            except Exception as exc:
                message = f"fast form not used, serving scikit-learn: {exc}"
                self.warnings.append(message)
                log.warning(message)
        if self.fast is None and self.model is None:
            self.model, _ = loaded.sklearn()

    def _checked(self, loaded: Loaded) -> Any:
        """The graph's session, once it reproduces scikit-learn: the prices kept in the graph,
        or, for a graph without them, the sklearn model's on the logged example."""
        assert loaded.fast is not None
        fast = onnx_runtime.session(loaded.fast)
        diff = onnx_runtime.reference_difference(fast)
        if diff is None:
            self.model, example = loaded.sklearn()
            if example is None:
                raise ValueError("the version has no input example to check it on")
            diff = onnx_runtime.agreement(self.model, fast, example)
        if not diff <= onnx_runtime.TOLERANCE:
            raise ValueError(
                f"it differs from scikit-learn by {diff:.2g} on its reference rows "
                f"(tolerance {onnx_runtime.TOLERANCE:g})"
            )
        return fast

    def predict(self, houses: list[House]) -> list[float]:
        if self.fast is None:
            predictions = self.model.predict(to_frame(houses))
            return [float(p) for p in np.asarray(predictions, dtype=float)]
        prices: list[float] = onnx_runtime.predict(self.fast, to_arrays(houses)).tolist()
        return prices
