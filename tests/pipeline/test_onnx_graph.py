"""The graph's coordinate features are scikit-learn's own values wherever a lookup can give
them (training places, grid points near one), and computed in scikit-learn's order elsewhere."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model_runtime import onnx_runtime
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
