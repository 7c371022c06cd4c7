"""Memory per idle connection, two ways.

``--mode http3`` (the default): memory per idle HTTP/3 connection on the
server side, for trioquic's server on each engine (``trioquic``: aioquic,
its default; ``trioquic+qh3``), aioquic's and qh3's asyncio layers and
hypercorn's trio worker (the server processes of ``h3_requests.py``, started
by its functions; loopback only). For each server:

1. start it and fetch one response (its warm-up), then let a client process
   (``_h3_peers/swarm_client.py``: aioquic's sans-io client, or qh3's when a
   server of the run is on qh3, a UDP socket per connection, one process)
   open, use and close ``--warmup`` more;
2. read the server's RSS (``/proc/PID/status`` ``VmRSS``, with any child
   processes) once they have drained: *before*;
3. open ``--connections`` connections (default 1,000), at most ``--batch``
   handshaking at once (well inside trioquic's ``max_pending_handshakes`` of
   128, so no server turns any away), each doing one ``GET /bytes/1024``
   (status and size checked), then left open and idle; every one must be
   answered, and they are counted, before anything is read;
4. after ``--settle`` seconds, read the RSS again: *after*; then check that
   the server still holds every connection open (none closed by it), and
   close them all.

The figure is (after - before) / connections: what one idle HTTP/3
connection costs the server, its stack's state and its application's (an
HTTP/3 session with its control and QPACK streams, the finished request's
leftovers) included. The whole run takes well under the servers' 60 s idle
timeout (and the client PINGs every connection every 15 s anyway). Servers
are restarted for every repeat and their order rotates; medians over
``--repeat``. Congestion control and certificate as in ``handshakes.py``
(CUBIC for every peer that can choose when a qh3 server runs). The run ends
with the same-run ratios and the qh3 engine's memory goal (``_goals.py``:
trioquic+qh3's figure at most trioquic's; beside qh3-asyncio's it is
reported).

``--mode memory-network``: raw QUIC connections (``serve_quic`` /
``open_quic_connection``, default settings, handshake complete, one
bidirectional stream used once, then idle) between a server and clients in
this one process on trioquic's in-memory network, under a mock clock (no
real time passes, no sockets); it reports how much the Python heap
(``tracemalloc``) and the process RSS grew, divided by the number of
connections. Both ends of every connection live in this process, so that
figure is per **pair** (client + server); a server's share is about half of
it. ``--top N`` shows which source files allocated most. ``--engine qh3``
runs trioquic on its qh3 engine instead: tracemalloc does not see what
qh3's Rust core allocates, so compare the RSS figures of the two engines
(each in its own run), not the heap.

``--mode both`` runs one after the other.

Run::

    python benchmarks/idle_memory.py                   # HTTP/3, 1,000 connections
    python benchmarks/idle_memory.py --quick           # HTTP/3, 200 connections
    python benchmarks/idle_memory.py --repeat 3 --json out.json
    python benchmarks/idle_memory.py --mode memory-network --connections 200 --top 10
    python benchmarks/idle_memory.py --mode memory-network --engine qh3

HTTP/3 mode takes 10 to 30 s per server for 1,000 connections; the
in-memory mode about half a minute (two TLS handshakes per connection, both
sides in one process).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import h3_requests as h3
from _goals import Goal, print_goals, ratio
from handshakes import (
    add_common_arguments,
    each_server,
    fill_defaults,
    prepare,
    ratio_text,
    run_figures,
    select_servers,
    swarm_command,
    write_json,
)

import trioquic
from trioquic.testing import (
    MemoryNetwork,
    client_settings,
    open_memory_server,
    server_settings,
)

MODES = ("http3", "memory-network", "both")
DEFAULT_CONNECTIONS = 1000
QUICK_CONNECTIONS = {"http3": 200, "memory-network": 100}
READY_TAG, OPEN_TAG, END_TAG = "H3-IDLE-READY ", "H3-IDLE-OPEN ", "H3-IDLE-END "
#: The target of the issue: trioquic's figure over aioquic's.
TARGET = 0.8


# -- HTTP/3 servers, one process each ------------------------------------------


def rss_kib_of(pid: int) -> int | None:
    """VmRSS of ``pid`` and its descendants, in KiB (Linux ``/proc``)."""
    total, found, todo = 0, False, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, ValueError):
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        found = True
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total if found else None


@dataclass
class IdleRun:
    #: Server RSS growth per idle connection, in KiB.
    kib_per_connection: float | None
    rss_before_kib: int | None = None
    rss_after_kib: int | None = None
    answered: int = 0
    #: Seconds the client took to open and use every connection.
    open_seconds: float | None = None
    failed: bool = False
    note: str = ""


class ClientGone(Exception):
    pass


def measure_idle(server: h3.Server, args: argparse.Namespace) -> IdleRun:
    command = swarm_command(
        server.port,
        "idle",
        args,
        count=args.connections,
        warmup=args.warmup,
        batch=args.batch,
        cpu=args.client_cpu,
        lifetime=args.timeout,
    )
    deadline = time.monotonic() + args.timeout + 10
    run = IdleRun(None)
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        assert process.stdin is not None and process.stdout is not None
        stdin, ended = process.stdin, None

        def next_line(tag: str, command: bytes | None = None) -> dict[str, Any]:
            """Send ``command`` (if any), then read the ``tag`` line."""
            if command is not None:
                stdin.write(command)
                stdin.flush()
            result, output = h3.read_tagged(process, tag, deadline)
            if result is None:
                log.seek(0)
                error = log.read().decode(errors="replace")[-1500:]
                raise ClientGone(f"no {tag.strip()} line: {output[-500:]}{error}")
            return result

        try:
            next_line(READY_TAG)
            time.sleep(args.settle)  # the warm-up connections drain
            run.rss_before_kib = rss_kib_of(server.process.pid)
            opened = next_line(OPEN_TAG, b"go\n")
            run.answered, run.open_seconds = opened["answered"], opened["seconds"]
            if run.answered != args.connections:
                reasons = opened["reasons"]
                run.failed, run.note = True, f"not all answered: {reasons}"
                return run
            time.sleep(args.settle)
            run.rss_after_kib = rss_kib_of(server.process.pid)
            ended = next_line(END_TAG, b"close\n")
            if ended["still_open"] != args.connections:
                closed = args.connections - ended["still_open"]
                run.failed, run.note = True, f"the server closed {closed} early"
                return run
        except (ClientGone, BrokenPipeError) as exc:
            run.failed, run.note = True, f"{exc}\n{server.diagnostics()}"
            return run
        finally:
            if ended is not None:  # it closes its connections, then exits
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
            h3.stop(process, grace=0.5)
            for pipe in (stdin, process.stdout):
                with contextlib.suppress(OSError):
                    pipe.close()
    if run.rss_before_kib is None or run.rss_after_kib is None:
        run.failed, run.note = True, "no RSS figure (/proc unavailable)"
        return run
    growth = run.rss_after_kib - run.rss_before_kib
    run.kib_per_connection = growth / args.connections
    return run


def http3(args: argparse.Namespace) -> int:
    servers, missing = select_servers(args.servers)
    prepare(args, servers)
    if not servers:
        print("nothing to measure")
        return 1
    results: dict[str, list[IdleRun]] = {}
    header = (
        f"idle HTTP/3 connections: {args.connections} per server, at most "
        f"{args.batch} handshaking at once, each after one GET {h3.PATH}"
    )
    for repeat, name, server, why in each_server(args, servers, header):
        if server is None:
            run = IdleRun(None, failed=True, note=f"did not start: {why}")
        else:
            run = measure_idle(server, args)
        results.setdefault(name, []).append(run)
        print_idle_run(repeat, name, run)
    summary = summarize_idle(results, servers, missing, args.connections)
    write_json(
        args.json,
        {"runs": {k: [asdict(r) for r in v] for k, v in results.items()}, **summary},
    )
    return 0


def print_idle_run(repeat: int, name: str, run: IdleRun) -> None:
    figure = (
        "failed"
        if run.failed
        else f"{h3._fmt(run.kib_per_connection, '.1f')} KiB/connection"
    )
    mib = {
        k: h3._fmt(None if v is None else v / 1024, ".1f")
        for k, v in (("before", run.rss_before_kib), ("after", run.rss_after_kib))
    }
    print(
        f"  run {repeat + 1}: {h3.LABELS[name]:<14} {figure:>20}  RSS "
        f"{mib['before']} -> {mib['after']} MiB  answered {run.answered}  "
        f"opened in {h3._fmt(run.open_seconds, '.1f')} s"
        + (f"\n    {run.note[-1500:]}" if run.note else ""),
        flush=True,
    )


def summarize_idle(
    results: dict[str, list[IdleRun]],
    servers: list[str],
    missing: dict[str, str],
    connections: int,
) -> dict[str, Any]:
    print()
    print(
        f"server RSS growth per idle HTTP/3 connection ({connections} held open "
        "after one GET each), KiB; medians over runs"
    )
    header = f"{'server':<14} {'KiB/conn':>9} {'failed':>6}  runs (KiB/conn)"
    print(header)
    print("-" * len(header))
    medians: dict[str, float | None] = {}
    for name in servers:
        runs = results.get(name, [])
        medians[name] = h3._median([r.kib_per_connection for r in runs])
        print(
            f"{h3.LABELS[name]:<14} {h3._fmt(medians[name], '.1f'):>9} "
            f"{sum(r.failed for r in runs):>6}  "
            + run_figures(runs, "kib_per_connection", ".1f")
        )
    print()
    ratios: dict[str, str] = {}
    for mine, other in h3.RATIOS:
        label = f"[idle HTTP/3] {h3.LABELS[mine]}/{h3.LABELS[other]}"
        reason = missing.get(mine) or missing.get(other)
        ratio = ratio_text(medians, mine, other)
        if reason or ratio is None:
            text = f"n/a ({reason or 'not measured, or failed'})"
        else:
            text = f"{ratio} memory per connection (lower is better)"
            if (mine, other) == ("trioquic", "aioquic"):
                text += f"; target <= {TARGET}x"
        ratios[label] = text
        print(f"{label}: {text}")
    goals = print_goals(memory_goals(medians, missing))
    return {"kib_per_connection": medians, "ratios": ratios, "goals": goals}


def memory_goals(
    medians: dict[str, float | None], missing: dict[str, str]
) -> list[Goal]:
    """Memory per idle HTTP/3 connection: trioquic+qh3's at most trioquic's
    (on aioquic); beside qh3's asyncio layer the figure is reported (the
    1.2x goal against it is about rates)."""
    ours = medians.get("trioquic-qh3")
    goals = []
    for other, target in (("trioquic", 1.0), ("qh3", None)):
        figure = ratio(ours, medians.get(other))
        reason = missing.get("trioquic-qh3") or missing.get(other)
        goals.append(
            Goal(
                f"memory per idle HTTP/3 connection: trioquic+qh3/"
                f"{h3.LABELS[other]} (lower is better)",
                figure,
                target,
                at_most=True,
                note="" if figure else reason or "not measured, or failed",
            )
        )
    return goals


# -- raw QUIC pairs on trioquic's in-memory network ----------------------------


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


async def memory_network(count: int, top: int, engine: str = "aioquic") -> None:
    network = MemoryNetwork()

    async def echo_once(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        assert isinstance(stream, trioquic.QuicStream)
        await stream.send_all(await stream.receive_some())
        await stream.send_eof()
        await connection.wait_closed()

    settings = server_settings(
        max_connections=count + 10, max_pending_handshakes=count + 10, engine=engine
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
        client_settings=client_settings(engine=engine),
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
    print(f"idle connections:            {count} (engine {engine})")
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=MODES, default="http3")
    parser.add_argument(
        "--connections",
        type=int,
        default=None,
        help=f"idle connections ({DEFAULT_CONNECTIONS}; --quick: "
        f"{QUICK_CONNECTIONS['http3']} HTTP/3, "
        f"{QUICK_CONNECTIONS['memory-network']} in memory)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: fewer connections"
    )
    parser.add_argument(
        "--top",
        type=int,
        default=0,
        help="memory-network: show the N source files that allocated most",
    )
    parser.add_argument(
        "--engine",
        choices=("aioquic", "qh3"),
        default="aioquic",
        help="memory-network: trioquic's engine (http3 mode measures both)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="http3: repeats (1)")
    parser.add_argument(
        "--batch", type=int, default=32, help="http3: handshakes at once (32)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=20,
        help="http3: connections opened and closed before 'before' (20)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        help="http3: seconds waited before each RSS reading (2; --quick: 1)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="http3: seconds allowed for one server's run",
    )
    add_common_arguments(parser, budget=600.0)
    args = parser.parse_args(argv)
    fill_defaults(args, {"settle": (1.0, 2.0)})
    if not 1 <= args.batch <= 64:
        parser.error("--batch must be 1 to 64 (trioquic's backlog is 128)")
    if args.repeat < 1 or (args.connections is not None and args.connections < 1):
        parser.error("--repeat and --connections must be at least 1")
    return args


def connections_for(args: argparse.Namespace, mode: str) -> int:
    if args.connections is not None:
        return int(args.connections)
    return QUICK_CONNECTIONS[mode] if args.quick else DEFAULT_CONNECTIONS


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    status = 0
    count = connections_for(args, "memory-network")
    if args.mode in ("http3", "both"):
        args.connections = connections_for(args, "http3")
        try:
            status = http3(args)
        except h3.BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            status = 1
    if args.mode in ("memory-network", "both"):
        if args.mode == "both":
            print()
        tracemalloc.start()
        trio.run(
            memory_network,
            count,
            args.top,
            args.engine,
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
        tracemalloc.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
