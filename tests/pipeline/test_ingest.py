import gzip
import hashlib
import http.server
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import PipelineError
from pipeline.settings import PACKAGED_SHA256, IngestConfig
from pipeline.steps import ingest
from tests.helpers import free_port, serve_http

SHARED_COPY = Path(__file__).resolve().parents[3] / "shared" / "data" / "housing.csv"


def test_packaged_copy_is_the_census_data_and_verified(housing):
    frame, report = ingest.load(IngestConfig())
    assert report["sha256"] == PACKAGED_SHA256
    assert report["verified"] is True
    assert len(frame) == 20_640
    assert frame["row_id"].tolist()[:3] == [0, 1, 2]
    assert set(frame["ocean_proximity"]) == {
        "<1H OCEAN",
        "INLAND",
        "ISLAND",
        "NEAR BAY",
        "NEAR OCEAN",
    }


@pytest.mark.skipif(not SHARED_COPY.exists(), reason="../shared is not beside this checkout")
def test_packaged_copy_matches_the_shared_source():
    data = SHARED_COPY.read_bytes()
    assert hashlib.sha256(data).hexdigest() == PACKAGED_SHA256
    assert ingest.fetch("", 5) == data


@pytest.fixture
def csv_bytes() -> bytes:
    return ingest.fetch("", 5)


@pytest.fixture
def http_root(tmp_path, csv_bytes):
    (tmp_path / "housing.csv").write_bytes(csv_bytes)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("housing.csv")
        info.size = len(csv_bytes)
        tar.addfile(info, io.BytesIO(csv_bytes))
    (tmp_path / "housing.tgz").write_bytes(buf.getvalue())

    class Files(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    with serve_http(Files) as (_, url):
        yield url


@pytest.mark.parametrize("name", ["housing.csv", "housing.tgz"])
def test_downloads_csv_or_archive_with_checksum(http_root, name):
    frame, report = ingest.load(IngestConfig(source=f"{http_root}/{name}", sha256=PACKAGED_SHA256))
    assert len(frame) == 20_640
    assert report["verified"] is True


def test_wrong_checksum_names_both_digests(http_root):
    with pytest.raises(
        PipelineError, match=r"checksum mismatch .* expected sha256 0{64}, got 8a3727f4"
    ):
        ingest.load(IngestConfig(source=f"{http_root}/housing.csv", sha256="0" * 64))


def test_unreachable_url_is_one_clear_error():
    url = f"http://127.0.0.1:{free_port()}/housing.csv"
    with pytest.raises(PipelineError, match=f"cannot download {url}"):
        ingest.load(IngestConfig(source=url, timeout_s=2))


def test_local_path_gz_and_missing_file(tmp_path, csv_bytes):
    path = tmp_path / "h.csv.gz"
    path.write_bytes(gzip.compress(csv_bytes))
    frame, _ = ingest.load(IngestConfig(source=str(path)))
    assert len(frame) == 20_640
    with pytest.raises(PipelineError, match="does not exist"):
        ingest.load(IngestConfig(source=str(tmp_path / "nope.csv")))


def test_malformed_csv_and_missing_column(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('longitude,latitude\n1,2\n3,4,5,6\n"unterminated\n')
    with pytest.raises(PipelineError, match="not a valid csv"):
        ingest.load(IngestConfig(source=str(bad)))
    partial = tmp_path / "partial.csv"
    partial.write_text("longitude,latitude\n1,2\n")
    with pytest.raises(PipelineError, match=r"lacks column.*housing_median_age"):
        ingest.load(IngestConfig(source=str(partial)))


def test_reads_gs_uri_through_the_given_client(gcs_client, csv_bytes):
    bucket = gcs_client.create_bucket("ingest-src")
    bucket.blob("raw/housing.csv").upload_from_string(csv_bytes)
    frame, report = ingest.load(
        IngestConfig(source="gs://ingest-src/raw/housing.csv", sha256=PACKAGED_SHA256), gcs_client
    )
    assert len(frame) == 20_640
    assert report["source"] == "gs://ingest-src/raw/housing.csv"
    with pytest.raises(PipelineError, match=r"cannot read gs://ingest-src/missing\.csv"):
        ingest.load(IngestConfig(source="gs://ingest-src/missing.csv"), gcs_client)
