from pipeline.report import comparison


def version(number, rmse, r2):
    return {
        "version": str(number),
        "tags": {"test_rmse": str(rmse), "test_r2": str(r2), "git": "x"},
    }


def test_the_challenger_is_compared_metric_by_metric():
    table = comparison(version(4, 39000, 0.88), version(3, 40000, 0.87))
    lines = table.splitlines()
    assert lines[0] == "| metric | challenger v4 | champion v3 | change |"
    assert "| rmse | 39,000 | 40,000 | -2.5% (better) |" in lines
    assert "| r2 | 0.88 | 0.87 | +1.1% (better) |" in lines


def test_a_worse_challenger_says_so_and_a_first_model_has_no_champion():
    assert "(worse)" in comparison(version(5, 41000, 0.86), version(3, 40000, 0.87))
    first = comparison(version(1, 40000, 0.87), None)
    assert "champion" not in first.splitlines()[0]
    assert "No champion yet" in first
