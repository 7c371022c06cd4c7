"""A FastAPI application served over HTTP/3 by ``trioquic.asgi``.

What it shows: a FastAPI app (JSON request bodies validated by pydantic,
response models, path and query parameters) needs nothing of its own to
run on trioquic; ``serve_asgi`` serves it like any ASGI 3 application.

Routes: ``GET /`` (1 KB of text), ``GET /stream`` (1 MiB, streamed),
``POST /items`` (JSON ``{"name": ..., "price": ..., "quantity": ...}``,
answers its total), ``GET /items/{id}?detail=true``.

How to run it (from the repository root, with trioquic and fastapi
installed)::

    python examples/asgi_fastapi.py                 # listens on 127.0.0.1:4433
    python examples/asgi_fastapi.py --port 0        # any free port

or from the command line: ``trioquic serve examples.asgi_fastapi:app``.
Then, in another terminal (the certificate file is printed at start)::

    trioquic get --ca-certs /tmp/trioquic-XXXX/cert.pem https://127.0.0.1:4433/items/7
"""

from __future__ import annotations

import argparse
import functools
import signal
from collections.abc import AsyncIterator

import trio
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

import trioquic
from trioquic.asgi import serve_asgi

KIB = 1024
CHUNK = b"y" * (64 * KIB)

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float
    quantity: int = 1


class Total(BaseModel):
    name: str
    total: float


@app.get("/", response_class=PlainTextResponse)
async def home() -> str:
    return "x" * (KIB - 1) + "\n"


@app.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(16):
            yield CHUNK

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@app.post("/items", response_model=Total)
async def create_item(item: Item) -> Total:
    return Total(name=item.name, total=item.price * item.quantity)


@app.get("/items/{item_id}")
async def read_item(item_id: int, detail: bool = False) -> dict[str, object]:
    return {"id": item_id, "detail": detail}


async def main(host: str, port: int) -> None:
    cert = trioquic.generate_self_signed_certificate()
    settings = trioquic.QuicSettings(
        certificate=str(cert.certificate_path),
        private_key=str(cert.private_key_path),
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(serve_asgi, app, port, host=host, settings=settings)
            )
            print(f"listening on {host}:{server.port}")
            print(f"certificate: {cert.certificate_path}")
            print("press Ctrl-C to stop", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a FastAPI app over HTTP/3")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    args = parser.parse_args()
    trio.run(main, args.host, args.port)
