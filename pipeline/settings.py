"""The pipeline's typed configuration, read once at the edge and handed down.

Precedence: defaults < ``--config`` TOML file < environment < command-line flags. The same code
runs on a laptop and on GCP; only these values differ (home/bucket URI, tracking URI, W&B key).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from pipeline.model import FAMILIES, IMPUTERS, ImputerName

PACKAGED_DATA = Path(__file__).parent / "data" / "housing.csv.gz"
#: sha256 of the uncompressed csv the package carries (the census copy everyone uses).
PACKAGED_SHA256 = "8a3727f4cf54ac1a327f69b1d5b4db54c5834ea81c6e4efc0d163300022a685e"


class ConfigError(ValueError):
    """A setting is wrong; the message names the key and how to fix it."""


class IngestConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    source: str = ""
    """Path, https:// URL (csv or .tgz) or gs:// URI; empty means the copy the package carries."""
    sha256: str = ""
    """Expected sha256 of the csv bytes; empty skips the check for a custom source."""
    timeout_s: float = 30.0
    """Network timeout for https:// and gs:// sources."""


class ValidateConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    max_bad_share: float = 0.01
    """Fail when more than this share of rows is quarantined."""


class SplitConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    test_size: float = 0.2
    random_state: int = 42
    """Géron's split: income-stratified, 20%, seed 42, so results compare with the book."""


class ImputeConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    methods: tuple[ImputerName, ...] = IMPUTERS
    mask_share: float = 0.2
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
    n_trials: int = 12
    """Trials in total, across all workers."""
    timeout_s: float = 150.0
    """Each worker stops starting trials after this long."""
    storage: str = ""
    """Optuna RDB URL (sqlite:///…, postgresql://…); empty = in memory, or a SQLite file under home
    when workers > 1."""
    study_name: str = "housing-price"
    workers: int = 1
    """Local processes sharing one study."""
    cv_folds: int = 3
    seed: int = 42


class EvaluateConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    permutation_repeats: int = 5


class RegisterConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    model_name: str = "housing-price"
    promotion: Literal["auto", "manual"] = "auto"
    """auto: promote a challenger that beats the champion; manual: `python -m pipeline promote`."""
    margin: float = 0.0
    """Relative RMSE improvement a challenger needs over the champion (0.01 = 1%)."""


class TrackingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    mlflow_uri: str = ""
    """Empty = sqlite:///<home>/mlflow.db."""
    experiment: str = "housing-price"
    wandb_project: str = "housing-mlops"
    wandb_entity: str = ""
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"


class RuntimeInfo(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    task_index: int = 0
    """CLOUD_RUN_TASK_INDEX: this worker's index among parallel tasks."""
    task_count: int = 1
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
ENV_KEYS: dict[str, tuple[str, ...]] = {
    "HOUSING_MLOPS_HOME": ("home",),
    "ARTIFACT_URI": ("artifact_uri",),
    "MLFLOW_TRACKING_URI": ("tracking", "mlflow_uri"),
    "WANDB_PROJECT": ("tracking", "wandb_project"),
    "WANDB_ENTITY": ("tracking", "wandb_entity"),
    "OPTUNA_STORAGE": ("tune", "storage"),
    "CLOUD_RUN_TASK_INDEX": ("runtime", "task_index"),
    "CLOUD_RUN_TASK_COUNT": ("runtime", "task_count"),
    "DB_PASSWORD": ("runtime", "db_password"),
}


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def load_settings(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, ...], Any] | None = None,
) -> Settings:
    """Build the settings from a TOML file, the environment and explicit overrides."""
    tree: dict[str, Any] = {}
    where = "defaults"
    if config_file is not None:
        where = str(config_file)
        try:
            tree = tomllib.loads(Path(config_file).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {config_file} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
    for name, path in ENV_KEYS.items():
        if env and env.get(name):
            _set(tree, path, env[name])
    if env and env.get("WANDB_API_KEY") and env.get("WANDB_MODE", "") != "offline":
        _set(tree, ("tracking", "wandb_mode"), "online")
    if env and env.get("WANDB_MODE") in {"offline", "disabled"}:
        _set(tree, ("tracking", "wandb_mode"), env["WANDB_MODE"])
    for path, value in (overrides or {}).items():
        if value is not None:
            _set(tree, path, value)
    try:
        settings = msgspec.convert(tree, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {_explain(exc)}") from None
    _check(settings)
    return settings


def _explain(exc: msgspec.ValidationError) -> str:
    message = str(exc)
    if " - at `$." in message:
        problem, _, key = message.rpartition(" - at `$.")
        key = key.rstrip("`")
        return f"setting `{key}`: {problem}. Fix `{key}` in the config file or its variable."
    return message


def _check(s: Settings) -> None:
    problems = []
    if not 0 <= s.validate.max_bad_share < 1:
        problems.append("`validate.max_bad_share` must be in [0, 1), e.g. 0.01")
    if not 0 < s.split.test_size < 1:
        problems.append("`split.test_size` must be in (0, 1), e.g. 0.2")
    if not 0 < s.impute.mask_share < 1:
        problems.append("`impute.mask_share` must be in (0, 1), e.g. 0.2")
    unknown = [f for f in s.select.families if f not in FAMILIES]
    if unknown:
        problems.append(f"`select.families` has unknown {unknown}; known: {', '.join(FAMILIES)}")
    if s.tune.n_trials < 1 or s.tune.workers < 1:
        problems.append("`tune.n_trials` and `tune.workers` must be >= 1")
    if s.runtime.task_count < 1 or not 0 <= s.runtime.task_index < s.runtime.task_count:
        problems.append("CLOUD_RUN_TASK_INDEX must be in [0, CLOUD_RUN_TASK_COUNT)")
    if s.register.margin < 0:
        problems.append("`register.margin` must be >= 0, e.g. 0.01 for 1%")
    if problems:
        raise ConfigError("; ".join(problems))
