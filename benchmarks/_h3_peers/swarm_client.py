"""Many HTTP/3 client connections in one process: aioquic's (or, with
``--library qh3``, qh3's) sans-io ``QuicConnection`` and ``H3Connection``
over non-blocking UDP sockets (one
per connection, so every connection has an address of its own, as real
clients do), driven by one ``selectors`` loop with a timer heap. It is the
load generator of ``handshakes.py`` and the idle-connection client of
``idle_memory.py``.

Every connection is a full handshake (no session resumption, no 0-RTT; the
server's certificate is not checked: this is a load generator, the
signature of the handshake is still verified by aioquic), then one
``GET <path>`` whose status (200) and body size are checked. A connection
not answered within ``--connection-timeout`` seconds counts as failed and is
abandoned.

Two modes:

* ``handshakes``: ``--warmup`` connections, then ``--count`` timed ones,
  ``--concurrency`` at a time; each closes (CONNECTION_CLOSE, H3_NO_ERROR) as
  soon as its answer is checked, and the next one starts. Prints
  ``H3-HANDSHAKES {json}``: ``completed`` and ``failed`` (timed ones),
  ``total`` (answered, warm-up included), ``seconds`` (first timed connect to
  last answer), ``handshakes_per_s``, ``p50_ms`` / ``p99_ms`` (connect to
  answer), ``client_cpu_share`` (this process's CPU seconds over the timed
  window's wall time).
* ``idle``: ``--warmup`` connections opened, answered and closed, then
  ``H3-IDLE-READY {json}``; on a line on stdin, ``--count`` connections
  opened with at most ``--batch`` handshaking at once, each left open and
  idle once answered, then ``H3-IDLE-OPEN {json}`` (``answered``, ``failed``,
  ``seconds``); connections stay open (a PING each every ``--keepalive``
  seconds, well inside the 60 s idle timeout) until the next line on stdin,
  then ``H3-IDLE-END {json}`` (``still_open``: answered connections the
  server had not closed), every connection is closed and the process exits.

On aioquic the client offers one key share, X25519 (see
``offer_one_key_share``); qh3's client offers its defaults (X25519MLKEM768
and X25519), and has CUBIC only (``--cc cubic``). The benchmarks run it on
qh3 against every server when one of them runs on qh3: qh3 2.1's server
fails the handshake of aioquic's client ("packet builder capacity
exhausted").

Every loop is bounded by ``--lifetime`` seconds. Run it::

    python benchmarks/_h3_peers/swarm_client.py handshakes --port 4433 \
        --count 200 --concurrency 16
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import importlib
import itertools
import json
import os
import resource
import selectors
import socket
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import HOST, LIBRARIES, pin_to, quic_configuration

HANDSHAKES_TAG = "H3-HANDSHAKES "
READY_TAG = "H3-IDLE-READY "
OPEN_TAG = "H3-IDLE-OPEN "
END_TAG = "H3-IDLE-END "
H3_NO_ERROR = 0x100
#: Datagrams read from one socket before the loop moves on.
READ_BURST = 64


def offer_one_key_share() -> None:
    """Make aioquic's client offer X25519 alone, as ngtcp2's client and
    browsers do, instead of four key shares (P-256, P-384, X25519, X448: four
    key pairs generated per handshake, about a fifth of its CPU). The server then
    agrees on X25519 whichever server it is (all three use aioquic's TLS)."""
    from aioquic import tls

    original = tls.Context.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if self._is_client:
            self._supported_groups = [tls.Group.X25519]

    tls.Context.__init__ = init  # type: ignore[method-assign]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(tag: str, payload: dict[str, Any]) -> None:
    print(tag + json.dumps(payload), flush=True)


class Library:
    """The classes of ``name`` (aioquic or qh3: the same module layout)."""

    def __init__(self, name: str) -> None:
        module = importlib.import_module
        self.QuicConnection = module(f"{name}.quic.connection").QuicConnection
        self.H3Connection = module(f"{name}.h3.connection").H3Connection
        h3_events = module(f"{name}.h3.events")
        self.DataReceived = h3_events.DataReceived
        self.HeadersReceived = h3_events.HeadersReceived
        quic_events = module(f"{name}.quic.events")
        self.ConnectionTerminated = quic_events.ConnectionTerminated
        self.HandshakeCompleted = quic_events.HandshakeCompleted


class Client:
    """One connection: socket, QUIC and HTTP/3 state, what it got back."""

    def __init__(self, swarm: Swarm) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(swarm.address)
        self.quic = swarm.library.QuicConnection(configuration=swarm.config)
        self.http = swarm.library.H3Connection(self.quic)
        self.started = time.monotonic()
        self.stream_id: int | None = None
        self.status = b""
        self.received = 0
        self.answered_at: float | None = None
        self.terminated: str | None = None
        self.timer_at: float | None = None
        self.dropped = False


class Swarm:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.address = (HOST, args.port)
        self.authority = f"{HOST}:{args.port}".encode()
        self.library = Library(args.library)
        self.config = quic_configuration(
            args.library, is_client=True, congestion_control=args.cc
        )
        self.config.verify_mode = ssl.CERT_NONE
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, Client]] = []
        self.sequence = itertools.count()
        #: Connections not answered yet (the only ones that can stall).
        self.pending: set[Client] = set()
        self.on_answer: Callable[[Client], None] = lambda client: None
        self.on_failure: Callable[[Client], None] = lambda client: None
        self.stdin_lines: list[str] = []
        self.send_errors = 0
        self.reasons: dict[str, int] = {}

    # -- one connection ---------------------------------------------------------

    def open(self) -> Client:
        client = Client(self)
        self.selector.register(client.sock, selectors.EVENT_READ, client)
        self.pending.add(client)
        client.quic.connect(self.address, now=client.started)
        self.step(client)
        return client

    def drop(self, client: Client, *, close: bool) -> None:
        """Forget the connection, after a CONNECTION_CLOSE if ``close``."""
        if client.dropped:
            return
        if close:
            client.quic.close(error_code=H3_NO_ERROR)
            self.flush(client)
        client.dropped = True
        self.pending.discard(client)
        self.selector.unregister(client.sock)
        client.sock.close()

    def fail(self, client: Client, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        self.drop(client, close=client.terminated is None)
        self.on_failure(client)

    def flush(self, client: Client) -> None:
        if client.dropped:
            return
        for data, _ in client.quic.datagrams_to_send(time.monotonic()):
            try:
                client.sock.send(data)
            except OSError:
                self.send_errors += 1

    def step(self, client: Client) -> None:
        """After any input: dispatch events, send, re-arm the timer."""
        library = self.library
        DataReceived, HeadersReceived = library.DataReceived, library.HeadersReceived
        ConnectionTerminated = library.ConnectionTerminated
        HandshakeCompleted = library.HandshakeCompleted

        self.flush(client)
        while (event := client.quic.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                client.stream_id = client.quic.get_next_available_stream_id()
                client.http.send_headers(
                    client.stream_id,
                    [
                        (b":method", b"GET"),
                        (b":scheme", b"https"),
                        (b":authority", self.authority),
                        (b":path", self.args.path.encode()),
                        (b"user-agent", b"trioquic-bench"),
                    ],
                    end_stream=True,
                )
            elif isinstance(event, ConnectionTerminated):
                client.terminated = event.reason_phrase or hex(event.error_code)
            for h3_event in client.http.handle_event(event):
                if not isinstance(h3_event, HeadersReceived | DataReceived):
                    continue
                if h3_event.stream_id != client.stream_id:
                    continue
                if isinstance(h3_event, HeadersReceived):
                    client.status = dict(h3_event.headers).get(b":status", b"")
                else:
                    client.received += len(h3_event.data)
                if h3_event.stream_ended:
                    self.answered(client)
            if client.dropped:
                return
            self.flush(client)
        if client.dropped:
            return
        if client.terminated is not None and client.answered_at is None:
            self.fail(client, f"closed by the server: {client.terminated}")
            return
        timer = client.quic.get_timer()
        if timer != client.timer_at:
            client.timer_at = timer
            if timer is not None:
                heapq.heappush(self.timers, (timer, next(self.sequence), client))

    def answered(self, client: Client) -> None:
        if client.answered_at is not None:
            return
        if client.status != b"200" or client.received != self.args.expect_size:
            self.fail(
                client,
                f"status {client.status.decode() or '-'}, {client.received} bytes",
            )
            return
        client.answered_at = time.monotonic()
        self.pending.discard(client)
        self.on_answer(client)

    # -- the loop ---------------------------------------------------------------

    def watch_stdin(self) -> None:
        os.set_blocking(sys.stdin.fileno(), False)
        self.selector.register(sys.stdin, selectors.EVENT_READ, None)

    def poll(self, deadline: float) -> None:
        """One round: wait for datagrams or the next timer, handle them."""
        now = time.monotonic()
        timeout = max(0.0, deadline - now)
        if self.timers:
            timeout = min(timeout, max(0.0, self.timers[0][0] - now))
        if self.pending:
            timeout = min(timeout, 0.05)  # stalled connections are checked below
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                self.read_stdin()
                continue
            client: Client = key.data
            if client.dropped:
                continue
            for _ in range(READ_BURST):
                try:
                    data = client.sock.recv(65536)
                except OSError:  # BlockingIOError, or ICMP unreachable
                    break
                client.quic.receive_datagram(data, self.address, time.monotonic())
            self.step(client)
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            at, _, client = heapq.heappop(self.timers)
            if client.dropped or client.timer_at != at:
                continue  # superseded
            client.timer_at = None
            client.quic.handle_timer(now)
            self.step(client)
        limit = now - self.args.connection_timeout
        for client in [c for c in self.pending if c.started < limit]:
            self.fail(client, "no answer in time")

    def read_stdin(self) -> None:
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except BlockingIOError:
            return
        if not data:  # the parent went away: stop
            self.stdin_lines.append("eof")
            self.selector.unregister(sys.stdin)
        self.stdin_lines.extend(data.decode().split())

    def run_until(self, done: Callable[[], bool], deadline: float) -> bool:
        while not done():
            if time.monotonic() >= deadline:
                return False
            self.poll(deadline)
        return True

    def wave(
        self, count: int, concurrency: int, deadline: float, *, keep: bool
    ) -> tuple[list[Client], int]:
        """Open ``count`` connections, ``concurrency`` unanswered at a time.
        Returns the answered ones (left open if ``keep``, else closed) and
        the number that failed."""
        answered: list[Client] = []
        failed = 0
        started = 0

        def on_answer(client: Client) -> None:
            answered.append(client)
            if not keep:
                self.drop(client, close=True)

        def on_failure(client: Client) -> None:
            nonlocal failed
            failed += 1

        self.on_answer, self.on_failure = on_answer, on_failure

        def done() -> bool:
            nonlocal started
            while started < count and len(self.pending) < concurrency:
                started += 1
                self.open()
            return len(answered) + failed >= count

        self.run_until(done, deadline)
        for client in list(self.pending):  # out of time
            self.fail(client, "out of time")
        return answered, count - len(answered)


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of a sorted list."""
    if not ordered:
        return None
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def handshakes(swarm: Swarm, args: argparse.Namespace, deadline: float) -> None:
    warm, _ = swarm.wave(args.warmup, args.concurrency, deadline, keep=False)
    cpu0, started = cpu_seconds(), time.monotonic()
    answered, failed = swarm.wave(args.count, args.concurrency, deadline, keep=False)
    ended = max([c.answered_at or 0.0 for c in answered], default=started)
    cpu1, elapsed = cpu_seconds(), max(ended - started, 1e-9)
    latencies = sorted(
        (c.answered_at - c.started) * 1000 for c in answered if c.answered_at
    )
    emit(
        HANDSHAKES_TAG,
        {
            "completed": len(answered),
            "failed": failed,
            "total": len(warm) + len(answered),
            "seconds": elapsed,
            "handshakes_per_s": len(answered) / elapsed,
            "p50_ms": percentile(latencies, 0.50),
            "p99_ms": percentile(latencies, 0.99),
            "client_cpu_share": (cpu1 - cpu0) / elapsed,
            "send_errors": swarm.send_errors,
            "reasons": swarm.reasons,
        },
    )


def idle(swarm: Swarm, args: argparse.Namespace, deadline: float) -> None:
    swarm.watch_stdin()
    warm, _ = swarm.wave(args.warmup, args.batch, deadline, keep=False)
    emit(READY_TAG, {"warm": len(warm), "reasons": swarm.reasons})
    if not swarm.run_until(lambda: bool(swarm.stdin_lines), deadline):
        return
    swarm.stdin_lines.clear()
    started = time.monotonic()
    answered, failed = swarm.wave(args.count, args.batch, deadline, keep=True)
    emit(
        OPEN_TAG,
        {
            "answered": len(answered),
            "failed": failed,
            "seconds": time.monotonic() - started,
            "reasons": swarm.reasons,
        },
    )
    # Held open until told otherwise, a PING each now and then.
    next_ping = time.monotonic() + args.keepalive
    while not swarm.stdin_lines and time.monotonic() < deadline:
        swarm.poll(min(deadline, next_ping))
        if time.monotonic() >= next_ping:
            next_ping += args.keepalive
            for index, client in enumerate(answered):
                if not client.dropped and client.terminated is None:
                    client.quic.send_ping(index)
                    swarm.step(client)
    still_open = sum(c.terminated is None and not c.dropped for c in answered)
    for client in answered:
        swarm.drop(client, close=client.terminated is None)
    emit(END_TAG, {"still_open": still_open, "answered": len(answered)})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("handshakes", "idle"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument(
        "--concurrency", type=int, default=16, help="handshakes: at a time"
    )
    parser.add_argument(
        "--batch", type=int, default=32, help="idle: handshakes at a time"
    )
    parser.add_argument("--keepalive", type=float, default=15.0)
    parser.add_argument("--connection-timeout", type=float, default=5.0)
    parser.add_argument("--lifetime", type=float, default=120.0)
    parser.add_argument("--path", default="/bytes/1024")
    parser.add_argument("--expect-size", type=int, default=1024)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--library", choices=LIBRARIES, default="aioquic")
    parser.add_argument("--cc", choices=("reno", "cubic"), default="reno")
    args = parser.parse_args(argv)
    if min(args.count, args.concurrency, args.batch) < 1 or args.warmup < 0:
        parser.error("--count, --concurrency, --batch >= 1; --warmup >= 0")
    return args


def main() -> int:
    args = parse_args()
    pin_to(args.cpu)
    needed = args.count + args.warmup + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    if args.library == "aioquic":
        offer_one_key_share()
    swarm = Swarm(args)
    deadline = time.monotonic() + args.lifetime
    if args.mode == "handshakes":
        handshakes(swarm, args, deadline)
    else:
        idle(swarm, args, deadline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
