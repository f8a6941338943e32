"""The probe set: held-out houses and the prices this version gives them, stored with the version.

A rollout sends these houses to a canary and checks that it answers what its registry version
predicts offline (it serves the model it claims), so the prices are made by the form the service
serves: the ONNX graph when the version has one (the service serves it once it reproduces
scikit-learn), else the scikit-learn pipeline. Registered with the version's files under
``rollout/probe_set.parquet``, so the version's downloads and exports carry it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from housing_platform.artifact_store import frame_to_parquet
from model_runtime import onnx_runtime
from model_runtime.contract import FEATURES
from pipeline import model_registry

FOLDER = "rollout"
FILENAME = "probe_set.parquet"
#: Where the probe set sits among a version's files (and so in its export).
PATH = f"{FOLDER}/{FILENAME}"
#: Houses in a probe set: enough for a median and a p95 of price shifts, one request's worth.
SIZE = 100
PRICE = "price"


def build(model: Any, fast: bytes | None, held_out: pd.DataFrame, size: int = SIZE) -> pd.DataFrame:
    """``size`` held-out houses (a fixed sample) with the served form's price of each."""
    houses = held_out.sample(min(size, len(held_out)), random_state=0)[list(FEATURES)]
    houses = houses.reset_index(drop=True)
    if fast is not None:
        prices = onnx_runtime.predict(onnx_runtime.session(fast), onnx_runtime.inputs(houses))
    else:
        prices = np.asarray(model.predict(houses), dtype=np.float64)
    return houses.assign(**{PRICE: prices})


def attach(
    reg: model_registry.Registry, version: str, model: Any, held_out: pd.DataFrame
) -> pd.DataFrame:
    """Build the version's probe set and log it among its files; returns it."""
    with reg.download(version) as local:
        graph = local / onnx_runtime.FILENAME
        fast = graph.read_bytes() if graph.is_file() else None
    probe = build(model, fast, held_out)
    model_registry.attach(reg, version, FOLDER, [(FILENAME, frame_to_parquet(probe))])
    return probe
