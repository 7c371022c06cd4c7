"""An HTTP/3 server written directly on ``trioquic.h3``.

What it shows:

* ``trioquic.h3.serve_http3(handler, port, ...)`` started with
  ``nursery.start``, which reports the server (its port) once it listens;
  the handler runs once per request, in its connection's nursery;
* a ``Request``: ``method``, ``path``, ``headers``; the body with
  ``await request.read()`` or ``async for chunk in request``;
* answering with ``await request.respond(status, headers=..., body=...)``,
  or streaming with ``async with request.stream_response(status, headers)
  as writer`` and ``await writer.send(chunk)`` (which waits while the
  client is slow: backpressure);
* graceful shutdown: Ctrl-C cancels the server's scope, which sends GOAWAY
  and then CONNECTION_CLOSE to every client before the program exits.

Routes: ``GET /`` (a greeting), ``GET /count/N`` (N lines, streamed),
``POST /upper`` (the body in upper case, streamed back chunk by chunk).

How to run it (from the repository root, with trioquic installed)::

    python examples/http3_server.py                 # listens on 127.0.0.1:4433
    python examples/http3_server.py --port 0        # any free port

It prints the port, the certificate file, and a client command to run in
another terminal, for example::

    python examples/http3_client.py --ca-certs /tmp/trioquic-XXXX/cert.pem \\
        https://127.0.0.1:4433/ https://127.0.0.1:4433/count/3

``trioquic get`` works as a client too.
"""

from __future__ import annotations

import argparse
import functools
import signal

import trio

import trioquic
from trioquic.h3 import Request, serve_http3

TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


async def handle(request: Request) -> None:
    """Called by serve_http3 for each request."""
    method, path = request.method, request.path  # str; headers are bytes
    print(f"{method} {path}", flush=True)
    if method == "GET" and path == "/":
        await request.respond(200, headers=TEXT, body=b"hello from trioquic\n")
    elif method == "GET" and path.startswith("/count/") and path[7:].isdigit():
        count = min(int(path[7:]), 100_000)
        async with request.stream_response(200, TEXT) as writer:
            for number in range(1, count + 1):
                await writer.send(f"{number}\n".encode())
    elif method == "POST" and path == "/upper":
        async with request.stream_response(200, TEXT) as writer:
            async for chunk in request:
                await writer.send(chunk.upper())
    else:
        await request.respond(404, headers=TEXT, body=b"not found\n")


async def main(host: str, port: int) -> None:
    cert = trioquic.generate_self_signed_certificate()
    settings = trioquic.QuicSettings(
        alpn_protocols=["h3"],
        certificate=str(cert.certificate_path),
        private_key=str(cert.private_key_path),
    )
    # Ctrl-C (SIGINT) and SIGTERM are turned into a graceful stop.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    serve_http3, handle, port, host=host, settings=settings
                )
            )
            base = f"https://{host}:{server.port}"
            print(f"listening on {host}:{server.port}")
            print(f"certificate: {cert.certificate_path}")
            print(
                "run: python examples/http3_client.py "
                f"--ca-certs {cert.certificate_path} {base}/ {base}/count/3"
            )
            print("press Ctrl-C to stop", flush=True)
            async for _ in signals:
                break
            print("stopping: GOAWAY, then closing every connection", flush=True)
            nursery.cancel_scope.cancel()
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="trioquic HTTP/3 server example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    args = parser.parse_args()
    trio.run(main, args.host, args.port)
