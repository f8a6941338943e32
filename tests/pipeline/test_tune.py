import collections
import multiprocessing
import socket

import msgspec
import optuna
import sqlalchemy.engine

from housing_platform.database_url import with_password
from pipeline.model import FeatureSpec
from pipeline.settings import load_settings
from pipeline.steps import tune, tune_worker


def _settings(tmp_path, **tune_cfg):
    lines = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in tune_cfg.items())
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[tune]\n{lines}\n[tracking]\nwandb_mode = "disabled"\n')
    return load_settings(cfg, {"HOUSING_MLOPS_HOME": str(tmp_path)})


def test_search_starts_from_the_known_good_point_and_prunes(tmp_path, housing_sample):
    settings = _settings(tmp_path, n_trials=6, cv_folds=2)
    study = tune.create_study(settings, None, "hist_gradient_boosting", "s")
    train = housing_sample.head(1500)
    objective = tune.Objective(
        train, FeatureSpec(n_clusters=5), "hist_gradient_boosting", settings.tune
    )
    # No time budget to run out: on a busy machine a 120 s one ended the search after 1 trial.
    tune.optimize(study, objective, 6, timeout_s=3600, callbacks=[])
    first = study.trials[0]
    assert first.params == tune.STARTING_POINTS["hist_gradient_boosting"]
    assert len(study.trials) == 6
    assert all(
        t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for t in study.trials
    )
    decision = tune.decide(study, "hist_gradient_boosting", settings.tune)
    assert decision["params"]["early_stopping"] is False
    assert decision["params"]["max_iter"] >= 1
    assert decision["cv_rmse"] == min(t.value for t in study.trials if t.value is not None)


def test_two_workers_share_one_study_on_postgres(tmp_path, housing_sample, postgres_url):
    settings = _settings(tmp_path, n_trials=6, workers=2, cv_folds=2, storage=postgres_url)
    storage = tune.storage_url(settings)
    assert storage == postgres_url
    tune.create_study(settings, storage, "random_forest", "shared")
    tune.run_workers(
        settings,
        storage,
        "shared",
        housing_sample,
        FeatureSpec(n_clusters=0, neighbors=0),
        "random_forest",
        None,
    )
    study = optuna.load_study(study_name="shared", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 6
    per_worker = collections.Counter(t.user_attrs["worker"] for t in finished)
    assert sorted(per_worker.values()) == [3, 3], per_worker
    # the sampler of each worker saw the other's trials: one study, not two of 3 trials each
    assert len({t.number for t in finished}) == 6


def test_workers_split_the_trials():
    assert [tune.trials_per_worker(12, w) for w in (1, 2, 3, 5)] == [12, 6, 4, 3]


def test_several_workers_without_storage_get_a_sqlite_study_under_home(tmp_path):
    settings = _settings(tmp_path, workers=3)
    assert tune.storage_url(settings) == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert tune.storage_url(_settings(tmp_path)) is None


def test_the_database_password_joins_the_storage_url_only_at_connect_time(tmp_path, postgres_url):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[tune]\nstorage = "{postgres_url}"\n[tracking]\nwandb_mode = "disabled"\n')
    secret = "p@ss/w:rd%"
    settings = load_settings(cfg, {"HOUSING_MLOPS_HOME": str(tmp_path), "DB_PASSWORD": secret})
    assert secret not in settings.tune.storage, "never part of a setting (or its fingerprint)"
    url = tune.storage_url(settings)
    assert sqlalchemy.engine.make_url(url).password == secret
    tune.create_study(settings, url, "random_forest", "with-password")  # a real connection
    assert with_password(url, "other") == url, "an explicit password is kept"
    assert with_password("sqlite:///x.db", secret) == "sqlite:///x.db"


def test_a_worker_that_hangs_prints_its_stacks_and_exits(tmp_path, housing_sample, capfd):
    """A stuck worker (here: a database that accepts the connection and never answers) must
    not hold the step for ever: past its deadline it prints where it is and fails."""
    settings = _settings(tmp_path, n_trials=2, workers=2)
    train = tmp_path / "train.parquet"
    housing_sample.head(100).to_parquet(train)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        storage = f"postgresql+psycopg2://housing@127.0.0.1:{silent.getsockname()[1]}/optuna"
        worker = multiprocessing.get_context("spawn").Process(
            target=tune_worker.main,
            args=(
                3.0,
                msgspec.json.encode(settings),
                storage,
                "stuck",
                str(train),
                msgspec.json.encode(FeatureSpec()),
                "random_forest",
                None,
            ),
        )
        worker.start()
        worker.join(120)
        assert worker.exitcode is not None, "the watchdog did not end the worker"
    assert worker.exitcode != 0
    assert "Timeout (0:00:03)!" in capfd.readouterr().err
