import pytest

from housing_platform.settings_reader import SettingsError
from pipeline.settings import load_settings


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
        ('[tune]\nn_trials = "many"\n', "`tune.n_trials`: expected an integer >= 1, got 'many'"),
        ("[tune]\nntrials = 3\n", "`tune.ntrials` is not a setting; did you mean `n_trials`?"),
        (
            "[validate]\nmax_bad_share = 2\n",
            "`validate.max_bad_share`: expected a number >= 0 and < 1",
        ),
        ('[select]\nfamilies = ["svm"]\n', "`select.families`: expected a list of known model"),
        ("[tune\n", "not valid TOML"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(SettingsError) as err:
        load_settings(cfg)
    assert message in str(err.value)


def test_task_index_out_of_range_is_rejected():
    with pytest.raises(SettingsError, match=r"^CLOUD_RUN_TASK_INDEX: expected an index below"):
        load_settings(env={"CLOUD_RUN_TASK_INDEX": "3", "CLOUD_RUN_TASK_COUNT": "3"})
