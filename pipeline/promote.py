"""Manual promotion (make a registered version the champion and export it as such), and
rewriting a version's export."""

from __future__ import annotations

from pipeline import exports, registry
from pipeline.errors import PipelineError
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
    # The alias moves only once the champion's export is whole.
    exports.publish(store, registry.export_prefix(reg.name, registry.CHAMPION), files)
    reg.set_alias(registry.CHAMPION, version)
    return version


def export(settings: Settings, store: ArtifactStore, version: str) -> list[str]:
    """Rewrite a version's export (and the champion's, if it is the champion) through
    ``exports.publish``: how an export written before manifests gets one."""
    reg = registry.Registry(settings.register.model_name)
    from mlflow.exceptions import MlflowException

    try:
        reg.client.get_model_version(reg.name, version)
    except MlflowException:
        raise PipelineError(f"{reg.name} has no version {version}") from None
    files = registry.export_files(reg, version)
    refs = [version]
    champion = reg.version_by_alias(registry.CHAMPION)
    if champion is not None and str(champion.version) == version:
        refs.append(registry.CHAMPION)
    for ref in refs:
        exports.publish(store, registry.export_prefix(reg.name, ref), files)
    return [registry.export_prefix(reg.name, ref) for ref in refs]
