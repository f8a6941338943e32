"""The laptop platform's settings, read once by each entry point (``nox -s stack``,
``nox -s mlflow``) through ``housing_platform.settings_reader``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from housing_platform.settings_reader import read_settings


class LocalSettings(msgspec.Struct, frozen=True, kw_only=True):
    home: str = ".housing-mlops"
    """HOUSING_MLOPS_HOME: the pipeline's home; the MLflow store, models and logs live under it."""

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()


#: The variables the local platform reads, and the setting each one sets.
VARIABLES = {"HOUSING_MLOPS_HOME": "home"}


def from_env(env: Mapping[str, str]) -> LocalSettings:
    return read_settings(LocalSettings, env, VARIABLES)
