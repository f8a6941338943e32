"""A stand-in revision for the splitter's tests: a tiny ASGI app (``uvicorn
tests.local_platform.standin:app``) that answers every request with its name (``REVISION_NAME``),
the path it saw, the size of the body it received and the request's ``X-Request-ID`` (echoed as
a header too). ``/hold?until=PATH`` answers only once PATH exists, after creating
``PATH.held``: a request the test keeps in flight while it shifts the release."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

NAME = os.environ.get("REVISION_NAME", "standin")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["path"] == "/hold":
        until = Path(parse_qs(scope["query_string"].decode())["until"][0])
        Path(f"{until}.held").touch()
        while not until.exists():  # the stand-in waits on the test's event, the test never sleeps
            await asyncio.sleep(0.01)
    request_id = dict(scope["headers"]).get(b"x-request-id", b"")
    body = json.dumps(
        {
            "revision": NAME,
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "received": size,
            "request_id": request_id.decode(),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"x-request-id", request_id)],
        }
    )
    await send({"type": "http.response.body", "body": body})
