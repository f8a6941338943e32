import pytest

from service.settings import SettingsError, from_env


def test_defaults_serve_the_local_champion(tmp_path):
    s = from_env({"HOUSING_MLOPS_HOME": str(tmp_path)})
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.model_uri == "models:/housing-price@champion"
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert s.fallback == str(tmp_path / "artifacts/models/housing-price/champion")
    assert s.cors_origins == ()


def test_cors_allow_list_never_star():
    assert from_env({"CORS_ORIGINS": "https://a.example, https://b.example"}).cors_origins == (
        "https://a.example",
        "https://b.example",
    )
    with pytest.raises(SettingsError, match="CORS_ORIGINS"):
        from_env({"CORS_ORIGINS": "*"})


def test_bad_values_name_the_variable():
    with pytest.raises(SettingsError, match=r"^PORT: Expected `int`"):
        from_env({"PORT": "eighty"})
    with pytest.raises(SettingsError, match="MAX_INSTANCES"):
        from_env({"MAX_INSTANCES": "0"})
