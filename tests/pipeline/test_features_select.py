from pipeline.model import FeatureSpec
from pipeline.settings import FeaturesConfig, SelectConfig
from pipeline.steps import features, select


def test_cluster_count_is_the_one_with_lowest_cv_error(housing_sample):
    spec, table = features.compare_clusters(
        housing_sample, "median", FeaturesConfig(cluster_candidates=(0, 5, 15), cv_folds=2)
    )
    assert sorted(table["n_clusters"]) == [0, 5, 15]
    assert spec.n_clusters == table.loc[table["rmse"].idxmin(), "n_clusters"]
    assert spec.imputer == "median"


def test_select_reports_every_metric_for_every_family(housing_sample):
    table = select.compare_families(
        housing_sample,
        FeatureSpec(n_clusters=5),
        SelectConfig(families=("ridge", "knn"), cv_folds=3),
    )
    assert set(table["family"]) == {"ridge", "knn"}
    assert list(table.columns) == select.COLUMNS
    assert table["rmse"].is_monotonic_increasing
    assert ((table["r2"] > 0) & (table["r2"] < 1)).all()
