"""The client side of ``benchmarks/httpx_client.py``: one HTTP client, one
connection, ``--concurrency`` GETs of ``--path`` in flight, for
``--warmup`` + ``--duration`` seconds. ``--impl``:

* ``httpx``: ``httpx.AsyncClient(transport=trioquic.httpx.HTTP3Transport(
  verify=CA))`` under trio; every response must have ``http_version ==
  "HTTP/3"``;
* ``trioquic``: ``trioquic.h3.open_http3_client`` and ``client.request``
  under trio, with trioquic's default QUIC settings (as the transport);
* ``niquests``: ``niquests.AsyncSession(multiplexed=True, disable_http1=True,
  disable_http2=True)`` under asyncio (niquests speaks HTTP/3 through qh3;
  HTTP/1.1 and HTTP/2 are turned off so that it goes to QUIC at once, without
  an Alt-Svc round); every response must report ``http_version == 30`` and
  ``conn_info.http_version`` HTTP/3, else the run fails.

Each of ``--concurrency`` workers sends a GET, reads the whole body, checks
status 200 and ``--expect-size`` bytes, and sends the next; the requests
that complete inside the ``--duration`` window after the warm-up are
counted. A wrong answer is counted as ``bad``; any exception fails the run.
Prints one line, ``CLIENT-LOAD {json}``, and exits. Run it::

    python benchmarks/_asgi_peers/client_load.py --impl httpx --port 4433 --ca CA
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "_h3_peers"))

from _shared import HOST, pin_to
from load_client import cpu_seconds

TAG = "CLIENT-LOAD "
IMPLEMENTATIONS = ("httpx", "trioquic", "niquests")

#: One GET: (status, body size, protocol it went over).
Get = Callable[[], Awaitable[tuple[int, int, str]]]


@dataclass
class Tally:
    window_start: float
    window_end: float
    completed: int = 0
    bad: int = 0
    protocols: frozenset[str] = frozenset()


async def worker(get: Get, tally: Tally, expect_size: int) -> None:
    """GETs one after another until the window has ended."""
    while time.perf_counter() < tally.window_end:
        started = time.perf_counter()
        status, size, protocol = await get()
        finished = time.perf_counter()
        tally.protocols |= {protocol}
        if status != 200 or size != expect_size:
            tally.bad += 1
        elif tally.window_start <= started and finished <= tally.window_end:
            tally.completed += 1


def report(args: argparse.Namespace, tally: Tally, cpu: float) -> None:
    print(
        TAG
        + json.dumps(
            {
                "impl": args.impl,
                "completed": tally.completed,
                "requests_per_s": tally.completed / args.duration,
                "bad": tally.bad,
                "protocols": sorted(tally.protocols),
                "client_cpu_share": cpu / (args.warmup + args.duration),
            }
        ),
        flush=True,
    )


async def run_trio(args: argparse.Namespace) -> None:
    import trio

    async with _trio_client(args) as get:
        # The first request connects; the clock starts after it.
        await get()
        start = time.perf_counter()
        tally = Tally(start + args.warmup, start + args.warmup + args.duration)
        cpu = cpu_seconds()
        async with trio.open_nursery() as nursery:
            for _ in range(args.concurrency):
                nursery.start_soon(worker, get, tally, args.expect_size)
        report(args, tally, cpu_seconds() - cpu)


def _trio_client(args: argparse.Namespace) -> Any:
    """An async context manager giving a :data:`Get` over one connection."""
    import contextlib

    @contextlib.asynccontextmanager
    async def httpx_get() -> Any:
        import httpx

        from trioquic.httpx import HTTP3Transport

        url = f"https://{HOST}:{args.port}{args.path}"
        transport = HTTP3Transport(verify=args.ca)
        async with httpx.AsyncClient(transport=transport) as client:

            async def get() -> tuple[int, int, str]:
                response = await client.get(url)
                return (
                    response.status_code,
                    len(response.content),
                    response.http_version,
                )

            yield get

    @contextlib.asynccontextmanager
    async def trioquic_get() -> Any:
        from trioquic import QuicSettings
        from trioquic.h3 import open_http3_client

        settings = QuicSettings(alpn_protocols=["h3"], ca_certs=args.ca)
        async with open_http3_client(HOST, args.port, settings=settings) as client:

            async def get() -> tuple[int, int, str]:
                response = await client.request("GET", args.path)
                return response.status, len(await response.read()), "HTTP/3"

            yield get

    return httpx_get() if args.impl == "httpx" else trioquic_get()


async def run_niquests(args: argparse.Namespace) -> None:
    import asyncio

    import niquests

    url = f"https://{HOST}:{args.port}{args.path}"
    async with niquests.AsyncSession(
        multiplexed=True,
        disable_http1=True,
        disable_http2=True,
        pool_connections=1,
        pool_maxsize=1,
    ) as session:

        async def get() -> tuple[int, int, str]:
            # The session's own ``verify`` is not applied to its QUIC
            # connections (niquests 3.21): pass it with each request.
            response = await session.get(url, verify=args.ca)
            await session.gather(response)
            info = response.conn_info
            http3 = response.http_version == 30 and (
                info is not None and str(info.http_version).endswith("h3")
            )
            protocol = "HTTP/3" if http3 else f"not HTTP/3 ({response.http_version})"
            return response.status_code, len(response.content or b""), protocol

        await get()
        start = time.perf_counter()
        tally = Tally(start + args.warmup, start + args.warmup + args.duration)
        cpu = cpu_seconds()
        await asyncio.gather(
            *(worker(get, tally, args.expect_size) for _ in range(args.concurrency))
        )
        report(args, tally, cpu_seconds() - cpu)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=IMPLEMENTATIONS, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--ca", required=True, help="CA bundle the server's chain ends in"
    )
    parser.add_argument("--path", default="/")
    parser.add_argument("--expect-size", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--concurrency >= 1, --duration > 0, --warmup >= 0")
    return args


def main() -> int:
    args = parse_args()
    pin_to(args.cpu)
    limit = args.warmup + args.duration + 30
    if args.impl == "niquests":
        import asyncio

        async def bounded() -> None:
            async with asyncio.timeout(limit):
                await run_niquests(args)

        asyncio.run(bounded())
    else:
        import trio

        async def bounded_trio() -> None:
            with trio.fail_after(limit):
                await run_trio(args)

        trio.run(bounded_trio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
