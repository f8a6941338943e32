"""The graph's coordinate features are scikit-learn's own values wherever a lookup can give
them (training places, grid points near one), and computed in scikit-learn's order elsewhere:
against the candidates of the place's cell, which hold every neighbour, or against every
place outside the index."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KDTree

from model_runtime import onnx_runtime
from model_runtime.contract import RANGES
from model_runtime.transformers import ClusterSimilarity, NeighborTargetEncoder
from pipeline import onnx_graph
from pipeline.model import COORDINATES
from pipeline.onnx_translation import OPSET

INPUT = "coordinates"


def run(g: onnx_graph.Graph, output: str, coordinates: np.ndarray) -> np.ndarray:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        g.nodes,
        "piece",
        [helper.make_tensor_value_info(INPUT, TensorProto.DOUBLE, [None, 2])],
        [helper.make_tensor_value_info(output, TensorProto.DOUBLE, None)],
        initializer=g.initializers,
    )
    opsets = [helper.make_opsetid(domain, version) for domain, version in OPSET.items()]
    model = helper.make_model(graph, opset_imports=opsets)
    return onnx_runtime.session(model.SerializeToString()).run([output], {INPUT: coordinates})[0]


@pytest.fixture(scope="module")
def places(housing_sample):
    """Training places, grid points beside them, and points between grid points."""
    districts = housing_sample[COORDINATES].drop_duplicates().to_numpy()[:400]
    beside = (districts + np.array([0.01, -0.02])).round(2)
    between = districts + np.array([0.0049, 0.0031])
    return districts, beside, between


@pytest.fixture(scope="module")
def encoder(housing_sample):
    return NeighborTargetEncoder(8).fit(
        housing_sample[COORDINATES], housing_sample["median_house_value"]
    )


def test_squared_distances_sum_each_coordinate_in_order():
    rng = np.random.default_rng(0)
    x, points = rng.normal(size=(5, 2)) * 100, rng.normal(size=(7, 2)) * 100
    g = onnx_graph.Graph()
    got = run(g, g.squared_distances(INPUT, points), x)
    diff = x[:, None, :] - points[None, :, :]
    np.testing.assert_array_equal(got, diff[..., 0] ** 2 + diff[..., 1] ** 2)


def test_neighbour_prices_on_the_grid_are_scikit_learns_own(encoder, places):
    districts, beside, between = places
    g = onnx_graph.Graph()
    output = onnx_graph.grid_neighbour_encoding(g, INPUT, encoder, COORDINATES)
    for points in (districts, beside):
        expected = encoder.transform(pd.DataFrame(points, columns=COORDINATES))[:, 0]
        np.testing.assert_array_equal(run(g, output, points)[:, 0], expected)
    expected = encoder.transform(pd.DataFrame(between, columns=COORDINATES))[:, 0]
    np.testing.assert_allclose(run(g, output, between)[:, 0], expected, rtol=1e-12)


def test_cluster_similarities_of_training_places_are_scikit_learns_own(
    housing_sample, encoder, places
):
    districts, beside, between = places
    clusters = ClusterSimilarity(8, 1.0, 42).fit(housing_sample[COORDINATES])
    g = onnx_graph.Graph()
    lookup = onnx_graph.place_lookup(g, INPUT, np.asarray(encoder.places_))
    assert lookup is not None
    output, width = onnx_graph.cluster_similarity(g, clusters, INPUT, COORDINATES, lookup)
    assert width == 8
    expected = clusters.transform(pd.DataFrame(districts, columns=COORDINATES))
    np.testing.assert_array_equal(run(g, output, districts), expected)
    for points in (beside, between):
        expected = clusters.transform(pd.DataFrame(points, columns=COORDINATES))
        np.testing.assert_allclose(run(g, output, points), expected, rtol=1e-9)


# The cell index: new places off the grid are found among their cell's candidates.

BOX = (
    np.array([RANGES[c].min for c in COORDINATES]),
    np.array([RANGES[c].max for c in COORDINATES]),
)


def near_sets(places: np.ndarray, points: np.ndarray, k: int) -> list[np.ndarray]:
    """Every place as near a point as its k-th nearest, by squared distances summed in
    coordinate order: what the encoder and the graph decide on."""
    diff = points[:, None, :] - places[None, :, :]
    d2 = diff[..., 0] ** 2 + diff[..., 1] ** 2
    kth = np.partition(d2, k - 1, axis=1)[:, k - 1 : k]
    return [np.flatnonzero(row) for row in d2 <= kth]


def cell_edges(lows: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The corners and edge midpoints of the cells of ``points``, and one ulp either side of
    each corner: where rounding could put a point in the next cell."""
    size = onnx_graph.CELL_DEGREES
    corner = lows + np.floor((points - lows) / size) * size
    steps = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0], [0, 0.5]])
    edges = (corner[:, None, :] + steps[None, :, :] * size).reshape(-1, 2)
    return np.r_[edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf)]


@pytest.fixture(scope="module")
def off_grid(housing_sample, encoder):
    """Places off the 0.01° grid: jittered districts, their cells' corners and edges, midpoints
    of neighbouring places (ties), the box's corners."""
    districts = housing_sample[COORDINATES].drop_duplicates().to_numpy()[:300]
    jittered = districts + np.random.default_rng(0).uniform(-0.005, 0.005, districts.shape)
    places = np.asarray(encoder.places_)
    _, nearest = KDTree(places).query(districts[:100], k=2)
    midpoints = (places[nearest[:, 0]] + places[nearest[:, 1]]) / 2
    corners = np.array(list(itertools.product(*zip(*BOX, strict=True))))
    return np.r_[jittered, cell_edges(BOX[0], jittered[:60]), midpoints, corners]


def test_each_cell_holds_every_neighbour_of_its_points(encoder, off_grid):
    places, k = np.asarray(encoder.places_), encoder.n_neighbors
    index = onnx_graph.cell_index(places, k, *BOX)
    cells = onnx_graph.cell_of(index, off_grid)
    assert (cells >= 0).all()
    for point, cell, near in zip(off_grid, cells, near_sets(places, off_grid, k), strict=True):
        start, count = index.starts[cell], index.counts[cell]
        assert count >= k, point
        assert np.isin(near, index.candidates[start : start + count]).all(), point
    assert (index.counts[index.counts > 0] >= k).all()
    assert index.counts.max() <= onnx_graph.MAX_CANDIDATES


def test_the_index_stays_small(encoder):
    index = onnx_graph.cell_index(np.asarray(encoder.places_), encoder.n_neighbors, *BOX)
    size = index.candidates.nbytes + index.starts.nbytes + index.counts.nbytes
    assert size < 2_000_000
    assert np.median(index.counts[index.counts > 0]) < 64


def test_neighbour_prices_off_the_grid_are_scikit_learns(encoder, off_grid):
    g = onnx_graph.Graph()
    output = onnx_graph.grid_neighbour_encoding(g, INPUT, encoder, COORDINATES)
    expected = encoder.transform(pd.DataFrame(off_grid, columns=COORDINATES))[:, 0]
    np.testing.assert_allclose(run(g, output, off_grid)[:, 0], expected, rtol=1e-12)


def test_places_outside_the_index_are_computed_against_every_place(encoder, off_grid, monkeypatch):
    """Outside the box, and (with a lower cap) in crowded cells: the same prices."""
    monkeypatch.setattr(onnx_graph, "MAX_CANDIDATES", 40)
    far = np.array([[0.0, 0.0], [50.0, -100.0], [BOX[1][0] + 0.001, BOX[0][1] - 3.0]])
    points = np.r_[off_grid, far, [[np.nextafter(BOX[1][0], np.inf), BOX[1][1]]]]
    index = onnx_graph.cell_index(np.asarray(encoder.places_), encoder.n_neighbors, *BOX)
    cells = onnx_graph.cell_of(index, points)
    fallback = (cells < 0) | (index.counts[np.maximum(cells, 0)] == 0)
    assert 20 <= fallback.sum() < len(points) - 100
    g = onnx_graph.Graph()
    output = onnx_graph.indexed_neighbour_encoding(g, INPUT, encoder, *BOX)
    expected = encoder.transform(pd.DataFrame(points, columns=COORDINATES))[:, 0]
    np.testing.assert_allclose(run(g, output, points)[:, 0], expected, rtol=1e-12)
    assert run(g, output, points[:0]).shape == (0, 1)


def test_ties_at_the_kth_distance_count_every_place():
    """Places on a lattice exactly representable in binary, points at the centres of its
    squares: four places tie at the k-th distance (k = 3), across cell edges."""
    lattice = np.array(list(itertools.product(np.arange(0, 2, 0.25), np.arange(0, 2, 0.25))))
    targets = np.arange(len(lattice), dtype=np.float64)
    encoder = NeighborTargetEncoder(3).fit(lattice, targets)
    centres = lattice[lattice.max(axis=1) < 1.75] + 0.125
    points = np.r_[centres, lattice[:5] + np.array([0.125, 0.0])]
    g = onnx_graph.Graph()
    box = (np.zeros(2), np.full(2, 1.75))
    output = onnx_graph.indexed_neighbour_encoding(g, INPUT, encoder, *box)
    got = run(g, output, points)[:, 0]
    np.testing.assert_allclose(got, encoder.transform(points)[:, 0], rtol=1e-12)
    corners = centres[:, None, :] + np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]]) * 0.125
    lookup = {tuple(p): t for p, t in zip(lattice, targets, strict=True)}
    four = np.array([[lookup[tuple(c)] for c in square] for square in corners]).mean(axis=1)
    np.testing.assert_allclose(got[: len(centres)], four, rtol=1e-12)
