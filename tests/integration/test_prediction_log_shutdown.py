"""The prediction log of a real server (``python -m service`` under uvicorn, as `nox -s serve` and
Cloud Run run it), to a local folder and to a bucket of the GCS emulator: on by default, and when
SIGTERM comes with requests in flight, every house the server answered is in the log, written
within the time Cloud Run allows (10 s), with the default drain and flush budget."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from housing_platform.artifact_store import open_store
from model_runtime.prediction_records import read_window
from tests.helpers import DEADLINE_S, wait_until
from tests.integration.test_service import in_flight, rows

REVISION = "housing-api-00007-sig"
SLOW_UPLOADS = 4


def logged_rows(uri: str, gcs_client: object = None) -> list[dict]:
    now = datetime.now(UTC)
    store = open_store(uri, gcs_client)  # type: ignore[arg-type]
    return read_window(store, now - timedelta(days=1), now + timedelta(days=1)).to_dict("records")


@pytest.mark.parametrize("where", ["home", "gcs"])
def test_every_answered_house_is_in_the_log_after_sigterm(
    where, model_home, tmp_path, start_service, housing_sample, request
):
    houses = rows(housing_sample, 200)
    env = {
        # The model from the trained home's registry; everything the service writes in its own.
        "HOUSING_MLOPS_HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{model_home / 'mlflow.db'}",
        "K_REVISION": REVISION,
        # Batches are written while the load runs; the rest waits for the final flush.
        "PREDICTION_LOG_BATCH_ROWS": "100",
    }
    gcs_client = None
    if where == "home":  # nothing set: what `nox -s serve` does
        uri = str(tmp_path / "home" / "artifacts")
    else:  # as on Cloud Run: ARTIFACT_URI=gs://<bucket>/artifacts
        gcs_client = request.getfixturevalue("gcs_client")
        bucket = f"log-{uuid.uuid4().hex[:8]}"
        gcs_client.create_bucket(bucket)  # type: ignore[attr-defined]
        uri = f"gs://{bucket}/artifacts"
        env |= {"ARTIFACT_URI": uri, "STORAGE_EMULATOR_HOST": gcs_client.api_endpoint}  # type: ignore[attr-defined]

    slow_body = json.dumps({"instances": houses[:50]}).encode()
    release = threading.Event()
    stop_load = threading.Event()
    answered: dict[str, list[float]] = {}  # request id -> prices, for every 200 received
    sent: dict[str, list[dict]] = {}

    def upload():
        yield slow_body[: len(slow_body) // 2]
        release.wait(timeout=DEADLINE_S)
        yield slow_body[len(slow_body) // 2 :]

    with start_service(env) as svc:
        info = httpx.get(svc.url + "/api/v1/model").json()
        assert info["prediction_log"] is True

        def slow() -> int:
            answer = httpx.post(
                svc.url + "/api/v1/predict",
                content=upload(),
                headers={"content-type": "application/json"},
                timeout=DEADLINE_S,
            )
            if answer.status_code == 200:
                answered[answer.headers["x-request-id"]] = [
                    p["predicted_price"] for p in answer.json()["predictions"]
                ]
            return answer.status_code

        def quick(worker: int) -> None:
            """Small requests on one keep-alive connection until the server stops answering."""
            with httpx.Client(base_url=svc.url, timeout=DEADLINE_S) as client:
                i = 0
                while not stop_load.is_set():
                    batch = houses[(worker * 7 + i) % 190 :][: 1 + i % 3]
                    request_id = f"w{worker}-{i}"
                    i += 1
                    sent[request_id] = batch
                    try:
                        answer = client.post(
                            "/api/v1/predict",
                            json={"instances": batch},
                            headers={"x-request-id": request_id},
                        )
                    except httpx.TransportError:
                        return  # the server stopped taking requests
                    if answer.status_code != 200:
                        return
                    answered[request_id] = [
                        p["predicted_price"] for p in answer.json()["predictions"]
                    ]

        with concurrent.futures.ThreadPoolExecutor(SLOW_UPLOADS + 4) as pool:
            slow_calls = [pool.submit(slow) for _ in range(SLOW_UPLOADS)]
            quick_calls = [pool.submit(quick, w) for w in range(4)]
            try:
                wait_until(lambda: len(answered) >= 200, "200 requests answered", log=svc.log)
                wait_until(
                    lambda: in_flight(svc.url) >= SLOW_UPLOADS,
                    "the slow uploads in flight",
                    log=svc.log,
                )
                signalled = time.monotonic()
                svc.proc.send_signal(signal.SIGTERM)
                wait_until(
                    lambda: "Waiting for connections to close" in svc.logs(),
                    "the server draining after SIGTERM",
                    log=svc.log,
                )
            finally:
                release.set()
                stop_load.set()
            statuses = [call.result() for call in slow_calls]
            for call in quick_calls:
                call.result()
        code = svc.proc.wait(timeout=DEADLINE_S)
        stopped_in = time.monotonic() - signalled
    assert code in (0, -signal.SIGTERM)
    assert statuses == [200] * SLOW_UPLOADS
    # The drain (8 s at most), the final flush (1.5 s) and uvicorn's own steps: within Cloud
    # Run's 10 s (here the drain ends as soon as the uploads are answered).
    assert stopped_in < 10
    logs = svc.logs()
    assert "prediction log closed:" in logs
    assert "not written" not in logs

    logged = logged_rows(uri, gcs_client)
    by_request: dict[str, list[dict]] = {}
    for row in logged:
        by_request.setdefault(row["request_id"], []).append(row)
    missing = sorted(set(answered) - set(by_request))
    assert not missing, f"{len(missing)} answered requests not in the log: {missing[:5]}"
    assert set(by_request) == set(answered)  # and nothing that wasn't answered
    for request_id, prices in answered.items():
        got = by_request[request_id]
        assert [r["price"] for r in got] == prices
        assert {(r["status"], r["revision"], r["form"]) for r in got} == {
            (200, REVISION, "onnxruntime")
        }
        if request_id in sent:
            assert [r["median_income"] for r in got] == [
                h["median_income"] for h in sent[request_id]
            ]
    assert {r["model_version"] for r in logged} == {info["version"]}
    keys = open_store(uri, gcs_client).list("predictions/")  # type: ignore[arg-type]
    assert keys
    assert all(f"/{REVISION}/" in key for key in keys)
    assert len(keys) > 1, "the batches were written while the load ran, the rest at shutdown"


def test_the_service_says_where_it_logs_and_that_it_can_be_turned_off(
    model_home, tmp_path, start_service
):
    env = {
        "HOUSING_MLOPS_HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{model_home / 'mlflow.db'}",
        "PREDICTION_LOG": "false",
    }
    with start_service(env) as svc:
        assert httpx.get(svc.url + "/api/v1/model").json()["prediction_log"] is False
        answer = httpx.post(svc.url + "/api/v1/predict", json={"instances": rows_of_one()})
        assert answer.status_code == 200
    assert "prediction log: off" in svc.logs()
    assert not Path(tmp_path / "home" / "artifacts" / "predictions").exists()


def rows_of_one() -> list[dict]:
    from model_runtime.contract import EXAMPLE_HOUSE

    return [dict(EXAMPLE_HOUSE)]
