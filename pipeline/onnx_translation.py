"""The fast form of a fitted model: the same Pipeline translated to one ONNX graph.

Predicting one row through scikit-learn costs ~10 ms of Python and pandas overhead; the same
arithmetic as an ONNX graph costs well under a millisecond. The graph is translated from the
fitted parameters (skl2onnx has no converters for the project's own transformers, can't mix the
string column with numbers, and its tree converter breaks on scikit-learn 1.9's node arrays).
What has no faithful translation is refused (:class:`NotConvertibleError`), never approximated.

Trees compare ``x <= threshold``, so a feature off by one ulp flips a split whenever it sits on
a threshold. ONNX has no ``log1p``, so splits on ``log1p`` features are moved to the
untransformed value (a count or a ratio, both bit-identical in ONNX): the threshold becomes the
largest raw value numpy maps below it (:func:`raw_threshold`). The coordinate features are kept
exact by lookups (``pipeline.onnx_graph``).

Inputs: ``numeric`` (double, [n, 8], ``NUMERIC_FEATURES`` order, NaN for a missing
``total_bedrooms``) and ``ocean_proximity`` (string, [n, 1]); output ``price`` (double, [n]).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_runtime.contract import CATEGORICAL, NULLABLE, NUMERIC_FEATURES, RANGES
from model_runtime.onnx_runtime import CATEGORY_INPUT, NUMERIC_INPUT, OUTPUT
from pipeline import onnx_graph
from pipeline.onnx_graph import Graph, Move

OPSET = {"": 17, "ai.onnx.ml": 3}
#: The KNN imputer's graph fills one column: the only one the service lets be missing.
(_NULLABLE,) = NULLABLE

Transform = Callable[[NDArray[np.float64]], Any]


class NotConvertibleError(ValueError):
    """The model has a part with no faithful ONNX translation; serve it with scikit-learn."""


def to_onnx(model: Any) -> bytes:
    """The fitted ``Pipeline([preprocess, regressor])`` as a serialized ONNX model."""
    from onnx import TensorProto, checker, helper

    if list(dict(model.steps)) != ["preprocess", "regressor"]:
        raise NotConvertibleError("model is not Pipeline([preprocess, regressor])")
    trees, inverse = _regressor(model.named_steps["regressor"])
    g = Graph()
    f = _preprocess(g, model.named_steps["preprocess"])
    features = g.op("Concat", [*f.parts, *f.exact], axis=1)
    moved: dict[int, Move] = {
        feature: (f.width + column, partial(raw_threshold, transform=transform))
        for feature, (column, transform) in f.remap.items()
    }
    # The op sums leaves in float32 whatever the input: the check at load covers that.
    summed = g.op(
        "TreeEnsembleRegressor",
        [features],
        domain="ai.onnx.ml",
        **onnx_graph.tree_attributes(trees, moved),
    )
    raw = g.op(
        "Reshape", [g.op("Cast", [summed], to=TensorProto.DOUBLE), g.const([-1], "s", np.int64)]
    )
    if inverse == "square":
        g.nodes.append(helper.make_node("Mul", [raw, raw], [OUTPUT]))
    elif inverse == "exp":
        g.nodes.append(helper.make_node("Exp", [raw], [OUTPUT]))
    else:
        g.nodes.append(helper.make_node("Identity", [raw], [OUTPUT]))
    graph = helper.make_graph(
        g.nodes,
        "housing_price",
        [
            helper.make_tensor_value_info(NUMERIC_INPUT, TensorProto.DOUBLE, [None, 8]),
            helper.make_tensor_value_info(CATEGORY_INPUT, TensorProto.STRING, [None, 1]),
        ],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.DOUBLE, [None])],
        initializer=g.initializers,
    )
    opsets = [helper.make_opsetid(domain, version) for domain, version in OPSET.items()]
    onnx_model = helper.make_model(graph, opset_imports=opsets, producer_name="housing-mlops")
    checker.check_model(onnx_model)
    return bytes(onnx_model.SerializeToString())


def _regressor(regressor: Any) -> tuple[Any, str]:
    """The boosted trees inside, and the inverse target transform to apply after them."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import HistGradientBoostingRegressor

    inverse, inner = "", regressor
    if isinstance(regressor, TransformedTargetRegressor):
        inner = regressor.regressor_
        inverse = {np.square: "square", np.exp: "exp"}.get(regressor.inverse_func, "?")
        if inverse == "?":
            raise NotConvertibleError(f"target inverse {regressor.inverse_func} not translated")
    if not isinstance(inner, HistGradientBoostingRegressor):
        raise NotConvertibleError(
            f"no fast form for {type(inner).__name__}: only HistGradientBoostingRegressor"
        )
    if getattr(inner, "is_categorical_", None) is not None and np.any(inner.is_categorical_):
        raise NotConvertibleError("categorical splits in HistGradientBoosting")
    return inner, inverse


@dataclass
class _Features:
    """The encode step's output as graph tensors, plus what exact tree decisions need."""

    parts: list[str] = field(default_factory=list)
    width: int = 0
    exact: list[str] = field(default_factory=list)
    """Untransformed columns appended after the features, for moved splits."""
    remap: dict[int, tuple[int, Transform]] = field(default_factory=dict)
    """feature index → (index of its untransformed column, numpy's transform of it)."""

    def add(self, tensor: str, width: int) -> int:
        self.parts.append(tensor)
        self.width += width
        return self.width - width


def _preprocess(g: Graph, preprocess: Any) -> _Features:
    """The preprocess Pipeline (impute → ratios → encode) as graph nodes."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    from model_runtime.transformers import ClusterSimilarity, NeighborTargetEncoder, ratio_features

    steps = dict(preprocess.steps)
    impute, ratios, encode = steps.get("impute"), steps.get("ratios"), steps.get("encode")
    if not (
        isinstance(impute, ColumnTransformer)
        and isinstance(ratios, FunctionTransformer)
        and ratios.func is ratio_features
        and isinstance(encode, ColumnTransformer)
    ):
        raise NotConvertibleError("preprocess is not impute → ratios → encode")
    numeric = list(NUMERIC_FEATURES)
    x = NUMERIC_INPUT
    for name, transformer, columns in impute.transformers_:
        if name == "numeric":
            if list(columns) != numeric:
                raise NotConvertibleError("imputer columns differ from NUMERIC_FEATURES")
            x = _imputer(g, x, transformer)
        elif not _passes_through(transformer, columns) and not _drops(transformer, columns):
            raise NotConvertibleError(f"unexpected impute branch {name!r}")
    x, names = onnx_graph.ratios(g, x, numeric)
    f = _Features()
    lookup: onnx_graph.PlaceLookup | None = None
    for _, transformer, columns in encode.transformers_:
        if _drops(transformer, columns):
            continue
        cols = list(columns)
        if isinstance(transformer, OneHotEncoder) and cols == [CATEGORICAL]:
            if transformer.handle_unknown != "ignore" or transformer.drop is not None:
                raise NotConvertibleError("OneHotEncoder must ignore unknowns and drop nothing")
            (categories,) = transformer.categories_
            f.add(onnx_graph.one_hot(g, categories), len(categories))
            continue
        selected = g.columns(x, [names.index(c) for c in cols])
        if isinstance(transformer, Pipeline):
            _log_branch(g, f, transformer, selected, len(cols))
        elif isinstance(transformer, StandardScaler):
            if not (transformer.with_mean and transformer.with_std):
                raise NotConvertibleError("StandardScaler without mean or std")
            scaled = g.scale(selected, transformer.mean_[None, :], transformer.scale_[None, :])
            f.add(scaled, len(cols))
        elif isinstance(transformer, ClusterSimilarity):
            lookup = lookup or _place_lookup(g, encode, selected, cols)
            f.add(*onnx_graph.cluster_similarity(g, transformer, selected, cols, lookup))
        elif isinstance(transformer, NeighborTargetEncoder):
            if len(cols) != 2 or not all(c in RANGES for c in cols):
                raise NotConvertibleError(f"neighbour prices need two coordinate columns: {cols}")
            f.add(onnx_graph.grid_neighbour_encoding(g, selected, transformer, cols), 1)
        else:
            raise NotConvertibleError(f"no ONNX translation for {type(transformer).__name__}")
    return f


def _imputer(g: Graph, x: str, imputer: Any) -> str:
    from sklearn.impute import SimpleImputer

    from model_runtime.transformers import ScaledKNNImputer

    if isinstance(imputer, SimpleImputer) and imputer.strategy in {"median", "mean"}:
        return onnx_graph.fill_missing(g, x, imputer.statistics_)
    if isinstance(imputer, ScaledKNNImputer):
        knn = imputer.imputer_
        if knn.weights != "uniform" or knn.metric != "nan_euclidean":
            raise NotConvertibleError("KNN imputer must be uniform-weighted nan_euclidean")
        fitted = np.asarray(knn._fit_X, dtype=np.float64)
        column = NUMERIC_FEATURES.index(_NULLABLE)
        donors = fitted[~np.isnan(fitted[:, column])]
        if np.isnan(donors).any():
            raise NotConvertibleError("KNN imputer donors have missing values in other columns")
        k = int(knn.n_neighbors)
        return onnx_graph.knn_fill(g, x, donors, column, k, imputer.mean_, imputer.scale_)
    raise NotConvertibleError(f"no ONNX translation for imputer {type(imputer).__name__}")


def _passes_through(transformer: Any, columns: Any) -> bool:
    """The categorical column carried unchanged (fitted "passthrough" is an identity
    FunctionTransformer)."""
    from sklearn.preprocessing import FunctionTransformer

    identity = transformer == "passthrough" or (
        isinstance(transformer, FunctionTransformer) and transformer.func is None
    )
    return bool(identity) and list(columns) == [CATEGORICAL]


def _drops(transformer: Any, columns: Any) -> bool:
    return (isinstance(transformer, str) and transformer == "drop") or len(list(columns)) == 0


def _place_lookup(
    g: Graph, encode: Any, coords: str, cols: list[str]
) -> onnx_graph.PlaceLookup | None:
    """The training places the neighbour encoder of the same columns keeps, looked up."""
    from model_runtime.transformers import NeighborTargetEncoder

    for _, transformer, columns in encode.transformers_:
        if isinstance(transformer, NeighborTargetEncoder) and list(columns) == cols:
            points = np.asarray(transformer.places_, dtype=np.float64)
            return onnx_graph.place_lookup(g, coords, points)
    return None


def _log_branch(g: Graph, f: _Features, pipe: Any, x: str, n: int) -> None:
    """log1p → StandardScaler, with each column's raw value kept for the moved splits."""
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    log, scaler = (step for _, step in pipe.steps)
    if not (isinstance(log, FunctionTransformer) and log.func is np.log1p):
        raise NotConvertibleError("log branch is not log1p → StandardScaler")
    if not (isinstance(scaler, StandardScaler) and scaler.with_mean and scaler.with_std):
        raise NotConvertibleError("log branch is not log1p → StandardScaler")
    offset = f.add(onnx_graph.log1p_scaled(g, x, scaler.mean_, scaler.scale_), n)
    for i in range(n):
        f.remap[offset + i] = (
            len(f.exact),
            _log_transform(float(scaler.mean_[i]), float(scaler.scale_[i])),
        )
        f.exact.append(g.columns(x, [i]))


def _log_transform(mean: float, scale: float) -> Transform:
    return lambda raw: (np.log1p(raw) - mean) / scale


def raw_threshold(thresholds: NDArray[np.float64], transform: Transform) -> NDArray[np.float64]:
    """For each threshold t, the largest non-negative double x with transform(x) <= t (by
    bisection over the bit patterns, which order non-negative doubles), or -1 when none
    qualifies: then ``x <= r`` decides exactly like ``transform(x) <= t``."""
    lo = np.zeros(thresholds.shape, dtype=np.int64)  # the bits of 0.0
    hi = np.full(thresholds.shape, np.array(1e300).view(np.int64))
    qualifies = transform(lo.view(np.float64)) <= thresholds
    while np.any(hi - lo > 1):
        mid = lo + (hi - lo) // 2
        below = transform(mid.view(np.float64)) <= thresholds
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return np.where(qualifies, lo.view(np.float64), -1.0)
