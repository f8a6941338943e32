import pytest

from pipeline.settings import ConfigError, load_settings


def test_defaults_keep_everything_under_home(tmp_path):
    s = load_settings(env={"HOUSING_MLOPS_HOME": str(tmp_path)})
    assert s.store_uri == str(tmp_path / "artifacts")
    assert s.mlflow_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert s.tracking.wandb_mode == "offline"


def test_file_then_environment_then_flags(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[tune]\nn_trials = 5\nworkers = 2\n[tracking]\nmlflow_uri = "sqlite:///x.db"\n')
    env = {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "CLOUD_RUN_TASK_INDEX": "1",
        "CLOUD_RUN_TASK_COUNT": "3",
    }
    s = load_settings(cfg, env, {("tune", "workers"): 4})
    assert s.tune.n_trials == 5
    assert s.tune.workers == 4
    assert s.mlflow_uri == "http://127.0.0.1:5000"
    assert (s.runtime.task_index, s.runtime.task_count) == (1, 3)


def test_wandb_goes_online_only_with_a_key():
    assert load_settings(env={"WANDB_API_KEY": "k"}).tracking.wandb_mode == "online"
    assert (
        load_settings(env={"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}).tracking.wandb_mode
        == "offline"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[tune]\nn_trials = "many"\n', "`tune.n_trials`: Expected `int`, got `str`"),
        ("[tune]\nntrials = 3\n", "unknown field `ntrials`"),
        ("[validate]\nmax_bad_share = 2\n", "`validate.max_bad_share` must be in [0, 1)"),
        ('[select]\nfamilies = ["svm"]\n', "`select.families` has unknown ['svm']"),
        ("[tune\n", "not valid TOML"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert message in str(err.value)


def test_task_index_out_of_range_is_rejected():
    with pytest.raises(ConfigError, match="CLOUD_RUN_TASK_INDEX"):
        load_settings(env={"CLOUD_RUN_TASK_INDEX": "3", "CLOUD_RUN_TASK_COUNT": "3"})
