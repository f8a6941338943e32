"""Model exports are whole or refused: never two versions' files served as one."""

from __future__ import annotations

import json
import logging
from typing import ClassVar

import pytest

from housing_platform.artifact_store import LocalStore, StorageError
from model_runtime import exports
from model_runtime.exports import MANIFEST, Export, ExportError, publish
from pipeline import model_registry, promote
from pipeline.settings import load_settings

PREFIX = "models/housing-price/champion"


def version(n: int, *, onnx: bool) -> list[tuple[str, bytes]]:
    files = [("MLmodel", f"mlmodel v{n}".encode()), ("model.skops", f"sklearn v{n}".encode())]
    if onnx:
        files.append(("model.onnx", f"graph v{n}".encode()))
    files.append(("model_registry.json", json.dumps({"version": str(n)}).encode()))
    return files


def test_a_version_without_a_fast_form_leaves_no_older_one_beside_it(tmp_path):
    """The defect: v2 had no model.onnx, and v1's stayed beside v2's model_registry.json."""
    store = LocalStore(tmp_path)
    publish(store, PREFIX, version(1, onnx=True))
    publish(store, PREFIX, version(2, onnx=False))
    export = Export(store, PREFIX)
    assert not export.has("model.onnx")
    assert not store.exists(f"{PREFIX}/model.onnx")
    assert json.loads(export.read("model_registry.json")) == {"version": "2"}
    assert export.files() == ["MLmodel", "model.skops", "model_registry.json"]


class FailingStore(LocalStore):
    """A store whose writes fail after ``budget`` of them (a crash, a lost connection)."""

    budget = 10**9

    def write_bytes(self, key: str, data: bytes) -> None:
        if self.budget <= 0:
            raise StorageError(f"write of {key} failed")
        self.budget -= 1
        super().write_bytes(key, data)


@pytest.mark.parametrize("written", [1, 2, 3])
def test_a_publish_that_fails_half_way_is_refused_not_mixed(tmp_path, written):
    store = FailingStore(tmp_path)
    publish(store, PREFIX, version(1, onnx=True))
    store.budget = written
    with pytest.raises(StorageError):
        publish(store, PREFIX, version(2, onnx=True))
    export = Export(store, PREFIX)
    rewritten = [rel for rel, _ in version(2, onnx=True)][written - 1]  # the last one written
    with pytest.raises(ExportError, match=r"does not match its manifest\.json .*pipeline export"):
        export.read(rewritten)


def test_an_export_without_a_manifest_is_read_with_one_warning(tmp_path, caplog):
    store = LocalStore(tmp_path)
    for rel, data in version(1, onnx=True):
        store.write_bytes(f"{PREFIX}/{rel}", data)
    with caplog.at_level(logging.WARNING, logger="model_runtime.exports"):
        export = Export(store, PREFIX)
    assert [r.message for r in caplog.records if "no manifest.json" in r.message]
    assert export.read("model.onnx") == b"graph v1"
    assert "model.onnx" in export.files()


def test_a_file_the_manifest_does_not_list_is_not_read(tmp_path):
    store = LocalStore(tmp_path)
    publish(store, PREFIX, version(1, onnx=False))
    store.write_bytes(f"{PREFIX}/model.onnx", b"stray")
    with pytest.raises(ExportError, match=r"model\.onnx is not in its manifest\.json"):
        Export(store, PREFIX).read("model.onnx")


class StubRegistry:
    """The registry as promote uses it: one version to promote, an alias that may fail."""

    aliases: ClassVar[dict[str, str]] = {}
    alias_fails = False

    def __init__(self, name: str):
        self.name = name
        self.client = self

    def version_by_alias(self, alias: str):
        return None

    def get_model_version(self, name: str, version: str) -> None:
        pass

    def set_model_version_tag(self, *args: str) -> None:
        pass

    def set_alias(self, alias: str, version: str) -> None:
        if StubRegistry.alias_fails:
            raise RuntimeError("registry unreachable")
        StubRegistry.aliases[alias] = version


@pytest.fixture
def stub(monkeypatch):
    StubRegistry.aliases = {"champion": "1"}
    StubRegistry.alias_fails = False
    monkeypatch.setattr(model_registry, "Registry", StubRegistry)
    monkeypatch.setattr(model_registry, "export_files", lambda reg, v: version(int(v), onnx=False))
    return StubRegistry


def test_the_alias_stays_when_the_export_fails(tmp_path, stub):
    store = FailingStore(tmp_path)
    publish(store, PREFIX, version(1, onnx=True))
    store.budget = 2
    with pytest.raises(StorageError):
        promote.promote(load_settings(None, {}, {}), store, "2")
    assert stub.aliases == {"champion": "1"}


def test_the_export_is_whole_when_the_alias_fails_after_it(tmp_path, stub):
    store = LocalStore(tmp_path)
    publish(store, PREFIX, version(1, onnx=True))
    stub.alias_fails = True
    with pytest.raises(RuntimeError, match="registry unreachable"):
        promote.promote(load_settings(None, {}, {}), store, "2")
    assert stub.aliases == {"champion": "1"}
    export = Export(store, PREFIX)
    assert {rel: export.read(rel) for rel in export.files()} == dict(version(2, onnx=False))


def test_the_service_refuses_an_export_that_does_not_match_its_manifest(tmp_path):
    from model_runtime.loader import from_export, load
    from service.settings import ServiceSettings

    store = LocalStore(tmp_path / "export")
    publish(store, "", version(1, onnx=True))
    store.write_bytes("model.onnx", b"graph v2")  # half of a later publish
    settings = ServiceSettings(
        model_uri="models:/housing-price@champion",
        fallback_uri=str(tmp_path / "export"),
        mlflow_tracking_uri="sqlite:///" + str(tmp_path / "none.db"),
    )
    with pytest.raises(ExportError, match=r"model\.onnx does not match its manifest\.json"):
        from_export(settings)
    servable, reasons = load(settings, lambda loaded: loaded)
    assert servable is None
    assert any("does not match its manifest" in r for r in reasons)


def test_publish_refuses_a_file_named_like_the_manifest(tmp_path):
    with pytest.raises(ExportError):
        exports.publish(LocalStore(tmp_path), PREFIX, [(MANIFEST, b"{}")])
