"""``trioquic serve --workers N``: scaling, correctness and a killed worker.

Three parts, each against the ``trioquic serve`` command itself (the built-in
server, ``--no-tcp``, bound to 127.0.0.1, its statistics in a
``--stats-file``); every HTTP/3 response of such a server names the worker
that sent it (``trioquic-worker: <index>``):

* **scaling**: 1 KB requests (``GET /bytes/1024``) served by ``--workers 1``,
  ``2`` and ``4``, restarted for every repeat in a rotating order, driven by
  ngtcp2's native client ``gtlsclient`` as ``h3_requests.py`` drives it
  (``--connections`` processes, 8 by default, one connection each, sharing
  ``--requests`` requests; each sends as many at once as the server's stream
  credit allows). requests/s = requests / wall time of the clients. The
  server's CPU is the supervisor's and every worker's (``/proc``), per
  request. Where the clients' CPU goes is printed beside it (user and
  system time of the ``gtlsclient`` processes, per request), with the
  machine's: the share of its CPUs that were busy, and in softirq (the
  loopback network stack). No process is pinned: the workers and the
  clients share the machine's CPUs as the kernel sees fit. A run during
  which other processes took more than a quarter of a CPU is measured again
  (``--attempts``, 3), the quietest attempt kept; their share is printed.

  New connections reach a worker by the first four octets of the
  destination connection ID the client chose (the routing program's hash).
  With 8 connections a random choice is often uneven (6 on one worker and
  2 on the other about a third of the time), and the wall time is then the
  busier worker's: by default (``--spread even``) each client is given a
  destination connection ID (``gtlsclient --dcid``) that sends connection
  ``i`` to worker ``i mod N``, which is what many clients average out to.
  ``--spread random`` leaves it to chance.

* **correctness**: ``--workers 4`` and 200 connections of trioquic's own
  HTTP/3 client, 20 at a time: each downloads ``/bytes/200000`` (every byte
  checked against the pattern), moves to a new local port halfway through
  (``Http3Client.rebind()``; the client's stream window is 64 KiB, so most
  of the body is still to come on the new path), then sends a second request
  on the same connection. Every transfer must be intact and every response
  of a connection must name the same worker; the spread across workers is
  printed.

* **kill**: ``--workers 4`` under a load of the same connections (each
  keeps downloading, with a rebind in its first transfer), the worker
  holding most of them is sent SIGKILL (its pid from the statistics file).
  Measured: when the supervisor noticed (its log line), when the statistics
  file shows a new pid in the slot (written once a second, so up to a
  second late), and when a new connection is answered by a worker of that
  index (the restart's figure). The probe is gtlsclient with a destination
  connection ID that the routing program sends to the slot, started right
  after the kill: the supervisor keeps the slot's socket open, so the
  probe's first flight waits there for the new worker (without gtlsclient,
  trioquic's clients connect until one lands on the slot). The load then
  runs ``--duration`` seconds more; every
  connection on the other workers must finish intact, on one worker. The
  killed worker's connections are expected to fail and are counted apart.
  The kill is done ``--repeat`` times, on a fresh server each time; the
  goal is judged on the slowest restart.

The goals (issue "Scale out"), printed met or not met at the end:

* 1 KB requests/s with ``--workers 2`` >= 1.6x ``--workers 1``, same run;
* server CPU per request with ``--workers 2`` within 1.1x of ``--workers 1``;
* 200 connections with a rebind each: every transfer intact, every
  connection served by one worker;
* a killed worker answers again within 1 s; the other workers' connections
  finish intact.

Without ``gtlsclient`` the scaling part is skipped (said so); the others run
on trioquic's client alone. Run it on an otherwise idle machine::

    python benchmarks/workers.py                 # 3 repeats, about 2 minutes
    python benchmarks/workers.py --quick         # a smoke test
    python benchmarks/workers.py --repeat 5 --parts scaling --json w.json
    python benchmarks/workers.py --parts scaling --profile DIR

``--profile DIR`` runs every worker under cProfile (one statistics file per
worker process in ``DIR``, written when it stops): where the time goes.
Profiled figures are slower than the others.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h3_requests as h3
import trio
from _bench_common import udp_counters, write_ca_and_leaf
from _goals import Goal, print_goals, ratio

HOST = "127.0.0.1"
SMALL_PATH = "/bytes/1024"
SMALL_SIZE = 1024
PARTS = ("scaling", "correctness", "kill")
#: Worker counts of the scaling part.
WORKER_COUNTS = (1, 2, 4)
#: Worker count of the correctness and kill parts.
MANY_WORKERS = 4
#: The goals.
SCALING_SPEEDUP = 1.6
CPU_PER_REQUEST = 1.1
RESTART_SECONDS = 1.0
#: The client's stream window in the correctness and kill parts: far under
#: the body, so that a rebind halfway through leaves most of it to be sent.
CLIENT_STREAM_WINDOW = 64 * 1024
#: Length of the destination connection IDs given to gtlsclient: not the
#: servers' (8), so the routing program takes its hash of the first four.
DCID_LENGTH = 12
#: What ``trioquic serve --workers`` logs when a worker ends.
ENDED = re.compile(r"worker (\d+) \(pid (\d+)\) ended")

DEFAULTS: dict[str, tuple[Any, Any]] = {
    # name: (quick, full)
    "repeat": (1, 3),
    "requests": (800, 16000),
    "duration": (0.5, 2.0),
    "transfers": (40, 200),
    "kill_connections": (12, 40),
    "attempts": (1, 3),
}


class BenchError(Exception):
    pass


# -- the server ----------------------------------------------------------------


@dataclass
class WorkersServer:
    """A running ``trioquic serve --workers N``."""

    workers: int
    process: subprocess.Popen[bytes]
    stats_file: Path
    out: Any
    err: Any
    port: int = 0
    #: Every worker pid seen (to end any left behind).
    pids: set[int] = field(default_factory=set)

    def stats(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return None
        for worker in data.get("workers", []):
            if worker.get("pid"):
                self.pids.add(int(worker["pid"]))
        return dict(data)

    def worker_pids(self) -> list[int]:
        stats = self.stats() or {}
        return [int(w["pid"]) for w in stats.get("workers", []) if w.get("pid")]

    def log(self) -> str:
        """What the supervisor printed (its notes: a worker that ended)."""
        self.out.seek(0)
        return str(self.out.read().decode(errors="replace"))

    def diagnostics(self) -> str:
        self.err.seek(0)
        errors = self.err.read().decode(errors="replace")
        errors = "\n".join(
            line for line in errors.splitlines() if '" 200 ' not in line
        )  # the access log's successes say nothing here
        return (
            f"server --workers {self.workers} exit={self.process.poll()}:\n"
            f"{self.log()[-1500:]}\n{errors[-3000:]}"
        )


def serve_command(
    workers: int, stats_file: Path, args: argparse.Namespace
) -> list[str]:
    command = [sys.executable]
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        command += [str(Path(__file__).resolve()), "--profiled-serve", args.profile]
    else:
        command += ["-m", "trioquic"]
    return [
        *command,
        "serve",
        "--workers",
        str(workers),
        "--no-tcp",
        "--host",
        HOST,
        "--port",
        "0",
        "--certificate",
        args.cert,
        "--private-key",
        args.key,
        "--stats-file",
        str(stats_file),
    ]


def start_server(workers: int, args: argparse.Namespace) -> WorkersServer:
    stats_file = Path(args.directory) / f"stats-{workers}-{time.monotonic_ns()}.json"
    out = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop_server()
    err = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop_server()
    process = h3.start(
        serve_command(workers, stats_file, args), cpu=None, stdout=out, stderr=err
    )
    server = WorkersServer(workers, process, stats_file, out, err)
    try:
        wait_ready(server, deadline=time.monotonic() + 30)
    except BaseException:
        stop_server(server)
        raise
    return server


def wait_ready(server: WorkersServer, deadline: float) -> None:
    """Until the statistics file says every worker serves."""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"server exited\n{server.diagnostics()}")
        stats = server.stats()
        if stats and all(w.get("ready") for w in stats["workers"]):
            server.port = int(stats["port"])
            return
        time.sleep(0.05)
    raise BenchError(f"server not ready in time\n{server.diagnostics()}")


def stop_server(server: WorkersServer) -> None:
    """SIGTERM to the supervisor (it stops its workers gracefully), then
    SIGKILL to any worker of ours still running (the workers are in process
    groups of their own: a supervisor killed outright leaves them)."""
    server.stats()
    h3.stop(server.process, grace=20.0)
    for pid in server.pids:
        if _is_our_worker(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    server.out.close()
    server.err.close()


def _is_our_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fp:
            command = fp.read()
    except OSError:
        return False
    return b"serve" in command and b"--workers" in command


# -- CPU -----------------------------------------------------------------------


def process_times(pid: int) -> tuple[float, float] | None:
    """User and system CPU seconds of a process (``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as fp:
            fields = fp.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick
    except (OSError, IndexError, ValueError):
        return None


def machine_times() -> dict[str, float]:
    """The machine's CPU seconds by kind (``/proc/stat``), all CPUs."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    try:
        with open("/proc/stat") as fp:
            values = fp.readline().split()[1 : 1 + len(names)]
    except OSError:
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    return {name: int(v) / tick for name, v in zip(names, values, strict=False)}


def children_times() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


class CpuSampler:
    """CPU used by the server's processes, the clients this process waited
    for and the machine, between creation and :meth:`finish`."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.server = {pid: process_times(pid) for pid in pids}
        self.clients = children_times()
        self.machine = machine_times()
        self.drops = udp_counters().get("RcvbufErrors")

    def finish(self) -> dict[str, Any]:
        per_process: list[float | None] = []
        user = system = 0.0
        complete = True
        for pid in self.pids:
            before, after = self.server[pid], process_times(pid)
            if before is None or after is None:
                complete = False
                per_process.append(None)
                continue
            user += after[0] - before[0]
            system += after[1] - before[1]
            per_process.append(after[0] + after[1] - before[0] - before[1])
        clients = children_times()
        machine = machine_times()
        spent = {k: machine[k] - self.machine[k] for k in machine if k in self.machine}
        drops = udp_counters().get("RcvbufErrors")
        return {
            "server_user": user if complete else None,
            "server_system": system if complete else None,
            "server_per_process": per_process,
            "client_user": clients[0] - self.clients[0],
            "client_system": clients[1] - self.clients[1],
            "machine": spent,
            "kernel_drops": None
            if drops is None or self.drops is None
            else drops - self.drops,
        }


# -- scaling -------------------------------------------------------------------


@dataclass
class LoadRun:
    workers: int
    repeat: int
    requests: int
    seconds: float | None = None
    requests_per_s: float | None = None
    #: Server (supervisor + workers) CPU microseconds per request, and the
    #: share that was system time.
    server_us: float | None = None
    server_system_share: float | None = None
    #: Each worker's share of the server's CPU (supervisor first).
    process_shares: list[float | None] = field(default_factory=list)
    client_us: float | None = None
    client_system_share: float | None = None
    #: Of the machine's CPUs during the run: busy (not idle), softirq.
    machine_busy: float | None = None
    machine_softirq: float | None = None
    #: CPU seconds of processes other than ours during the run (noise).
    other_cpu: float | None = None
    kernel_drops: int | None = None
    failed: bool = False
    note: str = ""


def dcid_for(worker: int, workers: int, rng: random.Random) -> str:
    """A destination connection ID the routing program hashes to ``worker``
    (its first four octets, big-endian, modulo the workers)."""
    word = rng.randrange(0, 2**32 - workers)
    word += (worker - word) % workers
    return (word.to_bytes(4, "big") + rng.randbytes(DCID_LENGTH - 4)).hex()


def native_load(
    server: WorkersServer, args: argparse.Namespace, repeat: int
) -> LoadRun:
    connections = args.connections
    per_process = max(1, args.requests // connections)
    run = LoadRun(server.workers, repeat, per_process * connections)
    rng = random.Random(f"{repeat}-{server.workers}")
    url = f"https://{HOST}:{server.port}{SMALL_PATH}"
    commands = []
    for i in range(connections):
        dcid = []
        if args.spread == "even":
            dcid = [f"--dcid={dcid_for(i % server.workers, server.workers, rng)}"]
        commands.append(
            [
                args.native_path,
                "-q",
                "--exit-on-all-streams-close",
                f"--timeout={args.native_idle_timeout}s",
                *dcid,
                "-n",
                str(per_process),
                HOST,
                str(server.port),
                url,
            ]
        )
    pids = [server.process.pid, *server.worker_pids()]
    sampler = CpuSampler(pids)
    codes, elapsed, outputs = h3.run_clients(commands, timeout=args.timeout, cpu=None)
    cpu = sampler.finish()
    run.seconds = elapsed
    run.kernel_drops = cpu["kernel_drops"]
    machine = cpu["machine"]
    total = sum(machine.values())
    if total > 0:
        run.machine_busy = (
            1 - (machine.get("idle", 0) + machine.get("iowait", 0)) / total
        )
        run.machine_softirq = machine.get("softirq", 0) / total
    server_cpu = None
    if cpu["server_user"] is not None:
        server_cpu = cpu["server_user"] + cpu["server_system"]
        run.server_us = server_cpu / run.requests * 1e6
        run.server_system_share = ratio(cpu["server_system"], server_cpu)
        run.process_shares = [
            None if p is None else max(0.0, p) / server_cpu if server_cpu > 0 else None
            for p in cpu["server_per_process"]
        ]
    client_cpu = cpu["client_user"] + cpu["client_system"]
    run.client_us = client_cpu / run.requests * 1e6
    run.client_system_share = ratio(cpu["client_system"], client_cpu)
    if total > 0 and server_cpu is not None:
        busy = total - machine.get("idle", 0) - machine.get("iowait", 0)
        run.other_cpu = max(0.0, busy - server_cpu - client_cpu)
    if any(code != 0 for code in codes):
        reasons = {out.strip().splitlines()[-1] for out in outputs if out.strip()}
        run.failed = True
        run.note = (
            f"exit codes {sorted(set(map(str, codes)))} "
            f"{'; '.join(sorted(reasons))[:300]}"
        )
        return run
    run.requests_per_s = run.requests / elapsed
    return run


def probe_native(server: WorkersServer, args: argparse.Namespace) -> None:
    """One request through gtlsclient (a warm-up, and proof it answers)."""
    url = f"https://{HOST}:{server.port}{SMALL_PATH}"
    for _ in range(20):
        completed = subprocess.run(
            [
                *(args.native_path, "-q", "--exit-on-all-streams-close"),
                *("--timeout=1s", "-n", "20", HOST, str(server.port), url),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=15,
            check=False,
        )
        if completed.returncode == 0:
            return
        time.sleep(0.2)
    raise BenchError(f"gtlsclient got no answer\n{server.diagnostics()}")


def noise(run: LoadRun) -> float:
    """CPUs' worth of other processes' work during the run."""
    if run.other_cpu is None or not run.seconds:
        return 0.0
    return run.other_cpu / run.seconds


def print_load(run: LoadRun) -> None:
    rate = "failed" if run.failed else f"{run.requests_per_s:.0f} req/s"
    shares = "/".join(_fmt(s, ".0%") for s in run.process_shares)
    print(
        f"  run {run.repeat + 1}: --workers {run.workers}  {rate:>12}"
        f"  server {_fmt(run.server_us, '.0f')} us/req"
        f" (system {_fmt(run.server_system_share, '.0%')}; supervisor/workers {shares})"
        f"  clients {_fmt(run.client_us, '.0f')} us/req"
        f" (system {_fmt(run.client_system_share, '.0%')})"
        f"  machine busy {_fmt(run.machine_busy, '.0%')}"
        f" (softirq {_fmt(run.machine_softirq, '.1%')})"
        f"  other processes {_fmt(run.other_cpu, '.2f')} s"
        f"  kernel drops {_fmt(run.kernel_drops, 'd')}"
        + (f"\n    {run.note}" if run.note else ""),
        flush=True,
    )


def run_scaling(args: argparse.Namespace) -> dict[int, list[LoadRun]]:
    counts = list(args.worker_counts)
    results: dict[int, list[LoadRun]] = {n: [] for n in counts}
    print(
        f"scaling: GET {SMALL_PATH}, {args.connections} gtlsclient connections "
        f"({args.spread} spread), {args.requests} requests per run, "
        f"--workers {', '.join(map(str, counts))}, {args.repeat} repeat(s)",
        flush=True,
    )
    for repeat in range(args.repeat):
        shift = repeat % len(counts)
        for workers in counts[shift:] + counts[:shift]:
            try:
                server = start_server(workers, args)
            except BenchError as exc:
                run = LoadRun(workers, repeat, 0, failed=True, note=str(exc)[-1500:])
                print_load(run)
                results[workers].append(run)
                continue
            try:
                probe_native(server, args)
                # As h3_requests.py does: measured again while other
                # processes take a large share of the machine, the quietest
                # attempt kept, whatever its figure.
                attempts: list[LoadRun] = []
                while True:
                    run = native_load(server, args, repeat)
                    attempts.append(run)
                    if run.failed:
                        run.note += "\n" + server.diagnostics()[-1500:]
                        break
                    if noise(run) <= h3.NOISY_SHARE or len(attempts) >= args.attempts:
                        run = min(attempts, key=noise)
                        break
                    print_load(run)
                    print("    (noisy: measuring again)", flush=True)
            except BenchError as exc:
                run = LoadRun(workers, repeat, 0, failed=True, note=str(exc)[-1500:])
            finally:
                stop_server(server)
            print_load(run)
            results[workers].append(run)
    return results


# -- trioquic's client: transfers with a rebind ---------------------------------


@dataclass
class Connection:
    """What one client connection saw."""

    index: int
    #: ``trioquic-worker`` of each response, in order.
    workers: list[int] = field(default_factory=list)
    requests: int = 0
    bytes: int = 0
    rebound: bool = False
    #: Every body complete and equal to the pattern, no error.
    intact: bool = False
    error: str = ""

    @property
    def first_worker(self) -> int | None:
        return self.workers[0] if self.workers else None

    @property
    def one_worker(self) -> bool:
        return bool(self.workers) and len(set(self.workers)) == 1


class Mismatch(Exception):
    pass


def client_settings(ca: str) -> Any:
    from trioquic import QuicSettings

    return QuicSettings(
        ca_certs=ca, stream_receive_window=CLIENT_STREAM_WINDOW, idle_timeout=10.0
    )


async def fetch(
    client: Any, size: int, record: Connection, *, rebind_at: int | None = None
) -> None:
    """``GET /bytes/<size>``, every byte checked; the client rebinds once
    ``rebind_at`` bytes have arrived."""
    from trioquic.cli._serve import pattern_bytes

    response = await client.request("GET", f"/bytes/{size}")
    async with response:
        worker = dict(response.headers).get(b"trioquic-worker")
        if response.status != 200 or worker is None:
            raise Mismatch(f"status {response.status}, worker header {worker!r}")
        record.workers.append(int(worker))
        offset = 0
        async for chunk in response:
            if chunk != pattern_bytes(len(chunk), offset):
                raise Mismatch(f"content differs at {offset} to {len(chunk)}")
            offset += len(chunk)
            if rebind_at is not None and offset >= rebind_at and not record.rebound:
                before = client.local_address
                after = await client.rebind()
                if after == before:
                    raise Mismatch(f"rebind left the connection on {after}")
                record.rebound = True
        if offset != size:
            raise Mismatch(f"{offset} of {size} bytes")
    record.requests += 1
    record.bytes += size


async def transfer_connection(
    port: int,
    ca: str,
    record: Connection,
    *,
    size: int,
    keep_going: Callable[[], bool] | None = None,
    on_first: Callable[[Connection], None] | None = None,
    limit: float,
) -> None:
    """One connection: a download with a rebind halfway, then a second
    request (and, with ``keep_going``, more while it says so)."""
    from trioquic.h3 import open_http3_client

    try:
        with trio.fail_after(limit):
            async with open_http3_client(
                HOST, port, settings=client_settings(ca)
            ) as client:
                await fetch(client, size, record, rebind_at=size // 2)
                if on_first is not None:
                    on_first(record)
                await fetch(client, size // 10, record)
                while keep_going is not None and keep_going():
                    await fetch(client, size, record)
        record.intact = record.rebound
        if not record.rebound:
            record.error = "no rebind"
    except Exception as exc:
        record.error = f"{type(exc).__name__}: {exc}"[:200]


async def correctness(port: int, args: argparse.Namespace) -> dict[str, Any]:
    records = [Connection(i) for i in range(args.transfers)]
    limiter = trio.CapacityLimiter(args.concurrency)
    started = trio.current_time()

    async def one(record: Connection) -> None:
        async with limiter:
            await transfer_connection(
                port, args.ca, record, size=args.transfer_size, limit=30.0
            )

    with trio.move_on_after(args.part_timeout) as scope:
        async with trio.open_nursery() as nursery:
            for record in records:
                nursery.start_soon(one, record)
    return {
        "connections": len(records),
        "intact": sum(r.intact for r in records),
        "one_worker": sum(r.intact and r.one_worker for r in records),
        "rebound": sum(r.rebound for r in records),
        "requests": sum(r.requests for r in records),
        "bytes": sum(r.bytes for r in records),
        "spread": spread_of(records),
        "seconds": trio.current_time() - started,
        "timed_out": scope.cancelled_caught,
        "errors": error_counts(records),
    }


def spread_of(records: list[Connection]) -> dict[str, int]:
    counts = collections.Counter(
        "none" if r.first_worker is None else str(r.first_worker) for r in records
    )
    return dict(sorted(counts.items()))


def error_counts(records: list[Connection]) -> dict[str, int]:
    counts = collections.Counter(r.error.split(":")[0] for r in records if r.error)
    mixed = sum(r.intact and not r.one_worker for r in records)
    if mixed:
        counts["served by more than one worker"] += mixed
    return dict(counts)


def run_correctness(args: argparse.Namespace) -> dict[str, Any]:
    print(
        f"correctness: --workers {MANY_WORKERS}, {args.transfers} connections "
        f"({args.concurrency} at a time): GET /bytes/{args.transfer_size} with a "
        f"rebind halfway, then GET /bytes/{args.transfer_size // 10}",
        flush=True,
    )
    server = start_server(MANY_WORKERS, args)
    try:
        result = trio.run(correctness, server.port, args)
        stats = server.stats() or {}
        result["restarts"] = stats.get("restarts")
        if result["intact"] < result["connections"]:
            result["server"] = server.diagnostics()[-2000:]
    finally:
        stop_server(server)
    print(
        f"  {result['intact']} of {result['connections']} connections intact "
        f"({result['rebound']} rebound), {result['one_worker']} served by one "
        f"worker from start to end; {result['requests']} requests, "
        f"{result['bytes'] / 1e6:.1f} MB in {result['seconds']:.1f} s; "
        f"connections per worker {result['spread']}; worker restarts "
        f"{result['restarts']}"
        + (f"; errors {result['errors']}" if result["errors"] else "")
        + ("; TIMED OUT" if result["timed_out"] else ""),
        flush=True,
    )
    if "server" in result:
        print(f"    {result['server']}")
    return result


# -- kill ----------------------------------------------------------------------


async def kill_under_load(
    server: WorkersServer, args: argparse.Namespace
) -> dict[str, Any]:
    records = [Connection(i) for i in range(args.kill_connections)]
    first_seen = trio.Event()
    stop = trio.Event()
    placed: list[Connection] = []

    def on_first(record: Connection) -> None:
        placed.append(record)
        if len(placed) == len(records):
            first_seen.set()

    result: dict[str, Any] = {"connections": len(records)}
    async with trio.open_nursery() as nursery:
        for record in records:
            nursery.start_soon(
                functools.partial(
                    transfer_connection,
                    server.port,
                    args.ca,
                    record,
                    size=args.transfer_size,
                    keep_going=lambda: not stop.is_set(),
                    on_first=on_first,
                    limit=args.part_timeout,
                )
            )
        with trio.move_on_after(15):
            await first_seen.wait()
        counts = collections.Counter(r.first_worker for r in placed)
        stats = server.stats() or {}
        slots = {w["index"]: w for w in stats.get("workers", [])}
        victim = max(slots, key=lambda i: (counts.get(i, 0), i == 1))
        old_pid = int(slots[victim]["pid"])
        old_restarts = int(slots[victim]["restarts"])
        result.update(victim=victim, victim_pid=old_pid)
        log_before = server.log()
        os.kill(old_pid, signal.SIGKILL)
        killed = trio.current_time()
        times = await watch_restart(
            server, args, victim, old_pid, old_restarts, log_before
        )
        result.update({k: None if v is None else v - killed for k, v in times.items()})
        await trio.sleep(args.duration)
        stop.set()
    stats = server.stats() or {}
    slot = next(w for w in stats["workers"] if w["index"] == victim)
    result["new_pid"] = slot["pid"]
    result["restarts"] = slot["restarts"] - old_restarts
    on_victim = [r for r in records if r.first_worker == victim]
    others = [r for r in records if r.first_worker != victim]
    result.update(
        on_killed=len(on_victim),
        on_killed_failed=sum(not r.intact for r in on_victim),
        others=len(others),
        others_intact=sum(r.intact and r.one_worker for r in others),
        others_requests=sum(r.requests for r in others),
        spread=spread_of(records),
        errors_killed=error_counts(on_victim),
        errors_others=error_counts(others),
    )
    return result


async def watch_restart(
    server: WorkersServer,
    args: argparse.Namespace,
    victim: int,
    old_pid: int,
    old_restarts: int,
    log_before: str,
) -> dict[str, float | None]:
    """When the supervisor noticed, when the statistics file showed a new
    worker in the slot, and when a new connection was answered by it."""
    from trioquic.h3 import open_http3_client

    times: dict[str, float | None] = {"noticed": None, "stats": None, "answered": None}
    answered = trio.Event()
    files_read = trio.Event()

    def answer(worker: bytes | None) -> None:
        if worker == str(victim).encode() and not answered.is_set():
            times["answered"] = trio.current_time()
            answered.set()

    async def probe() -> None:
        """New connections until one is answered from the slot (trioquic's
        client: its connection IDs are random, a quarter land there)."""
        while not answered.is_set():
            with contextlib.suppress(Exception), trio.move_on_after(5):
                async with open_http3_client(
                    HOST, server.port, settings=client_settings(args.ca)
                ) as client:
                    response = await client.request("GET", "/bytes/16")
                    await response.read()
                    answer(dict(response.headers).get(b"trioquic-worker"))

    async def probe_native() -> None:
        """gtlsclient, its first flight sent to the slot (``--dcid``): it
        waits in the slot's socket for the new worker."""
        rng = random.Random(victim)
        while not answered.is_set():
            command = [
                *(args.native_path, "--exit-on-all-streams-close", "--timeout=3s"),
                f"--dcid={dcid_for(victim, MANY_WORKERS, rng)}",
                *(HOST, str(server.port), f"https://{HOST}:{server.port}/bytes/16"),
            ]
            with contextlib.suppress(OSError), trio.move_on_after(5):
                done = await trio.run_process(
                    command, capture_stdout=True, capture_stderr=True, check=False
                )
                output = (done.stdout + done.stderr).decode(errors="replace")
                found = re.search(r"\[trioquic-worker: (\d+)\]", output)
                answer(found[1].encode() if found else None)

    async def watch_files() -> None:
        while times["noticed"] is None or times["stats"] is None:
            if times["noticed"] is None:
                fresh = server.log()[len(log_before) :]
                if any(int(m[1]) == old_pid for m in ENDED.findall(fresh)):
                    times["noticed"] = trio.current_time()
            if times["stats"] is None:
                stats = server.stats() or {}
                for slot in stats.get("workers", []):
                    if (
                        slot["index"] == victim
                        and slot["pid"] not in (None, old_pid)
                        and slot["restarts"] > old_restarts
                    ):
                        times["stats"] = trio.current_time()
            await trio.sleep(0.01)
        files_read.set()

    with trio.move_on_after(15):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_files)
            if args.native_path is not None:
                nursery.start_soon(probe_native)
            else:
                for _ in range(4):
                    nursery.start_soon(probe)
            await answered.wait()
            with trio.move_on_after(3):
                await files_read.wait()
            nursery.cancel_scope.cancel()
    return times


def run_kill(args: argparse.Namespace) -> dict[str, Any]:
    """The kill, ``--repeat`` times (a fresh server each); the goal is
    judged on the slowest restart."""
    print(
        f"kill: --workers {MANY_WORKERS}, {args.kill_connections} connections "
        f"downloading GET /bytes/{args.transfer_size} (a rebind in the first), "
        f"SIGKILL to one worker, {args.duration:g} s more; {args.repeat} time(s)",
        flush=True,
    )
    runs = []
    for repeat in range(args.repeat):
        server = start_server(MANY_WORKERS, args)
        try:
            result = trio.run(kill_under_load, server, args)
            if result["others_intact"] < result["others"]:
                result["server"] = server.diagnostics()[-2000:]
        finally:
            stop_server(server)
        print_kill(repeat, result)
        runs.append(result)
    answered = [r["answered"] for r in runs]
    return {
        "runs": runs,
        "answered_max": None if None in answered else max(answered),
        "answered_median": _median(answered),
        "restarts": sum(r["restarts"] for r in runs),
        **{
            name: sum(r[name] for r in runs)
            for name in ("connections", "others", "others_intact", "on_killed")
        },
    }


def print_kill(repeat: int, result: dict[str, Any]) -> None:
    print(
        f"  run {repeat + 1}: worker {result['victim']} (pid {result['victim_pid']})"
        f" killed: supervisor noticed after {_fmt(result['noticed'], '.3f')} s, "
        f"statistics file showed pid {result['new_pid']} after "
        f"{_fmt(result['stats'], '.3f')} s (written once a second), a new "
        f"connection answered by worker {result['victim']} after "
        f"{_fmt(result['answered'], '.3f')} s; restarts {result['restarts']}",
        flush=True,
    )
    print(
        f"    other workers: {result['others_intact']} of {result['others']} "
        f"connections intact on one worker ({result['others_requests']} requests)"
        + (f", errors {result['errors_others']}" if result["errors_others"] else "")
        + f"; on the killed worker: {result['on_killed_failed']} of "
        f"{result['on_killed']} failed (expected) {result['errors_killed']}; "
        f"connections per worker {result['spread']}",
        flush=True,
    )
    if "server" in result:
        print(f"    {result['server']}")


# -- the report ----------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize_scaling(results: dict[int, list[LoadRun]]) -> dict[int, dict[str, Any]]:
    print()
    print(
        "1 KB HTTP/3 requests, trioquic serve --workers N; medians over runs; "
        "us/req = CPU microseconds per request (server: supervisor + workers; "
        "clients: the gtlsclient processes)"
    )
    header = (
        f"{'workers':>7} {'req/s':>8} {'vs 1':>6} {'srv us/req':>10} {'vs 1':>6} "
        f"{'sys':>4} {'cli us/req':>10} {'sys':>4} {'busy':>5} {'softirq':>7}"
        "  runs (req/s)"
    )
    print(header)
    print("-" * len(header))
    medians: dict[int, dict[str, Any]] = {}
    for workers, runs in results.items():
        good = [r for r in runs if not r.failed]
        medians[workers] = {
            name: _median([getattr(r, name) for r in good])
            for name in (
                "requests_per_s",
                "server_us",
                "server_system_share",
                "client_us",
                "client_system_share",
                "machine_busy",
                "machine_softirq",
            )
        }
        medians[workers]["failed"] = len(runs) - len(good)
    base = medians.get(1, {})
    for workers, runs in results.items():
        m = medians[workers]
        rates = " ".join(
            "failed" if r.failed else f"{r.requests_per_s:.0f}" for r in runs
        )
        print(
            f"{workers:>7} {_fmt(m['requests_per_s'], '.0f'):>8} "
            f"{_fmt(ratio(m['requests_per_s'], base.get('requests_per_s')), '.2f'):>6} "
            f"{_fmt(m['server_us'], '.0f'):>10} "
            f"{_fmt(ratio(m['server_us'], base.get('server_us')), '.2f'):>6} "
            f"{_fmt(m['server_system_share'], '.0%'):>4} "
            f"{_fmt(m['client_us'], '.0f'):>10} "
            f"{_fmt(m['client_system_share'], '.0%'):>4} "
            f"{_fmt(m['machine_busy'], '.0%'):>5} "
            f"{_fmt(m['machine_softirq'], '.1%'):>7}  {rates}"
        )
    cpus = len(os.sched_getaffinity(0))
    for workers, m in medians.items():
        # What the machine's CPUs allow at the measured CPU per request,
        # server and clients together, were all of them busy with it.
        spent = (m["server_us"] or 0) + (m["client_us"] or 0)
        m["cpu_bound"] = cpus / spent * 1e6 if spent and workers > 1 else None
        if m["cpu_bound"] is not None:
            print(
                f"--workers {workers}: {cpus} CPUs at {spent:.0f} us per request "
                f"(server + clients) allow at most {m['cpu_bound']:.0f} req/s "
                f"({_fmt(ratio(m['cpu_bound'], base.get('requests_per_s')), '.2f')}x "
                f"--workers 1); measured {_fmt(m['requests_per_s'], '.0f')}"
            )
    return medians


def goals(
    args: argparse.Namespace,
    medians: dict[int, dict[str, Any]] | None,
    correct: dict[str, Any] | None,
    kill: dict[str, Any] | None,
) -> list[Goal]:
    out = []
    if medians is None:
        reason = args.skipped.get("scaling", "not measured")
        figures: tuple[float | None, float | None] = (None, None)
    else:
        one, two = medians.get(1, {}), medians.get(2, {})
        reason = "not measured (--workers 1 and 2 needed)"
        figures = (
            ratio(two.get("requests_per_s"), one.get("requests_per_s")),
            ratio(two.get("server_us"), one.get("server_us")),
        )
    out.append(
        Goal(
            "1 KB requests/s, --workers 2 / --workers 1",
            figures[0],
            SCALING_SPEEDUP,
            note="" if figures[0] else reason,
        )
    )
    out.append(
        Goal(
            "server CPU per request, --workers 2 / --workers 1",
            figures[1],
            CPU_PER_REQUEST,
            at_most=True,
            note="" if figures[1] else reason,
        )
    )
    if correct is None:
        what = "connections with a rebind intact, on one worker"
        note = args.skipped.get("correctness", "not measured")
        out.append(Goal(what, None, note=note))
    else:
        what = (
            f"connections with a rebind intact, on one worker "
            f"(of {correct['connections']})"
        )
        out.append(
            Goal(
                what, correct["one_worker"], correct["connections"], unit="connections"
            )
        )
    if kill is None:
        note = args.skipped.get("kill", "not measured")
        out.append(Goal("killed worker answering again", None, note=note))
        out.append(Goal("other workers' connections intact", None, note=note))
    else:
        out.append(
            Goal(
                "killed worker answering again",
                kill["answered_max"],
                RESTART_SECONDS,
                at_most=True,
                unit="s",
                note=f"slowest of {len(kill['runs'])}, median "
                f"{_fmt(kill['answered_median'], '.2f')} s"
                if kill["answered_max"] is not None
                else "no answer in 15 s",
            )
        )
        out.append(
            Goal(
                f"other workers' connections intact (of {kill['others']})",
                kill["others_intact"],
                kill["others"],
                unit="connections",
            )
        )
    return out


# -- the run -------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    for part in parts:
        if part not in PARTS:
            raise SystemExit(f"unknown part {part!r}; choose from {PARTS}")
    if not sys.platform.startswith("linux"):
        print("serve --workers needs Linux: nothing to measure")
        return 1
    args.skipped = {}
    args.native_path = shutil.which(h3.NATIVE_CLIENT)
    if "scaling" in parts and args.native_path is None:
        args.skipped["scaling"] = (
            f"{h3.NATIVE_CLIENT} (ngtcp2's HTTP/3 client) not found: the scaling "
            "part is skipped"
        )
        print(args.skipped["scaling"])
        parts.remove("scaling")
    for part in PARTS:
        if part not in parts:
            args.skipped.setdefault(part, "not in --parts")
    payload: dict[str, Any] = {"arguments": {}, "skipped": args.skipped}
    scaling = correct = kill = medians = None
    with tempfile.TemporaryDirectory() as directory:
        args.directory = directory
        args.ca, args.cert, args.key = write_ca_and_leaf(Path(directory), HOST)
        payload["arguments"] = {
            k: v
            for k, v in vars(args).items()
            if isinstance(v, int | float | str | list | tuple) and k != "skipped"
        }
        print(f"{os.cpu_count()} CPUs; parts: {', '.join(parts)}", flush=True)
        if "scaling" in parts:
            scaling = run_scaling(args)
        if "correctness" in parts:
            correct = run_correctness(args)
        if "kill" in parts:
            kill = run_kill(args)
    if scaling is not None:
        medians = summarize_scaling(scaling)
        payload["scaling"] = {
            "runs": [asdict(r) for runs in scaling.values() for r in runs],
            "medians": {str(k): v for k, v in medians.items()},
        }
    payload["correctness"] = correct
    payload["kill"] = kill
    payload["goals"] = print_goals(
        goals(args, medians, correct, kill),
        title="goals of serve --workers",
        legend="same run; trioquic serve --workers N, driven by gtlsclient",
    )
    if scaling is not None:
        print(
            "note: no process is pinned; clients and workers share the machine's "
            f"{os.cpu_count()} CPUs (clients' share: the cli us/req column)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="trioquic serve --workers N: scaling, correctness, a killed worker."
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: short runs")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"some of {PARTS}")
    parser.add_argument("--repeat", type=int, help="scaling: repeats (3)")
    parser.add_argument(
        "--requests", type=int, help="scaling: requests per run (16000)"
    )
    parser.add_argument(
        "--connections", type=int, default=8, help="scaling: gtlsclient connections"
    )
    parser.add_argument(
        "--workers",
        dest="worker_counts",
        type=lambda text: [int(n) for n in text.split(",")],
        default=list(WORKER_COUNTS),
        help="scaling: worker counts (1,2,4)",
    )
    parser.add_argument(
        "--spread",
        choices=("even", "random"),
        default="even",
        help="scaling: give connection i to worker i mod N (even), or leave it "
        "to the clients' random connection IDs",
    )
    parser.add_argument("--transfers", type=int, help="correctness: connections (200)")
    parser.add_argument(
        "--concurrency", type=int, default=20, help="correctness: at a time"
    )
    parser.add_argument(
        "--transfer-size", type=int, default=200_000, help="bytes per download"
    )
    parser.add_argument(
        "--kill-connections", type=int, help="kill: connections under load (40)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        help="kill: seconds the load goes on once the worker answers again (2)",
    )
    parser.add_argument(
        "--part-timeout",
        type=float,
        default=120.0,
        help="seconds a correctness or kill part may take",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="scaling: seconds per run"
    )
    parser.add_argument(
        "--attempts",
        type=int,
        help="scaling: attempts per run while other processes take more than "
        f"{h3.NOISY_SHARE:.0%} of a CPU, the quietest kept (3; --quick: 1)",
    )
    parser.add_argument(
        "--native-idle-timeout",
        type=int,
        default=3,
        help="gtlsclient: idle seconds after which it gives up",
    )
    parser.add_argument("--json", metavar="PATH", help="also write figures here")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="run every worker under cProfile, one file per worker in DIR",
    )
    args = parser.parse_args(argv)
    for name, (quick, full) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.quick:
        args.part_timeout = min(args.part_timeout, 60.0)
    if min(args.repeat, args.connections, args.transfers, args.kill_connections) < 1:
        parser.error("--repeat, --connections, --transfers, --kill-connections >= 1")
    if args.requests < args.connections or args.transfer_size < 1000:
        parser.error("--requests >= --connections, --transfer-size >= 1000")
    return args


# -- profiling: the server, its workers under cProfile --------------------------


def profiled_serve(directory: str, argv: list[str]) -> int:
    """``trioquic serve ...`` with each worker under cProfile: the worker's
    run (trioquic.workers' ``_run_worker``, which it runs under ``trio.run``)
    is wrapped here, in the server process, before the workers fork."""
    import cProfile

    from trioquic.cli._main import main as cli_main
    from trioquic.workers import _supervisor

    original = _supervisor._run_worker

    async def profiled(target: Any, context: Any, interval: float) -> None:
        profile = cProfile.Profile()
        profile.enable()
        try:
            await original(target, context, interval)
        finally:
            profile.disable()
            name = f"worker-{context.index}-{os.getpid()}.prof"
            profile.dump_stats(os.path.join(directory, name))

    _supervisor._run_worker = profiled
    return int(cli_main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--profiled-serve"]:
        return profiled_serve(argv[1], argv[2:])
    args = parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
