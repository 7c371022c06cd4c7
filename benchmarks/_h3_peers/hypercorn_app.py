"""A tiny ASGI application for hypercorn: ``GET /bytes/<n>`` answers ``n`` bytes
(in 64 KiB ``http.response.body`` messages with ``more_body`` when larger),
anything else 404. Served by the benchmark as::

    hypercorn --workers 0 --worker-class trio --quic-bind 127.0.0.1:PORT \
        --bind 127.0.0.1:TCPPORT --certfile C --keyfile K hypercorn_app:app
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import answer


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    # Read the (empty) request body to its end, as an application must.
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    status, headers, pieces = answer(scope["method"].encode(), scope["raw_path"])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    # A body larger than 64 KiB goes in 64 KiB messages with more_body.
    for body, last in pieces:
        await send({"type": "http.response.body", "body": body, "more_body": not last})
