"""HTTP/3 clients: 1 KB GETs per second from one client over one connection,
httpx over ``trioquic.httpx.HTTP3Transport`` beside trioquic's own
``Http3Client`` and niquests (HTTP/3 through qh3), against the same server,
in the same run.

The server is a plain ``trioquic.h3`` handler (``_asgi_peers/trioquic_server.py
--mode h3``, ``GET /`` answers 1024 bytes), in its own process on one CPU.
Each client runs in its own process on another CPU
(``_asgi_peers/client_load.py``), with ``--concurrency`` (10) requests in
flight over one connection: ``httpx`` and ``trioquic`` under trio, ``niquests``
under asyncio (multiplexed, HTTP/1.1 and HTTP/2 off so that it speaks HTTP/3
from the first request). The first request (the handshake) is not timed;
after ``--warmup`` seconds, the requests that complete within ``--duration``
seconds are counted: requests/s; the client's CPU microseconds per request
(its CPU time over the measurement, per request) are printed beside it, a
figure the server's speed does not cap. Every answer's status and size are
checked, and every response must have come over HTTP/3 (httpx:
``response.http_version``; niquests: ``http_version`` and ``conn_info``), or
the measurement fails.

The server's certificate is signed by a scratch CA that every client is
given (``verify=CA``): niquests (qh3) refuses a self-signed certificate
that is its own CA as the server's certificate.

Goals (medians over ``--rounds``, order rotating, server restarted every
round): httpx + HTTP3Transport >= 0.8x Http3Client and >= 1.5x niquests.

``--floor`` also measures httpx's own floor: the client CPU per request of
``AsyncClient.get`` over an in-memory transport that returns a canned 1 KB
response at once (in its own process on the clients' CPU, with the same
concurrency): what any transport costs at least, the part of the gap to
``Http3Client`` that is httpx's own.

``--profile N`` measures nothing else: it starts the server once and runs
N GETs of one client (``--profile-client``, httpx by default) in this
process under cProfile, then prints where the client's time went, by
package and by function, in microseconds per request (cProfile's own
overhead included: compare the shares, not the totals).

Run it::

    python benchmarks/httpx_client.py              # 5 rounds of 3 s each
    python benchmarks/httpx_client.py --quick      # a smoke test
    python benchmarks/httpx_client.py --floor      # with httpx's floor
    python benchmarks/httpx_client.py --profile 3000

The last line is ``HTTPX-BENCH {json}``: the medians and the goals.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _bench_common import use_ca_signed_certificate  # noqa: E402
from asgi_servers import (  # noqa: E402 - the sibling benchmark's harness
    ASGI_PEERS,
    NATIVE_CLIENT,
    Route,
    Suite,
    start_server,
    trioquic_peer,
)
from h3_requests import (  # noqa: E402
    HOST,
    BenchError,
    choose_cpus,
    read_tagged,
    start,
    stop,
    stop_server,
)

CLIENTS = ("httpx", "trioquic", "niquests")
LABELS = {
    "httpx": "httpx+HTTP3Transport",
    "trioquic": "trioquic Http3Client",
    "niquests": "niquests",
}
LOAD_TAG = "CLIENT-LOAD "
RESULT_TAG = "HTTPX-BENCH "
FLOOR_TAG = "HTTPX-FLOOR "
#: (ours, theirs, factor)
GOALS = (("httpx", "trioquic", 0.8), ("httpx", "niquests", 1.5))


def missing_client(name: str) -> str | None:
    if name == "httpx":
        if importlib.util.find_spec("httpx") is None:
            return "httpx is not installed"
        try:
            from trioquic.httpx import HTTP3Transport  # noqa: F401
        except ImportError as exc:
            return f"trioquic.httpx.HTTP3Transport is unavailable ({exc})"
    elif name == "niquests" and importlib.util.find_spec("niquests") is None:
        return "niquests is not installed"
    return None


def measure(
    name: str, port: int, args: argparse.Namespace, cpu: int | None
) -> dict[str, Any]:
    """One client process's figures; ``failed`` with a note when it broke."""
    command = [
        sys.executable,
        str(ASGI_PEERS / "client_load.py"),
        "--impl",
        name,
        "--port",
        str(port),
        "--ca",
        args.ca,
        "--concurrency",
        str(args.concurrency),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
    ]
    with tempfile.TemporaryFile() as log:
        process = start(command, cpu=cpu, stdout=subprocess.PIPE, stderr=log)
        try:
            deadline = time.monotonic() + args.warmup + args.duration + 40
            result, _ = read_tagged(process, LOAD_TAG, deadline)
            if result is None:
                log.seek(0)
                tail = log.read().decode(errors="replace").strip()[-600:]
                return {"failed": True, "note": tail or "no result"}
        finally:
            stop(process, grace=2.0)
            assert process.stdout is not None
            process.stdout.close()
    if result["protocols"] != ["HTTP/3"]:
        return {"failed": True, "note": f"protocols used: {result['protocols']}"}
    if result["bad"]:
        return {**result, "failed": True, "note": f"{result['bad']} wrong answers"}
    return {**result, "failed": False}


async def _floor_child(args: argparse.Namespace) -> None:
    """httpx's floor (run in a child process): ``AsyncClient.get`` over an
    in-memory transport that answers at once with a canned 1 KB response
    whose body is a stream (as a real transport's is), ``--concurrency``
    in flight; prints the client CPU per request."""
    import httpx
    import trio

    sys.path.insert(0, str(ASGI_PEERS))
    sys.path.insert(0, str(HERE / "_h3_peers"))
    from app import SMALL_BODY, SMALL_PATH
    from load_client import cpu_seconds

    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(SMALL_BODY)).encode()),
    ]

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            yield SMALL_BODY

    class Canned(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await trio.lowlevel.checkpoint()
            return httpx.Response(
                200,
                headers=headers,
                stream=Body(),
                extensions={"http_version": b"HTTP/3"},
            )

    url = f"https://{HOST}:4433{SMALL_PATH}"
    async with httpx.AsyncClient(transport=Canned()) as client:
        await client.get(url)
        done = 0
        end = time.perf_counter() + args.duration
        cpu = cpu_seconds()

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < end:
                response = await client.get(url)
                if response.content != SMALL_BODY:
                    raise BenchError("the canned response changed")
                done += 1

        async with trio.open_nursery() as nursery:
            for _ in range(args.concurrency):
                nursery.start_soon(worker)
        cpu = cpu_seconds() - cpu
    print(FLOOR_TAG + json.dumps({"cpu_us": cpu * 1e6 / done, "requests": done}))


def measure_floor(args: argparse.Namespace, cpu: int | None) -> float | None:
    """httpx's floor in client CPU microseconds per request, or None."""
    command = [
        sys.executable,
        __file__,
        "--floor-child",
        "--concurrency",
        str(args.concurrency),
        "--duration",
        str(args.duration),
    ]
    process = start(command, cpu=cpu, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + args.duration + 40
        result, _ = read_tagged(process, FLOOR_TAG, deadline)
    finally:
        stop(process, grace=2.0)
        assert process.stdout is not None
        process.stdout.close()
    return None if result is None else float(result["cpu_us"])


def profile(args: argparse.Namespace) -> int:
    """``--profile N``: one client's N GETs under cProfile, in this process."""
    import collections
    import cProfile
    import pstats

    import trio

    sys.path.insert(0, str(ASGI_PEERS))
    from app import SMALL_PATH, SMALL_SIZE
    from client_load import _trio_client

    args.native_path = shutil.which(NATIVE_CLIENT)
    if args.native_path is None:
        print(f"{NATIVE_CLIENT} not found (it checks the server): nothing to do")
        return 1
    suite = Suite(
        title="server",
        routes=[Route("1 KB", SMALL_PATH, SMALL_SIZE, "index.html", bulk=False)],
        peers={"h3": trioquic_peer("h3", "h3")},
        reference="h3",
        goals=[],
    )
    server_cpu, client_cpu = choose_cpus(args.pin)
    # The server runs as measured, not under asgi_servers.py's --profile DIR.
    server_args = argparse.Namespace(**{**vars(args), "profile": None})
    server = start_server("h3", suite, server_args, server_cpu)
    if client_cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {client_cpu})
    count = args.profile
    client_args = argparse.Namespace(
        impl=args.profile_client, port=server.port, ca=args.ca, path=SMALL_PATH
    )
    profiler = cProfile.Profile()

    async def main() -> None:
        async with _trio_client(client_args) as get:
            await get()  # the handshake
            left = count

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    status, size, protocol = await get()
                    if (status, size, protocol) != (200, SMALL_SIZE, "HTTP/3"):
                        raise BenchError(f"wrong answer: {status} {size} {protocol}")

            profiler.enable()
            async with trio.open_nursery() as nursery:
                for _ in range(args.concurrency):
                    nursery.start_soon(worker)
            profiler.disable()

    try:
        trio.run(main)
    finally:
        stop_server(server)
    stats = pstats.Stats(profiler)
    by_package: collections.Counter[str] = collections.Counter()
    rows = []
    for (filename, line, function), entry in stats.stats.items():  # type: ignore[attr-defined]
        own = entry[2]
        if "site-packages/" in filename:
            where = filename.split("site-packages/")[1].split("/")[0]
        elif "/trioquic/" in filename:
            where = "trioquic/" + filename.split("/trioquic/", 1)[1]
        elif filename == "~":
            where = "(epoll wait)" if "poll" in function else "(built-in)"
        else:
            where = "(stdlib) " + Path(filename).name
        by_package[where] += own
        rows.append((own, entry[1], f"{Path(filename).name}:{line}({function})"))
    waiting = by_package.pop("(epoll wait)", 0.0)
    total = sum(by_package.values())
    label = LABELS[args.profile_client]
    print(
        f"{label}: {count} GETs, {args.concurrency} in flight, under cProfile: "
        f"{total * 1e6 / count:.0f} us per request, and "
        f"{waiting * 1e6 / count:.0f} us waiting in epoll"
    )
    print(f"{'where':<44} {'us/request':>10} {'share':>6}")
    for where, own in by_package.most_common(20):
        print(f"{where:<44} {own * 1e6 / count:>10.1f} {own / total:>6.1%}")
    print()
    print(f"{'function':<60} {'us/request':>10} {'calls/request':>13}")
    rows = [row for row in rows if "epoll" not in row[2]]
    for own, calls, name in sorted(rows, reverse=True)[:30]:
        print(f"{name[:60]:<60} {own * 1e6 / count:>10.1f} {calls / count:>13.2f}")
    return 0


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    args.native_path = shutil.which(NATIVE_CLIENT)
    if args.native_path is None:
        print(f"{NATIVE_CLIENT} not found (it checks the server): nothing to do")
        return None
    names = [c.strip() for c in args.clients.split(",") if c.strip()]
    for name in names:
        if name not in CLIENTS:
            raise SystemExit(f"unknown client {name!r}; choose from {CLIENTS}")
    missing = {n: why for n in names if (why := missing_client(n)) is not None}
    for name, why in missing.items():
        print(f"skipping {LABELS[name]}: {why}")
    names = [n for n in names if n not in missing]
    if not names:
        print("nothing to measure")
        return None
    sys.path.insert(0, str(ASGI_PEERS))
    from app import SMALL_PATH, SMALL_SIZE

    suite = Suite(
        title="server",
        routes=[Route("1 KB", SMALL_PATH, SMALL_SIZE, "index.html", bulk=False)],
        peers={"h3": trioquic_peer("h3", "h3")},
        reference="h3",
        goals=[],
    )
    server_cpu, client_cpu = choose_cpus(args.pin)
    print(
        f"GET {SMALL_PATH} ({SMALL_SIZE} bytes), one connection, "
        f"{args.concurrency} in flight; clients {', '.join(LABELS[n] for n in names)}; "
        f"{args.rounds} round(s) of {args.warmup:g} s + {args.duration:g} s; "
        f"CPUs: server {server_cpu}, clients {client_cpu}",
        flush=True,
    )
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for round_ in range(args.rounds):
        server = start_server("h3", suite, args, server_cpu)
        try:
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                figures = measure(name, server.port, args, client_cpu)
                results[name].append(figures)
                rate = (
                    "failed"
                    if figures["failed"]
                    else f"{figures['requests_per_s']:.0f} req/s"
                )
                cpu = figures.get("client_cpu_share")
                print(
                    f"  round {round_ + 1}: {LABELS[name]:<22} {rate:>12}"
                    + (f"  client CPU {cpu:.0%}" if cpu is not None else "")
                    + (f"\n    {figures['note']}" if figures.get("note") else ""),
                    flush=True,
                )
        finally:
            stop_server(server)
    floor = measure_floor(args, client_cpu) if args.floor else None
    return summarize(names, results, missing, floor)


def summarize(
    names: list[str],
    results: dict[str, list[dict[str, Any]]],
    missing: dict[str, str],
    floor: float | None = None,
) -> dict[str, Any]:
    print()
    print("1 KB GETs per second, one client, one connection: medians over rounds")
    header = (
        f"{'client':<22} {'req/s':>8} {'vs Http3Client':>15} "
        f"{'client CPU us/req':>17} {'failed':>7}  runs"
    )
    print(header)
    print("-" * len(header))
    medians: dict[str, float | None] = {}
    for name in names:
        rates = [r["requests_per_s"] for r in results[name] if not r["failed"]]
        medians[name] = statistics.median(rates) if rates else None
    reference = medians.get("trioquic")
    for name in names:
        value = medians[name]
        ratio = "-" if value is None or not reference else f"{value / reference:.2f}x"
        runs = " ".join(
            "failed" if r["failed"] else f"{r['requests_per_s']:.0f}"
            for r in results[name]
        )
        failed = sum(r["failed"] for r in results[name])
        shown = "-" if value is None else f"{value:.0f}"
        costs = [
            r["client_cpu_share"] * 1e6 / r["requests_per_s"]
            for r in results[name]
            if not r["failed"] and r["requests_per_s"]
        ]
        cost = f"{statistics.median(costs):.0f}" if costs else "-"
        print(
            f"{LABELS[name]:<22} {shown:>8} {ratio:>15} {cost:>17} {failed:>7}  {runs}"
        )
    for name, why in missing.items():
        print(f"{LABELS[name]}: not measured ({why})")
    if floor is not None:
        print(
            f"httpx's own floor (AsyncClient.get over an in-memory transport): "
            f"{floor:.0f} us client CPU per request"
        )
    print()
    goals = []
    for ours, theirs, factor in GOALS:
        a, b = medians.get(ours), medians.get(theirs)
        ratio = None if a is None or not b else a / b
        verdict = (
            "not measured"
            if ratio is None
            else ("met" if ratio >= factor else "NOT met")
        )
        print(
            f"goal: {LABELS[ours]} / {LABELS[theirs]} "
            f"{'-' if ratio is None else f'{ratio:.2f}'}x, goal >= {factor}x: {verdict}"
        )
        goals.append(
            {
                "ours": ours,
                "theirs": theirs,
                "ratio": ratio,
                "factor": factor,
                "verdict": verdict,
            }
        )
    summary: dict[str, Any] = {"medians": medians, "missing": missing, "goals": goals}
    if floor is not None:
        summary["httpx_floor_cpu_us"] = floor
    print(RESULT_TAG + json.dumps(summary), flush=True)
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (5; quick 1)")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--duration", type=float, default=None, help="seconds (3)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds (0.5)")
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin to CPUs"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure httpx's own floor (an in-memory transport)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="only profile N GETs of one client (--profile-client) in-process",
    )
    parser.add_argument(
        "--profile-client", choices=("httpx", "trioquic"), default="httpx"
    )
    parser.add_argument("--floor-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 5)
    if args.duration is None:
        args.duration = 0.5 if args.quick else 3.0
    if args.warmup is None:
        args.warmup = 0.2 if args.quick else 0.5
    if args.rounds < 1 or args.concurrency < 1 or args.duration <= 0:
        parser.error("--rounds and --concurrency >= 1, --duration > 0")
    # What asgi_servers' server helpers read.
    args.budget = args.rounds * (args.duration + args.warmup + 40) * len(CLIENTS)
    args.scratch = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.floor_child:
        import trio

        trio.run(_floor_child, args)
        return 0
    with tempfile.TemporaryDirectory() as directory:
        use_ca_signed_certificate(args, directory, HOST)
        try:
            if args.profile:
                return profile(args)
            summary = run(args)
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    return 0 if summary is not None else 1


if __name__ == "__main__":
    sys.exit(main())
