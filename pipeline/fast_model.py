"""The fast form of a fitted model: the same Pipeline as one ONNX graph, for ONNX Runtime.

Predicting one row through scikit-learn costs ~10 ms of Python and pandas overhead; the same
arithmetic as an ONNX graph costs well under a millisecond. The graph is translated from the
fitted parameters (skl2onnx has no converters for the project's own transformers, can't mix the
string column with numbers, and its tree converter breaks on scikit-learn 1.9's node arrays).

Trees compare ``x <= threshold``, so a feature off by one ulp flips a split whenever it sits on
a threshold — common here, since counts and coordinates repeat and thresholds are data values.
Two measures make the graph decide exactly as scikit-learn does:

- splits on ``log1p`` features are moved to the untransformed value (a count or a ratio, both
  bit-identical in ONNX): the threshold becomes the largest raw value numpy maps below it;
- coordinate features are looked up as scikit-learn computed them: cluster similarities for
  every place seen in training, neighbour prices for every 0.01° grid point near one; only
  other places are computed.

The graph carries a reference (:class:`Reference`): rows and the prices scikit-learn gave them
at register time. The service serves the graph only after it reproduces those prices
(:func:`reference_difference`), so the check needs no scikit-learn load at start-up; otherwise
it serves scikit-learn and says why.

Inputs: ``numeric`` (double, [n, 8], ``NUMERIC_FEATURES`` order, NaN for a missing
``total_bedrooms``) and ``ocean_proximity`` (string, [n, 1]); output ``price`` (double, [n]).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from model_runtime.contract import CATEGORICAL, NUMERIC_FEATURES, RANGES
from model_runtime.onnx_runtime import (
    CATEGORY_INPUT,
    NUMERIC_INPUT,
    OUTPUT,
    REFERENCE_KEY,
    Reference,
    inputs,
)

#: Only this column may be missing at serving time (the service's schema allows null for it).
NULLABLE = "total_bedrooms"
OPSET = {"": 17, "ai.onnx.ml": 3}
#: Rows kept in the reference: the head of the check rows, plus some with a missing value.
REFERENCE_ROWS, REFERENCE_MISSING = 200, 8


Transform = Callable[[NDArray[np.float64]], Any]


class NotConvertibleError(ValueError):
    """The model has a part with no faithful ONNX translation; serve it with scikit-learn."""


class _Graph:
    """A tiny builder over onnx.helper: named nodes, constants as initializers."""

    def __init__(self) -> None:
        from onnx import helper

        self.helper = helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value: Any, hint: str = "c", dtype: Any = np.float64) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> Any:
        outputs = [self.name(op_type.lower()) for _ in range(n_out)]
        domain = attrs.pop("domain", "")
        self.nodes.append(
            self.helper.make_node(op_type, list(inputs), outputs, domain=domain, **attrs)
        )
        return outputs[0] if n_out == 1 else outputs

    def columns(self, x: str, indices: Sequence[int]) -> str:
        return self.op("Gather", [x, self.const(list(indices), "idx", np.int64)], axis=1)

    def scale(self, x: str, mean: Any, scale: Any) -> str:
        return self.op("Div", [self.op("Sub", [x, self.const(mean)]), self.const(scale)])

    def all_columns(self, mask: str) -> str:
        """[n, k] bool → [n, 1] bool: every column true."""
        as_double = self.op("Cast", [mask], to=11)
        return self.op("Cast", [self.op("ReduceMin", [as_double], axes=[1], keepdims=1)], to=9)

    def rows(self, mask: str) -> str:
        """[n, 1] bool → [m, 1] int64: the indices of the true rows, for GatherND/ScatterND."""
        flat = self.op("Reshape", [mask, self.const([-1], "s", np.int64)])
        return self.op("Transpose", [self.op("NonZero", [flat])])

    def squared_distances(self, x: str, points: NDArray[np.float64]) -> str:
        """[n, d] against [m, d] → [n, m], summing (x - p)² per coordinate in order, as
        scikit-learn's neighbour search does: the expanded ||x||² - 2x·p + ||p||² reorders
        near-equal distances, which decides neighbours on a coordinate grid."""
        diff = self.op(
            "Sub",
            [
                self.op("Unsqueeze", [x, self.const([1], "ax", np.int64)]),
                self.const(points[None, :, :], "points"),
            ],
        )
        return self.op(
            "ReduceSum",
            [self.op("Mul", [diff, diff]), self.const([2], "ax", np.int64)],
            keepdims=0,
        )


def _imputer(g: _Graph, x: str, imputer: Any) -> str:
    from sklearn.impute import SimpleImputer

    from model_runtime.transformers import ScaledKNNImputer

    if isinstance(imputer, SimpleImputer) and imputer.strategy in {"median", "mean"}:
        return g.op("Where", [g.op("IsNaN", [x]), g.const(imputer.statistics_[None, :]), x])
    if isinstance(imputer, ScaledKNNImputer):
        return _knn_imputer(g, x, imputer)
    raise NotConvertibleError(f"no ONNX translation for imputer {type(imputer).__name__}")


def _knn_imputer(g: _Graph, x: str, imputer: Any) -> str:
    """KNNImputer on standardised columns, for the one nullable column: the mean of the k
    nearest donors (rows with that column present) by distance over the other columns."""
    knn = imputer.imputer_
    if knn.weights != "uniform" or knn.metric != "nan_euclidean":
        raise NotConvertibleError("KNN imputer must be uniform-weighted nan_euclidean")
    fitted = np.asarray(knn._fit_X, dtype=np.float64)
    j = list(NUMERIC_FEATURES).index(NULLABLE)
    others = [i for i in range(fitted.shape[1]) if i != j]
    donors = fitted[~np.isnan(fitted[:, j])]
    if np.isnan(donors[:, others]).any():
        raise NotConvertibleError("KNN imputer donors have missing values in other columns")
    z = g.scale(x, imputer.mean_[None, :], imputer.scale_[None, :])
    column = g.columns(z, [j])
    # Only the rows that miss the value search the donors.
    missing = g.rows(g.op("IsNaN", [column]))
    rows = g.op("GatherND", [z, missing])
    d2 = g.squared_distances(g.columns(rows, others), donors[:, others])
    k = g.const([knn.n_neighbors], "k", np.int64)
    _, idx = g.op("TopK", [d2, k], n_out=2, largest=0, sorted=1)
    donor_values = g.const(donors[:, j], "donor_values")
    fill = g.op("ReduceMean", [g.op("Gather", [donor_values, idx], axis=0)], axes=[1], keepdims=1)
    filled_column = g.op("ScatterND", [column, missing, fill])
    parts = []
    for i in range(fitted.shape[1]):
        parts.append(filled_column if i == j else g.columns(z, [i]))
    filled = g.op("Concat", parts, axis=1)
    return g.op(
        "Add", [g.op("Mul", [filled, g.const(imputer.scale_[None, :])]), g.const(imputer.mean_)]
    )


def _ratios(g: _Graph, x: str, names: list[str]) -> tuple[str, list[str]]:
    from model_runtime.transformers import RATIOS

    parts, out_names = [x], list(names)
    nan = g.const([[np.nan]], "nan")
    zero = g.const([[0.0]], "zero")
    for num, den, name in RATIOS:
        numerator = g.columns(x, [names.index(num)])
        denominator = g.columns(x, [names.index(den)])
        safe = g.op("Where", [g.op("Equal", [denominator, zero]), nan, denominator])
        parts.append(g.op("Div", [numerator, safe]))
        out_names.append(name)
    return g.op("Concat", parts, axis=1), out_names


def _neighbour_encoding(g: _Graph, x: str, encoder: Any) -> str:
    """NeighborTargetEncoder: places as near as the k-th nearest, weighted by 1/distance; a
    place at distance zero takes all the weight."""
    places = np.asarray(encoder.places_, dtype=np.float64)
    targets = np.asarray(encoder.place_targets_, dtype=np.float64)
    k = min(int(encoder.n_neighbors), len(places))
    d2 = g.squared_distances(x, places)
    nearest, _ = g.op("TopK", [d2, g.const([k], "k", np.int64)], n_out=2, largest=0, sorted=1)
    kth = g.op("ReduceMax", [nearest], axes=[1], keepdims=1)
    near = g.op("LessOrEqual", [d2, kth])
    exact = g.op("And", [near, g.op("Equal", [d2, g.const(0.0)])])
    zero = g.const(0.0)
    weights = g.op("Where", [near, g.op("Reciprocal", [g.op("Sqrt", [d2])]), zero])
    any_exact = g.op(
        "Cast", [g.op("ReduceMax", [g.op("Cast", [exact], to=11)], axes=[1], keepdims=1)], to=9
    )
    weights = g.op("Where", [any_exact, g.op("Cast", [exact], to=11), weights])
    axis = g.const([1], "ax", np.int64)
    total = g.op("ReduceSum", [g.op("Mul", [weights, g.const(targets[None, :], "targets")]), axis])
    return g.op("Div", [total, g.op("ReduceSum", [weights, axis])])


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


@dataclass
class _Features:
    """The encode step's output as graph tensors, plus what exact tree decisions need."""

    parts: list[str] = field(default_factory=list)
    width: int = 0
    exact: list[str] = field(default_factory=list)
    """Untransformed columns appended after the features, for remapped splits."""
    remap: dict[int, tuple[int, Transform]] = field(default_factory=dict)
    """feature index → (index of its untransformed column, numpy's transform of it)."""

    def add(self, tensor: str, width: int) -> int:
        self.parts.append(tensor)
        self.width += width
        return self.width - width


def _log_transform(mean: float, scale: float) -> Transform:
    return lambda raw: (np.log1p(raw) - mean) / scale


def _log_branch(g: _Graph, f: _Features, pipe: Any, x: str, n: int) -> None:
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    log, scaler = (step for _, step in pipe.steps)
    if not (isinstance(log, FunctionTransformer) and log.func is np.log1p):
        raise NotConvertibleError("log branch is not log1p → StandardScaler")
    if not (isinstance(scaler, StandardScaler) and scaler.with_mean and scaler.with_std):
        raise NotConvertibleError("log branch is not log1p → StandardScaler")
    logged = g.op("Log", [g.op("Add", [x, g.const([[1.0]])])])
    offset = f.add(g.scale(logged, scaler.mean_[None, :], scaler.scale_[None, :]), n)
    for i in range(n):
        f.remap[offset + i] = (
            len(f.exact),
            _log_transform(float(scaler.mean_[i]), float(scaler.scale_[i])),
        )
        f.exact.append(g.columns(x, [i]))


class _Lookup(NamedTuple):
    row: str
    """[n] int64: that place's row in the tables (0 when unknown)."""
    unknown: str
    """[m, 1] int64: the rows whose coordinates are new."""
    points: NDArray[np.float64]


#: Coordinates are keyed on a 1e-2 degree grid (the census data's); the key only proposes a
#: place, equality of both coordinates decides.
_GRID = 100.0


def _place_keys(points: NDArray[np.float64]) -> NDArray[np.int64]:
    lat, lon = np.round(points[:, 0] * _GRID), np.round(points[:, 1] * _GRID)
    return (lat * 1_000_000 + lon).astype(np.int64)


def _coordinates(g: _Graph, encode: Any, x: str, cols: list[str], names: list[str]) -> Any:
    """Hash lookup of the training places the neighbour encoder keeps: O(1) a row, where the
    distances to every place cost O(places)."""
    from model_runtime.transformers import NeighborTargetEncoder

    encoders = [t for _, t, _ in encode.transformers_ if isinstance(t, NeighborTargetEncoder)]
    if not encoders:
        return None
    points = np.asarray(encoders[0].places_, dtype=np.float64)
    keys = _place_keys(points)
    if len(np.unique(keys)) != len(keys):
        return None  # off-grid places: no lookup, every row is computed
    coords = g.columns(x, [names.index(c) for c in cols])
    scaled = g.op("Round", [g.op("Mul", [coords, g.const(_GRID)])])
    key = g.op(
        "Cast",
        [
            g.op(
                "Add",
                [
                    g.op("Mul", [g.columns(scaled, [0]), g.const(1_000_000.0)]),
                    g.columns(scaled, [1]),
                ],
            )
        ],
        to=7,
    )
    found = g.op(
        "LabelEncoder",
        [g.op("Reshape", [key, g.const([-1], "s", np.int64)])],
        domain="ai.onnx.ml",
        keys_int64s=keys.tolist(),
        values_int64s=list(range(len(keys))),
        default_int64=-1,
    )
    row = g.op("Max", [found, g.const(0, "zero", np.int64)])
    place = g.op("Gather", [g.const(points, "points"), row], axis=0)
    known = g.all_columns(g.op("Equal", [place, coords]))
    return _Lookup(row, g.rows(g.op("Not", [known])), points)


#: New places this near a training place (degrees) have their neighbour price precomputed on
#: the grid, so a request's new places cost a lookup; the rest are computed against every place.
_NEAR_DEGREES = 0.2
_GRID_CHUNK = 100_000


def _neighbour_grid(
    transformer: Any, cols: list[str]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """scikit-learn's neighbour price at every grid point of the schema's coordinate box near
    a training place (NaN elsewhere), flattened; with the box's lowest grid index and shape."""
    from sklearn.neighbors import KDTree

    if len(cols) != 2 or not all(c in RANGES for c in cols):
        raise NotConvertibleError(f"neighbour prices need two coordinate columns, got {cols}")
    axes = [np.arange(round(RANGES[c].min * _GRID), round(RANGES[c].max * _GRID) + 1) for c in cols]
    mesh = np.meshgrid(*axes, indexing="ij")
    points = np.column_stack([m.ravel() for m in mesh]) / _GRID
    distance, _ = KDTree(np.asarray(transformer.places_, dtype=np.float64)).query(points, k=1)
    near = np.flatnonzero(distance[:, 0] <= _NEAR_DEGREES)
    table = np.full(len(points), np.nan)
    for start in range(0, len(near), _GRID_CHUNK):
        rows = near[start : start + _GRID_CHUNK]
        frame = pd.DataFrame(points[rows], columns=cols)
        table[rows] = np.asarray(transformer.transform(frame), dtype=np.float64)[:, 0]
    lows = np.array([a[0] for a in axes], dtype=np.float64)
    shape = np.array([len(a) for a in axes], dtype=np.float64)
    return table, lows, shape


def _grid_neighbour_encoding(g: _Graph, selected: str, transformer: Any, cols: list[str]) -> str:
    """The neighbour price looked up for places on the 0.01° grid near a training place, as
    scikit-learn computed it; computed only for the other rows."""
    table, lows, shape = _neighbour_grid(transformer, cols)
    scaled = g.op("Round", [g.op("Mul", [selected, g.const(_GRID)])])
    index = g.op("Sub", [scaled, g.const(lows[None, :])])
    fits = g.op(
        "And",
        [
            g.op("Equal", [g.op("Div", [scaled, g.const(_GRID)]), selected]),
            g.op(
                "And",
                [
                    g.op("GreaterOrEqual", [index, g.const(0.0)]),
                    g.op("Less", [index, g.const(shape[None, :])]),
                ],
            ),
        ],
    )
    on_grid = g.all_columns(fits)
    safe = g.op("Where", [on_grid, index, g.const(0.0)])
    flat = g.op(
        "Add",
        [g.op("Mul", [g.columns(safe, [0]), g.const(shape[1])]), g.columns(safe, [1])],
    )
    flat = g.op("Reshape", [g.op("Cast", [flat], to=7), g.const([-1], "s", np.int64)])
    value = g.op("Gather", [g.const(table[:, None], "grid"), flat], axis=0)
    known = g.op("And", [on_grid, g.op("Not", [g.op("IsNaN", [value])])])
    unknown = g.rows(g.op("Not", [known]))
    computed = _neighbour_encoding(g, g.op("GatherND", [selected, unknown]), transformer)
    return g.op("ScatterND", [value, unknown, computed])


def _one_hot(g: _Graph, encoder: Any) -> str:
    if encoder.handle_unknown != "ignore" or encoder.drop is not None:
        raise NotConvertibleError("OneHotEncoder must ignore unknowns and drop nothing")
    (categories,) = encoder.categories_
    onehot = g.op(
        "OneHotEncoder",
        [CATEGORY_INPUT],
        domain="ai.onnx.ml",
        cats_strings=[str(c) for c in categories],
        zeros=1,
    )
    flat = g.op("Reshape", [onehot, g.const([-1, len(categories)], "shape", np.int64)])
    return g.op("Cast", [flat], to=11)


def _cluster_similarity(
    g: _Graph, transformer: Any, selected: str, cols: list[str], lookup: _Lookup | None
) -> tuple[str, int]:
    """Cluster similarities: scikit-learn's own values (a table) for training places; computed
    for new places only."""
    centres = np.asarray(transformer.kmeans_.cluster_centers_, dtype=np.float64)
    gamma = g.const(-float(transformer.gamma))
    width = centres.shape[0]

    def compute(places: str) -> str:
        return g.op("Exp", [g.op("Mul", [g.squared_distances(places, centres), gamma])])

    if lookup is None:
        return compute(selected), width
    table = np.asarray(transformer.transform(pd.DataFrame(lookup.points, columns=cols)))
    exact = g.op("Gather", [g.const(table, "table"), lookup.row], axis=0)
    new_places = g.op("GatherND", [selected, lookup.unknown])
    return g.op("ScatterND", [exact, lookup.unknown, compute(new_places)]), width


def _preprocess(g: _Graph, preprocess: Any) -> _Features:
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
    x, names = _ratios(g, x, numeric)
    f = _Features()
    lookup: _Lookup | None = None
    for _, transformer, columns in encode.transformers_:
        if _drops(transformer, columns):
            continue
        cols = list(columns)
        if isinstance(transformer, OneHotEncoder) and cols == [CATEGORICAL]:
            f.add(_one_hot(g, transformer), len(transformer.categories_[0]))
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
            lookup = lookup or _coordinates(g, encode, x, cols, names)
            f.add(*_cluster_similarity(g, transformer, selected, cols, lookup))
        elif isinstance(transformer, NeighborTargetEncoder):
            f.add(_grid_neighbour_encoding(g, selected, transformer, cols), 1)
        else:
            raise NotConvertibleError(f"no ONNX translation for {type(transformer).__name__}")
    return f


def _raw_threshold(thresholds: NDArray[np.float64], transform: Transform) -> NDArray[np.float64]:
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


def _tree_attributes(model: Any, f: _Features) -> dict[str, Any]:
    """HistGradientBoostingRegressor's fitted predictors as TreeEnsembleRegressor attributes
    (double thresholds and leaf values, ai.onnx.ml opset 3). Splits on log features move to
    their untransformed column, appended after the ``f.width`` features."""
    from onnx import numpy_helper

    if getattr(model, "is_categorical_", None) is not None and np.any(model.is_categorical_):
        raise NotConvertibleError("categorical splits in HistGradientBoosting")
    nodes = np.concatenate([predictor.nodes for (predictor,) in model._predictors])
    sizes = [len(predictor.nodes) for (predictor,) in model._predictors]
    tree_ids = np.repeat(np.arange(len(sizes)), sizes)
    node_ids = np.concatenate([np.arange(n) for n in sizes])
    leaf = nodes["is_leaf"].astype(bool)
    features = np.where(leaf, 0, nodes["feature_idx"]).astype(np.int64)
    thresholds = np.where(leaf, 0.0, nodes["num_threshold"]).astype(np.float64)
    for feature, (column, transform) in f.remap.items():
        split = ~leaf & (features == feature)
        thresholds[split] = _raw_threshold(thresholds[split], transform)
        features[split] = f.width + column
    baseline = float(np.asarray(model._baseline_prediction).reshape(-1)[0])
    return {
        "n_targets": 1,
        "aggregate_function": "SUM",
        "post_transform": "NONE",
        "nodes_treeids": tree_ids.tolist(),
        "nodes_nodeids": node_ids.tolist(),
        "nodes_featureids": features.tolist(),
        "nodes_modes": ["LEAF" if is_leaf else "BRANCH_LEQ" for is_leaf in leaf],
        "nodes_truenodeids": np.where(leaf, 0, nodes["left"]).astype(int).tolist(),
        "nodes_falsenodeids": np.where(leaf, 0, nodes["right"]).astype(int).tolist(),
        "nodes_missing_value_tracks_true": np.where(
            leaf, 0, nodes["missing_go_to_left"].astype(bool)
        )
        .astype(int)
        .tolist(),
        "target_treeids": tree_ids[leaf].tolist(),
        "target_nodeids": node_ids[leaf].tolist(),
        "target_ids": [0] * int(leaf.sum()),
        "base_values_as_tensor": numpy_helper.from_array(np.array([baseline]), "base"),
        "nodes_values_as_tensor": numpy_helper.from_array(thresholds, "values"),
        "target_weights_as_tensor": numpy_helper.from_array(
            nodes["value"][leaf].astype(np.float64), "weights"
        ),
    }


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
    return inner, inverse


def to_onnx(model: Any) -> bytes:
    """The fitted ``Pipeline([preprocess, regressor])`` as a serialized ONNX model."""
    from onnx import TensorProto, checker, helper

    if list(dict(model.steps)) != ["preprocess", "regressor"]:
        raise NotConvertibleError("model is not Pipeline([preprocess, regressor])")
    trees, inverse = _regressor(model.named_steps["regressor"])
    g = _Graph()
    f = _preprocess(g, model.named_steps["preprocess"])
    features = g.op("Concat", [*f.parts, *f.exact], axis=1)
    # The op sums leaves in float32 whatever the input: the check at load covers that.
    summed = g.op(
        "TreeEnsembleRegressor", [features], domain="ai.onnx.ml", **_tree_attributes(trees, f)
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


def reference_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The check rows worth keeping: the head (the logged input example is its first rows)
    and a few with a missing value, so the imputer's branch is checked too."""
    head, rest = frame.head(REFERENCE_ROWS), frame.iloc[REFERENCE_ROWS:]
    return pd.concat([head, rest[rest[NULLABLE].isna()].head(REFERENCE_MISSING)])


def with_reference(onnx_bytes: bytes, model: Any, rows: pd.DataFrame) -> bytes:
    """The graph with ``rows`` and scikit-learn's prices for them in its metadata."""
    import onnx

    feed = inputs(rows)
    numeric = [[None if np.isnan(v) else float(v) for v in row] for row in feed[NUMERIC_INPUT]]
    reference = Reference(
        numeric=numeric,
        ocean_proximity=[str(c) for c in feed[CATEGORY_INPUT][:, 0]],
        prices=np.asarray(model.predict(rows), dtype=np.float64).tolist(),
    )
    graph = onnx.load_from_string(onnx_bytes)
    entry = graph.metadata_props.add()
    entry.key, entry.value = REFERENCE_KEY, msgspec.json.encode(reference).decode()
    return bytes(graph.SerializeToString())
