"""A run's parts, manifest and flags, priced by a stand-in model (see conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from batch_prediction import job, manifest
from batch_prediction.errors import BatchError
from tests.batch_prediction.conftest import Formula


def request(src: Path | str, dst: Path | str, **flags) -> job.Request:
    return job.Request(input=str(src), output=str(dst), **flags)


def as_tasks(src, dst, models, count: int, **flags) -> list:
    """The run as Cloud Run would run it: each task alone, with its index in the environment."""
    results = []
    for i in range(count):
        env = {"CLOUD_RUN_TASK_INDEX": str(i), "CLOUD_RUN_TASK_COUNT": str(count)}
        results.append(job.run(request(src, dst, **flags), env, models=models))
    return results


def parts(dst: Path) -> pd.DataFrame:
    found = manifest.read(manifest_store(dst))
    assert found is not None
    reader = pd.read_csv if str(dst).endswith(".csv") else pd.read_parquet
    return pd.concat([reader(dst / p.part) for p in found.parts], ignore_index=True)


def manifest_store(dst: Path):
    from housing_platform.artifact_store import LocalStore

    return LocalStore(dst)


def test_one_task_prices_every_row_and_carries_the_other_columns(
    houses, houses_csv, tmp_path, models
):
    found = job.run(request(houses_csv, tmp_path / "out"), {}, models=models)
    assert found is not None
    assert (found.rows, found.priced, found.rejected) == (1000, 998, 2)
    out = parts(tmp_path / "out")
    assert out["house_id"].tolist() == houses["house_id"].tolist()
    assert out.loc[10, "rejected"] == "latitude: Expected `float` <= 42.1"
    assert out.loc[20, "rejected"].startswith("ocean_proximity: unknown value 'on the moon'")
    assert out.loc[[10, 20], "predicted_price"].isna().all()
    good = out["rejected"].isna()
    expected = Formula().predict(houses.astype({"latitude": float}))
    assert out.loc[good, "predicted_price"].tolist() == pytest.approx(expected[good].tolist())
    assert set(out["model_version"].astype(str)) == {"3"}
    assert set(out["model_name"]) == {"housing-price"}
    assert found.model_version == "3"
    assert found.input_sha256
    assert found.tasks == 1


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_four_tasks_write_four_parts_and_one_manifest_priced_as_one_task(
    fmt, houses_csv, houses_parquet, tmp_path, models
):
    src = houses_csv if fmt == "csv" else houses_parquet
    one = job.run(request(src, tmp_path / "one"), {}, models=models)
    results = as_tasks(src, tmp_path / "four", models, 4)
    assert results[:3] == [None, None, None]  # nobody's manifest until every part is there
    four = results[3]
    assert one is not None
    assert four is not None
    assert [p.part for p in four.parts] == [f"part-0000{i}-of-00004.parquet" for i in range(4)]
    assert sorted(p.name for p in (tmp_path / "four").glob("*.parquet")) == [
        p.part for p in four.parts
    ]
    assert (four.rows, four.priced, four.input_sha256) == (one.rows, one.priced, one.input_sha256)
    pd.testing.assert_frame_equal(parts(tmp_path / "four"), parts(tmp_path / "one"))


def test_a_csv_output_by_its_name(houses_parquet, tmp_path, models):
    found = job.run(request(houses_parquet, tmp_path / "prices.csv"), {}, models=models)
    assert found is not None
    assert found.parts[0].part == "part-00000-of-00001.csv"
    out = pd.read_csv(tmp_path / "prices.csv" / found.parts[0].part)
    assert out.columns[-4:].tolist() == list(job.ADDED)
    assert len(out) == 1000


def test_an_unfinished_job_has_no_manifest_and_resume_redoes_only_the_missing_part(
    houses_csv, tmp_path, models
):
    dst = tmp_path / "out"
    as_tasks(houses_csv, dst, models, 4)
    (dst / "_manifest.json").unlink()
    (dst / "_done" / "part-00002-of-00004.json").unlink()  # task 2 died before its marker
    kept = {p.name: p.stat().st_mtime_ns for p in dst.glob("part-*")}
    with pytest.raises(BatchError, match=r"already exists; pass --overwrite .* or --resume"):
        job.run(request(houses_csv, dst, tasks=4), {}, models=models)
    with pytest.raises(BatchError, match=r"another run .* 4 task\(s\)\), not .* 2 task"):
        job.run(request(houses_csv, dst, tasks=2, resume=True), {}, models=models)
    loads = models.loads
    found = job.run(request(houses_csv, dst, resume=True), {}, models=models)  # its 4 tasks
    assert found is not None
    assert found.tasks == 4
    assert found.rows == 1000
    assert models.loads == loads + 1
    now = {p.name: p.stat().st_mtime_ns for p in dst.glob("part-*")}
    assert [n for n in kept if kept[n] != now[n]] == ["part-00002-of-00004.parquet"]


def test_resume_refuses_another_input_or_version(houses, houses_csv, tmp_path, models):
    dst = tmp_path / "out"
    as_tasks(houses_csv, dst, models, 2)
    (dst / "_manifest.json").unlink()
    with pytest.raises(BatchError, match=r"another run .*version 3.* and version 4"):
        job.run(request(houses_csv, dst, tasks=2, resume=True, version="4"), {}, models=models)
    houses.head(10).to_csv(houses_csv, index=False)
    with pytest.raises(BatchError, match="holds parts of another run"):
        job.run(request(houses_csv, dst, tasks=2, resume=True), {}, models=models)
    assert not (dst / "_manifest.json").exists()


def test_overwrite_replaces_everything(houses, houses_csv, tmp_path, models):
    dst = tmp_path / "out"
    as_tasks(houses_csv, dst, models, 3)
    houses.head(10).to_csv(houses_csv, index=False)
    found = job.run(request(houses_csv, dst, overwrite=True), {}, models=models)
    assert found is not None
    assert found.rows == 10
    assert sorted(p.name for p in dst.rglob("*") if p.is_file()) == [
        "_manifest.json",
        "part-00000-of-00001.json",
        "part-00000-of-00001.parquet",
    ]


def test_a_cloud_run_task_refuses_a_finished_output(houses_csv, tmp_path, models):
    dst = tmp_path / "out"
    as_tasks(houses_csv, dst, models, 2)
    with pytest.raises(BatchError, match="already exists"):
        as_tasks(houses_csv, dst, models, 2)
    assert as_tasks(houses_csv, dst, models, 2, resume=True)[0] is not None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("longitude,latitude\n1,2\n", "missing column\\(s\\) housing_median_age, total_rooms"),
        ("", "empty, no header line"),
    ],
)
def test_bad_csv_input_is_one_line_and_leaves_no_output(tmp_path, models, content, message):
    src = tmp_path / "bad.csv"
    src.write_text(content)
    with pytest.raises(BatchError, match=message):
        job.run(request(src, tmp_path / "out"), {}, models=models)
    assert not (tmp_path / "out").exists()
    assert models.loads == 0  # found before any model is loaded


def test_unreadable_and_missing_input(tmp_path, models):
    src = tmp_path / "bad.parquet"
    src.write_bytes(b"not parquet at all")
    with pytest.raises(BatchError, match=r"bad.parquet: can't be read as parquet"):
        job.run(request(src, tmp_path / "out"), {}, models=models)
    with pytest.raises(BatchError, match=r"none.csv: no such file"):
        job.run(request(tmp_path / "none.csv", tmp_path / "out"), {}, models=models)
    with pytest.raises(BatchError, match="unknown input format"):
        job.run(request(tmp_path / "x.json", tmp_path / "out"), {}, models=models)
    assert not (tmp_path / "out").exists()


def test_a_malformed_csv_line_is_skipped_and_counted(houses, tmp_path, models):
    src = tmp_path / "in.csv"
    text = houses.head(5).to_csv(index=False).splitlines()
    text.insert(3, "only,three,fields")
    src.write_text("\n".join(text) + "\n")
    found = job.run(request(src, tmp_path / "out"), {}, models=models)
    assert found is not None
    assert (found.rows, found.skipped_lines) == (5, 1)
    assert "1 malformed CSV line(s) skipped" in job.summary(found, 1.0)


def test_the_manifest_is_written_once_and_names_every_part(houses_csv, tmp_path, models):
    dst = tmp_path / "out"
    as_tasks(houses_csv, dst, models, 2)
    body = json.loads((dst / "_manifest.json").read_text())
    assert [p["part"] for p in body["parts"]] == [
        "part-00000-of-00002.parquet",
        "part-00001-of-00002.parquet",
    ]
    assert {p["model_version"] for p in body["parts"]} == {body["model_version"]} == {"3"}
    assert sum(p["rows"] for p in body["parts"]) == body["rows"] == 1000


def test_gcs_input_and_output_on_the_emulator(gcs_client, houses, houses_csv, tmp_path, models):
    gcs_client.create_bucket("batch")
    bucket = gcs_client.bucket("batch")
    bucket.blob("in/houses.csv").upload_from_filename(str(houses_csv))
    src, dst = "gs://batch/in/houses.csv", "gs://batch/out/prices.parquet"
    for i in range(2):
        env = {"CLOUD_RUN_TASK_INDEX": str(i), "CLOUD_RUN_TASK_COUNT": "2"}
        found = job.run(request(src, dst), env, gcs_client, models=models)
    assert found is not None
    assert found.rows == 1000
    names = sorted(b.name for b in gcs_client.list_blobs("batch", prefix="out/"))
    assert names == [
        "out/prices.parquet/_done/part-00000-of-00002.json",
        "out/prices.parquet/_done/part-00001-of-00002.json",
        "out/prices.parquet/_manifest.json",
        "out/prices.parquet/part-00000-of-00002.parquet",
        "out/prices.parquet/part-00001-of-00002.parquet",
    ]
    local = tmp_path / "local"
    job.run(request(houses_csv, local), {}, models=models)
    for p in found.parts:
        bucket.blob(f"out/prices.parquet/{p.part}").download_to_filename(tmp_path / p.part)
    got = pd.concat([pd.read_parquet(tmp_path / p.part) for p in found.parts], ignore_index=True)
    pd.testing.assert_frame_equal(got, parts(local))
