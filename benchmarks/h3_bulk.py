"""HTTP/3 bulk download over loopback: one ``GET /bytes/<size>`` (50 MiB by
default) on one stream of one connection, with native peers on the other
side so that the load generator is not what is measured.

Measurements, in the same run:

1. ``servers``: ngtcp2's HTTP/3 test client (``gtlsclient``) downloads the
   body from each Python server: ``trioquic`` (``serve_http3``, the body
   streamed in 64 KiB pieces, on trioquic's default engine, aioquic),
   ``trioquic+qh3`` (the same on trioquic's qh3 engine), ``aioquic`` (its
   asyncio layer, built like its example server, the body handed to
   ``send_data`` at once), ``qh3-asyncio`` (the same server on qh3's asyncio
   layer) and ``hypercorn-trio`` (an ASGI app sending 64 KiB ``more_body``
   messages); the servers are those of ``h3_requests.py`` (``_h3_peers/``). The client
   writes the body to a scratch directory (``--download``) and its size is
   checked. MB/s = bytes / wall time from starting the client process to its
   exit: process start (a few ms), handshake, transfer and close are all in
   it. Server CPU = user + system seconds of the server process over the
   same span (``/proc``); MB per server CPU-second = bytes / that.
2. ``clients``: ngtcp2's HTTP/3 test server (``gtlsserver``, serving a file
   of the same bytes from a scratch directory) is downloaded from by
   trioquic's client (``trioquic.h3.open_http3_client``, on each engine) and
   by aioquic's and qh3's asyncio clients (the shape of aioquic's example
   client), each in its own process (``_h3_peers/bulk_client.py``). MB/s =
   bytes / the client's own clock from just before connecting to the last
   body byte (handshake in; interpreter start and close out); client CPU =
   the client process's CPU seconds over the same span. The server's CPU is
   sampled over the client process's whole life (the server idles while the
   client starts).
3. ``self``: each stack's client from its own server (trioquic, trioquic+qh3,
   and aioquic and qh3-asyncio for reference); figures as in 2.
4. ``ceiling``: when ``benchmarks/ceiling.py`` exists, it is run after the
   others, once per engine in the run, as ``ceiling.py --engine E
   --workloads h3-bulk --size N --cc CC --json F``: the MB per server
   CPU-second of that library's sans-io server alone (no event loop, no
   sockets, a client of the same library in memory). trioquic's server MB
   per CPU-second and its MB/s (both from measurement 1), and its client's
   MB per CPU-second (from measurement 2) are given as fractions of
   aioquic's ceiling, and trioquic+qh3's as fractions of qh3's. The peers
   differ (gtlsclient acknowledges differently from the in-memory client),
   so a fraction above 1 is possible.

The run ends with the same-run ratios (trioquic/aioquic,
trioquic/hypercorn, trioquic+qh3/trioquic, trioquic+qh3/qh3-asyncio, per
measurement) and the qh3 engine's goals (``_goals.py``), each met or not:
served to gtlsclient, trioquic+qh3 >= 2.5x trioquic and >= 100 MB/s (the
goal is for a 50 MB body, the default size), >= 1.2x qh3-asyncio (server
and client side), and the fraction of qh3's ceiling it reaches.

MB = 10**6 bytes. Every peer uses the same QUIC settings, aioquic's defaults
(``_h3_peers/_shared.py``: UDP payload 1200 bytes, 1 MiB connection and
stream windows; qh3 without path MTU discovery); the native peers are given
the same (``gtlsserver --max-udp-payload-size=1200 --no-pmtud``;
``gtlsclient --max-data``/``--max-stream-data-bidi-local`` 1 MiB unless
``--native-default-windows``). Congestion control (``--cc``): qh3 has
CUBIC only, so a run with a qh3 column gives CUBIC to every peer that can
choose (trioquic on both engines, aioquic's server and client, gtlsserver
and gtlsclient ``--cc=cubic``, the aioquic ceiling); hypercorn keeps Reno,
aioquic's default, which it cannot change. A run without qh3 columns uses
Reno, as before; ``--cc reno|cubic`` forces one. aioquic's receiver doubles its limits
whenever half is used (its window grows with what it received); trioquic's
grants credit as the application reads; ngtcp2's slides a window of that
size.

The server runs on one CPU and the client on another (when there are two);
servers are restarted for every repeat and the order of the servers rotates
between repeats, so drift affects every one alike; figures are medians over
``--repeat`` runs. The CPU time other processes used during each
measurement is printed; one during which they took more than a quarter of a
CPU is taken again (up to ``--attempts``; the quietest kept). A peer that is
not installed (gtlsclient, gtlsserver, hypercorn, aioquic) is skipped with a
message. Run it on an otherwise idle machine::

    python benchmarks/h3_bulk.py                 # 50 MiB, 3 repeats, ~5 minutes
    python benchmarks/h3_bulk.py --quick         # 4 MiB, once (a smoke test)
    python benchmarks/h3_bulk.py --repeat 5 --servers trioquic,aioquic --json r.json

Loopback only: every server binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import h3_requests as h3  # noqa: E402 - the sibling benchmark, for its helpers
from _bench_common import use_ca_signed_certificate  # noqa: E402
from _goals import (  # noqa: E402
    BULK_MB_PER_S,
    BULK_SPEEDUP,
    OVER_QH3_ASYNCIO,
    Goal,
    print_goals,
    ratio,
)
from h3_requests import (  # noqa: E402
    HOST,
    PEERS,
    BenchError,
    Sampler,
    Server,
    free_port,
    read_tagged,
    start,
    stop,
    stop_server,
)

sys.path.insert(0, str(PEERS))
from _shared import (  # noqa: E402
    CONNECTION_WINDOW,
    MAX_UDP_PAYLOAD,
    STREAM_WINDOW,
    add_cc_argument,
    body_chunks,
    congestion_control,
)

DEFAULT_SIZE = 50 * 1024 * 1024
QUICK_SIZE = 4 * 1024 * 1024
DEFAULT_REPEAT = 3
MB = 1e6
BULK_TAG = "H3-BULK "
NATIVE_CLIENT = "gtlsclient"
NATIVE_SERVER = "gtlsserver"
CEILING = HERE / "ceiling.py"
MEASUREMENTS = ("servers", "clients", "self")
CLIENT_IMPLS = ("trioquic", "trioquic-qh3", "aioquic", "qh3")
#: The library under each engine's ceiling, and the trioquic server on it.
CEILING_ENGINES = {"aioquic": "trioquic", "qh3": "trioquic-qh3"}
#: Labels of everything that can sit on either side.
PEER_LABELS = {
    **h3.LABELS,
    NATIVE_CLIENT: "gtlsclient",
    NATIVE_SERVER: "gtlsserver",
}
# The request benchmark's helpers label servers by name (diagnostics).
h3.LABELS.setdefault(NATIVE_SERVER, "ngtcp2 gtlsserver")


@dataclass
class Run:
    """One download."""

    server_cpu: float | None = None
    #: The Python client's CPU seconds (None for gtlsclient).
    client_cpu: float | None = None
    bytes: int = 0
    #: Wall seconds the rate is computed from.
    transfer_seconds: float | None = None
    #: Wall seconds the CPU counters cover (the client process's life).
    seconds: float | None = None
    kernel_drops: int | None = None
    #: CPU seconds other processes used meanwhile (noise).
    other_cpu: float | None = None
    failed: bool = False
    note: str = ""

    @property
    def mb_per_s(self) -> float | None:
        if self.failed or not self.transfer_seconds:
            return None
        return self.bytes / MB / self.transfer_seconds

    @property
    def mb_per_cpu_s(self) -> float | None:
        if self.failed or not self.server_cpu:
            return None
        return self.bytes / MB / self.server_cpu


#: (measurement, server, client)
Key = tuple[str, str, str]


# -- downloads -----------------------------------------------------------------


def scratch_root(size: int) -> str | None:
    """A RAM-backed directory for bodies written to disk, when there is room
    (gtlsserver's file and gtlsclient's download, with a margin)."""
    with contextlib.suppress(OSError):
        stat = os.statvfs("/dev/shm")
        if stat.f_bavail * stat.f_frsize > 4 * size and os.access("/dev/shm", os.W_OK):
            return "/dev/shm"
    return None


def finish_run(run: Run, sampler: Sampler, started: float | None = None) -> Run:
    counters = sampler.finish()
    if started is not None:
        run.seconds = time.perf_counter() - started
    run.server_cpu = counters.server_cpu
    run.kernel_drops = counters.kernel_drops
    run.other_cpu = counters.other_cpu
    return run


def native_download(server: Server, args: argparse.Namespace, cpu: int | None) -> Run:
    """gtlsclient downloads the body into a scratch directory; its size is checked."""
    windows = (
        []
        if args.native_default_windows
        else [
            f"--max-data={CONNECTION_WINDOW}",
            f"--max-stream-data-bidi-local={STREAM_WINDOW}",
        ]
    )
    with (
        tempfile.TemporaryDirectory(dir=args.scratch) as directory,
        tempfile.TemporaryFile() as log,
    ):
        command = [
            args.native_client,
            "-q",
            "--exit-on-all-streams-close",
            f"--timeout={args.native_idle_timeout}s",
            f"--download={directory}",
            f"--cc={args.cc}",
            *windows,
            HOST,
            str(server.port),
            f"https://{HOST}:{server.port}/bytes/{args.size}",
        ]
        sampler = Sampler(server.process.pid)
        started = time.perf_counter()
        process = start(command, cpu=cpu, stdout=log, stderr=log)
        try:
            code: int | None = process.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            code = None
        elapsed = time.perf_counter() - started
        stop(process, grace=0.5)
        body = Path(directory) / str(args.size)
        received = body.stat().st_size if body.exists() else 0
        run = Run(bytes=received, transfer_seconds=elapsed, seconds=elapsed)
        if code != 0 or received != args.size:
            log.seek(0)
            tail = log.read().decode(errors="replace").strip()[-300:]
            run.failed = True
            run.note = (
                f"gtlsclient exit {code} (None: timed out), {received} of "
                f"{args.size} bytes {tail}"
            )
    return finish_run(run, sampler)


def python_download(
    server: Server, impl: str, args: argparse.Namespace, cpu: int | None
) -> Run:
    """``bulk_client.py --impl impl`` downloads the body and reports."""
    command = [
        sys.executable,
        str(PEERS / "bulk_client.py"),
        f"--impl={impl}",
        f"--port={server.port}",
        f"--cert={args.ca}",
        f"--cc={args.cc}",
        f"--path=/bytes/{args.size}",
        f"--timeout={args.timeout}",
    ]
    sampler = Sampler(server.process.pid)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        process = start(command, cpu=cpu, stdout=subprocess.PIPE, stderr=log)
        try:
            result, _ = read_tagged(
                process, BULK_TAG, time.monotonic() + args.timeout + 15
            )
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        finally:
            stop(process, grace=0.5)
            assert process.stdout is not None
            process.stdout.close()
        log.seek(0)
        error = log.read().decode(errors="replace").strip()[-1500:]
    if result is None:
        run = Run(failed=True, note=f"{impl} client failed: {error}")
    else:
        run = Run(
            client_cpu=result["cpu_s"],
            bytes=result["bytes"],
            transfer_seconds=result["seconds"],
        )
        if result["status"] != 200 or result["bytes"] != args.size:
            run.failed = True
            run.note = (
                f"status {result['status']}, {result['bytes']} of {args.size} bytes"
            )
    return finish_run(run, sampler, started)


# -- servers -------------------------------------------------------------------


def write_docroot(directory: Path, size: int) -> None:
    """``bytes/<size>`` (the servers' body, byte for byte) and ``bytes/1024``
    (the readiness probe) for gtlsserver."""
    (directory / "bytes").mkdir()
    for n in (size, h3.SIZE):
        with open(directory / "bytes" / str(n), "wb") as fp:
            for piece in body_chunks(n):
                fp.write(piece)


def start_native_server(args: argparse.Namespace, cpu: int | None) -> Server:
    port = free_port(socket.SOCK_DGRAM)
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop_server()
    command = [
        args.native_server,
        "-q",
        f"--htdocs={args.docroot}",
        f"--cc={args.cc}",
        f"--max-udp-payload-size={MAX_UDP_PAYLOAD}",
        "--no-pmtud",
        f"--timeout={args.native_idle_timeout}s",
        HOST,
        str(port),
        args.key,
        args.cert,
    ]
    process = start(command, cpu=cpu, stdout=log, stderr=subprocess.STDOUT)
    server = Server(NATIVE_SERVER, port, process, log)
    try:
        h3.wait_ready(server, args, deadline=time.monotonic() + 20)
    except BaseException:
        stop_server(server)
        raise
    return server


# -- the run -------------------------------------------------------------------


def measured(label: str, repeat: int, attempts: int, measure: Callable[[], Run]) -> Run:
    """Measure, again while other processes take a large share of the machine
    (up to ``attempts``); the quietest attempt is kept, whatever its figure."""
    runs: list[Run] = []
    while True:
        try:
            run = measure()
        except BenchError as exc:
            run = Run(failed=True, note=str(exc))
        runs.append(run)
        print_run(repeat, label, run)
        if run.failed or h3.noise_share(run) <= h3.NOISY_SHARE:
            return run
        if len(runs) >= attempts:
            return min(runs, key=h3.noise_share)
        print("    (noisy: measuring again)", flush=True)


def print_run(repeat: int, label: str, run: Run) -> None:
    fmt = h3._fmt
    parts = [
        f"run {repeat + 1}: {label:<30}",
        f"{'failed' if run.failed else fmt(run.mb_per_s, '.1f') + ' MB/s':>11}",
        f"server CPU {fmt(run.server_cpu, '.2f')} s",
        f"client CPU {fmt(run.client_cpu, '.2f')} s",
        f"kernel drops {fmt(run.kernel_drops, 'd')}",
        f"other processes' CPU {fmt(run.other_cpu, '.2f')} s",
    ]
    note = f"\n    {run.note[-1500:]}" if run.note else ""
    print("  " + "  ".join(parts) + note, flush=True)


def jobs_for(unit: str, args: argparse.Namespace, repeat: int) -> list[tuple[str, str]]:
    """(measurement, client) pairs to run against one started server."""
    if unit == NATIVE_SERVER:
        clients = list(args.client_impls)
        shift = repeat % max(1, len(clients))
        return [("clients", c) for c in clients[shift:] + clients[:shift]]
    jobs = []
    if "servers" in args.measurements and args.native_client:
        jobs.append(("servers", NATIVE_CLIENT))
    if "self" in args.measurements and unit in args.client_impls:
        jobs.append(("self", unit))
    return jobs[repeat % 2 :] + jobs[: repeat % 2] if len(jobs) == 2 else jobs


def measure_unit(
    unit: str,
    args: argparse.Namespace,
    cpus: tuple[int | None, int | None],
    results: dict[Key, list[Run]],
    repeat: int,
) -> None:
    """Start one server, run its downloads, stop it."""
    jobs = jobs_for(unit, args, repeat)
    if not jobs:
        return
    try:
        if unit == NATIVE_SERVER:
            server = start_native_server(args, cpus[0])
        else:
            server = h3.start_server(unit, args, cpus[0])
    except BenchError as exc:
        print(f"  run {repeat + 1}: {PEER_LABELS[unit]} did not start: {exc}")
        for measurement, client in jobs:
            results.setdefault((measurement, unit, client), []).append(
                Run(failed=True, note="server did not start")
            )
        return
    try:
        for measurement, client in jobs:
            label = f"{PEER_LABELS[client]} <- {PEER_LABELS[unit]}"
            if server.process.poll() is not None:
                run = Run(failed=True, note="server exited")
                print_run(repeat, label, run)
            else:
                measure = (
                    partial(native_download, server, args, cpus[1])
                    if client == NATIVE_CLIENT
                    else partial(python_download, server, client, args, cpus[1])
                )
                run = measured(label, repeat, args.attempts, measure)
            if run.failed and server.process.poll() is not None:
                run.note += f"\n{server.diagnostics()}"
            results.setdefault((measurement, unit, client), []).append(run)
    finally:
        stop_server(server)


def run_ceilings(args: argparse.Namespace, servers: list[str]) -> dict[str, Any]:
    """Each engine's ceiling (``engine -> figures``) for the engines whose
    trioquic server is in the run."""
    ceilings: dict[str, Any] = {}
    for engine, server in CEILING_ENGINES.items():
        if server in servers:
            figures = run_ceiling(args, engine)
            if figures is not None:
                ceilings[engine] = figures
    return ceilings


def run_ceiling(args: argparse.Namespace, engine: str) -> dict[str, Any] | None:
    """``ceiling.py --engine engine --workloads h3-bulk``'s figures, or None
    (with a note)."""
    if not args.ceiling:
        return None
    if not CEILING.exists():
        print(f"ceiling: {CEILING.name} not found: skipped")
        return None
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "ceiling.json"
        command = [
            sys.executable,
            str(CEILING),
            "--engine",
            engine,
            "--cc",
            args.cc,
            "--workloads",
            "h3-bulk",
            "--size",
            str(args.size),
            "--json",
            str(output),
        ]
        print(f"ceiling: {' '.join(command[1:])}", flush=True)
        try:
            completed = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=args.ceiling_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            print(f"ceiling: no answer within {args.ceiling_timeout:g} s: skipped")
            return None
        try:
            figures = dict(json.loads(output.read_text())["h3-bulk"])
            float(figures["server_mb_per_s"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            tail = (completed.stdout + completed.stderr).strip()[-1000:]
            print(
                f"ceiling: exit {completed.returncode}, no usable figures "
                f"({exc!r}): skipped\n{tail}"
            )
            return None
    return figures


def run(args: argparse.Namespace) -> int:
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for name in servers:
        if name not in h3.SERVERS and name not in h3.VARIANTS:
            choices = (*h3.SERVERS, *h3.VARIANTS)
            raise SystemExit(f"unknown server {name!r}; choose from {choices}")
    args.measurements = [m.strip() for m in args.measurements.split(",") if m.strip()]
    for name in args.measurements:
        if name not in MEASUREMENTS:
            raise SystemExit(
                f"unknown measurement {name!r}; choose from {MEASUREMENTS}"
            )
    # What wait_ready() and start_server() of the request benchmark read.
    args.native_path = args.native_client = shutil.which(NATIVE_CLIENT)
    args.native_server = shutil.which(NATIVE_SERVER)
    args.request_timeout = 2.0
    servers, missing = h3.available_servers(servers)
    args.servers_run = servers
    args.client_library = h3.client_library(servers)
    for name, reason in missing.items():
        print(f"skipping {h3.LABELS[name]}: {reason}")
    args.client_impls = [
        c for c in CLIENT_IMPLS if c not in h3.available_servers([c])[1]
    ]
    # The Python clients are columns of the clients measurement only (self
    # pairs each client with its own server).
    clients = args.client_impls if "clients" in args.measurements else []
    args.cc = congestion_control(args.cc, [*servers, *clients])
    # Why a measurement or a peer is missing, for the summary.
    args.unavailable = dict(missing)
    if args.native_client is None:
        args.unavailable["servers"] = f"{NATIVE_CLIENT} not found"
        print(f"{NATIVE_CLIENT} not found: measurement 1 (servers) is skipped")
    units = list(servers)
    if "clients" in args.measurements:
        if args.native_server is None:
            args.unavailable["clients"] = f"{NATIVE_SERVER} not found"
            print(f"{NATIVE_SERVER} not found: measurement 2 (clients) is skipped")
        else:
            units.append(NATIVE_SERVER)
    cpus = h3.choose_cpus(args.pin)
    results: dict[Key, list[Run]] = {}
    budget_end = time.monotonic() + args.budget
    with (
        tempfile.TemporaryDirectory() as directory,
        tempfile.TemporaryDirectory(dir=scratch_root(args.size)) as scratch,
    ):
        use_ca_signed_certificate(args, directory, HOST)
        args.scratch = scratch
        args.docroot = Path(scratch) / "htdocs"
        args.docroot.mkdir()
        if NATIVE_SERVER in units:
            write_docroot(args.docroot, args.size)
        print(
            f"GET /bytes/{args.size} ({args.size / MB:.1f} MB) on one stream; "
            f"measurements {', '.join(args.measurements)}; servers "
            f"{', '.join(PEER_LABELS[s] for s in units)}; python clients "
            f"{', '.join(args.client_impls)}; {h3.cc_note(args.cc, servers)}; "
            f"{args.repeat} repeat(s); "
            f"CPUs: server {cpus[0]}, client {cpus[1]}",
            flush=True,
        )
        for repeat in range(args.repeat):
            shift = repeat % max(1, len(units))
            for unit in units[shift:] + units[:shift]:
                if time.monotonic() > budget_end:
                    print(f"time budget of {args.budget:.0f} s spent; stopping")
                    break
                measure_unit(unit, args, cpus, results, repeat)
            else:
                continue
            break
    ceilings = run_ceilings(args, servers)
    summary = summarize(results, ceilings, args)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "size": args.size,
                    "repeat": args.repeat,
                    "unavailable": args.unavailable,
                    "runs": [
                        {
                            "measurement": m,
                            "server": s,
                            "client": c,
                            "runs": [
                                {
                                    **asdict(r),
                                    "mb_per_s": r.mb_per_s,
                                    "mb_per_cpu_s": r.mb_per_cpu_s,
                                }
                                for r in runs
                            ],
                        }
                        for (m, s, c), runs in results.items()
                    ],
                    **summary,
                },
                indent=2,
            )
        )
    return 0 if results else 1


# -- the summary ---------------------------------------------------------------

TITLES = {
    "servers": "1. servers, downloaded by gtlsclient (wall: client process start "
    "to exit)",
    "clients": "2. Python clients, downloading from gtlsserver (client clock: "
    "connect to last byte)",
    "self": "3. each stack against itself (client clock: connect to last byte)",
}


def summarize(
    results: dict[Key, list[Run]],
    ceilings: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Print a table per measurement and the ratios; return them (for JSON)."""
    fmt, median = h3._fmt, h3._median
    medians: dict[Key, dict[str, float | None]] = {}
    for measurement in MEASUREMENTS:
        keys = [k for k in results if k[0] == measurement]
        if not keys:
            continue
        print()
        print(TITLES[measurement])
        header = (
            f"{'server':<16} {'client':<12} {'MB/s':>7} {'srv CPU s':>9} "
            f"{'MB/srv-cpu-s':>12} {'cli CPU s':>9} {'failed':>6}  runs (MB/s)"
        )
        print(header)
        print("-" * len(header))
        order = list(PEER_LABELS)
        for key in sorted(keys, key=lambda k: (order.index(k[1]), order.index(k[2]))):
            runs = results[key]
            ok = [r for r in runs if not r.failed]
            figures = {
                "mb_per_s": median([r.mb_per_s for r in ok]),
                "server_cpu_s": median([r.server_cpu for r in ok]),
                "mb_per_server_cpu_s": median([r.mb_per_cpu_s for r in ok]),
                "client_cpu_s": median([r.client_cpu for r in ok]),
                "mb_per_client_cpu_s": median(
                    [r.bytes / MB / r.client_cpu for r in ok if r.client_cpu]
                ),
                "failed": len(runs) - len(ok),
            }
            medians[key] = figures
            print(
                f"{PEER_LABELS[key[1]]:<16} {PEER_LABELS[key[2]]:<12} "
                f"{fmt(figures['mb_per_s'], '.1f'):>7} "
                f"{fmt(figures['server_cpu_s'], '.2f'):>9} "
                f"{fmt(figures['mb_per_server_cpu_s'], '.1f'):>12} "
                f"{fmt(figures['client_cpu_s'], '.2f'):>9} "
                f"{figures['failed']:>6}  "
                + " ".join(
                    "failed" if r.failed else fmt(r.mb_per_s, ".1f") for r in runs
                )
            )
    print()
    print(f"summary (medians; MB = 10^6 bytes; {args.size} bytes per download):")
    ratios: dict[str, float | None] = {}

    def compare(
        title: str, side: int, ours: Key, theirs: Key, *cpu: tuple[str, str]
    ) -> None:
        """Compare two rows; ``side`` 1 compares servers, 2 clients."""
        name = f"{PEER_LABELS[ours[side]]}/{PEER_LABELS[theirs[side]]}"
        label = f"[{title}] {name}: "
        if ours not in medians or theirs not in medians:
            reasons = [args.unavailable.get(n) for n in (*ours, *theirs)]
            reason = next((r for r in reasons if r), "not measured")
            print(f"{label}n/a ({reason})")
            return
        a, b = medians[ours], medians[theirs]
        if not a["mb_per_s"] or not b["mb_per_s"]:
            print(f"{label}n/a (failed: see the run lines)")
            return
        speed = ratios[f"{title}: {name} MB/s"] = a["mb_per_s"] / b["mb_per_s"]
        line = f"{label}{speed:.2f}x MB/s"
        for field, what in cpu:
            ca, cb = a[field], b[field]
            if ca and cb:
                ratios[f"{title}: {name} {field}"] = ca / cb
                line += f"; {what} {ca / cb:.2f}x"
        print(line + ("  (CPU: lower is better)" if cpu else ""))

    for mine, other in h3.RATIOS:
        compare(
            "servers, gtlsclient",
            1,
            ("servers", mine, NATIVE_CLIENT),
            ("servers", other, NATIVE_CLIENT),
            ("server_cpu_s", "server CPU"),
        )
    if ("servers", "trioquic-no-offload", NATIVE_CLIENT) in medians:
        # The same server with one datagram per system call: what GSO/GRO buy.
        compare(
            "servers, gtlsclient",
            1,
            ("servers", "trioquic", NATIVE_CLIENT),
            ("servers", "trioquic-no-offload", NATIVE_CLIENT),
            ("server_cpu_s", "server CPU"),
        )
    for mine, other in CLIENT_RATIOS:
        compare(
            "clients, gtlsserver",
            2,
            ("clients", NATIVE_SERVER, mine),
            ("clients", NATIVE_SERVER, other),
            ("client_cpu_s", "client CPU"),
        )
    for mine, other in CLIENT_RATIOS:
        compare(
            "self",
            1,
            ("self", mine, mine),
            ("self", other, other),
            ("server_cpu_s", "server CPU"),
            ("client_cpu_s", "client CPU"),
        )
    ceiling_figures = {
        engine: summarize_ceiling(
            engine,
            medians.get(("servers", server, NATIVE_CLIENT)),
            medians.get(("clients", NATIVE_SERVER, server)),
            ceilings.get(engine),
            args,
        )
        for engine, server in CEILING_ENGINES.items()
        if server in args.servers_run
    }
    goals = print_goals(bulk_goals(medians, ceiling_figures, args))
    shares = [h3.noise_share(r) for runs in results.values() for r in runs]
    if shares and max(shares) > 0.1:
        print(
            f"warning: other processes used up to {max(shares):.0%} of a CPU "
            "during a measurement: the machine was not idle, the figures are noisy"
        )
    return {
        "medians": [
            {"measurement": m, "server": s, "client": c, **v}
            for (m, s, c), v in medians.items()
        ],
        "ratios": ratios,
        "ceiling": ceiling_figures,
        "goals": goals,
    }


def summarize_ceiling(
    engine: str,
    server: dict[str, float | None] | None,
    client: dict[str, float | None] | None,
    ceiling: dict[str, Any] | None,
    args: argparse.Namespace,
) -> dict[str, Any] | None:
    """trioquic's figures on ``engine`` as fractions of that library's
    sans-io ceiling."""
    ours = PEER_LABELS[CEILING_ENGINES[engine]]
    label = f"[ceiling] {ours} against {engine}'s sans-io alone (ceiling.py): "
    if ceiling is None:
        reason = "--no-ceiling" if not args.ceiling else "ceiling.py unavailable"
        print(f"{label}n/a ({reason})")
        return None
    limit = float(ceiling["server_mb_per_s"])
    figures: dict[str, Any] = {"ceiling": ceiling}
    parts = [f"ceiling {limit:.1f} MB per server CPU-second"]
    if server and server["mb_per_server_cpu_s"] and server["mb_per_s"]:
        figures["server_efficiency"] = server["mb_per_server_cpu_s"] / limit
        figures["server_speed"] = server["mb_per_s"] / limit
        parts.append(
            f"{ours} server {server['mb_per_server_cpu_s']:.1f} MB per server "
            f"CPU-second = {figures['server_efficiency']:.2f}x of it, "
            f"its MB/s (gtlsclient) = {figures['server_speed']:.2f}x of it"
        )
    else:
        parts.append(f"{ours}'s server not measured with gtlsclient")
    client_limit = ceiling.get("client_mb_per_s")
    if client_limit and client and client["mb_per_client_cpu_s"]:
        figures["client_efficiency"] = client["mb_per_client_cpu_s"] / client_limit
        parts.append(
            f"{ours} client {client['mb_per_client_cpu_s']:.1f} MB per client "
            f"CPU-second (gtlsserver) = {figures['client_efficiency']:.2f}x of the "
            f"ceiling's {float(client_limit):.1f}"
        )
    print(label + "; ".join(parts))
    return figures


#: Same-run ratios of the client side: (ours, theirs).
CLIENT_RATIOS = (
    ("trioquic", "aioquic"),
    ("trioquic-qh3", "trioquic"),
    ("trioquic-qh3", "qh3"),
)


def bulk_goals(
    medians: dict[Key, dict[str, float | None]],
    ceilings: dict[str, dict[str, Any] | None],
    args: argparse.Namespace,
) -> list[Goal]:
    """The qh3 engine's bulk goals, from this run's medians."""

    def figure(key: Key, field: str = "mb_per_s") -> float | None:
        return medians.get(key, {}).get(field)

    def why(*names: str) -> str:
        reasons = [args.unavailable.get(n) for n in names]
        return next((r for r in reasons if r), "not measured or failed")

    served = f"served to gtlsclient ({args.size / MB:.1f} MB)"
    ours = ("servers", "trioquic-qh3", NATIVE_CLIENT)
    rate = figure(ours)
    speedup = ratio(rate, figure(("servers", "trioquic", NATIVE_CLIENT)))
    over_qh3 = ratio(rate, figure(("servers", "qh3", NATIVE_CLIENT)))
    client = ("clients", NATIVE_SERVER, "trioquic-qh3")
    client_over_qh3 = ratio(figure(client), figure(("clients", NATIVE_SERVER, "qh3")))
    size_note = "" if args.size == DEFAULT_SIZE else "the goal is for 50 MiB"
    qh3_ceiling = ceilings.get("qh3") or {}
    efficiency = qh3_ceiling.get("server_efficiency")
    return [
        Goal(
            f"bulk {served}: trioquic+qh3/trioquic MB/s",
            speedup,
            BULK_SPEEDUP,
            note=why("trioquic-qh3", "trioquic", "servers") if speedup is None else "",
        ),
        Goal(
            f"bulk {served}: trioquic+qh3 MB/s",
            rate,
            BULK_MB_PER_S,
            unit="MB/s",
            note=why("trioquic-qh3", "servers") if rate is None else size_note,
        ),
        Goal(
            f"bulk {served}: trioquic+qh3/qh3-asyncio MB/s",
            over_qh3,
            OVER_QH3_ASYNCIO,
            note=why("trioquic-qh3", "qh3", "servers") if over_qh3 is None else "",
        ),
        Goal(
            "bulk from gtlsserver: trioquic+qh3 client/qh3-asyncio client MB/s",
            client_over_qh3,
            OVER_QH3_ASYNCIO,
            note="" if client_over_qh3 else why("trioquic-qh3", "qh3", "clients"),
        ),
        Goal(
            "bulk: trioquic+qh3 server MB per CPU-second / qh3's in-memory ceiling",
            efficiency,
            note="ceiling.py --engine qh3 not run or trioquic+qh3 not measured"
            if efficiency is None
            else "",
        ),
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="HTTP/3 bulk download: trioquic vs aioquic vs hypercorn-trio, "
        "with ngtcp2's client and server."
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 4 MiB, one repeat"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help=f"repeats ({DEFAULT_REPEAT})"
    )
    parser.add_argument(
        "--size", type=int, default=None, help=f"body bytes ({DEFAULT_SIZE})"
    )
    parser.add_argument(
        "--servers",
        default=",".join(h3.SERVERS),
        help="Python servers, comma-separated: "
        "trioquic,trioquic-qh3,aioquic,qh3,hypercorn",
    )
    add_cc_argument(parser)
    parser.add_argument(
        "--measurements",
        default=",".join(MEASUREMENTS),
        help="comma-separated: servers,clients,self",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds allowed for one download (60; --quick: 30)",
    )
    parser.add_argument(
        "--native-idle-timeout",
        type=int,
        default=5,
        help="gtlsclient/gtlsserver idle timeout, seconds",
    )
    parser.add_argument(
        "--native-default-windows",
        action="store_true",
        help="leave gtlsclient's flow-control windows at its defaults "
        "(15 MiB / 6 MiB) instead of the shared 1 MiB",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=None,
        help="attempts per download while the machine is busy (3; --quick: 1)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=900.0,
        help="seconds after which no new server starts",
    )
    parser.add_argument(
        "--no-ceiling",
        dest="ceiling",
        action="store_false",
        help="do not run ceiling.py",
    )
    parser.add_argument(
        "--ceiling-timeout",
        type=float,
        default=None,
        help="seconds allowed for ceiling.py (300; --quick: 60)",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin server and client to different CPUs",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    h3.add_profile_argument(parser)
    args = parser.parse_args(argv)
    for name, (quick, full) in {
        "repeat": (1, DEFAULT_REPEAT),
        "size": (QUICK_SIZE, DEFAULT_SIZE),
        "timeout": (30.0, 60.0),
        "attempts": (1, 3),
        "ceiling_timeout": (60.0, 300.0),
    }.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if min(args.repeat, args.attempts) < 1 or args.size < 1 or args.timeout <= 0:
        parser.error("--repeat, --attempts, --size >= 1 and --timeout > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except BenchError as exc:
        sys.exit(f"benchmark failed: {exc}")


if __name__ == "__main__":
    sys.exit(main())
