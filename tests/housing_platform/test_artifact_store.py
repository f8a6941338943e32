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


def _streams(store, big: bytes) -> None:
    """What the batch job relies on: a streamed write appears whole or not at all, and a
    streamed read seeks."""
    with store.open_write("out/part.bin") as fh:
        for start in range(0, len(big), 1 << 20):
            fh.write(big[start : start + (1 << 20)])
    assert store.read_bytes("out/part.bin") == big
    with store.open_read("out/part.bin") as fh:
        fh.seek(len(big) - 10)
        assert fh.read() == big[-10:]
        fh.seek(5)
        assert fh.read(3) == big[5:8]

    def fail_half_way() -> None:
        with store.open_write("out/failed.bin") as fh:
            fh.write(big[:1000])
            raise RuntimeError("half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        fail_half_way()
    assert not store.exists("out/failed.bin")
    assert store.list("out") == ["out/part.bin"]
    with pytest.raises(StorageError, match="not found"):
        store.open_read("out/none.bin")


BIG = bytes(range(256)) * (12 * 4096 + 7)  # 12 MiB and a bit: more than one GCS chunk


def test_local_streams(tmp_path):
    _streams(LocalStore(tmp_path), BIG)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["part.bin"]


def test_a_create_only_write_loses_to_an_existing_artifact(tmp_path):
    """(gcp-storage-emulator ignores ifGenerationMatch, so GCS's precondition is not tested.)"""
    store = LocalStore(tmp_path)
    assert store.create("out/manifest.json", b"first") is True
    assert store.create("out/manifest.json", b"second") is False
    assert store.read_bytes("out/manifest.json") == b"first"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["manifest.json"]


def test_gcs_streams_against_the_emulator(gcs_client):
    gcs_client.create_bucket("streams")
    _streams(open_store("gs://streams/batch", gcs_client), BIG)
