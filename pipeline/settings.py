"""The pipeline's typed configuration, read once at the edge and handed down.

Precedence: defaults < ``--config`` TOML file < environment < command-line flags. The same code
runs on a laptop and on GCP; only these values differ (home/bucket URI, tracking URI, W&B key).
Reading and error messages are ``housing_platform.settings_reader``'s: a wrong key is named as it
was written (``c.toml: `tune.n_trials```, ``CLOUD_RUN_TASK_INDEX``, ``--workers``) with its fix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from housing_platform.settings_reader import Problem, read_settings
from pipeline.model import FAMILIES, IMPUTERS, ImputerName

PACKAGED_DATA = Path(__file__).parent / "data" / "housing.csv.gz"
#: sha256 of the uncompressed csv the package carries (the census copy everyone uses).
PACKAGED_SHA256 = "8a3727f4cf54ac1a327f69b1d5b4db54c5834ea81c6e4efc0d163300022a685e"

Share = Annotated[float, Meta(gt=0, lt=1)]
AtLeastOne = Annotated[int, Meta(ge=1)]


class IngestConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    source: str = ""
    """Path, https:// URL (csv or .tgz) or gs:// URI; empty means the copy the package carries."""
    sha256: str = ""
    """Expected sha256 of the csv bytes; empty skips the check for a custom source."""
    timeout_s: float = 30.0
    """Network timeout for https:// and gs:// sources."""


class ValidateConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    max_bad_share: Annotated[float, Meta(ge=0, lt=1)] = 0.01
    """Fail when more than this share of rows is quarantined."""


class SplitConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    test_size: Share = 0.2
    random_state: int = 42
    """Géron's split: income-stratified, 20%, seed 42, so results compare with the book."""


class ImputeConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    methods: tuple[ImputerName, ...] = IMPUTERS
    mask_share: Share = 0.2
    """Share of known total_bedrooms hidden to score each imputer."""
    random_state: int = 42


class FeaturesConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    cluster_candidates: tuple[int, ...] = (0, 10, 20, 30, 50)
    """Numbers of KMeans clusters to compare by cross-validated error (0 = no geo clusters)."""
    cluster_gamma: float = 1.0
    neighbors: int = 8
    """Neighbours in the out-of-fold neighbour-price feature (0 = off)."""
    cv_folds: int = 3
    random_state: int = 42


class SelectConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    families: tuple[str, ...] = tuple(FAMILIES)
    cv_folds: int = 5


class TuneConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    n_trials: AtLeastOne = 12
    """Trials in total, across all workers."""
    timeout_s: float = 150.0
    """Each worker stops starting trials after this long."""
    storage: str = ""
    """Optuna RDB URL (sqlite:///…, postgresql://…); empty = in memory, or a SQLite file under home
    when workers > 1."""
    study_name: str = "housing-price"
    workers: AtLeastOne = 1
    """Local processes sharing one study."""
    cv_folds: int = 3
    seed: int = 42


class EvaluateConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    permutation_repeats: int = 5


class RegisterConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    model_name: str = "housing-price"
    promotion: Literal["auto", "manual"] = "auto"
    """auto: promote a challenger that beats the champion; manual: `python -m pipeline promote`."""
    margin: Annotated[float, Meta(ge=0)] = 0.0
    """Relative RMSE improvement a challenger needs over the champion (0.01 = 1%)."""


class TrackingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    mlflow_uri: str = ""
    """Empty = sqlite:///<home>/mlflow.db."""
    experiment: str = "housing-price"
    wandb_project: str = "housing-mlops"
    wandb_entity: str = ""
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"


class MonitorConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The drift monitor and the retrain trigger (README: Monitoring)."""

    window_hours: Annotated[float, Meta(gt=0)] = 24.0
    """The window a run reads, ending now (``--window`` overrides it)."""
    min_rows: AtLeastOne = 200
    """A version with fewer logged houses in the window is "not enough data", never "no drift"."""
    threshold: Annotated[float, Meta(gt=0)] = 0.1
    """Drift threshold of the decision statistic (normalised Wasserstein distance for numbers,
    Jensen-Shannon distance for categories), Evidently's default."""
    psi_threshold: Annotated[float, Meta(gt=0)] = 0.1
    """PSI threshold, reported for reading beside the decision statistic."""
    top_features: AtLeastOne = 3
    """The window drifts when the predictions or any of the model's most important inputs (this
    many, by the evaluate step's importances) drift."""
    consecutive: AtLeastOne = 2
    """Drifted windows in a row that start a retrain (MONITOR_CONSECUTIVE)."""
    max_mape: Annotated[float, Meta(gt=0)] | None = None
    """Realised MAPE (a share: 0.25 = 25%) above which a retrain starts; None = not used
    (MONITOR_MAX_MAPE)."""
    retrain_source: str = ""
    """The labelled data a retrain trains on (path, https:// or gs://), re-read even when the path
    is unchanged; empty = no retrain is started, the report says so (MONITOR_RETRAIN_SOURCE)."""
    cooldown_hours: Annotated[float, Meta(ge=0)] = 24.0
    """After a retrain starts, no other starts for this long: one retrain per incident."""
    pipeline_job: str = ""
    """On GCP, the Cloud Run job a retrain runs with overrides
    (projects/<p>/locations/<r>/jobs/housing-pipeline, MONITOR_PIPELINE_JOB); empty = run the
    pipeline in this process's machine (locally)."""


class RuntimeInfo(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    task_index: Annotated[int, Meta(ge=0)] = 0
    """CLOUD_RUN_TASK_INDEX: this worker's index among parallel tasks."""
    task_count: AtLeastOne = 1
    """CLOUD_RUN_TASK_COUNT: how many tasks share the tune study."""
    db_password: str = msgspec.field(default="")
    """DB_PASSWORD: the database password (Secret Manager on GCP), added to ``tune.storage`` at
    connect time so it is never part of a setting, a fingerprint or a log line."""


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    home: str = ".housing-mlops"
    """Everything the pipeline writes lives under here (HOUSING_MLOPS_HOME)."""
    artifact_uri: str = ""
    """Artifact store: empty = <home>/artifacts; or gs://bucket/prefix (ARTIFACT_URI)."""
    ingest: IngestConfig = IngestConfig()
    validate: ValidateConfig = ValidateConfig()
    split: SplitConfig = SplitConfig()
    impute: ImputeConfig = ImputeConfig()
    features: FeaturesConfig = FeaturesConfig()
    select: SelectConfig = SelectConfig()
    tune: TuneConfig = TuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    register: RegisterConfig = RegisterConfig()
    tracking: TrackingConfig = TrackingConfig()
    monitor: MonitorConfig = MonitorConfig()
    runtime: RuntimeInfo = RuntimeInfo()

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()

    @property
    def store_uri(self) -> str:
        return self.artifact_uri or str(self.home_path / "artifacts")

    @property
    def mlflow_uri(self) -> str:
        return self.tracking.mlflow_uri or f"sqlite:///{self.home_path / 'mlflow.db'}"

    @property
    def mlflow_artifacts_uri(self) -> str:
        """Where runs' artifacts go when the tracking store is local."""
        if self.artifact_uri:
            return f"{self.artifact_uri.rstrip('/')}/mlflow"
        return (self.home_path / "mlartifacts").as_uri()


#: Environment variables the pipeline reads, and the setting each one sets.
VARIABLES: dict[str, str] = {
    "HOUSING_MLOPS_HOME": "home",
    "ARTIFACT_URI": "artifact_uri",
    "MLFLOW_TRACKING_URI": "tracking.mlflow_uri",
    "WANDB_PROJECT": "tracking.wandb_project",
    "WANDB_ENTITY": "tracking.wandb_entity",
    "OPTUNA_STORAGE": "tune.storage",
    "CLOUD_RUN_TASK_INDEX": "runtime.task_index",
    "CLOUD_RUN_TASK_COUNT": "runtime.task_count",
    "DB_PASSWORD": "runtime.db_password",
    "MONITOR_CONSECUTIVE": "monitor.consecutive",
    "MONITOR_MAX_MAPE": "monitor.max_mape",
    "MONITOR_RETRAIN_SOURCE": "monitor.retrain_source",
    "MONITOR_PIPELINE_JOB": "monitor.pipeline_job",
}


def load_settings(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, ...], Any] | None = None,
) -> Settings:
    """Build the settings from a TOML file, the environment and the command line's flags
    (``overrides``: setting path → value, None when the flag was not given)."""
    env = env or {}
    flags = {
        f"--{path[-1].replace('_', '-')}": (".".join(path), value)
        for path, value in (overrides or {}).items()
    }
    # A W&B key switches W&B online unless WANDB_MODE keeps it offline; never the other way.
    mode = env.get("WANDB_MODE", "")
    if mode in {"offline", "disabled"}:
        flags["WANDB_MODE"] = ("tracking.wandb_mode", mode)
    elif env.get("WANDB_API_KEY"):
        flags["WANDB_API_KEY"] = ("tracking.wandb_mode", "online")
    return read_settings(
        Settings, env, VARIABLES, file=config_file, overrides=flags, check=_problems
    )


def _problems(s: Settings) -> Iterator[Problem]:
    """What the types can't say: known model families, a task index below the task count."""
    unknown = [f for f in s.select.families if f not in FAMILIES]
    if unknown:
        yield Problem("select.families", f"a list of known model families ({', '.join(FAMILIES)})")
    if s.runtime.task_index >= s.runtime.task_count:
        yield Problem(
            "runtime.task_index", f"an index below CLOUD_RUN_TASK_COUNT ({s.runtime.task_count})"
        )
