"""Static files over HTTP/3: the built-in file server of ``trioquic serve
--root DIR`` against Starlette's ``StaticFiles`` through trioquic's ASGI
adapter, in the same run, loaded by ngtcp2's native client.

Both serve the same scratch directory (in ``/dev/shm`` when there is room)
holding ``small.bin`` (1024 bytes) and ``large.bin`` (10 MiB), from
``_asgi_peers/trioquic_server.py`` with the same QUIC settings (aioquic's
defaults, as in ``asgi_servers.py``):

* ``trioquic-files``: ``--mode files``, the request handler of ``trioquic
  serve --root`` (``trioquic.cli._serve.Http3ServerApp``) on
  ``trioquic.h3.serve_http3``;
* ``starlette-static``: ``--mode asgi --app static_app:app``, Starlette's
  ``StaticFiles(directory=...)`` on ``trioquic.asgi.serve_asgi`` (its
  ``FileResponse`` uses ``http.response.pathsend`` when the server offers it).

The load and the figures are those of ``asgi_servers.py`` (whose harness this
script uses): 4 ``gtlsclient`` connections at once; ``1 KB``: requests/s of
``/small.bin``; ``10 MiB``: MB/s (10**6 bytes) of ``/large.bin``; medians
over rounds with rotating order; failures counted, not hidden.

The issue asks to use ``StaticFiles`` if it is as fast as our own code. The
run ends with that decision: ``StaticFiles`` when it reaches at least
``AS_FAST`` (0.95) of the built-in server's median on both files, else the
built-in server.

Run it::

    python benchmarks/static_files.py              # 5 rounds
    python benchmarks/static_files.py --quick      # a smoke test
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from asgi_servers import (  # noqa: E402 - the sibling benchmark's harness
    Goal,
    Route,
    Suite,
    finish_args,
    run_main,
    suite_parser,
    trioquic_peer,
)

SMALL = ("small.bin", 1024)
LARGE = ("large.bin", 10 * 1024 * 1024)
#: StaticFiles is "as fast" from this fraction of the built-in server's figure.
AS_FAST = 0.95
BUILT_IN = "trioquic-files"
STARLETTE = "starlette-static"

DEFAULTS = {
    "servers": f"{BUILT_IN},{STARLETTE}",
    "requests": 4000,
    "downloads": 16,
    "quick_requests": 200,
    "quick_downloads": 4,
}


def write_docroot(directory: Path) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB
    for name, size in (SMALL, LARGE):
        with open(directory / name, "wb") as fp:
            whole, rest = divmod(size, len(block))
            for _ in range(whole):
                fp.write(block)
            fp.write(block[:rest])


def static_suite(root: Path) -> Suite:
    return Suite(
        title="static files over HTTP/3 (1 KB, 10 MiB)",
        routes=[
            Route("1 KB", f"/{SMALL[0]}", SMALL[1], SMALL[0], bulk=False),
            Route("10 MiB", f"/{LARGE[0]}", LARGE[1], LARGE[0], bulk=True),
        ],
        peers={
            BUILT_IN: trioquic_peer(BUILT_IN, "files"),
            STARLETTE: trioquic_peer(STARLETTE, "asgi", "--app", "static_app:app"),
        },
        reference=BUILT_IN,
        goals=[
            Goal(STARLETTE, BUILT_IN, AS_FAST, f"as fast (>= {AS_FAST}x)"),
        ],
        env={"BENCH_STATIC_ROOT": str(root)},
    )


def main(argv: list[str] | None = None) -> int:
    parser = suite_parser(__doc__.splitlines()[0], DEFAULTS)
    args = finish_args(parser.parse_args(argv))
    with tempfile.TemporaryDirectory(dir=args.scratch) as directory:
        root = Path(directory)
        write_docroot(root)
        summary = run_main(static_suite(root), args)
    if summary is None:
        return 1
    verdicts = [g["verdict"] for g in summary["goals"]]
    if "not measured" in verdicts:
        print("choice: none (a server was not measured on every file)")
    elif all(v == "met" for v in verdicts):
        print(f"choice: Starlette's StaticFiles (>= {AS_FAST}x of the built-in server)")
    else:
        print(
            f"choice: the built-in file server (StaticFiles below {AS_FAST}x of it "
            "on at least one file)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
