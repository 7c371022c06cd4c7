"""trioquic's HTTP/3 servers for the ASGI, httpx and static-file benchmarks,
with the QUIC settings of every HTTP/3 benchmark peer (``_h3_peers/_shared.py``:
aioquic's defaults, which hypercorn and anycorn cannot change). ``--mode``:

* ``h3``: a plain ``trioquic.h3`` handler answering the routes of ``app.py``
  (``/``: 1 KB with ``request.respond``; ``/stream``: 1 MiB streamed in
  64 KiB pieces with ``request.stream_response``), anything else 404: the
  baseline the ASGI adapter's overhead is measured against;
* ``asgi``: ``trioquic.asgi.serve_asgi`` running ``--app MODULE:ATTR``
  (imported from this folder);
* ``files``: the built-in file server of ``trioquic serve --root DIR``
  (``trioquic.cli._serve.Http3ServerApp``) over ``--root``.

It exits after ``--lifetime`` seconds so that it never outlives the benchmark.
Run it::

    python benchmarks/_asgi_peers/trioquic_server.py --mode asgi --app app:app \
        --port 4433 --cert C --key K
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "_h3_peers"))

from _shared import (  # noqa: E402 - from the folder above
    HOST,
    MAX_STREAMS,
    pin_to,
    server_parser,
    trioquic_settings,
)
from app import CHUNK_BODY, SMALL_BODY, SMALL_PATH, STREAM_PATH, STREAM_SIZE  # noqa: E402

MODES = ("h3", "asgi", "files")


def h3_handler() -> Any:
    """The plain ``trioquic.h3`` handler of the two routes."""
    from trioquic.h3 import Request

    small_headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(SMALL_BODY)).encode()),
    ]
    stream_headers = [(b"content-type", b"application/octet-stream")]

    async def handler(request: Request) -> None:
        await request.read()
        if request.method != "GET":
            await request.respond(405)
        elif request.path == SMALL_PATH:
            await request.respond(200, headers=small_headers, body=SMALL_BODY)
        elif request.path == STREAM_PATH:
            async with request.stream_response(200, stream_headers) as writer:
                for _ in range(STREAM_SIZE // len(CHUNK_BODY)):
                    await writer.send(CHUNK_BODY)
        else:
            await request.respond(404)

    return handler


def load_app(spec: str) -> Any:
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute or "app")


async def main(args: argparse.Namespace) -> None:
    import trio

    from trioquic.h3 import Http3Settings, serve_http3

    settings = trioquic_settings(
        args.cc,
        library_defaults=args.library_defaults,
        certificate=args.cert,
        private_key=args.key,
    )
    # The QUIC limit on concurrent request streams follows from this.
    http3_settings = Http3Settings(max_concurrent_requests=MAX_STREAMS)
    options: dict[str, Any] = {
        "host": HOST,
        "settings": settings,
        "http3_settings": http3_settings,
    }
    if args.mode == "asgi":
        from trioquic.asgi import serve_asgi

        serve: Any = partial(serve_asgi, load_app(args.app), args.port, **options)
    else:
        if args.mode == "h3":
            handler = h3_handler()
        else:
            from trioquic.cli._serve import Http3ServerApp

            handler = Http3ServerApp(port=args.port, root=args.root)
        serve = partial(serve_http3, handler, args.port, **options)
    with trio.move_on_after(args.lifetime):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            print(f"serving ({args.mode}) on {HOST}:{args.port}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = server_parser(__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES, default="h3")
    parser.add_argument("--app", default="app:app", help="asgi: MODULE:ATTR")
    parser.add_argument(
        "--root",
        default=os.environ.get("BENCH_STATIC_ROOT", "."),
        help="files: the directory served (default: $BENCH_STATIC_ROOT)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    import trio

    arguments = parse_args()
    pin_to(arguments.cpu)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, arguments)
