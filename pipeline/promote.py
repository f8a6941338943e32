"""Manual promotion: make a registered version the champion and export it as such."""

from __future__ import annotations

from pipeline import registry
from pipeline.orchestrator import PipelineError
from pipeline.settings import Settings
from pipeline.storage import ArtifactStore


def promote(settings: Settings, store: ArtifactStore, version: str | None = None) -> str:
    """Point ``champion`` at ``version`` (default: the challenger); returns the version."""
    reg = registry.Registry(settings.register.model_name)
    if version is None:
        challenger = reg.version_by_alias(registry.CHALLENGER)
        if challenger is None:
            raise PipelineError(
                f"no @{registry.CHALLENGER} for {reg.name}: run the pipeline or pass --version"
            )
        version = str(challenger.version)
    from mlflow.exceptions import MlflowException

    try:
        reg.client.get_model_version(reg.name, version)
    except MlflowException:
        raise PipelineError(f"{reg.name} has no version {version}") from None
    reg.client.set_model_version_tag(reg.name, version, "promotion", "promoted by hand")
    files = registry.export_files(reg, version)
    prefix = registry.export_prefix(reg.name, registry.CHAMPION)
    for key in store.list(prefix):
        store.delete(key)
    for rel, data in files:
        store.write_bytes(f"{prefix}/{rel}", data)
    reg.set_alias(registry.CHAMPION, version)
    return version
