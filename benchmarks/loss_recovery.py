"""Early-loss recovery over HTTP/3: trioquic's server and client beside
aioquic's (asyncio layer) server and client, in the same run.

The scenario: one ``GET /bytes/10485760`` (10 MiB) on loopback through a
lossy delaying hop (``_lossy_hop.py``, written for this benchmark) that adds
5 ms each way and drops 30 % of the datagrams both ways for the first 2 s
after the first datagram, and none after that. The download must finish
within 10 s. Each pair is its own server and client: trioquic's
``serve_http3`` (``_h3_peers/trioquic_server.py``) with trioquic's
``open_http3_client`` (``_h3_peers/bulk_client.py --impl trioquic``), and
aioquic's server and client built like its examples
(``_h3_peers/aioquic_server.py`` and ``bulk_client.py --impl aioquic``). Both
use the same QUIC settings (``_h3_peers/_shared.py``: aioquic's defaults,
1200-byte UDP payload, 1 MiB windows) and the congestion control under test,
Reno and then CUBIC.

Seconds = the client's own clock from just before connecting to the last
body byte (handshake included). A run that does not finish in time, or
returns the wrong status or size, counts as failed. Each repeat uses a new
seed for the hop, the same for both pairs, and the order of the pairs
alternates between repeats; servers and hops are new for every run. The
server runs on one CPU and the client on the other (the hop floats). The
hop's counters are printed per run: datagrams each way (the client's are
mostly ACKs) and how many the hop dropped.

Result: per congestion control, each pair's median seconds over
``--repeat`` runs (at least 8 by default) and trioquic's median over
aioquic's (lower is better; the goal is <= 1.00). Run it on an otherwise
idle machine::

    python benchmarks/loss_recovery.py                  # 8 repeats x 2 x 2, ~3 min
    python benchmarks/loss_recovery.py --quick          # 1 MiB, once (smoke test)
    python benchmarks/loss_recovery.py --repeat 12 --cc cubic --json r.json
    python benchmarks/loss_recovery.py --loss 0 --loss-seconds 0   # no loss
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _bench_common import use_self_signed_certificate  # noqa: E402
from h3_requests import (  # noqa: E402
    HOST,
    PEERS,
    BenchError,
    choose_cpus,
    free_port,
    read_tagged,
    start,
    stop,
)

#: pair -> (the peers' --impl / server script, extra arguments for both)
PAIRS: dict[str, tuple[str, list[str]]] = {
    "trioquic": ("trioquic", []),
    "trioquic-defaults": ("trioquic", ["--library-defaults"]),
    "aioquic": ("aioquic", []),
}
IMPLS = tuple(PAIRS)
CCS = ("reno", "cubic")
DEFAULT_SIZE = 10 * 1024 * 1024
QUICK_SIZE = 1024 * 1024
DEFAULT_REPEAT = 8
BULK_TAG = "H3-BULK "
HOP = HERE / "_lossy_hop.py"


@dataclass
class Run:
    impl: str
    cc: str
    seed: int
    seconds: float | None = None
    #: Seconds from the start to the completed handshake.
    connected: float | None = None
    client_cpu: float | None = None
    #: Seconds at which each tenth of the body had arrived.
    tenths: list[float] = field(default_factory=list)
    failed: bool = False
    note: str = ""
    hop: dict[str, Any] = field(default_factory=dict)


def start_tagged(
    command: list[str], tag: str, *, cpu: int | None, timeout: float = 20.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a process and wait for its ``tag`` line; (process, rest of line)."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the process
    process = start(command, cpu=cpu, stdout=subprocess.PIPE, stderr=log, cwd=PEERS)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    fd = process.stdout.fileno()
    while tag.encode() not in buffer:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, remaining))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            stop(process)
            log.seek(0)
            raise BenchError(
                f"{command[1]} did not start:\n"
                f"{(buffer + log.read()).decode(errors='replace')[-2000:]}"
            )
        buffer += chunk
    line = buffer.split(tag.encode(), 1)[1].split(b"\n", 1)[0]
    return process, line.decode().strip()


def one_run(
    impl: str,
    cc: str,
    seed: int,
    args: argparse.Namespace,
    cpus: tuple[int | None, int | None],
) -> Run:
    run = Run(impl=impl, cc=cc, seed=seed)
    server_cpu, client_cpu = cpus
    port = free_port(socket.SOCK_DGRAM)
    base, extra = PAIRS[impl]
    server, _ = start_tagged(
        [
            sys.executable,
            str(PEERS / f"{base}_server.py"),
            *extra,
            f"--port={port}",
            f"--cert={args.cert}",
            f"--key={args.key}",
            f"--cc={cc}",
            f"--lifetime={args.timeout + 60}",
        ],
        "serving on",
        cpu=server_cpu,
    )
    hop: subprocess.Popen[bytes] | None = None
    try:
        hop, hop_port = start_tagged(
            [
                sys.executable,
                str(HOP),
                f"--target-port={port}",
                f"--delay={args.delay}",
                f"--loss={args.loss}",
                f"--loss-seconds={args.loss_seconds}",
                f"--seed={seed}",
                f"--trace={args.trace}",
                f"--lifetime={args.timeout + 60}",
            ],
            "HOP-READY ",
            cpu=None,
        )
        client = start(
            [
                sys.executable,
                str(PEERS / "bulk_client.py"),
                f"--impl={base}",
                *extra,
                f"--port={hop_port}",
                f"--cert={args.cert}",
                f"--path=/bytes/{args.size}",
                f"--timeout={args.timeout}",
                f"--cc={cc}",
            ],
            cpu=client_cpu,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=PEERS,
        )
        try:
            result, output = read_tagged(
                client, BULK_TAG, time.monotonic() + args.timeout + 15
            )
            with contextlib.suppress(subprocess.TimeoutExpired):
                client.wait(timeout=5)
        finally:
            stop(client, grace=0.5)
            assert client.stdout is not None and client.stderr is not None
            errors = client.stderr.read().decode(errors="replace")
            client.stdout.close()
            client.stderr.close()
        if result is None:
            run.failed = True
            last = (output + errors).strip().splitlines()[-1:] or ["no output"]
            run.note = f"did not finish: {last[0][:200]}"
        else:
            run.seconds = result["seconds"]
            run.connected = result.get("connected_s")
            run.tenths = list(result.get("tenths_s", []))
            run.client_cpu = result["cpu_s"]
            if result["status"] != 200 or result["bytes"] != args.size:
                run.failed = True
                run.note = f"status {result['status']}, {result['bytes']} bytes"
            elif run.seconds > args.timeout:
                run.failed = True
                run.note = f"took {run.seconds:.2f} s"
    finally:
        if hop is not None:
            stop(hop, grace=2.0)
            assert hop.stdout is not None
            tail = hop.stdout.read().decode(errors="replace")
            hop.stdout.close()
            for line in tail.splitlines():
                if line.startswith("HOP "):
                    run.hop = json.loads(line[4:])
        stop(server)
        if server.stdout is not None:
            server.stdout.close()
    return run


def describe(run: Run) -> str:
    up = run.hop.get("up", {})
    down = run.hop.get("down", {})
    traffic = ", ".join(
        f"{name} {d.get('received', '?')} dgrams ({d.get('lost', '?')} lost)"
        for name, d in (("client->server", up), ("server->client", down))
    )
    traffic += f"; hop CPU {run.hop.get('cpu_seconds', 0.0):.2f} s"
    if run.failed:
        return f"FAILED {run.note}; {traffic}"
    assert run.seconds is not None and run.client_cpu is not None
    return (
        f"{run.seconds:6.2f} s (handshake {run.connected or 0:.2f}) "
        f"client CPU {run.client_cpu:5.2f} s; {traffic}"
    )


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(runs: list[Run], args: argparse.Namespace) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    print()
    print(
        f"Summary: {args.size} bytes, {args.delay * 1000:g} ms each way, "
        f"{args.loss:.0%} loss both ways for the first {args.loss_seconds:g} s, "
        f"limit {args.timeout:g} s; medians of {args.repeat} runs"
    )
    for cc in args.cc:
        row: dict[str, Any] = {}
        for impl in args.pairs:
            mine = [r for r in runs if r.cc == cc and r.impl == impl]
            done = [r.seconds for r in mine if not r.failed and r.seconds is not None]
            row[impl] = {
                "median_s": median(done),
                "min_s": min(done, default=None),
                "max_s": max(done, default=None),
                "failed": sum(r.failed for r in mine),
                "runs": len(mine),
                "client_ack_datagrams": median(
                    [float(r.hop["up"]["received"]) for r in mine if r.hop]
                ),
                "server_datagrams": median(
                    [float(r.hop["down"]["received"]) for r in mine if r.hop]
                ),
                "handshake_s": median(
                    [r.connected for r in mine if not r.failed and r.connected]
                ),
                # Where the time goes: median seconds to 10 %, 20 %, ... 100 %.
                "tenths_s": [
                    median([r.tenths[i] for r in mine if len(r.tenths) == 10])
                    for i in range(10)
                ],
            }
        theirs = row.get("aioquic", {}).get("median_s")
        row["ratios"] = {
            impl: row[impl]["median_s"] / theirs
            for impl in args.pairs
            if impl != "aioquic" and row[impl]["median_s"] and theirs
        }
        summary[cc] = row
        for impl in args.pairs:
            r = row[impl]
            med = "-" if r["median_s"] is None else f"{r['median_s']:.2f} s"
            print(
                f"  {cc:5} {impl:17} median {med:>8}  "
                f"(min {r['min_s'] or 0:.2f}, max {r['max_s'] or 0:.2f}), "
                f"{r['failed']}/{r['runs']} failed, client datagrams "
                f"{r['client_ack_datagrams'] or 0:.0f}, server datagrams "
                f"{r['server_datagrams'] or 0:.0f}"
            )
        print(f"  {cc:5} seconds to the handshake, then to each 10 % of the body:")
        for impl in args.pairs:
            r = row[impl]
            marks = " ".join(
                "-" if t is None else f"{t:5.2f}"
                for t in [r["handshake_s"], *r["tenths_s"]]
            )
            print(f"  {cc:5}   {impl:17} {marks}")
        for impl, ratio in row["ratios"].items():
            print(
                f"  {cc:5} {impl} / aioquic median seconds: {ratio:.2f}x (goal <= 1.00)"
            )
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=None, help="bytes")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument(
        "--cc", default=",".join(CCS), help="comma-separated: reno,cubic"
    )
    parser.add_argument(
        "--pairs",
        default=",".join(IMPLS),
        help=f"comma-separated, of {', '.join(IMPLS)} (trioquic-defaults: "
        "trioquic with the library's default settings, as the CLI has them)",
    )
    parser.add_argument("--delay", type=float, default=0.005, help="s each way")
    parser.add_argument("--loss", type=float, default=0.30)
    parser.add_argument("--loss-seconds", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=10.0, help="s per download")
    parser.add_argument("--seed", type=int, default=1, help="first hop seed")
    parser.add_argument("--quick", action="store_true", help="1 MiB, once")
    parser.add_argument(
        "--trace",
        type=int,
        default=0,
        help="the hop records the first N datagrams of each run (in --json)",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs")
    args = parser.parse_args(argv)
    args.cc = [c for c in args.cc.split(",") if c]
    for cc in args.cc:
        if cc not in CCS:
            parser.error(f"--cc: {cc!r} is not one of {', '.join(CCS)}")
    args.pairs = [p for p in args.pairs.split(",") if p]
    for pair in args.pairs:
        if pair not in PAIRS:
            parser.error(f"--pairs: {pair!r} is not one of {', '.join(PAIRS)}")
    if args.size is None:
        args.size = QUICK_SIZE if args.quick else DEFAULT_SIZE
    if args.repeat is None:
        args.repeat = 1 if args.quick else DEFAULT_REPEAT
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpus = choose_cpus(not args.no_pin)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as directory:
        use_self_signed_certificate(args, directory, HOST)
        for cc in args.cc:
            for repeat in range(args.repeat):
                seed = args.seed + repeat
                order = args.pairs if repeat % 2 == 0 else args.pairs[::-1]
                for impl in order:
                    run = one_run(impl, cc, seed, args, cpus)
                    runs.append(run)
                    print(f"{cc:5} #{repeat + 1} seed {seed} {impl:8} {describe(run)}")
                    sys.stdout.flush()
    summary = summarize(runs, args)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "settings": {
                        k: v for k, v in vars(args).items() if k not in ("cert", "key")
                    },
                    "summary": summary,
                    "runs": [asdict(r) for r in runs],
                },
                indent=2,
            )
        )
    failed = sum(r.failed for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
