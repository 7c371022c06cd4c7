"""trioquic's HTTP/3 server (``trioquic.h3.serve_http3``) answering
``GET /bytes/<n>`` with ``n`` bytes (anything else 404), with the QUIC
settings every server of the HTTP/3 benchmarks uses, on trioquic's aioquic
engine or (``--engine qh3``) on its qh3 engine. A body of up to 64 KiB
is sent with ``request.respond``, a larger one streamed in 64 KiB pieces with
``request.stream_response`` (which waits while the stream's send buffer is
full). It exits after
``--lifetime`` seconds so that it never outlives the benchmark.

``--profile PATH`` runs it under cProfile and writes the statistics to
``PATH`` when it exits, at the end of its lifetime or on SIGTERM (which then
ends it cleanly): where the server's time went, for ``python -m pstats``.

Run it::

    python benchmarks/_h3_peers/trioquic_server.py --port 4433 --cert C --key K
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import HOST, MAX_STREAMS, answer, pin_to, server_parser, trioquic_settings


async def main(args: argparse.Namespace) -> None:
    import trio

    from trioquic.h3 import Http3Settings, Request, serve_http3

    offload = {"udp_offload": False} if args.no_udp_offload else {}
    settings = trioquic_settings(
        args.cc,
        library_defaults=args.library_defaults,
        engine=args.engine,
        certificate=args.cert,
        private_key=args.key,
        **offload,
    )
    # serve_http3 sets the QUIC limit on concurrent request streams from this.
    http3_settings = Http3Settings(max_concurrent_requests=MAX_STREAMS)

    async def handler(request: Request) -> None:
        await request.read()
        status, headers, pieces = answer(request.method.encode(), request.path.encode())
        body, last = next(pieces)
        if last:
            await request.respond(status, headers=headers, body=body)
            return
        # A large body: streamed, waiting while the send buffer is full.
        async with request.stream_response(status, headers) as writer:
            await writer.send(body)
            for body, _ in pieces:
                await writer.send(body)

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
            if args.profile:
                # SIGTERM ends the server cleanly, so that the profile is
                # written (the benchmarks stop their servers with it).
                with trio.open_signal_receiver(signal.SIGTERM) as signals:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        break


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = server_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--no-udp-offload",
        action="store_true",
        help="one system call per datagram (QuicSettings.udp_offload=False)",
    )
    parser.add_argument(
        "--profile", metavar="PATH", help="run under cProfile, statistics to PATH"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    import trio

    arguments = parse_args()
    pin_to(arguments.cpu)
    if arguments.profile:
        import cProfile

        profiler = cProfile.Profile()
        with contextlib.suppress(KeyboardInterrupt):
            profiler.runcall(trio.run, main, arguments)
        profiler.dump_stats(arguments.profile)
    else:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(main, arguments)
