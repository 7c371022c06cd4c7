"""The Starlette application every ASGI server of ``benchmarks/asgi_servers.py``
serves (hypercorn and anycorn import it as ``app:app`` from this folder):

* ``GET /``: 1024 bytes of text (``PlainTextResponse``);
* ``GET /stream``: 1 MiB (``STREAM_SIZE``) as a ``StreamingResponse`` of
  16 pieces of 64 KiB (``CHUNK``), without ``content-length``.

The plain ``trioquic.h3`` baseline (``trioquic_server.py --mode h3``) answers
the same two routes with the same bodies, from the constants here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

SMALL_PATH = "/"
STREAM_PATH = "/stream"
SMALL_SIZE = 1024
CHUNK = 64 * 1024
STREAM_SIZE = 1024 * 1024
#: The 1 KB body: printable text.
SMALL_BODY = (b"0123456789abcdef" * (SMALL_SIZE // 16))[:SMALL_SIZE]
#: One piece of the streamed body.
CHUNK_BODY = bytes(range(256)) * (CHUNK // 256)


async def small(request: Request) -> Response:
    return PlainTextResponse(SMALL_BODY)


async def _pieces() -> AsyncIterator[bytes]:
    for _ in range(STREAM_SIZE // CHUNK):
        yield CHUNK_BODY


async def stream(request: Request) -> Response:
    return StreamingResponse(_pieces(), media_type="application/octet-stream")


app = Starlette(routes=[Route(SMALL_PATH, small), Route(STREAM_PATH, stream)])
