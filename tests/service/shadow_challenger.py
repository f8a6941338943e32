"""A stand-in challenger for the shadow mirror's tests and bench: a tiny ASGI app
(``uvicorn tests.service.shadow_challenger:app``) that prices every house at ``PRICE`` (default
100000) after ``DELAY_MS`` (default 0), as ``/api/v1/predict`` answers, and counts the houses it
received (``GET /received``). ``/ready`` answers 200."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

DELAY_S = float(os.environ.get("DELAY_MS", "0")) / 1000
PRICE = float(os.environ.get("PRICE", "100000"))
received = 0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global received
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    status, body = 200, b'{"status": "ready"}'
    if scope["path"] == "/api/v1/predict":
        n = len(json.loads(b"".join(chunks))["instances"])
        received += n
        if DELAY_S:
            await asyncio.sleep(DELAY_S)
        body = json.dumps(
            {
                "predictions": [{"predicted_price": PRICE}] * n,
                "model": {"name": "challenger", "version": "0", "alias": "", "run_id": ""},
            }
        ).encode()
    elif scope["path"] == "/received":
        body = json.dumps({"received": received}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
