"""The in-flight gauge counts requests from their head to their answer, whatever the outcome;
a request's own log line and id cost no system call: lines are written in batches, records
don't ask for the process id, ids don't ask for random bytes."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest
from prometheus_client import REGISTRY

from service.observability import (
    ACCESS_LOGGER,
    BatchedHandler,
    RequestIds,
    configure_logging,
    in_flight_middleware,
)
from tests.helpers import wait_until


def gauge() -> float:
    value = REGISTRY.get_sample_value("http_requests_in_flight")
    assert value is not None
    return value


def test_a_request_counts_while_it_is_handled_and_not_after():
    seen: list[float] = []

    async def app(scope, receive, send):
        seen.append(gauge())

    before = gauge()
    asyncio.run(in_flight_middleware(app)({"type": "http", "path": "/api/v1/predict"}, None, None))
    assert seen == [before + 1]
    assert gauge() == before


def test_a_failed_request_leaves_the_count():
    async def app(scope, receive, send):
        raise RuntimeError("handler failed")

    before = gauge()
    with pytest.raises(RuntimeError):
        asyncio.run(in_flight_middleware(app)({"type": "http", "path": "/ready"}, None, None))
    assert gauge() == before


def test_scrapes_and_lifespan_events_are_not_requests():
    seen: list[float] = []

    async def app(scope, receive, send):
        seen.append(gauge())

    before = gauge()
    middleware = in_flight_middleware(app)
    asyncio.run(middleware({"type": "http", "path": "/metrics"}, None, None))
    asyncio.run(middleware({"type": "lifespan"}, None, None))
    assert seen == [before, before]


def test_access_lines_wait_and_go_out_together_other_lines_at_once_in_order():
    stream = io.StringIO()
    handler = BatchedHandler(stream, interval_s=3600)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    access = logging.getLogger(ACCESS_LOGGER)
    other = logging.getLogger("uvicorn.error")
    for logger in (access, other):
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    try:
        access.info("GET /a 200")
        access.info("GET /b 200")
        assert stream.getvalue() == ""  # waiting, no write
        other.info("Shutting down")
        assert stream.getvalue().splitlines() == [
            "service.access GET /a 200",
            "service.access GET /b 200",
            "uvicorn.error Shutting down",
        ]
        access.error("POST /c 500")  # an error's access line is not held back
        assert stream.getvalue().splitlines()[-1] == "service.access POST /c 500"
        access.info("GET /d 200")
        handler.flush()
        assert stream.getvalue().splitlines()[-1] == "service.access GET /d 200"
    finally:
        for logger in (access, other):
            logger.removeHandler(handler)
            logger.propagate = True
        handler.close()


def test_waiting_access_lines_are_written_within_the_interval():
    stream = io.StringIO()
    handler = BatchedHandler(stream, interval_s=0.01)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = {
        "name": ACCESS_LOGGER,
        "msg": "GET / 200",
        "levelno": logging.INFO,
        "levelname": "INFO",
    }
    handler.handle(logging.makeLogRecord(access))
    try:
        wait_until(lambda: stream.getvalue() == "GET / 200\n", "the access line written")
    finally:
        handler.close()


def test_request_ids_are_unique_shaped_like_uuids_and_drawn_once_per_process():
    ids = RequestIds()
    first, second = ids(), ids()
    assert first != second
    assert len(first) == 32
    int(first, 16)
    assert first[:16] == second[:16] == ids.prefix
    assert RequestIds().prefix != ids.prefix


def test_configured_records_do_not_ask_for_the_process_id():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        handler = configure_logging("INFO", io.StringIO())
        assert logging.logProcesses is False
        assert logging.makeLogRecord({}).process is None
        handler.close()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.logProcesses = True
        logging.logMultiprocessing = True
