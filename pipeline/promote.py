"""Manual promotion (make a registered version the champion and export it as such), and
rewriting a version's export."""

from __future__ import annotations

from housing_platform.artifact_store import ArtifactStore
from model_runtime import exports
from pipeline import model_registry
from pipeline.errors import PipelineError
from pipeline.settings import Settings


def promote(settings: Settings, store: ArtifactStore, version: str | None = None) -> str:
    """Point ``champion`` at ``version`` (default: the challenger); returns the version."""
    reg = model_registry.Registry(settings.register.model_name)
    if version is None:
        challenger = reg.version_by_alias(model_registry.CHALLENGER)
        if challenger is None:
            raise PipelineError(
                f"no @{model_registry.CHALLENGER} for {reg.name}: "
                "run the pipeline or pass --version"
            )
        version = str(challenger.version)
    from mlflow.exceptions import MlflowException

    try:
        reg.client.get_model_version(reg.name, version)
    except MlflowException:
        raise PipelineError(f"{reg.name} has no version {version}") from None
    reg.client.set_model_version_tag(reg.name, version, "promotion", "promoted by hand")
    files = model_registry.export_files(reg, version)
    # The alias moves only once the champion's export is whole.
    exports.publish(store, model_registry.export_prefix(reg.name, model_registry.CHAMPION), files)
    reg.set_alias(model_registry.CHAMPION, version)
    return version


def export(settings: Settings, store: ArtifactStore, version: str) -> list[str]:
    """Rewrite a version's export (and the champion's, if it is the champion) through
    ``exports.publish``: how an export written before manifests gets one."""
    reg = model_registry.Registry(settings.register.model_name)
    from mlflow.exceptions import MlflowException

    try:
        reg.client.get_model_version(reg.name, version)
    except MlflowException:
        raise PipelineError(f"{reg.name} has no version {version}") from None
    files = model_registry.export_files(reg, version)
    refs = [version]
    champion = reg.version_by_alias(model_registry.CHAMPION)
    if champion is not None and str(champion.version) == version:
        refs.append(model_registry.CHAMPION)
    for ref in refs:
        exports.publish(store, model_registry.export_prefix(reg.name, ref), files)
    return [model_registry.export_prefix(reg.name, ref) for ref in refs]
