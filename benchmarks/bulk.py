"""Bulk download over loopback: trioquic, on each of its engines, against
aioquic's and qh3's asyncio layers.

A client opens one bidirectional stream, sends ``GET <size>\\n`` and FIN; the
server answers with ``size`` bytes and FIN; the client reads to EOF, counts
the bytes and checks the count. The same exchange runs over trioquic
(``serve_quic`` / ``open_quic_connection``) and over aioquic's own asyncio
layer (``aioquic.asyncio.serve`` / ``aioquic.asyncio.connect``), and over
trioquic's qh3 engine (``QuicSettings(engine="qh3")``, labelled
``trioquic+qh3``) and qh3's own asyncio layer (``qh3.asyncio``, the same code
as aioquic's on qh3's modules, labelled ``qh3-asyncio``), in the same run,
with the same QUIC settings:

* UDP payload size 1350 bytes (trioquic ``max_udp_payload_size``, aioquic
  and qh3 ``max_datagram_size``; qh3's path MTU discovery off), Reno
  congestion control, or CUBIC for every side when a qh3 combination runs
  (``--cc auto``, the default: qh3 has CUBIC only);
* initial flow-control windows of 4 MiB (connection) and 1 MiB (stream);
* ALPN ``bulk``, a freshly generated certificate signed by a scratch CA
  that the client verifies (qh3's client refuses a self-signed one);
* the server writes 64 KiB blocks (trioquic ``send_all``, aioquic
  ``writer.write`` + ``drain``, qh3 ``writer.write``: qh3 2.1's
  ``drain`` raises, and aioquic's never waits), the client reads 64 KiB at
  a time.

What differs is what each stack does with those settings, as its users get
it: aioquic buffers whatever is written and grows its receive windows as data
arrives; trioquic bounds the send buffer (``stream_send_buffer``) and grants
receive credit as the application reads.

Every server and every client runs in a process of its own (pinned to
different CPUs when there are two or more), so the two event loops never
share a core. Each measurement starts when the request is sent (after the
handshake) and ends at EOF on the client; the server reports the CPU seconds
(user + system) it spent from the request until the connection closed.

Combinations (``--combos``: server then client, ``t`` trioquic, ``a``
aioquic, ``q`` trioquic+qh3, ``h`` qh3-asyncio), interleaved and repeated
(``--repeat``) so that machine drift affects every one alike::

    tt: trioquic + trioquic             aa: aioquic + aioquic
    at: aioquic server + trioquic       ta: trioquic server + aioquic
    qq: trioquic+qh3 + trioquic+qh3     hh: qh3-asyncio + qh3-asyncio
    hq: qh3-asyncio server + trioquic+qh3
    qh: trioquic+qh3 server + qh3-asyncio

The mixed ones compare the client sides and the server sides separately.
The summary gives the same-run ratios (trioquic/aioquic, trioquic+qh3/
trioquic, trioquic+qh3/qh3-asyncio) and the qh3 engine's goal against qh3's
asyncio layer (>= 1.2x, ``_goals.py``), met or not. Combinations whose stack
is missing (no qh3, or a trioquic without the qh3 engine) are skipped with a
message.

Each run line also shows datagrams dropped by the kernel because a receive
buffer was full (each loss halves the congestion window), datagrams trioquic's
router dropped from a full connection queue, the datagrams (aioquic: packets)
each side sent, and the CPU seconds other processes used meanwhile. On
loopback the rate is set as much by congestion control, pacing and those
drops as by CPU, so runs vary; compare medians over several repeats, the CPU
seconds, and run on an otherwise idle machine (a warning is printed when it
was not).

Run it::

    python benchmarks/bulk.py                 # 50 MB, 3 repeats, 8 combinations
    python benchmarks/bulk.py --quick         # a few MB, once (a smoke test)
    python benchmarks/bulk.py --size 20000000 --repeat 5
    python benchmarks/bulk.py --combos tt,aa --profile /tmp/prof   # cProfile dumps

Loopback only: servers bind 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from _bench_common import (
    own_and_children_seconds,
    system_busy_seconds,
    udp_counters,
    use_ca_signed_certificate,
)
from _goals import OVER_QH3_ASYNCIO, Goal, print_goals, ratio

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_h3_peers")
sys.path.insert(0, PEERS)
from _shared import (  # noqa: E402
    add_cc_argument,
    congestion_control,
    qh3_engine_missing,
)

HOST = "127.0.0.1"
ALPN = "bulk"
MAX_UDP_PAYLOAD = 1350
CONNECTION_WINDOW = 4 * 1024 * 1024
STREAM_WINDOW = 1024 * 1024
IDLE_TIMEOUT = 30.0
BLOCK_SIZE = 64 * 1024
READ_SIZE = 64 * 1024
MAX_REQUEST = 64

DEFAULT_SIZE = 50 * 1000 * 1000
QUICK_SIZE = 4 * 1000 * 1000

#: Lines children print for the parent start with this.
TAG = "BULK-RESULT "

IMPLEMENTATIONS = ("trioquic", "trioquic-qh3", "aioquic", "qh3")
LABELS = {
    "trioquic": "trioquic",
    "trioquic-qh3": "trioquic+qh3",
    "aioquic": "aioquic",
    "qh3": "qh3-asyncio",
}
#: Letter of a combination code -> implementation.
LETTERS = {"t": "trioquic", "a": "aioquic", "q": "trioquic-qh3", "h": "qh3"}
#: Combination code -> (server implementation, client implementation).
COMBOS = {
    code: (LETTERS[code[0]], LETTERS[code[1]])
    for code in ("tt", "aa", "at", "ta", "qq", "hh", "hq", "qh")
}
#: Same-run ratios: (what, ours, theirs) as combination codes.
RATIOS = (
    ("server+client trioquic/aioquic", "tt", "aa"),
    ("server side (aioquic client) trioquic/aioquic", "ta", "aa"),
    ("client side (aioquic server) trioquic/aioquic", "at", "aa"),
    ("server+client trioquic+qh3/trioquic", "qq", "tt"),
    ("server+client trioquic+qh3/qh3-asyncio", "qq", "hh"),
    ("server side (qh3-asyncio client) trioquic+qh3/qh3-asyncio", "qh", "hh"),
    ("client side (qh3-asyncio server) trioquic+qh3/qh3-asyncio", "hq", "hh"),
)


# -- shared helpers -----------------------------------------------------------


def cpu_seconds() -> tuple[float, float]:
    """User and system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def report(**values: Any) -> None:
    print(TAG + json.dumps(values), flush=True)


def parse_request(request: bytes) -> int:
    if not request.startswith(b"GET ") or not request.endswith(b"\n"):
        raise ValueError(f"bad request {request!r}")
    size = int(request[4:-1])
    if size < 0:
        raise ValueError(f"bad size {size}")
    return size


async def read_request(receive: Callable[[int], Awaitable[bytes]]) -> int:
    """Read a request with ``receive`` (trio's or asyncio's) until EOF and
    parse it."""
    request = b""
    while data := await receive(MAX_REQUEST):
        request += data
        if len(request) > MAX_REQUEST:
            raise ValueError("request too long")
    return parse_request(request)


async def read_all(receive: Callable[[int], Awaitable[bytes]]) -> int:
    """Read with ``receive`` (trio's or asyncio's) until EOF; the byte count."""
    received = 0
    while data := await receive(READ_SIZE):
        received += len(data)
    return received


def payload_block() -> bytes:
    # Content does not change the cost (AEAD is content-blind); fixed for
    # reproducibility.
    return bytes(range(256)) * (BLOCK_SIZE // 256)


def payload_chunks(size: int) -> Iterator[bytes | memoryview]:
    """``size`` bytes of payload as :data:`BLOCK_SIZE` pieces of one block."""
    block = payload_block()
    view = memoryview(block)
    remaining = size
    while remaining:
        count = min(remaining, BLOCK_SIZE)
        yield block if count == BLOCK_SIZE else view[:count]
        remaining -= count


def pin_to(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def profiled(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(path)


# -- trioquic -------------------------------------------------------------------


def trioquic_settings(args: argparse.Namespace, *, server: bool) -> Any:
    import trioquic

    common: dict[str, Any] = {
        "alpn_protocols": [ALPN],
        "max_udp_payload_size": MAX_UDP_PAYLOAD,
        "congestion_control": args.cc,
        "connection_receive_window": CONNECTION_WINDOW,
        "stream_receive_window": STREAM_WINDOW,
        "idle_timeout": IDLE_TIMEOUT,
    }
    if args.impl == "trioquic-qh3":
        common["engine"] = "qh3"
    if server:
        return trioquic.QuicSettings(
            certificate=args.cert, private_key=args.key, **common
        )
    return trioquic.QuicSettings(ca_certs=args.ca, **common)


def trioquic_server(args: argparse.Namespace) -> None:
    from functools import partial

    import trio

    import trioquic

    settings = trioquic_settings(args, server=True)
    result: dict[str, Any] = {}
    done = trio.Event()

    async def handler(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        assert isinstance(stream, trioquic.QuicStream)
        size = await read_request(stream.receive_some)
        user0, sys0 = cpu_seconds()
        for chunk in payload_chunks(size):
            await stream.send_all(chunk)
        await stream.send_eof()
        # Stay until the client has read everything and closed the connection.
        with trio.move_on_after(args.timeout):
            await connection.wait_closed()
        user1, sys1 = cpu_seconds()
        stats = connection.statistics()
        result.update(
            bytes_sent=size,
            cpu_user=user1 - user0,
            cpu_sys=sys1 - sys0,
            datagrams_sent=stats.datagrams_sent,
            queue_drops=stats.datagrams_dropped,
        )
        done.set()

    async def main() -> None:
        with trio.move_on_after(args.timeout):
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    partial(
                        trioquic.serve_quic, handler, 0, host=HOST, settings=settings
                    )
                )
                report(port=server.port)
                await done.wait()
                nursery.cancel_scope.cancel()

    with profiled(args.profile_out):
        trio.run(main)
    report(**result)


def trioquic_client(args: argparse.Namespace) -> None:
    import trio

    import trioquic

    settings = trioquic_settings(args, server=False)
    result: dict[str, Any] = {}

    async def main() -> None:
        with trio.fail_after(args.timeout):
            started = time.perf_counter()
            async with trioquic.open_quic_connection(
                HOST, args.port, settings=settings
            ) as connection:
                handshake = time.perf_counter() - started
                stream = await connection.open_stream()
                user0, sys0 = cpu_seconds()
                t0 = time.perf_counter()
                await stream.send_all(b"GET %d\n" % args.size)
                await stream.send_eof()
                received = await read_all(stream.receive_some)
                t1 = time.perf_counter()
                user1, sys1 = cpu_seconds()
                stats = connection.statistics()
                result.update(
                    bytes_received=received,
                    seconds=t1 - t0,
                    handshake_seconds=handshake,
                    cpu_user=user1 - user0,
                    cpu_sys=sys1 - sys0,
                    queue_drops=stats.datagrams_dropped,
                    datagrams_sent=stats.datagrams_sent,
                )

    with profiled(args.profile_out):
        trio.run(main)
    report(**result)


# -- aioquic's (or qh3's) asyncio layer -----------------------------------------


def asyncio_configuration(args: argparse.Namespace, *, server: bool) -> Any:
    """The ``QuicConfiguration`` of ``args.impl``'s library (aioquic or qh3)."""
    library = args.impl
    QuicConfiguration = importlib.import_module(
        f"{library}.quic.configuration"
    ).QuicConfiguration
    if library == "qh3":
        # CUBIC, its only controller; no path MTU discovery, as for the others.
        specific: dict[str, Any] = {"probe_datagram_size": False}
    else:
        specific = {"congestion_control_algorithm": args.cc}
    config = QuicConfiguration(
        is_client=not server,
        alpn_protocols=[ALPN],
        max_datagram_size=MAX_UDP_PAYLOAD,
        max_data=CONNECTION_WINDOW,
        max_stream_data=STREAM_WINDOW,
        idle_timeout=IDLE_TIMEOUT,
        **specific,
    )
    if server:
        config.load_cert_chain(args.cert, args.key)
    else:
        config.load_verify_locations(args.ca)
    return config


def packets_sent(quic: Any) -> int | None:
    """Packets a connection sent: aioquic shares packet numbers between all
    spaces, so the next one is the count; qh3 does not say (None)."""
    count = getattr(quic, "_packet_number", None)
    return count if isinstance(count, int) else None


def asyncio_server(args: argparse.Namespace) -> None:
    """aioquic's or qh3's asyncio server (``args.impl``): the same code."""
    import asyncio

    layer = importlib.import_module(f"{args.impl}.asyncio")
    QuicConnectionProtocol, serve = layer.QuicConnectionProtocol, layer.serve
    events = importlib.import_module(f"{args.impl}.quic.events")
    ConnectionTerminated, QuicEvent = events.ConnectionTerminated, events.QuicEvent

    config = asyncio_configuration(args, server=True)
    result: dict[str, Any] = {}
    # qh3 2.1's stream writers have no protocol, so their drain() raises
    # AttributeError; aioquic's never waits (its stream transport is never
    # paused), so writing without it is the same behaviour.
    drain = args.impl != "qh3"

    async def main() -> None:
        closed = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        start_cpu: list[tuple[float, float]] = []

        class Protocol(QuicConnectionProtocol):  # type: ignore[misc, valid-type]
            def quic_event_received(self, event: QuicEvent) -> None:
                super().quic_event_received(event)
                if isinstance(event, ConnectionTerminated):
                    result["datagrams_sent"] = packets_sent(self._quic)
                    closed.set()

        async def serve_stream(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            size = await read_request(reader.read)
            start_cpu.append(cpu_seconds())
            for chunk in payload_chunks(size):
                writer.write(chunk)
                if drain:
                    await writer.drain()
            writer.write_eof()
            result["bytes_sent"] = size

        def stream_handler(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            task = asyncio.ensure_future(serve_stream(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        server = await serve(
            HOST,
            0,
            configuration=config,
            create_protocol=Protocol,
            stream_handler=stream_handler,
        )
        try:
            report(port=server._transport.get_extra_info("sockname")[1])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.timeout):
                    await closed.wait()
            if start_cpu:
                user1, sys1 = cpu_seconds()
                result.update(
                    cpu_user=user1 - start_cpu[0][0], cpu_sys=sys1 - start_cpu[0][1]
                )
        finally:
            server.close()
            for task in tasks:
                task.cancel()

    with profiled(args.profile_out):
        asyncio.run(main())
    report(**result)


def asyncio_client(args: argparse.Namespace) -> None:
    """aioquic's or qh3's asyncio client (``args.impl``): the same code."""
    import asyncio

    connect = importlib.import_module(f"{args.impl}.asyncio").connect
    config = asyncio_configuration(args, server=False)
    result: dict[str, Any] = {}

    async def main() -> None:
        async with asyncio.timeout(args.timeout):
            started = time.perf_counter()
            async with connect(HOST, args.port, configuration=config) as protocol:
                handshake = time.perf_counter() - started
                reader, writer = await protocol.create_stream()
                user0, sys0 = cpu_seconds()
                t0 = time.perf_counter()
                writer.write(b"GET %d\n" % args.size)
                writer.write_eof()
                received = await read_all(reader.read)
                t1 = time.perf_counter()
                user1, sys1 = cpu_seconds()
                result.update(
                    bytes_received=received,
                    seconds=t1 - t0,
                    handshake_seconds=handshake,
                    cpu_user=user1 - user0,
                    cpu_sys=sys1 - sys0,
                    datagrams_sent=packets_sent(protocol._quic),
                )

    with profiled(args.profile_out):
        asyncio.run(main())
    report(**result)


ROLES = {
    ("server", "trioquic"): trioquic_server,
    ("client", "trioquic"): trioquic_client,
    ("server", "trioquic-qh3"): trioquic_server,
    ("client", "trioquic-qh3"): trioquic_client,
    ("server", "aioquic"): asyncio_server,
    ("client", "aioquic"): asyncio_client,
    ("server", "qh3"): asyncio_server,
    ("client", "qh3"): asyncio_client,
}


def missing_implementations() -> dict[str, str]:
    """The implementations that cannot run here, and why."""
    missing: dict[str, str] = {}
    for library in ("aioquic", "qh3"):
        if importlib.util.find_spec(library) is None:
            missing[library] = f"{library} is not installed"
    reason = qh3_engine_missing()
    if reason is not None:
        missing["trioquic-qh3"] = reason
    return missing


# -- the parent: runs the children and reports ---------------------------------


class BenchError(Exception):
    pass


@dataclass
class Child:
    process: subprocess.Popen[bytes]
    stderr: Any
    buffer: bytes = b""
    lines: list[str] = field(default_factory=list)

    def read_results(self, deadline: float) -> dict[str, Any] | None:
        """Read stdout until a result line arrives or ``deadline`` passes."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                text = line.decode(errors="replace")
                self.lines.append(text)
                if text.startswith(TAG):
                    return dict(json.loads(text[len(TAG) :]))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self.buffer += chunk

    def wait(self, deadline: float) -> None:
        try:
            self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.stderr.close()

    def diagnostics(self) -> str:
        self.stderr.seek(0)
        err = self.stderr.read().decode(errors="replace")
        out = "\n".join(self.lines)
        return f"exit={self.process.poll()} stdout:\n{out}\nstderr:\n{err[-4000:]}"


def spawn(
    role: str,
    impl: str,
    args: argparse.Namespace,
    *,
    cpu: int | None,
    extra: list[str],
    profile_out: str | None,
) -> Child:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--role",
        role,
        "--impl",
        impl,
        "--cert",
        args.cert,
        "--key",
        args.key,
        "--ca",
        args.ca,
        "--cc",
        args.cc,
        "--size",
        str(args.size),
        "--timeout",
        str(args.timeout),
        *extra,
    ]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    if profile_out is not None:
        command += ["--profile-out", profile_out]
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by measure()
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
    )
    return Child(process, stderr)


@dataclass
class Measurement:
    server: str
    client: str
    seconds: float
    size: int
    server_cpu: float
    client_cpu: float
    handshake: float
    #: Datagrams the kernel dropped because a receive buffer was full.
    kernel_drops: int | None
    #: Datagrams trioquic's router dropped because a connection queue was full.
    queue_drops: int | None
    #: CPU seconds other processes used during the measurement (noise).
    other_cpu: float | None
    #: Datagrams (aioquic: packets) each side sent during the connection.
    server_datagrams: int | None
    client_datagrams: int | None

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / 1e6


def measure(
    server_impl: str, client_impl: str, args: argparse.Namespace, cpus: list[int]
) -> Measurement:
    deadline = time.monotonic() + args.timeout + 15
    server_cpu = cpus[0] if cpus else None
    client_cpu = cpus[1] if len(cpus) > 1 else None

    def profile_path(role: str, impl: str) -> str | None:
        if args.profile is None:
            return None
        pair = (server_impl, client_impl)
        code = next(c for c, impls in COMBOS.items() if impls == pair)
        return os.path.join(args.profile, f"{role}-{impl}-{code}.prof")

    before = udp_counters()
    busy_before = system_busy_seconds()
    ours_before = own_and_children_seconds()
    server = spawn(
        "server",
        server_impl,
        args,
        cpu=server_cpu,
        extra=[],
        profile_out=profile_path("server", server_impl),
    )
    client: Child | None = None
    try:
        started = server.read_results(deadline)
        if started is None or "port" not in started:
            raise BenchError(
                f"{server_impl} server did not start\n{server.diagnostics()}"
            )
        client = spawn(
            "client",
            client_impl,
            args,
            cpu=client_cpu,
            extra=["--port", str(started["port"])],
            profile_out=profile_path("client", client_impl),
        )
        client_result = client.read_results(deadline)
        if client_result is None or "seconds" not in client_result:
            raise BenchError(
                f"{client_impl} client failed against {server_impl} server\n"
                f"client: {client.diagnostics()}\nserver: {server.diagnostics()}"
            )
        server_result = server.read_results(deadline)
        if server_result is None or "cpu_user" not in server_result:
            raise BenchError(f"{server_impl} server failed\n{server.diagnostics()}")
        client.wait(deadline)
        server.wait(deadline)
        after = udp_counters()
        busy_after = system_busy_seconds()
        ours_after = own_and_children_seconds()
    finally:
        for child in (client, server):
            if child is not None:
                child.close()
    received = client_result["bytes_received"]
    if received != args.size:
        raise BenchError(
            f"{client_impl} client got {received} bytes from the {server_impl} "
            f"server, expected {args.size}"
        )
    return Measurement(
        server=server_impl,
        client=client_impl,
        seconds=client_result["seconds"],
        size=args.size,
        server_cpu=server_result["cpu_user"] + server_result["cpu_sys"],
        client_cpu=client_result["cpu_user"] + client_result["cpu_sys"],
        handshake=client_result["handshake_seconds"],
        kernel_drops=(after["RcvbufErrors"] - before["RcvbufErrors"])
        if "RcvbufErrors" in before and "RcvbufErrors" in after
        else None,
        queue_drops=server_result["queue_drops"] + client_result["queue_drops"]
        if "queue_drops" in server_result and "queue_drops" in client_result
        else server_result.get("queue_drops", client_result.get("queue_drops")),
        other_cpu=None
        if busy_before is None or busy_after is None
        else max(0.0, (busy_after - busy_before) - (ours_after - ours_before)),
        server_datagrams=server_result.get("datagrams_sent"),
        client_datagrams=client_result.get("datagrams_sent"),
    )


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def choose_cpus(pin: bool) -> list[int]:
    if not pin or not hasattr(os, "sched_getaffinity"):
        return []
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[:2] if len(cpus) >= 2 else []


def summarize(results: dict[str, list[Measurement]], args: argparse.Namespace) -> None:
    print()
    print(
        f"bulk download of {args.size / 1e6:.1f} MB on one stream, loopback; "
        "MB/s = 10**6 bytes/s of wall time (request -> EOF); "
        "CPU = user+system seconds"
    )
    header = (
        f"{'server':<12} {'client':<12} {'MB/s median':>11} {'best':>7} "
        f"{'srv CPU s':>9} {'cli CPU s':>9}  runs (MB/s)"
    )
    print(header)
    print("-" * len(header))
    medians: dict[str, float] = {}
    bests: dict[str, float] = {}
    server_cpu: dict[str, float] = {}
    client_cpu: dict[str, float] = {}
    for code, runs in results.items():
        if not runs:
            continue
        rates = [m.mb_per_s for m in runs]
        medians[code] = statistics.median(rates)
        bests[code] = max(rates)
        server_cpu[code] = statistics.median(m.server_cpu for m in runs)
        client_cpu[code] = statistics.median(m.client_cpu for m in runs)
        server_impl, client_impl = COMBOS[code]
        print(
            f"{LABELS[server_impl]:<12} {LABELS[client_impl]:<12} "
            f"{medians[code]:>11.2f} "
            f"{bests[code]:>7.2f} {server_cpu[code]:>9.2f} {client_cpu[code]:>9.2f}"
            f"  {' '.join(f'{r:.2f}' for r in rates)}"
        )
    print()

    def compare(label: str, numerator: str, denominator: str) -> None:
        if numerator in medians and denominator in medians:
            line = (
                f"{label}: {medians[numerator] / medians[denominator]:.2f}x "
                f"(best {bests[numerator] / bests[denominator]:.2f}x)"
            )
            cpu = ratio(server_cpu[numerator], server_cpu[denominator])
            if numerator[0] != denominator[0] and cpu is not None:
                line += f"; server CPU {cpu:.2f}x (lower is better)"
            print(line)
        else:
            print(f"{label}: n/a (not measured)")

    noise = [m.other_cpu for runs in results.values() for m in runs if m.other_cpu]
    if noise and max(noise) > 0.25:
        print(
            f"warning: other processes used up to {max(noise):.2f} CPU seconds "
            "during a measurement: the machine was not idle, the figures are noisy"
        )
    for label, numerator, denominator in RATIOS:
        compare(label, numerator, denominator)
    if "tt" in server_cpu and "aa" in server_cpu and server_cpu["aa"] > 0:
        print(
            "server CPU seconds trioquic/aioquic (lower is better): "
            f"{server_cpu['tt'] / server_cpu['aa']:.2f}x "
            f"({server_cpu['tt']:.2f} s vs {server_cpu['aa']:.2f} s)"
        )
    if "tt" in client_cpu and "aa" in client_cpu and client_cpu["aa"] > 0:
        print(
            "client CPU seconds trioquic/aioquic (lower is better): "
            f"{client_cpu['tt'] / client_cpu['aa']:.2f}x "
            f"({client_cpu['tt']:.2f} s vs {client_cpu['aa']:.2f} s)"
        )
    why = "; ".join(f"{LABELS[k]}: {v}" for k, v in args.missing.items())
    note = why or "not measured"
    over_trioquic = ratio(medians.get("qq"), medians.get("tt"))
    over_qh3 = ratio(medians.get("qq"), medians.get("hh"))
    print_goals(
        [
            Goal(
                "raw QUIC bulk, server+client: trioquic+qh3/trioquic MB/s",
                over_trioquic,
                note="" if over_trioquic else note,
            ),
            Goal(
                "raw QUIC bulk, server+client: trioquic+qh3/qh3-asyncio MB/s",
                over_qh3,
                OVER_QH3_ASYNCIO,
                note="" if over_qh3 else note,
            ),
        ]
    )


def run_parent(args: argparse.Namespace) -> int:
    codes = [c.strip() for c in args.combos.split(",") if c.strip()]
    for code in codes:
        if code not in COMBOS:
            raise SystemExit(
                f"unknown combination {code!r}; choose from {list(COMBOS)}"
            )
    if args.profile is not None:
        os.makedirs(args.profile, exist_ok=True)
    args.missing = missing_implementations()
    for code in list(codes):
        absent = [i for i in COMBOS[code] if i in args.missing]
        if absent:
            print(f"skipping {code}: {args.missing[absent[0]]}")
            codes.remove(code)
    if not codes:
        print("nothing to measure")
        return 1
    args.cc = congestion_control(args.cc, [i for c in codes for i in COMBOS[c]])
    cpus = choose_cpus(args.pin)
    results: dict[str, list[Measurement]] = {code: [] for code in codes}
    budget_end = time.monotonic() + args.budget
    with tempfile.TemporaryDirectory() as directory:
        use_ca_signed_certificate(args, directory, HOST)
        print(
            f"size {args.size} bytes, {args.repeat} repeat(s), "
            f"congestion control {args.cc}, "
            f"CPUs {cpus if cpus else 'not pinned'}",
            flush=True,
        )
        for repeat in range(args.repeat):
            # Rotate the order so no combination always runs first.
            shift = repeat % len(codes)
            for code in codes[shift:] + codes[:shift]:
                if time.monotonic() > budget_end:
                    print(f"time budget of {args.budget:.0f} s spent; stopping")
                    break
                server_impl, client_impl = COMBOS[code]
                try:
                    m = measure(server_impl, client_impl, args, cpus)
                except BenchError as exc:
                    # A failing stack is a finding about it, reported; the
                    # others are still measured.
                    print(f"  run {repeat + 1}: {code} failed: {exc}", flush=True)
                    continue
                results[code].append(m)
                print(
                    f"  run {repeat + 1}: server {LABELS[server_impl]:<12} client "
                    f"{LABELS[client_impl]:<12} {m.mb_per_s:7.2f} MB/s  "
                    f"{m.seconds:6.2f} s  "
                    f"server CPU {m.server_cpu:5.2f} s  client CPU "
                    f"{m.client_cpu:5.2f} s  handshake {m.handshake * 1000:.0f} ms"
                    f"  drops: kernel {_count(m.kernel_drops)} "
                    f"queue {_count(m.queue_drops)}  other processes' CPU "
                    f"{'-' if m.other_cpu is None else f'{m.other_cpu:.2f} s'}"
                    f"  sent: server "
                    f"{_count(m.server_datagrams)} client {_count(m.client_datagrams)}",
                    flush=True,
                )
            else:
                continue
            break
    summarize(results, args)
    if args.profile is not None:
        print(f"\ncProfile dumps written to {args.profile}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Bulk download over loopback: trioquic vs aioquic asyncio."
    )
    parser.add_argument(
        "--size", type=int, default=None, help=f"bytes to download ({DEFAULT_SIZE})"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="measurements per combination (3)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: {QUICK_SIZE} bytes, one repeat",
    )
    parser.add_argument(
        "--combos",
        default=",".join(COMBOS),
        help="combinations, server then client: t=trioquic a=aioquic "
        f"q=trioquic+qh3 h=qh3-asyncio (default {','.join(COMBOS)})",
    )
    add_cc_argument(parser)
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds allowed per transfer (60; --quick: 20)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=340.0,
        help="seconds after which no new measurement starts",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin server and client to different CPUs",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="run every child under cProfile and write .prof files to DIR "
        "(the figures are then not comparable)",
    )
    # Internal: how the parent starts its children.
    hidden = argparse.SUPPRESS
    parser.add_argument("--role", choices=["server", "client"], help=hidden)
    parser.add_argument("--impl", choices=IMPLEMENTATIONS, help=hidden)
    parser.add_argument("--cert", help=hidden)
    parser.add_argument("--key", help=hidden)
    parser.add_argument("--ca", help=hidden)
    parser.add_argument("--port", type=int, help=hidden)
    parser.add_argument("--cpu", type=int, help=hidden)
    parser.add_argument("--profile-out", help=hidden)
    args = parser.parse_args(argv)
    if args.size is None:
        args.size = QUICK_SIZE if args.quick else DEFAULT_SIZE
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.timeout is None:
        args.timeout = 20.0 if args.quick else 60.0
    if args.size < 0 or args.repeat < 1:
        parser.error("--size must be >= 0 and --repeat >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role is not None:
        pin_to(args.cpu)
        ROLES[(args.role, args.impl)](args)
        return 0
    try:
        return run_parent(args)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
