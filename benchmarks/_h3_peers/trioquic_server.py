"""trioquic's HTTP/3 server (``trioquic.h3.serve_http3``) answering
``GET /bytes/<n>`` with ``n`` bytes (anything else 404), with the QUIC
settings every server of the request benchmark uses. It exits after
``--lifetime`` seconds so that it never outlives the benchmark.

Run it::

    python benchmarks/_h3_peers/trioquic_server.py --port 4433 --cert C --key K
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import (
    CONGESTION_CONTROL,
    CONNECTION_WINDOW,
    CONTENT_TYPE,
    HOST,
    IDLE_TIMEOUT,
    MAX_STREAMS,
    MAX_UDP_PAYLOAD,
    STREAM_WINDOW,
    body_size,
    payload,
    pin_to,
)


async def main(args: argparse.Namespace) -> None:
    import trio

    import trioquic
    from trioquic.h3 import Http3Settings, Request, serve_http3

    settings = trioquic.QuicSettings(
        alpn_protocols=["h3"],
        certificate=args.cert,
        private_key=args.key,
        max_udp_payload_size=MAX_UDP_PAYLOAD,
        congestion_control=CONGESTION_CONTROL,
        connection_receive_window=CONNECTION_WINDOW,
        stream_receive_window=STREAM_WINDOW,
        idle_timeout=IDLE_TIMEOUT,
        # The kernel's default socket buffers, as the other servers get.
        udp_buffer_size=0,
    )
    # serve_http3 sets the QUIC limit on concurrent request streams from this.
    http3_settings = Http3Settings(max_concurrent_requests=MAX_STREAMS)
    bodies: dict[int, bytes] = {}

    async def handler(request: Request) -> None:
        await request.read()
        size = body_size(request.method.encode(), request.path.encode())
        if size is None:
            status, body = 404, b"not found\n"
        else:
            status = 200
            body = bodies.get(size) or bodies.setdefault(size, payload(size))
        await request.respond(
            status,
            headers=[
                (b"content-type", CONTENT_TYPE),
                (b"content-length", str(len(body)).encode()),
            ],
            body=body,
        )

    with trio.move_on_after(args.lifetime):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    serve_http3,
                    handler,
                    args.port,
                    host=HOST,
                    settings=settings,
                    http3_settings=http3_settings,
                )
            )
            print(f"serving on {HOST}:{args.port}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--lifetime", type=float, default=600.0)
    parser.add_argument("--cpu", type=int, default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    import trio

    arguments = parse_args()
    pin_to(arguments.cpu)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, arguments)
