"""Tune: Bayesian search (Optuna TPE) with pruning over the selected family's hyper-parameters.

Trials are cross-validated on the training side; a trial whose first folds are worse than the
median of earlier trials is pruned. Every trial is logged to W&B and as a nested MLflow run.
The study lives in memory, or in an RDB shared by several processes (``tune.workers``) or by
parallel Cloud Run Job tasks (``CLOUD_RUN_TASK_INDEX``/``CLOUD_RUN_TASK_COUNT``).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import optuna
import pandas as pd

from housing_platform.database_url import with_password
from pipeline import catalog
from pipeline.cv import iter_fold_scores, xy
from pipeline.model import FAMILIES, FeatureSpec, build_model
from pipeline.settings import Settings, TuneConfig
from pipeline.steps import tune_worker
from pipeline.steps.features import load_spec

if TYPE_CHECKING:
    from pipeline.step_context import StepContext

log = logging.getLogger(__name__)
EARLY_STOPPING_CAP = 4000


def suggest(trial: optuna.Trial, family: str) -> dict[str, Any]:
    """The search space of each family."""
    if family == "hist_gradient_boosting":
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 15, 127, log=True),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 5, 80, log=True),
            "l2_regularization": trial.suggest_float("l2_regularization", 1e-3, 10.0, log=True),
            "max_features": trial.suggest_float("max_features", 0.3, 1.0),
            "target_transform": trial.suggest_categorical(
                "target_transform", ["none", "sqrt", "log"]
            ),
        }
    if family in {"random_forest", "extra_trees"}:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 50, 300, log=True),
            "max_features": trial.suggest_float("max_features", 0.2, 1.0),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 10),
            "target_transform": trial.suggest_categorical("target_transform", ["none", "sqrt"]),
        }
    if family == "ridge":
        return {
            "alpha": trial.suggest_float("alpha", 1e-3, 100.0, log=True),
            "target_transform": trial.suggest_categorical("target_transform", ["none", "log"]),
        }
    if family == "knn":
        return {
            "n_neighbors": trial.suggest_int("n_neighbors", 3, 50, log=True),
            "target_transform": trial.suggest_categorical("target_transform", ["none", "log"]),
        }
    raise ValueError(f"no search space for family {family!r}")


#: Known-good starting points, tried first so the search never ends worse than them.
STARTING_POINTS: dict[str, dict[str, Any]] = {
    "hist_gradient_boosting": {
        "learning_rate": 0.03,
        "max_leaf_nodes": 63,
        "min_samples_leaf": 20,
        "l2_regularization": 1.0,
        "max_features": 0.5,
        "target_transform": "sqrt",
    },
}


def _boosting_iterations(fitted: Any) -> int | None:
    regressor = fitted[-1]
    inner = getattr(regressor, "regressor_", regressor)
    n_iter = getattr(inner, "n_iter_", None)
    return int(n_iter) if n_iter is not None else None


def trial_params(family: str, params: dict[str, Any]) -> dict[str, Any]:
    """Search parameters plus what a CV trial fixes (boosting stops early on a held-out 10%)."""
    if family == "hist_gradient_boosting":
        return {
            **params,
            "max_iter": EARLY_STOPPING_CAP,
            "early_stopping": True,
            "n_iter_no_change": 30,
            "validation_fraction": 0.1,
        }
    return dict(params)


def final_params(family: str, params: dict[str, Any], n_iter: float | None) -> dict[str, Any]:
    """Refit parameters for the whole training side: boosting runs the iterations CV found."""
    if family == "hist_gradient_boosting" and n_iter:
        return {**params, "max_iter": math.ceil(n_iter * 1.1), "early_stopping": False}
    return dict(params)


class Objective:
    """Mean cross-validated RMSE of one trial's parameters, with pruning after each fold."""

    def __init__(self, train: pd.DataFrame, spec: FeatureSpec, family: str, config: TuneConfig):
        self.X, self.y = xy(train)
        self.spec = spec
        self.family = family
        self.config = config

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        params = suggest(trial, self.family)
        model = build_model(self.spec, self.family, trial_params(self.family, params))
        rmses: list[float] = []
        iterations: list[int] = []
        began = time.perf_counter()
        folds = iter_fold_scores(model, self.X, self.y, self.config.cv_folds, self.config.seed)
        for i, (scores, fitted) in enumerate(folds):
            rmses.append(scores["rmse"])
            n_iter = _boosting_iterations(fitted)
            if n_iter is not None:
                iterations.append(n_iter)
            trial.report(float(np.mean(rmses)), i)
            if trial.should_prune():
                raise optuna.TrialPruned()
            trial.set_user_attr("mape", scores["mape"])
        if iterations:
            trial.set_user_attr("n_iter", float(np.mean(iterations)))
        trial.set_user_attr("seconds", time.perf_counter() - began)
        return float(np.mean(rmses))


class TrialLogger:
    """Optuna callback: each finished trial becomes a nested MLflow run and a W&B row."""

    def __init__(self, settings: Settings, parent_run_id: str | None, wandb_run: Any):
        self.settings = settings
        self.parent_run_id = parent_run_id
        self.wandb_run = wandb_run
        self._client: Any = None
        self._experiment_id = ""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        metrics = {"cv_rmse": trial.value} if trial.value is not None else {}
        if self.parent_run_id:
            self._log_mlflow(trial, metrics)
        if self.wandb_run is not None:
            self.wandb_run.log(
                {
                    "tune/trial": trial.number,
                    "tune/state": trial.state.name,
                    **{f"tune/{k}": v for k, v in metrics.items()},
                    **{f"tune/param/{k}": v for k, v in trial.params.items()},
                }
            )

    def _log_mlflow(self, trial: optuna.trial.FrozenTrial, metrics: dict[str, Any]) -> None:
        from mlflow import MlflowClient

        from pipeline.experiment_tracking import configure_mlflow

        if self._client is None:
            self._experiment_id = configure_mlflow(self.settings)
            self._client = MlflowClient()
        run = self._client.create_run(
            self._experiment_id,
            run_name=f"trial-{trial.number}",
            tags={"mlflow.parentRunId": self.parent_run_id, "optuna.state": trial.state.name},
        )
        for key, value in trial.params.items():
            self._client.log_param(run.info.run_id, key, value)
        for key, value in metrics.items():
            self._client.log_metric(run.info.run_id, key, value)
        status = "FINISHED" if trial.state == optuna.trial.TrialState.COMPLETE else "KILLED"
        self._client.set_terminated(run.info.run_id, status)


def storage_url(settings: Settings) -> str | None:
    """The study's RDB; several workers need one, so they get a SQLite file under home."""
    if settings.tune.storage:
        return with_password(settings.tune.storage, settings.runtime.db_password)
    if settings.tune.workers > 1:
        return f"sqlite:///{settings.home_path / 'optuna.db'}"
    return None


def study_name(settings: Settings, fingerprint: str) -> str:
    """One study per set of inputs: tasks of one job share it, a new data set starts afresh."""
    return (
        f"{settings.tune.study_name}-{fingerprint[:12]}"
        if fingerprint
        else settings.tune.study_name
    )


def create_study(settings: Settings, storage: str | None, family: str, name: str) -> optuna.Study:
    """Create (or open) the study once, before any worker starts: schema creation races."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=settings.tune.seed + settings.runtime.task_index),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
        load_if_exists=True,
    )
    if settings.runtime.task_index == 0 and not study.trials and family in STARTING_POINTS:
        study.enqueue_trial(STARTING_POINTS[family])
    return study


def optimize(
    study: optuna.Study,
    objective: Objective,
    n_trials: int,
    timeout_s: float,
    callbacks: list[Any],
    share: int | None = None,
) -> None:
    """Run up to ``share`` trials, stopping once the study holds ``n_trials`` finished ones or
    time runs out."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    stop = optuna.study.MaxTrialsCallback(n_trials, states=states)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(
        objective,
        n_trials=share or n_trials,
        timeout=timeout_s,
        callbacks=[stop, *callbacks],
        n_jobs=1,
    )


def trials_per_worker(total: int, workers: int) -> int:
    """Each worker's share: parallel workers split the trials instead of racing for them."""
    return math.ceil(total / max(1, workers))


def work(
    settings: Settings,
    storage: str,
    name: str,
    train: pd.DataFrame,
    spec: FeatureSpec,
    family: str,
    parent_run_id: str | None,
) -> None:
    """One worker's share of the shared study (the body of ``tune_worker.main``)."""
    from threadpoolctl import threadpool_limits

    study = optuna.load_study(study_name=name, storage=storage)
    objective = Objective(train, spec, family, settings.tune)
    logger = TrialLogger(settings, parent_run_id, None)
    # Workers share the machine's cores: OpenMP threads that outnumber them spin and stall.
    share = trials_per_worker(settings.tune.n_trials, settings.tune.workers)
    with threadpool_limits(max(1, (os.cpu_count() or 1) // settings.tune.workers)):
        optimize(study, objective, settings.tune.n_trials, settings.tune.timeout_s, [logger], share)


def run_workers(
    settings: Settings,
    storage: str,
    name: str,
    train: pd.DataFrame,
    spec: FeatureSpec,
    family: str,
    parent_run_id: str | None,
) -> None:
    """Start ``tune.workers`` processes on one shared study and wait for all of them.

    The training frame goes to them as a parquet file, not down the start-up pipe: a parent
    never blocks on a child that has not yet read its arguments.
    """
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="tune-") as folder:
        train_path = str(Path(folder) / "train.parquet")
        train.to_parquet(train_path)
        args = (
            tune_worker.deadline_s(settings.tune.timeout_s),
            msgspec.json.encode(settings),
            storage,
            name,
            train_path,
            msgspec.json.encode(spec),
            family,
            parent_run_id,
        )
        procs = [
            ctx.Process(target=tune_worker.main, args=args, name=f"tune-worker-{i}")
            for i in range(settings.tune.workers)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    failed = [f"{p.name} (exit {p.exitcode})" for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(
            f"tune workers failed: {', '.join(failed)}; a worker that outlives "
            f"{tune_worker.deadline_s(settings.tune.timeout_s):.0f} s prints its stacks and exits"
        )


def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.trials:
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "cv_rmse": t.value,
                "seconds": t.user_attrs.get("seconds"),
                **t.params,
            }
        )
    return pd.DataFrame(rows)


def decide(study: optuna.Study, family: str, config: TuneConfig) -> dict[str, Any]:
    best = study.best_trial
    return {
        "family": family,
        "params": final_params(family, best.params, best.user_attrs.get("n_iter")),
        "cv_rmse": best.value,
        "best_trial": best.number,
        "trials": len(study.trials),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "config": msgspec.to_builtins(config),
    }


def run(ctx: StepContext) -> dict[str, Any]:
    settings = ctx.settings
    train = ctx.read_frame(catalog.TRAIN)
    spec = load_spec(ctx)
    family = ctx.read_json(catalog.SELECT_DECISION)["family"]
    if family not in FAMILIES:
        raise ValueError(f"select chose unknown family {family!r}")
    storage = storage_url(settings)
    name = study_name(settings, ctx.fingerprint)
    study = create_study(settings, storage, family, name)
    parent = ctx.tracker.run_id if ctx.tracker else None
    wandb_run = ctx.tracker.wandb_run if ctx.tracker else None
    if settings.tune.workers > 1 and storage is not None:
        run_workers(settings, storage, name, train, spec, family, parent)
    else:
        objective = Objective(train, spec, family, settings.tune)
        logger = TrialLogger(settings, parent, wandb_run)
        share = trials_per_worker(settings.tune.n_trials, settings.runtime.task_count)
        optimize(study, objective, settings.tune.n_trials, settings.tune.timeout_s, [logger], share)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise ValueError("no trial completed; raise tune.timeout_s or tune.n_trials")
    decision = decide(study, family, settings.tune)
    table = trials_table(study)
    ctx.write_json(catalog.TUNE_DECISION, decision)
    ctx.write_frame("reports/tune.csv", table)
    if ctx.tracker:
        ctx.tracker.params({f"best_{k}": v for k, v in decision["params"].items()})
        ctx.tracker.metrics({"best_cv_rmse": decision["cv_rmse"], "trials": decision["trials"]})
    return {
        "family": family,
        "cv_rmse": decision["cv_rmse"],
        "trials": decision["trials"],
        "pruned": decision["pruned"],
    }
