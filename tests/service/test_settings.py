import pytest

from housing_platform.settings_reader import SettingsError
from service.settings import from_env


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
    with pytest.raises(SettingsError, match=r"^PORT: expected an integer, got 'eighty'\. Fix PORT"):
        from_env({"PORT": "eighty"})
    with pytest.raises(SettingsError, match=r"^MAX_INSTANCES: expected an integer >= 1, got '0'"):
        from_env({"MAX_INSTANCES": "0"})


def test_flags_win_over_their_variables():
    s = from_env({"HOST": "0.0.0.0", "PORT": "8080"}, host="127.0.0.2", port=9000)
    assert (s.host, s.port) == ("127.0.0.2", 9000)
