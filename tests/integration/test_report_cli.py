from pipeline.cli import main as pipeline_main


def test_report_compares_the_registered_versions(model_home, monkeypatch, capsys):
    monkeypatch.setenv("HOUSING_MLOPS_HOME", str(model_home))
    assert pipeline_main(["report"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0] == "| metric | challenger v1 | champion v1 | change |"
    assert "| rmse |" in table
    assert "v1 is both challenger and champion." in table


def test_report_without_a_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOUSING_MLOPS_HOME", str(tmp_path))
    assert pipeline_main(["report"]) == 1
    assert capsys.readouterr().err.strip() == "error: no @challenger version of housing-price"
