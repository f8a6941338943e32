"""The pieces of the fast form's ONNX graph: a small builder, and the nodes each fitted part of
the pipeline becomes. Which parts qualify is decided by ``pipeline.onnx_translation``.

Trees compare ``x <= threshold``, so a feature off by one ulp flips a split whenever it sits on
a threshold — common here, since counts and coordinates repeat and thresholds are data values.
The coordinate features are therefore looked up as scikit-learn computed them: cluster
similarities for every place seen in training (:func:`place_lookup`), neighbour prices for every
0.01° grid point near one (:func:`grid_neighbour_encoding`); only other places are computed, and
those sum squared differences in coordinate order, as scikit-learn's neighbour search does. A new
place's neighbour price is found among the few candidates its cell holds (:func:`cell_index`),
not among all training places, so an address off the grid costs little more than one on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from model_runtime.contract import RANGES
from model_runtime.onnx_runtime import CATEGORY_INPUT

#: A split's move to another column: (that column, its thresholds from the old ones).
Move = tuple[int, Callable[[NDArray[np.float64]], NDArray[np.float64]]]


class Graph:
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

    def branch(
        self, condition: str, then: Callable[[Graph], str], otherwise: Callable[[Graph], str]
    ) -> str:
        """If: the nodes ``then`` builds run when ``condition`` (a bool scalar) holds, else
        those of ``otherwise``; both give a double tensor. Constants stay in this graph."""
        from onnx import TensorProto

        branches = {}
        for key, build in (("then_branch", then), ("else_branch", otherwise)):
            sub = Graph()
            sub.initializers, sub._n = self.initializers, self._n
            result = sub.op("Identity", [build(sub)])
            self._n = sub._n
            output = self.helper.make_tensor_value_info(result, TensorProto.DOUBLE, None)
            branches[key] = self.helper.make_graph(sub.nodes, self.name(key), [], [output])
        return self.op("If", [condition], **branches)

    def scatter_rows(self, base: str, rows: str, compute: Callable[[Graph], str]) -> str:
        """``base`` with its ``rows`` ([m, 1] int64) set to what ``compute`` builds; those nodes
        run only when there are such rows, since each node costs its call even on none."""
        any_rows = self.op("Greater", [self.op("Size", [rows]), self.const(0, "zero", np.int64)])
        return self.branch(
            any_rows,
            lambda sub: sub.op("ScatterND", [base, rows, compute(sub)]),
            lambda sub: sub.op("Identity", [base]),
        )

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


def fill_missing(g: Graph, x: str, statistics: NDArray[np.float64]) -> str:
    """SimpleImputer: each column's statistic where the value is missing."""
    return g.op("Where", [g.op("IsNaN", [x]), g.const(statistics[None, :]), x])


def knn_fill(
    g: Graph,
    x: str,
    donors: NDArray[np.float64],
    column: int,
    k: int,
    mean: NDArray[np.float64],
    scale: NDArray[np.float64],
) -> str:
    """ScaledKNNImputer for one nullable ``column``: on standardised values, the mean of the k
    nearest ``donors`` by distance over the other columns; back in original units after, with
    scikit-learn's arithmetic, so present values round-trip as they do there."""
    others = [i for i in range(donors.shape[1]) if i != column]
    z = g.scale(x, mean[None, :], scale[None, :])
    values = g.columns(z, [column])
    # Only the rows that miss the value search the donors.
    missing = g.rows(g.op("IsNaN", [values]))
    rows = g.op("GatherND", [z, missing])
    d2 = g.squared_distances(g.columns(rows, others), donors[:, others])
    _, idx = g.op("TopK", [d2, g.const([k], "k", np.int64)], n_out=2, largest=0, sorted=1)
    donor_values = g.const(donors[:, column], "donor_values")
    fill = g.op("ReduceMean", [g.op("Gather", [donor_values, idx], axis=0)], axes=[1], keepdims=1)
    filled_column = g.op("ScatterND", [values, missing, fill])
    parts = [filled_column if i == column else g.columns(z, [i]) for i in range(donors.shape[1])]
    filled = g.op("Concat", parts, axis=1)
    return g.op("Add", [g.op("Mul", [filled, g.const(scale[None, :])]), g.const(mean)])


def ratios(g: Graph, x: str, names: list[str]) -> tuple[str, list[str]]:
    """``ratio_features``: a zero denominator gives NaN, as pandas' ``where`` does there."""
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


def log1p_scaled(g: Graph, x: str, mean: NDArray[np.float64], scale: NDArray[np.float64]) -> str:
    """log1p → StandardScaler; ONNX's Log(1 + x) is not numpy's log1p, which is why splits on
    these columns are moved to the raw values (``pipeline.onnx_translation``)."""
    logged = g.op("Log", [g.op("Add", [x, g.const([[1.0]])])])
    return g.scale(logged, mean[None, :], scale[None, :])


def one_hot(g: Graph, categories: Sequence[Any]) -> str:
    """OneHotEncoder of the category input; an unknown category is all zeros."""
    onehot = g.op(
        "OneHotEncoder",
        [CATEGORY_INPUT],
        domain="ai.onnx.ml",
        cats_strings=[str(c) for c in categories],
        zeros=1,
    )
    flat = g.op("Reshape", [onehot, g.const([-1, len(categories)], "shape", np.int64)])
    return g.op("Cast", [flat], to=11)


def _encoder_places(encoder: Any) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    places = np.asarray(encoder.places_, dtype=np.float64)
    targets = np.asarray(encoder.place_targets_, dtype=np.float64)
    return places, targets, min(int(encoder.n_neighbors), len(places))


def distance_weighted(g: Graph, d2: str, targets: str, k: int) -> str:
    """[n, m] squared distances to places and their targets (broadcast to it) → [n, 1]:
    NeighborTargetEncoder's price. Places as near as the k-th nearest, weighted by 1/distance;
    a place at distance zero takes all the weight."""
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
    total = g.op("ReduceSum", [g.op("Mul", [weights, targets]), axis])
    return g.op("Div", [total, g.op("ReduceSum", [weights, axis])])


def neighbour_encoding(g: Graph, x: str, encoder: Any) -> str:
    """NeighborTargetEncoder against every training place: O(places) a row."""
    places, targets, k = _encoder_places(encoder)
    d2 = g.squared_distances(x, places)
    return distance_weighted(g, d2, g.const(targets[None, :], "targets"), k)


#: Cells (degrees) of the index that gives a new place a few candidate neighbours.
CELL_DEGREES = 0.05
#: A cell with more candidates is left out of the index: its places are computed against all.
MAX_CANDIDATES = 512
#: Slack (degrees) for rounding: in the cell a place is put in, and in distances.
_SLACK = 1e-7
#: The padding place's coordinates: farther than any place, so never a neighbour.
_FAR = 1e6


class CellIndex(NamedTuple):
    """The training places that can be a point's neighbours, per cell of the coordinate box."""

    lows: NDArray[np.float64]
    """[2] the box's lowest corner, where cell (0, 0) begins."""
    shape: NDArray[np.int64]
    """[2] cells along each coordinate; cells are numbered row-major."""
    starts: NDArray[np.int32]
    """[cells] where each cell's candidates begin in ``candidates``."""
    counts: NDArray[np.int32]
    """[cells] how many; 0 for a cell outside the index."""
    candidates: NDArray[Any]
    """Place rows, cell after cell, ascending within a cell; then ``counts.max()`` times
    ``len(places)``, the padding place, so a row of any batch's width stays in bounds."""


def cell_index(
    places: NDArray[np.float64], k: int, lows: NDArray[np.float64], highs: NDArray[np.float64]
) -> CellIndex:
    """For each ``CELL_DEGREES`` cell of the box from ``lows`` to ``highs``, every place that
    can be among the k nearest of a point in it, ties included. A point q of the cell with
    centre c and half-diagonal h has k places within r_k(c) + h (r_k(c): c's k-th nearest
    distance), so each place as near q as its k-th nearest lies within r_k(c) + 2h of c: those
    are the candidates (h widened by ``_SLACK`` for rounding)."""
    from sklearn.neighbors import KDTree

    shape = np.floor((highs - lows) / CELL_DEGREES).astype(np.int64) + 1
    cells = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    centres = lows + (cells.reshape(-1, 2) + 0.5) * CELL_DEGREES
    h = np.hypot(CELL_DEGREES, CELL_DEGREES) / 2 + _SLACK
    tree = KDTree(places)
    r_k = tree.query(centres, k=k)[0][:, -1]
    found = tree.query_radius(centres, r_k + 2 * h)
    counts = np.array([len(f) if len(f) <= MAX_CANDIDATES else 0 for f in found])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    dtype = np.int16 if len(places) < np.iinfo(np.int16).max else np.int32
    padding = np.full(counts.max(initial=0), len(places))
    kept = [np.sort(f) for f, n in zip(found, counts, strict=True) if n]
    candidates = np.concatenate([*kept, padding]).astype(dtype)
    return CellIndex(lows, shape, starts.astype(np.int32), counts.astype(np.int32), candidates)


def cell_of(index: CellIndex, points: NDArray[np.float64]) -> NDArray[np.int64]:
    """Each point's cell, as the graph computes it; -1 outside the box."""
    cell = np.floor((points - index.lows) / CELL_DEGREES)
    inside = np.all((cell >= 0) & (cell < index.shape), axis=1)
    safe = np.where(inside[:, None], cell, 0.0)
    return np.where(inside, safe[:, 0] * index.shape[1] + safe[:, 1], -1).astype(np.int64)


def indexed_neighbour_encoding(
    g: Graph, x: str, encoder: Any, lows: NDArray[np.float64], highs: NDArray[np.float64]
) -> str:
    """NeighborTargetEncoder for places ``x`` [n, 2]: a place in a cell of the index
    (:func:`cell_index`) against that cell's candidates only — the same squared distances, so
    the same neighbours, ties included; any other place against every place."""
    places, _, k = _encoder_places(encoder)
    index = cell_index(places, k, lows, highs)
    cell = g.op(
        "Floor",
        [g.op("Div", [g.op("Sub", [x, g.const(index.lows[None, :])]), g.const(CELL_DEGREES)])],
    )
    shape = index.shape.astype(np.float64)
    fits = g.op(
        "And",
        [
            g.op("GreaterOrEqual", [cell, g.const(0.0)]),
            g.op("Less", [cell, g.const(shape[None, :])]),
        ],
    )
    inside = g.all_columns(fits)
    safe = g.op("Where", [inside, cell, g.const(0.0)])
    flat = g.op(
        "Add", [g.op("Mul", [g.columns(safe, [0]), g.const(shape[1])]), g.columns(safe, [1])]
    )
    flat = g.op("Reshape", [g.op("Cast", [flat], to=7), g.const([-1], "s", np.int64)])
    counts = g.const(index.counts, "counts", np.int32)
    has_candidates = g.op(
        "Greater", [g.op("Gather", [counts, flat], axis=0), g.const(0, "zero", np.int32)]
    )
    indexed = g.op(
        "And", [inside, g.op("Unsqueeze", [has_candidates, g.const([1], "ax", np.int64)])]
    )
    rows, others = g.rows(indexed), g.rows(g.op("Not", [indexed]))
    blank = g.op("Cast", [indexed], to=11)
    found = g.scatter_rows(
        blank,
        rows,
        lambda sub: _among_candidates(sub, x, rows, flat, counts, index, encoder),
    )
    return g.scatter_rows(
        found, others, lambda sub: neighbour_encoding(sub, sub.op("GatherND", [x, others]), encoder)
    )


def _among_candidates(
    g: Graph, x: str, rows: str, cells: str, counts: str, index: CellIndex, encoder: Any
) -> str:
    """The neighbour price of ``x``'s ``rows`` ([m, 1]) from their cells' candidates (``cells``:
    every row's cell; ``counts``: each cell's), in a [m, width] table, width the largest of
    these cells; short rows are filled with a padding place farther than any."""
    places, targets, k = _encoder_places(encoder)
    ax1 = g.const([1], "ax", np.int64)
    cell = g.op("GatherND", [cells, rows])
    count = g.op("Cast", [g.op("Gather", [counts, cell], axis=0)], to=7)
    start = g.op(
        "Cast", [g.op("Gather", [g.const(index.starts, "starts", np.int32), cell], axis=0)], to=7
    )
    most = g.op("Concat", [count, g.const([k], "k", np.int64)], axis=0)
    column = g.op(
        "Range",
        [
            g.const(0, "zero", np.int64),
            g.op("ReduceMax", [most], keepdims=0),
            g.const(1, "one", np.int64),
        ],
    )
    position = g.op("Add", [g.op("Unsqueeze", [start, ax1]), column])
    candidates = g.const(index.candidates, "candidates", index.candidates.dtype)
    candidate = g.op("Cast", [g.op("Gather", [candidates, position], axis=0)], to=7)
    valid = g.op("Less", [column, g.op("Unsqueeze", [count, ax1])])
    padding = g.const(len(targets), "padding", np.int64)
    place = g.op("Where", [valid, candidate, padding])
    # One gather of each candidate's coordinates and target, split into [m, width] tables (2-D
    # ops cost a fraction of 3-D broadcasts); then (q0 - p0)² + (q1 - p1)², as everywhere.
    table = np.column_stack([np.vstack([places, np.full((1, 2), _FAR)]), np.r_[targets, 0.0]])
    gathered = g.op("Gather", [g.const(table, "places"), place], axis=0)
    first, second, place_targets = (
        g.op("Squeeze", [part, g.const([2], "ax", np.int64)])
        for part in g.op("Split", [gathered], n_out=3, axis=2)
    )
    near_x = g.op("GatherND", [x, rows])
    d_first = g.op("Sub", [g.columns(near_x, [0]), first])
    d_second = g.op("Sub", [g.columns(near_x, [1]), second])
    d2 = g.op("Add", [g.op("Mul", [d_first, d_first]), g.op("Mul", [d_second, d_second])])
    return distance_weighted(g, d2, place_targets, k)


#: Coordinates are keyed on a 1e-2 degree grid (the census data's); the key only proposes a
#: place, equality of both coordinates decides.
_GRID = 100.0


class PlaceLookup(NamedTuple):
    row: str
    """[n] int64: that place's row in the tables (0 when unknown)."""
    unknown: str
    """[m, 1] int64: the rows whose coordinates are new."""
    points: NDArray[np.float64]


def _place_keys(points: NDArray[np.float64]) -> NDArray[np.int64]:
    first, second = np.round(points[:, 0] * _GRID), np.round(points[:, 1] * _GRID)
    return (first * 1_000_000 + second).astype(np.int64)


def place_lookup(g: Graph, coords: str, points: NDArray[np.float64]) -> PlaceLookup | None:
    """Hash lookup of the training ``points`` (in the columns of ``coords``): O(1) a row, where
    the distances to every place cost O(places). None when the points are off the grid."""
    keys = _place_keys(points)
    if len(np.unique(keys)) != len(keys):
        return None
    scaled = g.op("Round", [g.op("Mul", [coords, g.const(_GRID)])])
    first, second = g.columns(scaled, [0]), g.columns(scaled, [1])
    key = g.op("Cast", [g.op("Add", [g.op("Mul", [first, g.const(1_000_000.0)]), second])], to=7)
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
    return PlaceLookup(row, g.rows(g.op("Not", [known])), points)


def cluster_similarity(
    g: Graph, transformer: Any, selected: str, cols: list[str], lookup: PlaceLookup | None
) -> tuple[str, int]:
    """Cluster similarities: scikit-learn's own values (a table) for training places; computed
    for new places only (for every place without a lookup)."""
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


def grid_neighbour_encoding(g: Graph, selected: str, transformer: Any, cols: list[str]) -> str:
    """The neighbour price looked up for places on the 0.01° grid of the two coordinate
    columns ``cols`` near a training place, as scikit-learn computed it; computed only for the
    other rows."""
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
    lows = np.array([RANGES[c].min for c in cols], dtype=np.float64)
    highs = np.array([RANGES[c].max for c in cols], dtype=np.float64)
    return g.scatter_rows(
        value,
        unknown,
        lambda sub: indexed_neighbour_encoding(
            sub, sub.op("GatherND", [selected, unknown]), transformer, lows, highs
        ),
    )


def tree_attributes(model: Any, moved: Mapping[int, Move]) -> dict[str, Any]:
    """HistGradientBoostingRegressor's fitted predictors as TreeEnsembleRegressor attributes
    (double thresholds and leaf values, ai.onnx.ml opset 3); splits on a feature in ``moved``
    go to its column with its thresholds."""
    from onnx import numpy_helper

    nodes = np.concatenate([predictor.nodes for (predictor,) in model._predictors])
    sizes = [len(predictor.nodes) for (predictor,) in model._predictors]
    tree_ids = np.repeat(np.arange(len(sizes)), sizes)
    node_ids = np.concatenate([np.arange(n) for n in sizes])
    leaf = nodes["is_leaf"].astype(bool)
    features = np.where(leaf, 0, nodes["feature_idx"]).astype(np.int64)
    thresholds = np.where(leaf, 0.0, nodes["num_threshold"]).astype(np.float64)
    for feature, (column, move) in moved.items():
        split = ~leaf & (features == feature)
        thresholds[split] = move(thresholds[split])
        features[split] = column
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
