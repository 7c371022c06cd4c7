"""Memory per idle QUIC connection, on trioquic's in-memory network.

Opens ``--connections`` raw QUIC connections (``serve_quic`` /
``open_quic_connection``, default settings, handshake complete, one
bidirectional stream used once, then idle) between a server and clients in
this one process, under a mock clock (no real time passes, no sockets), and
reports how much the Python heap (``tracemalloc``) and the process RSS grew,
divided by the number of connections.

Both ends of every connection live in this process, so the figure is per
**pair** (client + server); a server's share is about half of it (both sides
hold the same aioquic state machine, TLS state, stream and trioquic worker
with its tasks and channel).

Run::

    python benchmarks/idle_memory.py                 # 1,000 connections
    python benchmarks/idle_memory.py --connections 200 --top 10

It takes about half a minute for 1,000 connections (two TLS handshakes each,
both sides in one process).
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tracemalloc
from pathlib import Path

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trioquic
from trioquic.testing import (
    MemoryNetwork,
    client_settings,
    open_memory_server,
    server_settings,
)


def rss_kib() -> int:
    """Current RSS in KiB (Linux /proc), or the peak when unavailable."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def main(count: int, top: int) -> None:
    network = MemoryNetwork()

    async def echo_once(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        assert isinstance(stream, trioquic.QuicStream)
        await stream.send_all(await stream.receive_some())
        await stream.send_eof()
        await connection.wait_closed()

    settings = server_settings(
        max_connections=count + 10, max_pending_handshakes=count + 10
    )
    opened = 0
    all_open = trio.Event()
    release = trio.Event()

    async def client(server: object, index: int) -> None:
        nonlocal opened
        async with server.connect(host=f"10.1.{index // 250}.{index % 250}") as conn:  # type: ignore[attr-defined]
            stream = await conn.open_stream()
            await stream.send_all(b"x")
            await stream.send_eof()
            await stream.receive_some()
            opened += 1
            if opened == count:
                all_open.set()
            await release.wait()

    async with open_memory_server(
        echo_once,
        network=network,
        server_settings=settings,
        client_settings=client_settings(),
    ) as server:
        # Warm up: one connection, so one-time costs (imports, certificate
        # loading, caches) are not counted.
        async with server.connect() as warm:
            await warm.open_stream()
        await trio.sleep(1)
        gc.collect()
        heap_before = tracemalloc.get_traced_memory()[0]
        snapshot_before = tracemalloc.take_snapshot() if top else None
        rss_before = rss_kib()
        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(client, server, index)
            await all_open.wait()
            await trio.sleep(1)  # let every ACK and NEW_CONNECTION_ID settle
            gc.collect()
            heap_after = tracemalloc.get_traced_memory()[0]
            snapshot_after = tracemalloc.take_snapshot() if top else None
            rss_after = rss_kib()
            assert server.server.connection_count == count
            release.set()
    heap = (heap_after - heap_before) / count
    rss = (rss_after - rss_before) * 1024 / count
    print(f"idle connections:            {count}")
    print(f"tracemalloc heap per pair:   {heap / 1024:8.1f} KiB")
    print(f"  about per side:            {heap / 2048:8.1f} KiB")
    print(f"RSS growth per pair:         {rss / 1024:8.1f} KiB")
    if snapshot_before is not None and snapshot_after is not None:
        print(f"where the heap went (per pair, top {top} source files):")
        for stat in snapshot_after.compare_to(snapshot_before, "filename")[:top]:
            name = "/".join(Path(str(stat.traceback[0].filename)).parts[-3:])
            print(f"  {stat.size_diff / count / 1024:7.1f} KiB  {name}")
    print(
        f"python {sys.version.split()[0]}, trioquic {trioquic.__version__}, "
        f"trio {trio.__version__}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument(
        "--top", type=int, default=0, help="show the N source files that allocated most"
    )
    args = parser.parse_args()
    tracemalloc.start()
    trio.run(
        main,
        args.connections,
        args.top,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )
