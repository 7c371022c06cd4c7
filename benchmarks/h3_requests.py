"""Small HTTP/3 requests over loopback: trioquic's server, on each of its
engines, against aioquic's and qh3's asyncio layers and hypercorn's trio
worker, with the same load clients.

Every server answers ``GET /bytes/1024`` with 1024 bytes (status 200,
``content-type`` and ``content-length`` headers):

* ``trioquic``: ``trioquic.h3.serve_http3`` and a handler that calls
  ``request.respond`` (``_h3_peers/trioquic_server.py``), on trioquic's
  default engine, aioquic;
* ``trioquic-qh3`` (labelled ``trioquic+qh3``): the same server on trioquic's
  qh3 engine (``--engine qh3``: ``QuicSettings(engine="qh3")``);
* ``aioquic``: a minimal asyncio server built like aioquic's example server,
  ``QuicConnectionProtocol`` + ``H3Connection``, answering in the event
  callback with ``send_headers`` + ``send_data`` + ``transmit``
  (``_h3_peers/aioquic_server.py``);
* ``qh3`` (labelled ``qh3-asyncio``): the same server on qh3's asyncio layer
  and ``H3Connection`` (``_h3_peers/qh3_server.py``; qh3 keeps aioquic's API);
* ``hypercorn-trio``: the ``hypercorn`` command line, ``--worker-class trio
  --workers 0`` (the worker runs in the process started, which is what gets
  pinned and measured) with a QUIC bind and a small ASGI app
  (``_h3_peers/hypercorn_app.py``).

All use the same certificate (signed by a scratch CA, which the clients are
given: qh3's client refuses a self-signed one) and the same QUIC settings:
aioquic's defaults, because hypercorn cannot change them (UDP payload 1200
bytes, 1 MiB connection and stream windows, an initial credit of 128 request
streams, kernel-default socket buffers; qh3's path MTU discovery off).
aioquic (and so hypercorn) doubles its stream credit as streams are used;
trioquic keeps at most ``max_concurrent_requests`` = 128 open.

Congestion control (``--cc``): qh3 has CUBIC only, so by default (``auto``)
a run with a qh3 column (``trioquic-qh3`` or ``qh3``) gives every peer that
can choose CUBIC: trioquic on either engine, aioquic's server, both load
clients (``gtlsclient --cc``); hypercorn keeps aioquic's default, Reno,
since it cannot change it. A run without qh3 columns uses Reno, as before.
``--cc reno`` or ``--cc cubic`` forces one (qh3's columns need CUBIC).

Two load clients, used identically against every server:

* ``native``: ngtcp2's HTTP/3 test client (``gtlsclient``), so that the load
  generator costs little and the server is what is measured. One process
  sends ``--requests`` requests on one connection (``-n``); the 4- and
  10-connection shapes run 4 or 10 processes in parallel, each with its
  share. It cannot cap the number of requests in flight: it opens as many
  streams as the server's stream credit allows. requests/s = requests / wall
  time of the processes (start to exit, so one handshake per connection is
  included). It reports no per-request latency.
* ``python``: aioquic's asyncio client (``_h3_peers/load_client.py``) with
  exactly N connections x M requests in flight (1 x 50, 4 x 25, 10 x 10),
  timing every request; after a warm-up, requests/s and p50/p99 latency
  come from a ``--duration`` window. In a run with a qh3 column it is the
  same client on qh3's asyncio layer (``--library qh3``), against every
  server: qh3 2.1's server fails the handshake of aioquic's client
  ("packet builder capacity exhausted"). It is itself Python on one core, so
  it may saturate before the server does (its CPU share is printed): its requests/s
  understate fast servers and its latencies include its own queueing.

The server process runs on one CPU, the clients on another (when there are
two or more); the server's CPU seconds per request (``/proc``) are printed
too, a figure the client's speed does not limit. Servers are restarted for
every repeat and their order rotates, so drift affects every one alike.
Requests a server never answers are counted (``lost``); a native run that
stalls on them is reported as such, not timed. The CPU time other processes
used during each measurement is printed; a measurement during which they
took more than a quarter of a CPU is taken again (up to ``--attempts``, 3,
the quietest kept, whatever its figure), and a warning says when the figures
kept are still noisy. Run it on an otherwise idle machine.

The run ends with the same-run ratios (trioquic/aioquic, trioquic/hypercorn,
trioquic+qh3/trioquic, trioquic+qh3/qh3-asyncio) and the qh3 engine's goals
(``_goals.py``: with the native client and 4 connections, trioquic+qh3 >= 2x
trioquic and >= 1.2x qh3-asyncio in requests/s), each met or not.

Run it::

    python benchmarks/h3_requests.py                # 4 repeats, 5 to 6 minutes
    python benchmarks/h3_requests.py --quick        # a smoke test, under a minute
    python benchmarks/h3_requests.py --repeat 5 --servers trioquic,aioquic
    python benchmarks/h3_requests.py --servers trioquic-qh3 --profile DIR

``--profile DIR`` runs the trioquic servers (either engine) under cProfile,
one statistics file per server process in ``DIR`` (``h3_bulk.py``,
``handshakes.py`` and ``idle_memory.py`` take it too): where a missed goal's
time goes. Profiled figures are slower than the others.

Loopback only: servers bind 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _bench_common import (
    own_and_children_seconds,
    system_busy_seconds,
    udp_counters,
    use_ca_signed_certificate,
)
from _goals import OVER_QH3_ASYNCIO, REQUESTS_SPEEDUP, Goal, print_goals, ratio

HERE = Path(__file__).resolve().parent
PEERS = HERE / "_h3_peers"
sys.path.insert(0, str(PEERS))
from _shared import (  # noqa: E402
    add_cc_argument,
    congestion_control,
    on_qh3,
    qh3_engine_missing,
)

HOST = "127.0.0.1"
PATH = "/bytes/1024"
SIZE = 1024
LOAD_TAG = "H3-LOAD "

SERVERS = ("trioquic", "trioquic-qh3", "aioquic", "qh3", "hypercorn")
#: Servers run by another one's script with arguments: trioquic on its qh3
#: engine, and (not run by default) trioquic without GSO/GRO, for a same-run
#: before/after.
VARIANTS = {
    "trioquic-qh3": ("trioquic", ["--engine", "qh3"]),
    "trioquic-no-offload": ("trioquic", ["--no-udp-offload"]),
}
LABELS = {
    "trioquic": "trioquic",
    "trioquic-qh3": "trioquic+qh3",
    "aioquic": "aioquic",
    "qh3": "qh3-asyncio",
    "hypercorn": "hypercorn-trio",
    "trioquic-no-offload": "trioquic, no GSO/GRO",
}
#: Same-run ratios printed by every server benchmark: (ours, theirs).
RATIOS = (
    ("trioquic", "hypercorn"),
    ("trioquic", "aioquic"),
    ("trioquic-qh3", "trioquic"),
    ("trioquic-qh3", "qh3"),
)
#: Shape name -> (connections, requests in flight per connection).
SHAPES = {"1x50": (1, 50), "4x25": (4, 25), "10x10": (10, 10)}
CLIENTS = ("native", "python")
NATIVE_CLIENT = "gtlsclient"

DEFAULT_REQUESTS = 3000
QUICK_REQUESTS = 500
DEFAULT_DURATION = 2.0
QUICK_DURATION = 1.0
DEFAULT_REPEAT = 4
#: A measurement during which other processes used more than this share of a
#: CPU is taken again, up to three attempts; the quietest one is kept.
NOISY_SHARE = 0.25


class BenchError(Exception):
    pass


# -- processes -----------------------------------------------------------------


def pinned(cpu: int | None) -> Any:
    """A ``preexec_fn`` that pins the child to ``cpu`` (or None)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None

    def pin() -> None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})

    return pin


def start(
    command: list[str], *, cpu: int | None, **kwargs: Any
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        # Safe here: the parent runs no threads.
        preexec_fn=pinned(cpu),
        start_new_session=True,
        **kwargs,
    )


def stop(process: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    """Terminate the process and its group, then kill it if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cpu_seconds_of(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as fp:
            fields = fp.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def udp_receive_drops() -> int | None:
    """Datagrams the kernel dropped because a receive buffer was full."""
    return udp_counters().get("RcvbufErrors")


@dataclass
class Counters:
    """What the machine did during one measurement."""

    server_cpu: float | None
    kernel_drops: int | None
    #: CPU seconds used by processes other than the server and the clients.
    other_cpu: float | None


class Sampler:
    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.server = cpu_seconds_of(server_pid)
        self.drops = udp_receive_drops()
        self.busy = system_busy_seconds()
        self.ours = own_and_children_seconds()

    def finish(self) -> Counters:
        server = cpu_seconds_of(self.pid)
        drops = udp_receive_drops()
        busy = system_busy_seconds()
        ours = own_and_children_seconds()
        server_cpu = (
            None if server is None or self.server is None else server - self.server
        )
        other = None
        if busy is not None and self.busy is not None and server_cpu is not None:
            other = max(0.0, busy - self.busy - server_cpu - (ours - self.ours))
        return Counters(
            server_cpu=server_cpu,
            kernel_drops=None
            if drops is None or self.drops is None
            else drops - self.drops,
            other_cpu=other,
        )


def read_tagged(
    process: subprocess.Popen[bytes], tag: str, deadline: float
) -> tuple[dict[str, Any] | None, str]:
    """Read the child's stdout until a ``tag`` line, EOF or ``deadline``."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    buffer = b""
    while True:
        for line in buffer.decode(errors="replace").splitlines():
            if line.startswith(tag):
                return dict(json.loads(line[len(tag) :])), buffer.decode()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, buffer.decode(errors="replace")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return None, buffer.decode(errors="replace")
        chunk = os.read(fd, 65536)
        if not chunk:
            return None, buffer.decode(errors="replace")
        buffer += chunk


# -- servers -------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Any

    def diagnostics(self) -> str:
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        return f"{LABELS[self.name]} server exit={self.process.poll()}:\n{text[-3000:]}"


def server_command(name: str, port: int, args: argparse.Namespace) -> list[str]:
    if name == "hypercorn":
        return [
            sys.executable,
            "-m",
            "hypercorn",
            "--workers",
            "0",
            "--worker-class",
            "trio",
            "--quic-bind",
            f"{HOST}:{port}",
            "--bind",
            f"{HOST}:{free_port(socket.SOCK_STREAM)}",
            "--certfile",
            args.cert,
            "--keyfile",
            args.key,
            "--log-level",
            "warning",
            "hypercorn_app:app",
        ]
    base, extra = VARIANTS.get(name, (name, []))
    script = PEERS / f"{base}_server.py"
    return [
        sys.executable,
        str(script),
        *extra,
        "--port",
        str(port),
        "--cert",
        args.cert,
        "--key",
        args.key,
        "--lifetime",
        str(args.budget + 120),
        "--cc",
        args.cc,
        *profile_option(name, port, args),
    ]


def profile_option(name: str, port: int, args: argparse.Namespace) -> list[str]:
    """``--profile PATH`` for a trioquic server when the run has
    ``--profile DIR`` (one file per server process, named after it)."""
    directory = getattr(args, "profile", None)
    if not directory or VARIANTS.get(name, (name,))[0] != "trioquic":
        return []
    os.makedirs(directory, exist_ok=True)
    return ["--profile", os.path.join(directory, f"{name}-{port}.prof")]


def start_server(name: str, args: argparse.Namespace, cpu: int | None) -> Server:
    port = free_port(socket.SOCK_DGRAM)
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop_server()
    env = dict(os.environ, PYTHONPATH=str(PEERS))
    process = start(
        server_command(name, port, args),
        cpu=cpu,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=PEERS,
        env=env,
    )
    server = Server(name, port, process, log)
    try:
        wait_ready(server, args, deadline=time.monotonic() + 20)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: Server) -> None:
    stop(server.process)
    server.log.close()


def wait_ready(server: Server, args: argparse.Namespace, deadline: float) -> None:
    """Fetch one response (and check it) until the server answers."""
    with tempfile.TemporaryDirectory() as directory:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise BenchError(f"server exited\n{server.diagnostics()}")
            if args.native_path is not None:
                try:
                    completed = subprocess.run(
                        [
                            args.native_path,
                            "-q",
                            "--exit-on-all-streams-close",
                            "--timeout=1s",
                            *native_cc(args),
                            f"--download={directory}",
                            HOST,
                            str(server.port),
                            f"https://{HOST}:{server.port}{PATH}",
                        ],
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        timeout=10,
                        check=False,
                    )
                except subprocess.TimeoutExpired:
                    continue
                body = Path(directory) / PATH.rsplit("/", 1)[1]
                if completed.returncode == 0 and body.exists():
                    if body.stat().st_size != SIZE:
                        raise BenchError(
                            f"{LABELS[server.name]} answered "
                            f"{body.stat().st_size} bytes, expected {SIZE}"
                        )
                    return
            else:
                with contextlib.suppress(BenchError):
                    result = python_load(server, args, 1, 1, duration=0.2, warmup=0.0)
                    if result is not None and result["completed"]:
                        return
            time.sleep(0.2)
    raise BenchError(f"server did not answer in time\n{server.diagnostics()}")


# -- measurements --------------------------------------------------------------


@dataclass
class Measurement:
    requests_per_s: float | None
    p50_ms: float | None = None
    p99_ms: float | None = None
    #: Server CPU seconds per answered request, in microseconds.
    server_cpu_us: float | None = None
    lost: int = 0
    #: No figure: the run stalled on unanswered requests, or a process failed.
    failed: bool = False
    client_cpu_share: float | None = None
    kernel_drops: int | None = None
    #: CPU seconds other processes used meanwhile (noise), and over how long.
    other_cpu: float | None = None
    seconds: float | None = None
    note: str = ""


def native_cc(args: argparse.Namespace) -> list[str]:
    """gtlsclient's ``--cc`` for the run's congestion control; none for a
    caller without one (the ASGI benchmarks leave gtlsclient's default)."""
    cc = getattr(args, "cc", None)
    return [] if cc is None else [f"--cc={cc}"]


def run_clients(
    commands: Sequence[Sequence[str]], *, timeout: float, cpu: int | None
) -> tuple[list[int | None], float, list[str]]:
    """Start every client command at once (on CPU ``cpu``, output to a
    temporary file), wait for them all within ``timeout`` seconds and stop
    any left: their exit codes (None: still running at the deadline), the
    seconds taken and what each printed."""
    processes: list[subprocess.Popen[bytes]] = []
    outputs = []
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(tempfile.TemporaryFile()) for _ in commands]
        try:
            started = time.perf_counter()
            for command, log in zip(commands, logs, strict=True):
                processes.append(start(list(command), cpu=cpu, stdout=log, stderr=log))
            deadline = time.monotonic() + timeout
            codes: list[int | None] = []
            for process in processes:
                try:
                    codes.append(
                        process.wait(timeout=max(0.1, deadline - time.monotonic()))
                    )
                except subprocess.TimeoutExpired:
                    codes.append(None)
            elapsed = time.perf_counter() - started
        finally:
            for process in processes:
                stop(process, grace=0.5)
        for log in logs:
            log.seek(0)
            outputs.append(log.read().decode(errors="replace"))
    return codes, elapsed, outputs


def native_load(
    server: Server, args: argparse.Namespace, connections: int, cpu: int | None
) -> Measurement:
    per_process = max(1, args.requests // connections)
    total = per_process * connections
    command = [
        args.native_path,
        "-q",
        "--exit-on-all-streams-close",
        f"--timeout={args.native_idle_timeout}s",
        *native_cc(args),
        "-n",
        str(per_process),
        HOST,
        str(server.port),
        f"https://{HOST}:{server.port}{PATH}",
    ]
    sampler = Sampler(server.process.pid)
    codes, elapsed, outputs = run_clients(
        [command] * connections, timeout=args.timeout, cpu=cpu
    )
    counters = sampler.finish()
    if any(code != 0 for code in codes):
        reasons = {out.strip().splitlines()[-1] for out in outputs if out.strip()}
        return Measurement(
            requests_per_s=None,
            failed=True,
            kernel_drops=counters.kernel_drops,
            other_cpu=counters.other_cpu,
            seconds=elapsed,
            note=f"exit codes {sorted(set(map(str, codes)))} "
            f"{'; '.join(sorted(reasons))[:200]}",
        )
    return Measurement(
        requests_per_s=total / elapsed,
        server_cpu_us=None
        if counters.server_cpu is None
        else counters.server_cpu / total * 1e6,
        kernel_drops=counters.kernel_drops,
        other_cpu=counters.other_cpu,
        seconds=elapsed,
    )


def python_load(
    server: Server,
    args: argparse.Namespace,
    connections: int,
    concurrency: int,
    *,
    duration: float,
    warmup: float,
    cpu: int | None = None,
) -> dict[str, Any] | None:
    command = [
        sys.executable,
        str(PEERS / "load_client.py"),
        "--port",
        str(server.port),
        "--cert",
        args.ca,
        "--cc",
        args.cc,
        "--library",
        args.client_library,
        "--connections",
        str(connections),
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        "--request-timeout",
        str(args.request_timeout),
        "--path",
        PATH,
        "--expect-size",
        str(SIZE),
    ]
    with tempfile.TemporaryFile() as log:
        process = start(command, cpu=cpu, stdout=subprocess.PIPE, stderr=log)
        try:
            deadline = (
                time.monotonic() + warmup + duration + 2 * args.request_timeout + 30
            )
            result, _ = read_tagged(process, LOAD_TAG, deadline)
            if result is None:
                log.seek(0)
                error = log.read().decode(errors="replace")[-2000:]
                raise BenchError(
                    f"python load client failed against {LABELS[server.name]}\n"
                    f"{error}\n{server.diagnostics()}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=3)
            return result
        finally:
            stop(process, grace=0.5)
            assert process.stdout is not None
            process.stdout.close()


def measure_python(
    server: Server,
    args: argparse.Namespace,
    connections: int,
    concurrency: int,
    cpu: int | None,
) -> Measurement:
    sampler = Sampler(server.process.pid)
    started = time.perf_counter()
    result = python_load(
        server,
        args,
        connections,
        concurrency,
        duration=args.duration,
        warmup=args.warmup,
        cpu=cpu,
    )
    elapsed = time.perf_counter() - started
    counters = sampler.finish()
    assert result is not None
    # The server's CPU is sampled around the whole client run (warm-up and
    # the end included), so divide by every request it answered meanwhile:
    # estimated from the window's rate over the run's length.
    answered = result["requests_per_s"] * (args.warmup + args.duration)
    return Measurement(
        requests_per_s=result["requests_per_s"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        server_cpu_us=None
        if counters.server_cpu is None or answered <= 0
        else counters.server_cpu / answered * 1e6,
        lost=result["lost"] + result["bad"],
        client_cpu_share=result["client_cpu_share"],
        kernel_drops=counters.kernel_drops,
        other_cpu=counters.other_cpu,
        seconds=elapsed,
    )


# -- the run -------------------------------------------------------------------


def choose_cpus(pin: bool) -> tuple[int | None, int | None]:
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def available_servers(names: list[str]) -> tuple[list[str], dict[str, str]]:
    missing: dict[str, str] = {}
    for name in names:
        if name == "trioquic-qh3":
            reason = qh3_engine_missing()
            if reason is not None:
                missing[name] = reason
        elif VARIANTS.get(name, (name,))[0] == "trioquic":
            try:
                from trioquic.h3 import serve_http3  # noqa: F401
            except ImportError as exc:
                missing[name] = f"trioquic.h3.serve_http3 unavailable ({exc})"
        elif name == "hypercorn":
            if importlib.util.find_spec("hypercorn") is None:
                missing[name] = "hypercorn is not installed"
        elif name == "qh3":
            if importlib.util.find_spec("qh3") is None:
                missing[name] = "qh3 is not installed"
        elif importlib.util.find_spec("aioquic") is None:
            missing[name] = "aioquic is not installed"
    return [n for n in names if n not in missing], missing


Key = tuple[str, str, str]  # (client, shape, server)


def run(args: argparse.Namespace) -> int:
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    for name in servers:
        if name not in SERVERS and name not in VARIANTS:
            choices = (*SERVERS, *VARIANTS)
            raise SystemExit(f"unknown server {name!r}; choose from {choices}")
    for name in clients:
        if name not in CLIENTS:
            raise SystemExit(f"unknown client {name!r}; choose from {CLIENTS}")
    args.native_path = shutil.which(NATIVE_CLIENT)
    if "native" in clients and args.native_path is None:
        print(f"{NATIVE_CLIENT} not found: the native client is skipped")
        clients.remove("native")
    servers, missing = available_servers(servers)
    for name, reason in missing.items():
        print(f"skipping {LABELS[name]}: {reason}")
    if not servers or not clients:
        print("nothing to measure")
        return 1
    server_cpu, args.client_cpu = choose_cpus(args.pin)
    args.cc = congestion_control(args.cc, servers)
    args.client_library = client_library(servers)
    results: dict[Key, list[Measurement]] = {}
    budget_end = time.monotonic() + args.budget
    with tempfile.TemporaryDirectory() as directory:
        use_ca_signed_certificate(args, directory, HOST)
        print(
            f"GET {PATH} ({SIZE} bytes); servers "
            f"{', '.join(LABELS[s] for s in servers)}; "
            f"clients {', '.join(clients)} (python: on {args.client_library}); "
            f"{cc_note(args.cc, servers)}; "
            f"{args.repeat} repeat(s); "
            f"native: {args.requests} requests per shape; python: "
            f"{args.warmup:g} s warm-up + {args.duration:g} s; "
            f"CPUs: server {server_cpu}, clients {args.client_cpu}",
            flush=True,
        )
        for repeat in range(args.repeat):
            shift = repeat % len(servers)
            for name in servers[shift:] + servers[:shift]:
                if time.monotonic() > budget_end:
                    print(f"time budget of {args.budget:.0f} s spent; stopping")
                    break
                try:
                    server = start_server(name, args, server_cpu)
                except BenchError as exc:
                    print(f"  run {repeat + 1}: {LABELS[name]} did not start: {exc}")
                    continue
                try:
                    measure_server(server, args, clients, results, repeat, budget_end)
                finally:
                    stop_server(server)
            else:
                continue
            break
    summarize(results, servers, clients, missing)
    return 0


def client_library(servers: list[str]) -> str:
    """The library of the Python clients of a run against ``servers``: qh3
    when a server runs on qh3 (qh3 2.1's server fails the handshake of
    aioquic's client, "packet builder capacity exhausted"; qh3's client
    completes it against aioquic's server and hypercorn), else aioquic."""
    return "qh3" if on_qh3(servers) else "aioquic"


def cc_note(cc: str, servers: list[str]) -> str:
    """What the header says about congestion control."""
    note = f"congestion control {cc}"
    if cc != "reno" and "hypercorn" in servers:
        note += " (hypercorn: reno, aioquic's default, which it cannot change)"
    return note


def measure_server(
    server: Server,
    args: argparse.Namespace,
    clients: list[str],
    results: dict[Key, list[Measurement]],
    repeat: int,
    budget_end: float,
) -> None:
    """Every shape with every client against one running server."""
    for shape, (connections, concurrency) in SHAPES.items():
        for client in clients:
            key = (client, shape, server.name)
            if server.process.poll() is not None:
                m = Measurement(requests_per_s=None, failed=True, note="server exited")
                print_run(repeat, client, shape, server.name, m)
                results.setdefault(key, []).append(m)
                continue
            # Measure again while other processes take a large share of the
            # machine; keep the quietest attempt, whatever its figure.
            attempts: list[Measurement] = []
            while True:
                try:
                    if client == "native":
                        m = native_load(server, args, connections, args.client_cpu)
                    else:
                        m = measure_python(
                            server, args, connections, concurrency, args.client_cpu
                        )
                except BenchError as exc:
                    m = Measurement(requests_per_s=None, failed=True, note=str(exc))
                attempts.append(m)
                print_run(repeat, client, shape, server.name, m)
                if (
                    m.failed
                    or noise_share(m) <= NOISY_SHARE
                    or len(attempts) >= args.attempts
                    or time.monotonic() > budget_end
                ):
                    break
                print("    (noisy: measuring again)", flush=True)
            results.setdefault(key, []).append(
                m if m.failed else min(attempts, key=noise_share)
            )


def noise_share(m: Measurement) -> float:
    """CPUs' worth of other processes' work during the measurement."""
    if m.other_cpu is None or not m.seconds:
        return 0.0
    return m.other_cpu / m.seconds


def shape_label(client: str, shape: str) -> str:
    """``1x50`` (connections x requests in flight) for the python client;
    ``1xN`` for the native one, which sends all its requests at once within
    the server's stream credit."""
    if client == "native":
        return f"{SHAPES[shape][0]}xN"
    return shape


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_run(repeat: int, client: str, shape: str, name: str, m: Measurement) -> None:
    rate = "failed" if m.failed else f"{_fmt(m.requests_per_s, '.0f')} req/s"
    extra = ""
    if client == "python":
        extra = (
            f"  p50 {_fmt(m.p50_ms, '.2f')} ms  p99 {_fmt(m.p99_ms, '.2f')} ms"
            f"  client CPU {_fmt(m.client_cpu_share, '.0%')}"
        )
    print(
        f"  run {repeat + 1}: {client:<6} {shape_label(client, shape):<5} "
        f"{LABELS[name]:<14} {rate:>13}"
        f"{extra}  server CPU/request {_fmt(m.server_cpu_us, '.0f')} us"
        f"  lost {m.lost}  kernel drops {_fmt(m.kernel_drops, 'd')}"
        f"  other processes' CPU {_fmt(m.other_cpu, '.2f')} s"
        + (f"\n    {m.note[-1500:]}" if m.note else ""),
        flush=True,
    )


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(
    results: dict[Key, list[Measurement]],
    servers: list[str],
    clients: list[str],
    missing: dict[str, str],
) -> None:
    print()
    print(
        f"HTTP/3 GET of {SIZE} bytes over loopback; medians over runs; "
        "req/s = responses per second of wall time; latency = request sent to "
        "last body byte (python client only); srv us/req = server CPU "
        "microseconds per request"
    )
    header = (
        f"{'client':<6} {'shape':<5} {'server':<14} {'req/s':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'srv us/req':>10} {'lost':>5}  runs (req/s)"
    )
    print(header)
    print("-" * len(header))
    medians: dict[Key, float | None] = {}
    failures: dict[Key, str] = {}
    cpu: dict[Key, float | None] = {}
    for client in clients:
        for shape in SHAPES:
            for name in servers:
                key = (client, shape, name)
                runs = results.get(key, [])
                if not runs:
                    continue
                failed = sum(m.failed for m in runs)
                if failed:
                    failures[key] = (
                        f"{LABELS[name]} failed {failed} of {len(runs)} runs"
                    )
                medians[key] = _median([m.requests_per_s for m in runs])
                cpu[key] = _median([m.server_cpu_us for m in runs])
                rates = " ".join(
                    "failed" if m.failed else _fmt(m.requests_per_s, ".0f")
                    for m in runs
                )
                print(
                    f"{client:<6} {shape_label(client, shape):<5} {LABELS[name]:<14} "
                    f"{_fmt(medians[key], '.0f'):>8} "
                    f"{_fmt(_median([m.p50_ms for m in runs]), '.2f'):>7} "
                    f"{_fmt(_median([m.p99_ms for m in runs]), '.2f'):>7} "
                    f"{_fmt(cpu[key], '.0f'):>10} {sum(m.lost for m in runs):>5}"
                    f" {failed:>6}  {rates}"
                )
    print()
    print(
        "shapes: connections x requests in flight per connection; N = the native "
        "client's requests all at once, as far as the server's stream credit allows"
    )
    for client in clients:
        for shape in SHAPES:
            for mine, other in RATIOS:
                label = (
                    f"[{client} client, {shape_label(client, shape)}] "
                    f"{LABELS[mine]}/{LABELS[other]}: "
                )
                ours, theirs = (client, shape, mine), (client, shape, other)
                if mine in missing or other in missing:
                    reason = missing.get(mine) or missing.get(other)
                    print(f"{label}n/a ({reason})")
                    continue
                if ours not in results or theirs not in results:
                    print(f"{label}n/a (not measured)")
                    continue
                notes = [failures[k] for k in (ours, theirs) if k in failures]
                a, b = medians.get(ours), medians.get(theirs)
                if a is None or b is None or b <= 0:
                    print(f"{label}n/a ({'; '.join(notes)}: see the run lines)")
                    continue
                line = f"{label}{a / b:.2f}x requests/s"
                ca, cb = cpu.get(ours), cpu.get(theirs)
                if ca and cb:
                    line += f"; server CPU per request {ca / cb:.2f}x (lower is better)"
                if notes:
                    line += f" [{'; '.join(notes)}; medians of the other runs]"
                print(line)
    print(
        "targets (4 connections, native client): trioquic >= 1.3x aioquic and "
        ">= 3x hypercorn-trio (requests/s)"
    )
    print_goals(goals(medians, missing, clients))
    # Only the measurements kept count here.
    shares = [noise_share(m) for runs in results.values() for m in runs]
    if shares and max(shares) > 0.1:
        print(
            f"warning: other processes used up to {max(shares):.0%} of a CPU "
            "during a measurement: the machine was not idle, the figures are noisy"
        )


def goals(
    medians: dict[Key, float | None], missing: dict[str, str], clients: list[str]
) -> list[Goal]:
    """The qh3 engine's request goals, on the native client's 4 connections
    (the python client's figures when the native one did not run)."""
    client = "native" if "native" in clients else "python"
    shape = "4x25"
    where = f"1 KB requests/s, {client} client, {shape_label(client, shape)}"

    def judged(other: str, target: float) -> Goal:
        what = f"{where}: trioquic+qh3/{LABELS[other]}"
        figure = ratio(
            medians.get((client, shape, "trioquic-qh3")),
            medians.get((client, shape, other)),
        )
        reason = missing.get("trioquic-qh3") or missing.get(other) or "not measured"
        return Goal(what, figure, target, note="" if figure else reason)

    return [
        judged("trioquic", REQUESTS_SPEEDUP),
        judged("qh3", OVER_QH3_ASYNCIO),
    ]


def add_profile_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="run the trioquic servers (both engines) under cProfile, one "
        "statistics file per server process in DIR (figures then not "
        "comparable)",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Small HTTP/3 requests: trioquic vs aioquic vs hypercorn-trio."
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: short runs, one repeat"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help=f"repeats ({DEFAULT_REPEAT})"
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help=f"native client: requests per shape ({DEFAULT_REQUESTS})",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"python client: seconds measured per shape ({DEFAULT_DURATION})",
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="python client: warm-up seconds"
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated: trioquic,trioquic-qh3,aioquic,qh3,hypercorn (and "
        "trioquic-no-offload: trioquic without GSO/GRO)",
    )
    add_cc_argument(parser)
    parser.add_argument(
        "--clients", default=",".join(CLIENTS), help="comma-separated: native,python"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds allowed for one native run before it counts as stalled",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=2.0,
        help="python client: seconds after which a request counts as lost",
    )
    parser.add_argument(
        "--native-idle-timeout",
        type=int,
        default=2,
        help="native client: idle seconds after which it gives up",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=None,
        help="attempts per measurement while the machine is busy (3; --quick: 1)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=210.0,
        help="seconds after which no new server starts",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin server and clients to different CPUs",
    )
    add_profile_argument(parser)
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else DEFAULT_REPEAT
    if args.requests is None:
        args.requests = QUICK_REQUESTS if args.quick else DEFAULT_REQUESTS
    if args.duration is None:
        args.duration = QUICK_DURATION if args.quick else DEFAULT_DURATION
    if args.warmup is None:
        args.warmup = 0.3 if args.quick else 0.5
    if args.attempts is None:
        args.attempts = 1 if args.quick else 3
    if args.timeout is None:
        args.timeout = 15.0 if args.quick else 30.0
    if min(args.repeat, args.attempts) < 1 or args.requests < 10 or args.duration <= 0:
        parser.error("--repeat, --attempts >= 1, --requests >= 10, --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
