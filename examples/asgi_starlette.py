"""A Starlette application served over HTTP/3 by ``trioquic.asgi``.

What it shows:

* any ASGI 3 application runs on trioquic: ``trioquic.asgi.serve_asgi(app,
  port, settings=...)`` started with ``nursery.start`` runs the app's
  lifespan startup, then serves it over HTTP/3, and reports the server
  (its port) once it listens;
* each request is one application call in its own task: requests of one
  connection run concurrently; response bodies (``StreamingResponse``)
  are sent with backpressure, a slow client slows the generator down;
* graceful shutdown: Ctrl-C cancels the server's scope, which sends
  GOAWAY, lets requests in flight finish, closes every connection, then
  runs the lifespan shutdown.

Routes (the shape the ASGI benchmark uses): ``GET /`` (1 KB of text) and
``GET /stream`` (1 MiB, streamed in 16 chunks of 64 KiB).

How to run it (from the repository root, with trioquic and starlette
installed)::

    python examples/asgi_starlette.py               # listens on 127.0.0.1:4433
    python examples/asgi_starlette.py --port 0      # any free port

It prints the port, the certificate file, and a client command to run in
another terminal, for example::

    trioquic get --ca-certs /tmp/trioquic-XXXX/cert.pem https://127.0.0.1:4433/

The same application runs from the command line with
``trioquic serve examples.asgi_starlette:app``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import signal
from collections.abc import AsyncIterator

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

import trioquic
from trioquic.asgi import serve_asgi

KIB = 1024
TEXT = "x" * (KIB - 1) + "\n"  # 1 KB
CHUNK = b"y" * (64 * KIB)


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse(TEXT)


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(16):  # 1 MiB
            yield CHUNK

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={"content-length": str(16 * len(CHUNK))},
    )


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    print("lifespan: startup", flush=True)
    yield
    print("lifespan: shutdown", flush=True)


app = Starlette(routes=[Route("/", home), Route("/stream", stream)], lifespan=lifespan)


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
            print(
                f"run: trioquic get --ca-certs {cert.certificate_path} "
                f"https://{host}:{server.port}/"
            )
            print("press Ctrl-C to stop", flush=True)
            async for _ in signals:
                break
            print(
                "stopping: GOAWAY, requests finish, then lifespan shutdown", flush=True
            )
            nursery.cancel_scope.cancel()
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a Starlette app over HTTP/3")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    args = parser.parse_args()
    trio.run(main, args.host, args.port)
