from pipeline.settings import SplitConfig
from pipeline.steps.split import income_category, stratified_split


def test_reproduces_gerons_split(housing):
    train, test = stratified_split(housing, SplitConfig())
    assert (len(train), len(test)) == (16_512, 4_128)
    # the book's strat_train_set starts with these rows (Géron, 2nd/3rd ed., chapter 2)
    assert train["row_id"].tolist()[:5] == [12655, 15502, 2908, 14053, 20496]
    assert set(train["row_id"]).isdisjoint(test["row_id"])


def test_income_bands_keep_their_share_on_both_sides(housing):
    _train, test = stratified_split(housing, SplitConfig())
    overall = income_category(housing["median_income"]).value_counts(normalize=True)
    in_test = income_category(test["median_income"]).value_counts(normalize=True)
    assert (overall - in_test).abs().max() < 0.001
