"""The manifest appears only over a whole run of one input and one version."""

import msgspec

from batch_prediction import manifest
from housing_platform.artifact_store import LocalStore


def marker(index: int, version: str = "3", sha: str = "abc") -> manifest.Marker:
    return manifest.Marker(
        part=manifest.part_key(index, 2, "parquet"),
        task_index=index,
        task_count=2,
        rows=10,
        priced=9,
        rejected=1,
        skipped_lines=0,
        sha256="p",
        input_sha256=sha,
        model_name="housing-price",
        model_version=version,
        runtime="onnxruntime",
    )


def put(store: LocalStore, m: manifest.Marker) -> None:
    store.write_bytes(manifest.marker_key(m.task_index, 2), msgspec.json.encode(m))


def test_no_manifest_until_every_part_of_the_same_version_and_input_is_done(tmp_path):
    store = LocalStore(tmp_path)
    put(store, marker(0))
    assert not manifest.finalise(store, "in.csv", "abc", "3", 2)
    put(store, marker(1, version="4"))  # a task that priced with another version
    assert not manifest.finalise(store, "in.csv", "abc", "3", 2)
    put(store, marker(1, sha="other"))  # or read another input
    assert not manifest.finalise(store, "in.csv", "abc", "3", 2)
    assert not store.exists(manifest.MANIFEST)
    put(store, marker(1))
    assert manifest.finalise(store, "in.csv", "abc", "3", 2)
    found = manifest.read(store)
    assert found is not None
    assert (found.rows, found.priced, found.rejected) == (20, 18, 2)
    assert [p.part for p in found.parts] == [marker(0).part, marker(1).part]


def test_outputs_are_csv_by_name_and_parquet_otherwise():
    assert manifest.output_format("gs://b/prices.CSV/") == "csv"
    assert manifest.output_format("out/prices") == "parquet"
