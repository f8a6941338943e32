import pytest

from housing_platform.artifact_store import GCSStore, LocalStore, StorageError, open_store


def test_local_store_round_trip_and_listing(tmp_path):
    store = open_store(str(tmp_path / "a"))
    store.write_bytes("data/x.bin", b"1")
    store.write_bytes("data/sub/y.bin", b"2")
    assert store.read_bytes("data/x.bin") == b"1"
    assert store.list("data") == ["data/sub/y.bin", "data/x.bin"]
    store.delete("data/x.bin")
    assert not store.exists("data/x.bin")
    with pytest.raises(StorageError, match="not found"):
        store.read_bytes("data/x.bin")


def test_local_writes_leave_no_temporary_files(tmp_path):
    store = LocalStore(tmp_path)
    store.write_bytes("k", b"old")
    store.write_bytes("k", b"new")
    assert store.read_bytes("k") == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


def test_keys_cannot_escape_the_root(tmp_path):
    with pytest.raises(StorageError, match="escapes"):
        LocalStore(tmp_path / "root").write_bytes("../outside", b"x")


def test_gcs_store_against_the_emulator(gcs_client):
    gcs_client.create_bucket("artifacts")
    store = open_store("gs://artifacts/runs/1", gcs_client)
    assert isinstance(store, GCSStore)
    assert store.uri == "gs://artifacts/runs/1"
    store.write_bytes("data/raw.parquet", b"parquet")
    store.write_bytes("reports/r.json", b"{}")
    assert store.exists("data/raw.parquet")
    assert not store.exists("data/none")
    assert store.read_bytes("data/raw.parquet") == b"parquet"
    assert store.list() == ["data/raw.parquet", "reports/r.json"]
    assert store.list("reports") == ["reports/r.json"]
    store.delete("reports/r.json")
    assert store.list() == ["data/raw.parquet"]
    with pytest.raises(StorageError, match="not found in gs://artifacts/runs/1"):
        store.read_bytes("reports/r.json")
