"""The in-flight gauge counts requests from their head to their answer, whatever the outcome."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from service.observability import in_flight_middleware


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
