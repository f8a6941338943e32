"""Batch predictions with a trained champion: K processes price as one does, and as the
service does; bad input ends in one line on stderr and no output that looks complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model_runtime import loader
from model_runtime.contract import FEATURES
from pipeline.cli import main as pipeline_main
from service.predictor import Predictor
from service.schemas import parse_predict_request
from service.settings import from_env

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def houses(housing: pd.DataFrame) -> pd.DataFrame:
    """600 houses of the data set, half of them moved off the 0.01° grid (new places), with an
    id column, a missing bedroom count and one house the service would refuse."""
    rng = np.random.default_rng(7)
    frame = housing.sample(600, random_state=1)[list(FEATURES)].reset_index(drop=True)
    off = frame.index[300:]
    frame.loc[off, "longitude"] += rng.uniform(-0.004, 0.004, len(off))
    frame.loc[off, "latitude"] += rng.uniform(-0.004, 0.004, len(off))
    frame.loc[5, "total_bedrooms"] = np.nan
    frame.loc[7, "households"] = 0
    frame.insert(0, "house_id", range(1000, 1000 + len(frame)))
    return frame


@pytest.fixture(scope="module")
def houses_csv(houses: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("batch-in") / "houses.csv"
    houses.to_csv(path, index=False)
    return path


def batch(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline batch …`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "batch", *args],
        cwd=ROOT,
        env={**os.environ, "HOUSING_MLOPS_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def read(dst: Path) -> tuple[dict, pd.DataFrame]:
    found = json.loads((dst / "_manifest.json").read_text())
    frame = pd.concat([pd.read_parquet(dst / p["part"]) for p in found["parts"]])
    return found, frame.reset_index(drop=True)


@pytest.fixture(scope="module")
def one_task(model_home: Path, houses_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("batch-out") / "one"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOUSING_MLOPS_HOME", str(model_home))
        assert pipeline_main(["batch", "--input", str(houses_csv), "--output", str(dst)]) == 0
    return dst


def test_four_tasks_write_four_parts_and_one_manifest_priced_as_one_task(
    model_home, houses_csv, one_task, tmp_path
):
    dst = tmp_path / "four"
    done = batch(model_home, "--input", str(houses_csv), "--output", str(dst), "--tasks", "4")
    assert done.returncode == 0, done.stderr
    four, prices = read(dst)
    one, expected = read(one_task)
    assert len(four["parts"]) == 4
    assert sorted(p.name for p in dst.glob("part-*")) == [
        f"part-0000{i}-of-00004.parquet" for i in range(4)
    ]
    assert four["model_version"] == one["model_version"]
    assert {p["model_version"] for p in four["parts"]} == {one["model_version"]}
    pd.testing.assert_frame_equal(prices, expected)
    assert f"version {one['model_version']}" in done.stdout


def test_batch_prices_equal_the_services(model_home, houses, one_task):
    found, out = read(one_task)
    settings = from_env({"HOUSING_MLOPS_HOME": str(model_home)})
    predictor, reasons = loader.load(settings.model_source, Predictor)
    assert predictor is not None, reasons
    assert predictor.meta.version == found["model_version"]
    valid = out["rejected"].isna().to_numpy()
    assert out.loc[~valid, "house_id"].tolist() == ["1007"]  # a CSV's columns are carried as text
    assert out.loc[~valid, "rejected"].tolist() == ["households: Expected `float` >= 1.0"]
    rows = houses[list(FEATURES)][valid].astype(object)
    rows = rows.where(rows.notna(), None).to_dict("records")
    served = np.asarray(
        predictor.predict(parse_predict_request(json.dumps({"instances": rows}).encode(), 10**6))
    )
    batch_prices = out.loc[valid, "predicted_price"].to_numpy()
    runtimes = {predictor.runtime, found["parts"][0]["runtime"]}
    tolerance = 1e-9 if runtimes == {"onnxruntime"} else 1e-5
    assert np.max(np.abs(batch_prices - served) / np.abs(served)) <= tolerance
    assert runtimes == {"onnxruntime"}  # the fixture's model has a fast form that agrees


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--version", "99"], "error: batch: model housing-price version 99 can't be loaded: "),
        (["--input", "{tmp}/none.csv"], "error: batch: {tmp}/none.csv: no such file"),
        (["--input", "{tmp}/cols.csv"], "error: batch: {tmp}/cols.csv: missing column(s) latitude"),
        (["--output", "{one}"], "error: batch: {one} already exists; pass --overwrite"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_no_output(
    model_home, houses, houses_csv, one_task, tmp_path, args, line
):
    houses.drop(columns=["latitude"]).to_csv(tmp_path / "cols.csv", index=False)
    given = {"--input": str(houses_csv), "--output": str(tmp_path / "out")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        given[flag] = value.format(tmp=tmp_path, one=one_task)
    before = sorted(p.name for p in one_task.rglob("*"))
    done = batch(model_home, *[x for pair in given.items() for x in pair])
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(line.format(tmp=tmp_path, one=one_task))
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in one_task.rglob("*")) == before
