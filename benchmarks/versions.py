"""trioquic against another version of itself: CPU per workload, in memory.

What it shows: whether a change to trioquic (a refactor, a new layer) costs
CPU, measured where nothing else moves. Each workload runs on
``trioquic.testing``'s perfect in-memory network under
``trio.testing.MockClock(autojump_threshold=0)``, so the figure is the
process CPU of trioquic and aioquic alone: no sockets, no kernel, no
scheduler noise from a peer process. The two versions run alternately, one
fresh interpreter per measurement, and the ratios are of medians (and of
minima, the least noisy estimate of CPU cost) from the same run.

Workloads: ``bulk`` (16 MiB over one raw QUIC stream), ``requests`` (2000
HTTP/3 GETs of 1 KiB over 4 connections), ``handshakes`` (200 raw QUIC
connections opened and closed).

Run it with the Python of each version (two checkouts, each with its own
virtual environment)::

    python benchmarks/versions.py --baseline /path/to/old/.venv/bin/python
    python benchmarks/versions.py --baseline OLD_PY --candidate NEW_PY --runs 10

Give the same Python to both (an A/A run) to see the machine's noise: on a
small virtual machine it is about 10 %, so only a difference well beyond that
means anything. ``--measure WORKLOAD`` is what each child process runs (it
prints its CPU seconds).
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import statistics
import subprocess
import sys
import time
from typing import Any

SERVER = ("10.0.0.1", 4433)
WORKLOADS = ("bulk", "requests", "handshakes")


def _measure(workload: str) -> float:
    import trio
    import trio.testing

    import trioquic
    import trioquic.h3 as h3
    from trioquic.testing import MemoryNetwork, client_settings, server_settings

    async def start_server(
        nursery: trio.Nursery,
        serve: Any,
        handler: Any,
        network: MemoryNetwork,
        **settings: Any,
    ) -> None:
        """``serve(handler, ...)`` on SERVER of ``network``, started in
        ``nursery`` (cancel it to stop)."""
        await nursery.start(
            functools.partial(
                serve,
                handler,
                SERVER[1],
                settings=server_settings(**settings),
                sockets=[network.socket(*SERVER)],
            )
        )

    async def sink(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        total = 0
        while data := await stream.receive_some():
            total += len(data)
        await stream.send_all(str(total).encode())  # type: ignore[union-attr]
        await stream.send_eof()  # type: ignore[union-attr]

    async def bulk(size: int) -> None:
        network = MemoryNetwork(seed=1)
        async with trio.open_nursery() as nursery:
            await start_server(nursery, trioquic.serve_quic, sink, network)
            async with trioquic.open_quic_connection(
                *SERVER, settings=client_settings(), socket=network.socket("10.0.0.2")
            ) as connection:
                stream = await connection.open_stream()
                chunk = b"x" * 65536
                for _ in range(size // len(chunk)):
                    await stream.send_all(chunk)
                await stream.send_eof()
                if int(await stream.receive_some()) != size:
                    raise RuntimeError("bytes lost")
            nursery.cancel_scope.cancel()

    async def respond(request: h3.Request) -> None:
        await request.respond(200, body=b"y" * 1024)

    async def requests(count: int, connections: int) -> None:
        network = MemoryNetwork(seed=2)
        alpn = {"alpn_protocols": ["h3"]}
        async with trio.open_nursery() as nursery:
            await start_server(nursery, h3.serve_http3, respond, network, **alpn)
            for index in range(connections):
                async with h3.open_http3_client(
                    *SERVER,
                    settings=client_settings(**alpn),
                    socket=network.socket(f"10.0.1.{index + 1}"),
                ) as client:

                    async def one(client: h3.Http3Client = client) -> None:
                        response = await client.request("GET", "/")
                        await response.read()

                    async with trio.open_nursery() as requesters:
                        for _ in range(count // connections):
                            requesters.start_soon(one)
            nursery.cancel_scope.cancel()

    async def handshakes(count: int) -> None:
        network = MemoryNetwork(seed=3)

        async def nothing(connection: trioquic.QuicConnection) -> None:
            pass

        async with trio.open_nursery() as nursery:
            await start_server(nursery, trioquic.serve_quic, nothing, network)
            for _ in range(count):
                async with trioquic.open_quic_connection(
                    *SERVER, settings=client_settings(), socket=network.socket()
                ):
                    pass
            nursery.cancel_scope.cancel()

    runs = {
        "bulk": functools.partial(bulk, 16 * 1024 * 1024),
        "requests": functools.partial(requests, 2000, 4),
        "handshakes": functools.partial(handshakes, 200),
    }
    server_settings()  # the development certificate is made outside the timing
    start = time.process_time()
    trio.run(runs[workload], clock=trio.testing.MockClock(autojump_threshold=0))
    return time.process_time() - start


def _child(python: str, workload: str) -> float:
    result = subprocess.run(
        [python, str(pathlib.Path(__file__).resolve()), "--measure", workload],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return float(result.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="the Python of the version to compare to")
    parser.add_argument("--candidate", default=sys.executable)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--measure", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(f"{_measure(args.measure):.4f}")
        return
    if not args.baseline:
        parser.error("--baseline PYTHON is required (the other version's Python)")
    workloads = [w for w in args.workloads.split(",") if w]
    samples: dict[str, dict[str, list[float]]] = {
        w: {"baseline": [], "candidate": []} for w in workloads
    }
    for run in range(args.runs):
        for workload in workloads:
            # Alternate which version goes first, so drift hits both.
            order = ["baseline", "candidate"]
            if run % 2:
                order.reverse()
            for side in order:
                python = args.baseline if side == "baseline" else args.candidate
                samples[workload][side].append(_child(python, workload))
        print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
    print(f"trioquic CPU seconds per workload, in memory; {args.runs} runs each")
    print(
        f"{'workload':12} {'baseline med':>12} {'candidate med':>13} "
        f"{'ratio med':>9} {'baseline min':>12} {'candidate min':>13} {'ratio min':>9}"
    )
    for workload, sides in samples.items():
        base, cand = sides["baseline"], sides["candidate"]
        print(
            f"{workload:12} {statistics.median(base):12.3f} "
            f"{statistics.median(cand):13.3f} "
            f"{statistics.median(cand) / statistics.median(base):9.3f} "
            f"{min(base):12.3f} {min(cand):13.3f} {min(cand) / min(base):9.3f}"
        )
    print("ratio: candidate / baseline CPU (lower is better)")


if __name__ == "__main__":
    main()
