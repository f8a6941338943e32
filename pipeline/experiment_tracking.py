"""Thin adapters over MLflow and Weights & Biases.

Both start lazily: a run where every step is cached never imports either, which keeps a no-op
run under a few seconds. W&B runs offline unless a key is configured; MLflow defaults to a
SQLite store under the pipeline's home.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.settings import Settings

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the configured store and make sure the experiment exists; its id."""
    import mlflow

    # MLflow sets its loggers to INFO on import and reports database migrations there; the
    # pipeline prints its own progress, and an error must stay one line.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(settings.tracking.experiment)
    if experiment is None:
        # A database store has no artifact root of its own (MLflow would use ./mlruns in the
        # working directory); a tracking server decides for itself.
        is_server = settings.mlflow_uri.startswith(("http://", "https://"))
        location = None if is_server else settings.mlflow_artifacts_uri
        experiment_id = client.create_experiment(
            settings.tracking.experiment, artifact_location=location
        )
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


class Tracker:
    """One MLflow parent run and one W&B run per pipeline execution, started on first use."""

    def __init__(self, settings: Settings, run_name: str = "pipeline"):
        self.settings = settings
        self.run_name = run_name
        self.parent_run_id: str | None = None
        self.wandb_run: Any = None

    def start(self) -> None:
        if self.parent_run_id is not None:
            return
        import mlflow

        experiment_id = configure_mlflow(self.settings)
        run = mlflow.start_run(experiment_id=experiment_id, run_name=self.run_name)
        self.parent_run_id = run.info.run_id
        self.wandb_run = self._start_wandb()

    def _start_wandb(self) -> Any:
        t = self.settings.tracking
        if t.wandb_mode == "disabled":
            return None
        import wandb

        wandb_dir = self.settings.home_path / "wandb"
        wandb_dir.mkdir(parents=True, exist_ok=True)
        return wandb.init(
            project=t.wandb_project,
            entity=t.wandb_entity or None,
            mode=t.wandb_mode,
            dir=str(self.settings.home_path),
            job_type="pipeline",
            name=f"{self.run_name}-{self.parent_run_id[:8] if self.parent_run_id else ''}",
            config={"mlflow_run_id": self.parent_run_id},
            settings=wandb.Settings(
                silent=True, console="off", x_disable_stats=True, x_disable_meta=True
            ),
        )

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[StepTracker]:
        import mlflow

        self.start()
        with mlflow.start_run(run_name=name, nested=True) as run:
            yield StepTracker(name, run.info.run_id, self.wandb_run)

    def finish(self, status: str = "FINISHED") -> None:
        if self.parent_run_id is None:
            return
        import mlflow

        mlflow.end_run(status=status)
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=0 if status == "FINISHED" else 1)
        self.parent_run_id = None


class StepTracker:
    """What a step may record: params, metrics, tables and figures, to MLflow and W&B alike."""

    def __init__(self, step: str, run_id: str, wandb_run: Any):
        self.step = step
        self.run_id = run_id
        self.wandb_run = wandb_run

    @property
    def wandb_path(self) -> str:
        """entity/project/run id of the W&B run, or empty when W&B is disabled."""
        run = self.wandb_run
        if run is None:
            return ""
        return f"{run.entity or ''}/{run.project}/{run.id}".lstrip("/")

    def params(self, params: dict[str, Any]) -> None:
        import mlflow

        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        if self.wandb_run is not None:
            self.wandb_run.config.update({f"{self.step}.{k}": v for k, v in params.items()})

    def metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)
        if self.wandb_run is not None:
            self.wandb_run.log({f"{self.step}/{k}": v for k, v in metrics.items()})

    def table(self, name: str, frame: pd.DataFrame) -> None:
        import mlflow

        mlflow.log_table(frame.reset_index(drop=True), artifact_file=f"{name}.json")
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({f"{self.step}/{name}": wandb.Table(dataframe=frame)})

    def figure(self, name: str, figure: Figure) -> None:
        import mlflow

        mlflow.log_figure(figure, f"{name}.png")
        if self.wandb_run is not None:
            import wandb

            buf = io.BytesIO()
            figure.savefig(buf, format="png")
            buf.seek(0)
            from PIL import Image

            self.wandb_run.log({f"{self.step}/{name}": wandb.Image(Image.open(buf))})
