"""The ceiling: aioquic's (or qh3's) client and server exchanging datagrams in
memory.

What no integration of aioquic can beat: an aioquic client ``QuicConnection``
and an aioquic server ``QuicConnection`` (and, for HTTP/3, an ``H3Connection``
on each) driven directly by this script, in one thread, with no sockets and
no event loop. The datagrams one side returns from
``datagrams_to_send(now)`` are handed, as they are, to the other side's
``receive_datagram(data, addr, now)``; events come from ``next_event()``;
timers from ``get_timer()`` / ``handle_timer(now)``.

Time is simulated: ``now`` is a float that the script advances, never read
from a wall clock. The link is instant and lossless. By default
(``--clock cpu``) ``now`` advances by the CPU seconds of every call into a
side, as if both sides took turns on one core, and when neither side has
anything to send it jumps to the earliest timer (an ACK delay, the pacer, a
loss timer) and that side's ``handle_timer`` runs; a timer that falls due
while datagrams flow fires then, as an event loop's would. So congestion
control, pacing and delayed ACKs behave as aioquic makes them behave, and the
result does not depend on how busy the machine is, beyond the CPU seconds
themselves. ``--clock idle`` keeps ``now`` still while datagrams flow and
only jumps to timers; it is there for comparison and is not a ceiling:
aioquic's pacer refills its bucket only as ``now`` moves, so it then releases
one datagram per pacing timer, and each side pays a send step per datagram
(on raw-bulk about 50% more server CPU and 80% more client CPU than with the
default clock), which no real run does, since time passes while work is
done; the client also ACKs only once per 1 ms ACK delay of barely moving
time.

A link that never loses a datagram never ends Reno's slow start: the
congestion window grows with every byte acknowledged, and past about 20 MB
aioquic's pacer bucket holds less than one packet, so it releases one or two
datagrams per send step and a bulk transfer's cost per byte climbs (by about
40% at 50 MB). On a real path the first loss sets the slow-start threshold;
here every connection starts with it set (``--ssthresh``, 1 MiB; 0 leaves
aioquic's), so the window settles near 1 MiB, above what is in flight per
ACK, and the pacer releases up to 16 datagrams per send step.

Every call into one side is charged to that side: ``time.thread_time()`` is
read around it and the difference added to the side's meter. A side is
called like an event-driven integration calls it, one step per input: feed
the datagrams (or fire the due timer), dispatch the events (through its
``H3Connection`` for HTTP/3) to the application, let the application write,
``datagrams_to_send``, ``get_timer``. The application work (parsing the
request, producing the response in 64 KiB blocks, counting what arrives,
checking statuses and sizes) is charged to its side too; the script's own
bookkeeping between the calls is not. Handshakes are not part of the bulk and
request figures (they have their own workload).

Workloads (``--workloads``, default all):

* ``raw-bulk``: one bidirectional stream; the client sends ``GET <size>\\n``
  and FIN, the server answers ``size`` bytes and FIN, the client counts them.
  Settings as ``benchmarks/bulk.py``: UDP payload 1350 bytes, Reno, ALPN
  ``bulk``, initial windows 4 MiB (connection) and 1 MiB (stream). The server
  writes 64 KiB blocks and keeps at most 1 MiB written but not yet sent, like
  a server with a bounded send buffer (it reads aioquic's private stream
  sender state to know that).
* ``h3-bulk``: the same over HTTP/3: ``GET /bytes/<size>``, answered with
  ``send_headers`` (200, ``content-length``) and ``send_data`` in 64 KiB
  chunks, same bounded buffer. Settings as ``benchmarks/_h3_peers/_shared.py``
  (aioquic's defaults: UDP payload 1200 bytes, Reno, 1 MiB windows).
* ``h3-requests``: ``GET /bytes/1024`` answered with 1024 bytes (status 200,
  ``content-type``, ``content-length``), like ``benchmarks/h3_requests.py``;
  shapes ``1x50``, ``10x10`` and ``4x50`` (connections x requests kept in
  flight on each until ``--requests`` requests, the total, have been answered).
* ``handshakes``: full handshakes (no resumption, the client verifying the
  server's CA-signed certificate, ALPN ``h3``, aioquic's defaults), one
  after the other, each ending when both sides report it complete and
  neither has anything left to send at that instant.

Figures: the CPU seconds of the server side and of the client side, and what
each side does per CPU second of its own: MB (10**6 bytes) of the body for
the bulk workloads, requests, handshakes. Every figure is the median over
``--repeat`` runs. Each run is checked (every byte counted, every response a
200 with 1024 bytes, every handshake complete); the script fails with a
message saying what went wrong otherwise, and every run is bounded in loop
steps, in simulated time and in wall time (``--timeout``).

Run it::

    python benchmarks/ceiling.py                      # both engines, 3 repeats
    python benchmarks/ceiling.py --quick              # a smoke test, seconds
    python benchmarks/ceiling.py --engine aioquic --workloads h3-bulk \
        --json /tmp/ceiling.json
    python benchmarks/ceiling.py --engine qh3 --workloads raw-bulk --repeat 5

``--json PATH`` writes the figures for other benchmarks to report their
ratio to the ceiling (``measure(workload, ...)`` returns one workload's from
Python): ``raw-bulk`` and ``h3-bulk`` hold ``size``, ``server_cpu_s``,
``client_cpu_s``, ``server_mb_per_s``, ``client_mb_per_s``; ``h3-requests``
holds one such object per shape (``1x50``, ``10x10``, ``4x50``) with
``requests``, ``server_cpu_s``, ``client_cpu_s``, ``server_requests_per_s``,
``client_requests_per_s``; ``handshakes`` holds ``count``, ``server_cpu_s``,
``client_cpu_s``, ``server_per_s``, ``client_per_s``. Each also has the runs'
CPU seconds, the datagrams each side sent and the simulated seconds; ``meta``
says how the figures were made.

The same is measured with qh3 (aioquic's fork whose transport core is Rust;
trioquic's second engine) on both sides: qh3 keeps aioquic's sans-io API,
so the driver, the applications and the figures are the same. By default
(``--engine all``) each installed library runs in turn, in the same run, and
the ratios qh3/aioquic per workload and side end it; ``--engine aioquic`` or
``--engine qh3`` runs one (``--json`` needs one). Where qh3 differs: it has
CUBIC only (``--cc`` applies to aioquic; ``auto``, the default, gives it
CUBIC when qh3 runs too, as ``h3_bulk.py`` does when it has qh3 columns,
Reno otherwise); it has no setting or state for
the slow-start threshold, so ``--ssthresh`` is not applied (qh3's CUBIC runs
its own slow start); the bounded send buffer reads qh3's public
``get_send_buffer_size``; path MTU discovery is off and a DATAGRAM frame size
is announced (qh3's HTTP/3 layer always sends SETTINGS_H3_DATAGRAM, which its
own client refuses without it). The certificate is signed by a scratch CA
for both engines (qh3's client refuses a self-signed one).

Limits: both sides' CPU seconds add up on one clock, so per datagram time
passes about twice as fast as with the two sides on two cores, and the 1 ms
delayed ACKs come about twice as often (one per 40 to 50 datagrams on
raw-bulk); ACK work is a few percent of either side's bulk cost. The slow
start threshold and the bounded send buffer read or set aioquic's private
state, so a new aioquic may need them adjusted.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aioquic._buffer import Buffer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    ProtocolNegotiated,
    QuicEvent,
    StreamDataReceived,
)
from aioquic.quic.packet import pull_quic_header

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from _bench_common import write_ca_and_leaf  # noqa: E402

#: The libraries whose state machines can be measured (``--engine``).
ENGINES = ("aioquic", "qh3")
#: qh3's only congestion controller.
QH3_CONGESTION_CONTROL = "cubic"
#: The DATAGRAM frame size qh3's peers announce (see the module docstring).
QH3_DATAGRAM_FRAME_SIZE = 65536

#: How the simulated clock moves (see Network).
CLOCKS = ("cpu", "idle")
WORKLOADS = ("raw-bulk", "h3-bulk", "h3-requests", "handshakes")
#: Shape name -> (connections, requests in flight per connection).
SHAPES = {"1x50": (1, 50), "10x10": (10, 10), "4x50": (4, 50)}

DEFAULT_SIZE = 50 * 1024 * 1024
QUICK_SIZE = 5 * 1024 * 1024
DEFAULT_REQUESTS = 3000
QUICK_REQUESTS = 300
DEFAULT_HANDSHAKES = 200
QUICK_HANDSHAKES = 20
DEFAULT_REPEAT = 3
DEFAULT_TIMEOUT = 60.0
#: Slow-start threshold set on every connection (see Options.ssthresh).
DEFAULT_SSTHRESH = 1024 * 1024

#: As benchmarks/bulk.py.
BULK_ALPN = "bulk"
BULK_MAX_UDP_PAYLOAD = 1350
BULK_CONNECTION_WINDOW = 4 * 1024 * 1024
BULK_STREAM_WINDOW = 1024 * 1024
#: As benchmarks/_h3_peers/_shared.py: aioquic's defaults.
H3_MAX_UDP_PAYLOAD = 1200
H3_CONNECTION_WINDOW = 1024 * 1024
H3_STREAM_WINDOW = 1024 * 1024
CONGESTION_CONTROL = "reno"
IDLE_TIMEOUT = 60.0

BLOCK_SIZE = 64 * 1024
#: Bytes a server keeps written but not yet sent (its bounded send buffer).
SEND_BUFFER = 1024 * 1024
MAX_REQUEST = 64
RESPONSE_SIZE = 1024
CONTENT_TYPE = b"application/octet-stream"
AUTHORITY = "localhost"

SERVER_ADDRESS: NetworkAddress = ("10.0.0.1", 443)
#: Simulated time starts here (not 0.0, which some code could take for unset).
START_TIME = 1000.0
#: The least the clock moves when nothing is sent (so that it always moves).
TICK = 1e-6
#: Simulated seconds a run may take before it counts as stalled.
MAX_SIMULATED = 300.0
#: Loop steps a run may take (a bound besides the wall-time ``--timeout``).
MAX_STEPS = 20_000_000

_PATH = re.compile(rb"/bytes/(\d{1,12})")


class BenchError(Exception):
    pass


@dataclass(frozen=True)
class Options:
    """How every run is driven."""

    #: Wall seconds a run may take.
    timeout: float = DEFAULT_TIMEOUT
    #: How the simulated clock moves: "cpu" or "idle" (see Network).
    clock: str = "cpu"
    #: Slow-start threshold set on every connection (bytes), or None to leave
    #: aioquic's (none: slow start until RTT grows, which a lossless link in
    #: memory barely does). qh3 has no such state: not applied there.
    ssthresh: int | None = DEFAULT_SSTHRESH
    #: Whose state machines run: "aioquic" or "qh3".
    engine: str = "aioquic"
    #: aioquic's congestion control ("reno" or "cubic"); qh3 has CUBIC only.
    congestion_control: str = CONGESTION_CONTROL


def use_engine(engine: str) -> str:
    """Bind this script's names for the QUIC and HTTP/3 classes to
    ``engine``'s (aioquic or qh3: the same module layout and API), so that
    every run after it drives that library; its version."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {ENGINES}")
    global QuicConfiguration, QuicConnection, H3Connection, H3_ALPN
    global DataReceived, HeadersReceived, pull_quic_header, Buffer
    global ConnectionTerminated, HandshakeCompleted, ProtocolNegotiated
    global StreamDataReceived
    module = importlib.import_module
    QuicConfiguration = module(f"{engine}.quic.configuration").QuicConfiguration
    QuicConnection = module(f"{engine}.quic.connection").QuicConnection
    h3 = module(f"{engine}.h3.connection")
    H3Connection, H3_ALPN = h3.H3Connection, h3.H3_ALPN
    h3_events = module(f"{engine}.h3.events")
    DataReceived, HeadersReceived = h3_events.DataReceived, h3_events.HeadersReceived
    events = module(f"{engine}.quic.events")
    ConnectionTerminated = events.ConnectionTerminated
    HandshakeCompleted = events.HandshakeCompleted
    ProtocolNegotiated = events.ProtocolNegotiated
    StreamDataReceived = events.StreamDataReceived
    pull_quic_header = module(f"{engine}.quic.packet").pull_quic_header
    Buffer = module("aioquic._buffer" if engine == "aioquic" else "qh3._hazmat").Buffer
    return str(module(engine).__version__)


# -- the certificate ---------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    certificate: Path
    private_key: Path
    ca_data: bytes


_credentials: Credentials | None = None
_directory: tempfile.TemporaryDirectory[str] | None = None


def credentials() -> Credentials:
    """A certificate for ``localhost`` signed by a scratch CA, made once per
    process."""
    global _credentials, _directory
    if _credentials is None:
        _directory = tempfile.TemporaryDirectory(prefix="ceiling-")
        ca, certificate, key = write_ca_and_leaf(Path(_directory.name))
        _credentials = Credentials(
            certificate=Path(certificate),
            private_key=Path(key),
            ca_data=Path(ca).read_bytes(),
        )
    return _credentials


def configuration(
    *,
    server: bool,
    alpn: str,
    max_datagram_size: int,
    connection_window: int,
    stream_window: int,
    options: Options,
) -> QuicConfiguration:
    if options.engine == "qh3":
        # CUBIC (its only one); see the module docstring for the rest.
        engine_specific: dict[str, Any] = {
            "probe_datagram_size": False,
            "max_datagram_frame_size": QH3_DATAGRAM_FRAME_SIZE,
        }
    else:
        engine_specific = {"congestion_control_algorithm": options.congestion_control}
    config = QuicConfiguration(
        is_client=not server,
        alpn_protocols=[alpn],
        max_datagram_size=max_datagram_size,
        max_data=connection_window,
        max_stream_data=stream_window,
        idle_timeout=IDLE_TIMEOUT,
        **engine_specific,
    )
    creds = credentials()
    if server:
        config.load_cert_chain(creds.certificate, creds.private_key)
    else:
        config.server_name = AUTHORITY
        config.load_verify_locations(cadata=creds.ca_data)
    return config


def bulk_configuration(*, server: bool, options: Options) -> QuicConfiguration:
    return configuration(
        server=server,
        alpn=BULK_ALPN,
        max_datagram_size=BULK_MAX_UDP_PAYLOAD,
        connection_window=BULK_CONNECTION_WINDOW,
        stream_window=BULK_STREAM_WINDOW,
        options=options,
    )


def h3_configuration(*, server: bool, options: Options) -> QuicConfiguration:
    return configuration(
        server=server,
        alpn=H3_ALPN[0],
        max_datagram_size=H3_MAX_UDP_PAYLOAD,
        connection_window=H3_CONNECTION_WINDOW,
        stream_window=H3_STREAM_WINDOW,
        options=options,
    )


# -- the in-memory driver ----------------------------------------------------------


class Meter:
    """The CPU seconds charged to one side (all its connections)."""

    __slots__ = ("_started", "last", "seconds")

    def __init__(self) -> None:
        self.seconds = 0.0
        #: The CPU seconds of the latest call.
        self.last = 0.0
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.thread_time()

    def __exit__(self, *exc: object) -> None:
        self.last = time.thread_time() - self._started
        self.seconds += self.last


class Application:
    """What one side does with its connection; every method runs under that
    side's meter."""

    def attach(self, quic: QuicConnection) -> None:
        """The connection exists (a server's: on the first datagram)."""

    def handle(self, event: QuicEvent) -> None:
        """One QUIC event."""

    def pump(self) -> None:
        """Write what there is room to write (just before the side sends)."""


class Endpoint:
    """One side of one connection: its QuicConnection, its application and
    the meter it charges."""

    def __init__(
        self,
        name: str,
        meter: Meter,
        address: NetworkAddress,
        application: Application,
        *,
        server_config: QuicConfiguration | None = None,
    ) -> None:
        self.name = name
        self.meter = meter
        self.address = address
        self.application = application
        self.server_config = server_config
        self.quic: QuicConnection | None = None
        #: Called since it last sent: must run a send step.
        self.dirty = False
        self.timer: float | None = None
        self.handshake_complete = False
        self.datagrams_sent = 0
        #: Set by Network.add from its Options.
        self.ssthresh: int | None = None

    def connect(
        self, config: QuicConfiguration, peer: NetworkAddress, now: float
    ) -> None:
        """A client's start: make the connection and send the Initial."""
        with self.meter:
            self.quic = QuicConnection(configuration=config)
            self._limit_slow_start(self.quic)
            self.application.attach(self.quic)
            self.quic.connect(peer, now=now)
        self.dirty = True

    def call(self, function: Callable[[], None]) -> None:
        """Run application code (a request) on this side, then a send step."""
        with self.meter:
            function()
        self.dirty = True

    def send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        quic = self.quic
        assert quic is not None
        with self.meter:
            self.application.pump()
            datagrams = quic.datagrams_to_send(now=now)
            self.timer = quic.get_timer()
        self.dirty = False
        self.datagrams_sent += len(datagrams)
        return datagrams

    def receive(
        self,
        datagrams: list[tuple[bytes, NetworkAddress]],
        source: NetworkAddress,
        now: float,
    ) -> None:
        with self.meter:
            if self.quic is None:
                self._accept(datagrams[0][0])
            quic = self.quic
            assert quic is not None
            for data, _ in datagrams:
                quic.receive_datagram(data, source, now=now)
            self._dispatch(quic)
        self.dirty = True

    def fire(self, now: float) -> None:
        quic = self.quic
        assert quic is not None
        with self.meter:
            quic.handle_timer(now=now)
            self._dispatch(quic)
        self.dirty = True

    def _accept(self, first: bytes) -> None:
        # What a server's endpoint does with a new connection's first datagram.
        config = self.server_config
        if config is None:
            raise BenchError(f"{self.name}: a datagram before connect()")
        header = pull_quic_header(
            Buffer(data=first), host_cid_length=config.connection_id_length
        )
        self.quic = QuicConnection(
            configuration=config,
            original_destination_connection_id=header.destination_cid,
        )
        self._limit_slow_start(self.quic)
        self.application.attach(self.quic)

    def _limit_slow_start(self, quic: QuicConnection) -> None:
        # What a first loss would do on a real path (private state: aioquic
        # has no setting for it; qh3 has neither, and is left as it is).
        if self.ssthresh is not None and hasattr(quic, "_loss"):
            quic._loss._cc.ssthresh = self.ssthresh

    def _dispatch(self, quic: QuicConnection) -> None:
        application = self.application
        while (event := quic.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                self.handshake_complete = True
            elif isinstance(event, ConnectionTerminated):
                raise BenchError(
                    f"{self.name}: connection closed: error "
                    f"0x{event.error_code:x} {event.reason_phrase!r}"
                )
            application.handle(event)


class Network:
    """Client/server pairs joined by an instant, lossless link, and the
    simulated clock: with ``clock="cpu"`` it also advances by the CPU seconds
    of every call into a side (both sides taking turns on one core), with
    ``clock="idle"`` it stands still until no side has anything to send."""

    def __init__(
        self,
        what: str,
        options: Options,
        *,
        deadline: float | None = None,
        now: float = START_TIME,
    ) -> None:
        if options.clock not in CLOCKS:
            raise ValueError(f"unknown clock {options.clock!r}; choose from {CLOCKS}")
        self.what = what
        self.options = options
        self.deadline = (
            time.monotonic() + options.timeout if deadline is None else deadline
        )
        self.now = now
        self._cpu_clock = options.clock == "cpu"
        self._links: list[tuple[Endpoint, Endpoint]] = []
        self._endpoints: list[Endpoint] = []

    def add(self, client: Endpoint, server: Endpoint) -> None:
        self._links += [(client, server), (server, client)]
        self._endpoints += [client, server]
        client.ssthresh = server.ssthresh = self.options.ssthresh

    def run(self, until: Callable[[], bool], phase: str) -> None:
        """Exchange datagrams and fire due timers, jumping the clock to the
        earliest timer when no side has anything to send, until ``until()``
        holds at such a quiet instant."""
        started = self.now
        for _ in range(MAX_STEPS):
            if time.monotonic() > self.deadline:
                raise BenchError(f"{self.what}: {phase} timed out (--timeout)")
            moved = False
            for source, target in self._links:
                if source.dirty:
                    datagrams = source.send(self.now)
                    self._spent(source)
                    if datagrams:
                        moved = True
                        target.receive(datagrams, source.address, self.now)
                        self._spent(target)
            if not moved:
                if until():
                    return
                timers = [e.timer for e in self._endpoints if e.timer is not None]
                if not timers:
                    raise BenchError(
                        f"{self.what}: {phase} stalled: nothing to send and no timer"
                    )
                self.now = max(min(timers), self.now + TICK)
                if self.now - started > MAX_SIMULATED:
                    raise BenchError(
                        f"{self.what}: {phase} stalled: {MAX_SIMULATED:.0f} "
                        "simulated seconds without finishing"
                    )
            # Timers fire while datagrams flow too (an event loop checks them
            # on every turn).
            for endpoint in self._endpoints:
                if endpoint.timer is not None and endpoint.timer <= self.now:
                    endpoint.fire(self.now)
                    self._spent(endpoint)
        raise BenchError(f"{self.what}: {phase} took more than {MAX_STEPS} steps")

    def _spent(self, endpoint: Endpoint) -> None:
        if self._cpu_clock:
            self.now += endpoint.meter.last


def unsent(quic: QuicConnection, stream_id: int) -> int:
    """Bytes written on a stream that the library has not sent yet (qh3
    says, with ``get_send_buffer_size``; aioquic does not: private state)."""
    if hasattr(quic, "get_send_buffer_size"):
        return int(quic.get_send_buffer_size(stream_id))
    sender = quic._streams[stream_id].sender
    return sender._buffer_stop - sender.highest_offset


def payload(size: int) -> bytes:
    # Content does not change the cost (AEAD is content-blind); fixed for
    # reproducibility.
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def parse_request(request: bytes) -> int:
    if not request.startswith(b"GET ") or not request.endswith(b"\n"):
        raise BenchError(f"bad request {request!r}")
    return int(request[4:-1])


def request_headers(path: str) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", AUTHORITY.encode()),
        (b":path", path.encode()),
    ]


# -- applications -------------------------------------------------------------------


class BulkSender:
    """A response body written in 64 KiB blocks into a bounded send buffer."""

    def __init__(self, write: Callable[[bytes, bool], None]) -> None:
        self._write = write
        self._block = payload(BLOCK_SIZE)
        self.remaining = 0

    def start(self, size: int) -> None:
        """Begin a body of ``size`` bytes; an empty one ends the stream at once."""
        self.remaining = size
        if size == 0:
            self._write(b"", True)

    def pump(self, quic: QuicConnection, stream_id: int) -> None:
        while self.remaining:
            count = min(self.remaining, BLOCK_SIZE)
            if unsent(quic, stream_id) + count > SEND_BUFFER:
                return
            self.remaining -= count
            block = self._block if count == BLOCK_SIZE else self._block[:count]
            self._write(block, not self.remaining)


class RawBulkServer(Application):
    def __init__(self) -> None:
        self.quic: QuicConnection | None = None
        self.request = b""
        self.stream_id: int | None = None
        self.sender = BulkSender(self._write)

    def attach(self, quic: QuicConnection) -> None:
        self.quic = quic

    def handle(self, event: QuicEvent) -> None:
        if not isinstance(event, StreamDataReceived):
            return
        if self.stream_id is not None:
            raise BenchError(f"raw-bulk server: unexpected data {event!r}")
        self.request += event.data
        if len(self.request) > MAX_REQUEST:
            raise BenchError("raw-bulk server: request too long")
        if event.end_stream:
            size = parse_request(self.request)
            self.stream_id = event.stream_id
            self.sender.start(size)

    def pump(self) -> None:
        if self.stream_id is not None and self.quic is not None:
            self.sender.pump(self.quic, self.stream_id)

    def _write(self, data: bytes, end: bool) -> None:
        assert self.quic is not None and self.stream_id is not None
        self.quic.send_stream_data(self.stream_id, data, end_stream=end)


class RawBulkClient(Application):
    def __init__(self, size: int) -> None:
        self.size = size
        self.quic: QuicConnection | None = None
        self.stream_id: int | None = None
        self.received = 0
        self.finished = False

    def attach(self, quic: QuicConnection) -> None:
        self.quic = quic

    def start(self) -> None:
        assert self.quic is not None
        self.stream_id = self.quic.get_next_available_stream_id()
        self.quic.send_stream_data(
            self.stream_id, b"GET %d\n" % self.size, end_stream=True
        )

    def handle(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id == self.stream_id:
            self.received += len(event.data)
            if event.end_stream:
                self.finished = True


class H3Application(Application):
    """An ``H3Connection`` over the QUIC connection: made at once by a client,
    on ALPN negotiation by a server (as aioquic's examples do)."""

    def __init__(self) -> None:
        self.quic: QuicConnection | None = None
        self.http: H3Connection | None = None

    def attach(self, quic: QuicConnection) -> None:
        self.quic = quic
        if quic.configuration.is_client:
            self.http = H3Connection(quic)

    def handle(self, event: QuicEvent) -> None:
        if (
            self.http is None
            and isinstance(event, ProtocolNegotiated)
            and event.alpn_protocol in H3_ALPN
        ):
            assert self.quic is not None
            self.http = H3Connection(self.quic)
        if self.http is not None:
            for http_event in self.http.handle_event(event):
                self.handle_http(http_event)

    def handle_http(self, event: H3Event) -> None:
        pass


def request_target(headers: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    method = path = b""
    for name, value in headers:
        if name == b":method":
            method = value
        elif name == b":path":
            path = value
    return method, path


def response_status(headers: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, int]:
    status = b""
    length = -1
    for name, value in headers:
        if name == b":status":
            status = value
        elif name == b"content-length":
            length = int(value)
    return status, length


class H3BulkServer(H3Application):
    def __init__(self) -> None:
        super().__init__()
        self.stream_id: int | None = None
        self.sender = BulkSender(self._write)

    def handle_http(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived):
            return
        method, path = request_target(event.headers)
        match = _PATH.fullmatch(path)
        if method != b"GET" or match is None or not event.stream_ended:
            raise BenchError(f"h3-bulk server: unexpected request {event!r}")
        if self.stream_id is not None:
            raise BenchError("h3-bulk server: a second request")
        assert self.http is not None
        size = int(match.group(1))
        self.stream_id = event.stream_id
        self.http.send_headers(
            event.stream_id,
            [
                (b":status", b"200"),
                (b"content-type", CONTENT_TYPE),
                (b"content-length", str(size).encode()),
            ],
        )
        self.sender.start(size)

    def pump(self) -> None:
        if self.stream_id is not None and self.quic is not None:
            self.sender.pump(self.quic, self.stream_id)

    def _write(self, data: bytes, end: bool) -> None:
        assert self.http is not None and self.stream_id is not None
        self.http.send_data(self.stream_id, data, end_stream=end)


class H3BulkClient(H3Application):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.stream_id: int | None = None
        self.received = 0
        self.finished = False

    def start(self) -> None:
        assert self.quic is not None and self.http is not None
        self.stream_id = self.quic.get_next_available_stream_id()
        self.http.send_headers(
            self.stream_id, request_headers(f"/bytes/{self.size}"), end_stream=True
        )

    def handle_http(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            status, length = response_status(event.headers)
            if status != b"200" or length != self.size:
                raise BenchError(
                    f"h3-bulk client: status {status!r}, content-length "
                    f"{length}, expected 200 and {self.size}"
                )
        elif isinstance(event, DataReceived):
            self.received += len(event.data)
        else:
            return
        if event.stream_ended:
            self.finished = True


class H3RequestsServer(H3Application):
    """Answers like ``benchmarks/_h3_peers/aioquic_server.py``."""

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body
        # Requests whose end has not arrived yet.
        self._pending: dict[int, tuple[bytes, bytes]] = {}

    def handle_http(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            target = request_target(event.headers)
            if event.stream_ended:
                self.respond(event.stream_id, *target)
            else:
                self._pending[event.stream_id] = target
        elif isinstance(event, DataReceived) and event.stream_ended:
            pending = self._pending.pop(event.stream_id, None)
            if pending is not None:
                self.respond(event.stream_id, *pending)

    def respond(self, stream_id: int, method: bytes, path: bytes) -> None:
        assert self.http is not None
        if method != b"GET" or path != b"/bytes/%d" % len(self.body):
            status, body = b"404", b"not found\n"
        else:
            status, body = b"200", self.body
        self.http.send_headers(
            stream_id,
            [
                (b":status", status),
                (b"content-type", CONTENT_TYPE),
                (b"content-length", str(len(body)).encode()),
            ],
        )
        self.http.send_data(stream_id, body, end_stream=True)


@dataclass
class RequestBudget:
    total: int
    issued: int = 0
    answered: int = 0


class H3RequestsClient(H3Application):
    """Keeps ``in_flight`` requests open until the shared budget is spent."""

    def __init__(self, budget: RequestBudget, in_flight: int) -> None:
        super().__init__()
        self.budget = budget
        self.in_flight = in_flight
        self.path = f"/bytes/{RESPONSE_SIZE}"
        # stream id -> bytes of body received (-1 before the headers).
        self._open: dict[int, int] = {}

    def start(self) -> None:
        for _ in range(self.in_flight):
            self.request()

    def request(self) -> None:
        budget = self.budget
        if budget.issued >= budget.total:
            return
        assert self.quic is not None and self.http is not None
        budget.issued += 1
        stream_id = self.quic.get_next_available_stream_id()
        self.http.send_headers(stream_id, request_headers(self.path), end_stream=True)
        self._open[stream_id] = -1

    def handle_http(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            status, length = response_status(event.headers)
            if status != b"200" or length != RESPONSE_SIZE:
                raise BenchError(
                    f"h3-requests client: status {status!r}, content-length "
                    f"{length}, expected 200 and {RESPONSE_SIZE}"
                )
            self._open[event.stream_id] = 0
        elif isinstance(event, DataReceived):
            if self._open.get(event.stream_id, -1) < 0:
                raise BenchError("h3-requests client: body before headers")
            self._open[event.stream_id] += len(event.data)
        else:
            return
        if event.stream_ended:
            received = self._open.pop(event.stream_id)
            if received != RESPONSE_SIZE:
                raise BenchError(
                    f"h3-requests client: {received} bytes of body, "
                    f"expected {RESPONSE_SIZE}"
                )
            self.budget.answered += 1
            self.request()


# -- workloads -------------------------------------------------------------------------


@dataclass
class Run:
    """One measurement."""

    server_cpu: float
    client_cpu: float
    #: Bytes of body (bulk), requests or handshakes.
    amount: int
    server_datagrams: int
    client_datagrams: int
    simulated: float


def both_complete(client: Endpoint, server: Endpoint) -> Callable[[], bool]:
    return lambda: client.handshake_complete and server.handshake_complete


def _client_address(index: int) -> NetworkAddress:
    return ("10.0.0.2", 40000 + index)


def _bulk(
    what: str,
    size: int,
    options: Options,
    client_app: RawBulkClient | H3BulkClient,
    server_app: Application,
    client_config: QuicConfiguration,
    server_config: QuicConfiguration,
) -> Run:
    server_meter, client_meter = Meter(), Meter()
    network = Network(what, options)
    client = Endpoint(what + " client", client_meter, _client_address(0), client_app)
    server = Endpoint(
        what + " server",
        server_meter,
        SERVER_ADDRESS,
        server_app,
        server_config=server_config,
    )
    network.add(client, server)
    client.connect(client_config, SERVER_ADDRESS, network.now)
    network.run(both_complete(client, server), "handshake")
    server_before, client_before = server_meter.seconds, client_meter.seconds
    datagrams_before = server.datagrams_sent, client.datagrams_sent
    started = network.now
    client.call(client_app.start)
    network.run(lambda: client_app.finished, "transfer")
    if client_app.received != size:
        raise BenchError(
            f"{what}: the client got {client_app.received} bytes of {size}"
        )
    return Run(
        server_cpu=server_meter.seconds - server_before,
        client_cpu=client_meter.seconds - client_before,
        amount=size,
        server_datagrams=server.datagrams_sent - datagrams_before[0],
        client_datagrams=client.datagrams_sent - datagrams_before[1],
        simulated=network.now - started,
    )


def raw_bulk(size: int, options: Options = Options()) -> Run:
    return _bulk(
        "raw-bulk",
        size,
        options,
        RawBulkClient(size),
        RawBulkServer(),
        bulk_configuration(server=False, options=options),
        bulk_configuration(server=True, options=options),
    )


def h3_bulk(size: int, options: Options = Options()) -> Run:
    return _bulk(
        "h3-bulk",
        size,
        options,
        H3BulkClient(size),
        H3BulkServer(),
        h3_configuration(server=False, options=options),
        h3_configuration(server=True, options=options),
    )


def h3_requests(
    connections: int,
    in_flight: int,
    total: int,
    options: Options = Options(),
) -> Run:
    what = f"h3-requests {connections}x{in_flight}"
    server_meter, client_meter = Meter(), Meter()
    network = Network(what, options)
    client_config = h3_configuration(server=False, options=options)
    server_config = h3_configuration(server=True, options=options)
    body = payload(RESPONSE_SIZE)
    budget = RequestBudget(total)
    pairs: list[tuple[Endpoint, Endpoint, H3RequestsClient]] = []
    for index in range(connections):
        app = H3RequestsClient(budget, in_flight)
        client = Endpoint(
            f"{what} client {index}", client_meter, _client_address(index), app
        )
        server = Endpoint(
            f"{what} server {index}",
            server_meter,
            SERVER_ADDRESS,
            H3RequestsServer(body),
            server_config=server_config,
        )
        network.add(client, server)
        pairs.append((client, server, app))
        client.connect(client_config, SERVER_ADDRESS, network.now)
    network.run(
        lambda: all(c.handshake_complete and s.handshake_complete for c, s, _ in pairs),
        "handshakes",
    )
    server_before, client_before = server_meter.seconds, client_meter.seconds
    server_sent = sum(s.datagrams_sent for _, s, _ in pairs)
    client_sent = sum(c.datagrams_sent for c, _, _ in pairs)
    started = network.now
    for client, _, app in pairs:
        client.call(app.start)
    network.run(lambda: budget.answered >= total, "requests")
    if budget.answered != total or budget.issued != total:
        raise BenchError(
            f"{what}: {budget.answered} answered, {budget.issued} issued, "
            f"expected {total}"
        )
    return Run(
        server_cpu=server_meter.seconds - server_before,
        client_cpu=client_meter.seconds - client_before,
        amount=total,
        server_datagrams=sum(s.datagrams_sent for _, s, _ in pairs) - server_sent,
        client_datagrams=sum(c.datagrams_sent for c, _, _ in pairs) - client_sent,
        simulated=network.now - started,
    )


def handshakes(count: int, options: Options = Options()) -> Run:
    what = "handshakes"
    server_meter, client_meter = Meter(), Meter()
    deadline = time.monotonic() + options.timeout
    client_config = h3_configuration(server=False, options=options)
    server_config = h3_configuration(server=True, options=options)
    server_sent = client_sent = 0
    simulated = 0.0
    for index in range(count):
        network = Network(f"{what} #{index + 1}", options, deadline=deadline)
        client = Endpoint(
            f"{what} client", client_meter, _client_address(index), Application()
        )
        server = Endpoint(
            f"{what} server",
            server_meter,
            SERVER_ADDRESS,
            Application(),
            server_config=server_config,
        )
        network.add(client, server)
        client.connect(client_config, SERVER_ADDRESS, network.now)
        network.run(both_complete(client, server), "handshake")
        server_sent += server.datagrams_sent
        client_sent += client.datagrams_sent
        simulated += network.now - START_TIME
    return Run(
        server_cpu=server_meter.seconds,
        client_cpu=client_meter.seconds,
        amount=count,
        server_datagrams=server_sent,
        client_datagrams=client_sent,
        simulated=simulated,
    )


# -- measuring and reporting -----------------------------------------------------


def _rate(amount: float, seconds: float) -> float:
    return amount / seconds if seconds > 0 else 0.0


def summarize(runs: Sequence[Run], unit: float = 1.0) -> dict[str, Any]:
    """Medians over ``runs``; rates are ``amount / unit`` per CPU second."""
    server_cpu = statistics.median(r.server_cpu for r in runs)
    client_cpu = statistics.median(r.client_cpu for r in runs)
    amount = runs[0].amount
    return {
        "server_cpu_s": server_cpu,
        "client_cpu_s": client_cpu,
        "server_per_s": _rate(amount / unit, server_cpu),
        "client_per_s": _rate(amount / unit, client_cpu),
        "runs": len(runs),
        "server_cpu_s_runs": [r.server_cpu for r in runs],
        "client_cpu_s_runs": [r.client_cpu for r in runs],
        "server_datagrams": statistics.median(r.server_datagrams for r in runs),
        "client_datagrams": statistics.median(r.client_datagrams for r in runs),
        "simulated_s": statistics.median(r.simulated for r in runs),
    }


def _one(
    workload: str,
    shape: str | None,
    size: int,
    requests: int,
    count: int,
    options: Options,
) -> Run:
    use_engine(options.engine)
    gc.collect()
    if workload == "raw-bulk":
        return raw_bulk(size, options)
    if workload == "h3-bulk":
        return h3_bulk(size, options)
    if workload == "h3-requests":
        assert shape is not None
        connections, in_flight = SHAPES[shape]
        return h3_requests(connections, in_flight, requests, options)
    if workload == "handshakes":
        return handshakes(count, options)
    raise ValueError(f"unknown workload {workload!r}; choose from {WORKLOADS}")


def _result(workload: str, runs: Sequence[Run]) -> dict[str, Any]:
    if workload in ("raw-bulk", "h3-bulk"):
        figures = summarize(runs, unit=1e6)
        return {
            "size": runs[0].amount,
            "server_cpu_s": figures["server_cpu_s"],
            "client_cpu_s": figures["client_cpu_s"],
            "server_mb_per_s": figures["server_per_s"],
            "client_mb_per_s": figures["client_per_s"],
            **{k: v for k, v in figures.items() if not k.endswith("_per_s")},
        }
    figures = summarize(runs)
    if workload == "h3-requests":
        return {
            "requests": runs[0].amount,
            "server_cpu_s": figures["server_cpu_s"],
            "client_cpu_s": figures["client_cpu_s"],
            "server_requests_per_s": figures["server_per_s"],
            "client_requests_per_s": figures["client_per_s"],
            **{k: v for k, v in figures.items() if not k.endswith("_per_s")},
        }
    return {"count": runs[0].amount, **figures}


def measure(
    workload: str,
    *,
    size: int = DEFAULT_SIZE,
    requests: int = DEFAULT_REQUESTS,
    count: int = DEFAULT_HANDSHAKES,
    repeat: int = 1,
    options: Options = Options(),
    shapes: Sequence[str] = tuple(SHAPES),
) -> dict[str, Any]:
    """The figures of one workload, medians over ``repeat`` runs, as written
    under its key by ``--json``. Raises BenchError when a run fails."""
    if workload == "h3-requests":
        return {
            shape: _result(
                workload,
                [
                    _one(workload, shape, size, requests, count, options)
                    for _ in range(repeat)
                ],
            )
            for shape in shapes
        }
    return _result(
        workload,
        [_one(workload, None, size, requests, count, options) for _ in range(repeat)],
    )


def measure_all(
    workloads: Sequence[str] = WORKLOADS,
    *,
    size: int = DEFAULT_SIZE,
    requests: int = DEFAULT_REQUESTS,
    count: int = DEFAULT_HANDSHAKES,
    repeat: int = DEFAULT_REPEAT,
    options: Options = Options(),
    progress: Callable[[str, Run], None] | None = None,
) -> dict[str, Any]:
    """Every workload, repeats interleaved so that drift touches each alike."""
    cases = [
        (workload, shape)
        for workload in workloads
        for shape in (SHAPES if workload == "h3-requests" else [None])
    ]
    runs: dict[tuple[str, str | None], list[Run]] = {case: [] for case in cases}
    for _ in range(repeat):
        for workload, shape in cases:
            run = _one(workload, shape, size, requests, count, options)
            runs[workload, shape].append(run)
            if progress is not None:
                progress(workload if shape is None else f"{workload} {shape}", run)
    results: dict[str, Any] = {}
    for (workload, shape), measured in runs.items():
        if shape is None:
            results[workload] = _result(workload, measured)
        else:
            results.setdefault(workload, {})[shape] = _result(workload, measured)
    return results


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], str]]:
    """(label, amount, figures, unit) per row of the table."""
    rows: list[tuple[str, str, dict[str, Any], str]] = []
    for workload in WORKLOADS:
        if workload not in results:
            continue
        figures = results[workload]
        if workload in ("raw-bulk", "h3-bulk"):
            rows.append(
                (
                    workload,
                    f"{figures['size'] / 1e6:.1f} MB",
                    {
                        "server": figures["server_mb_per_s"],
                        "client": figures["client_mb_per_s"],
                        **figures,
                    },
                    "MB/s",
                )
            )
        elif workload == "h3-requests":
            for shape, shaped in figures.items():
                rows.append(
                    (
                        f"{workload} {shape}",
                        f"{shaped['requests']} req",
                        {
                            "server": shaped["server_requests_per_s"],
                            "client": shaped["client_requests_per_s"],
                            **shaped,
                        },
                        "req/s",
                    )
                )
        else:
            rows.append(
                (
                    workload,
                    f"{figures['count']} hs",
                    {
                        "server": figures["server_per_s"],
                        "client": figures["client_per_s"],
                        **figures,
                    },
                    "hs/s",
                )
            )
    return rows


def print_table(results: dict[str, Any], repeat: int, options: Options) -> None:
    print()
    print(
        f"ceiling: {options.engine} {use_engine(options.engine)} client and server "
        "QuicConnection in one thread, datagrams in memory;"
    )
    ssthresh = "aioquic's" if options.ssthresh is None else f"{options.ssthresh} B"
    cc = options.congestion_control
    if options.engine == "qh3":
        ssthresh, cc = "qh3's own (it has no setting)", QH3_CONGESTION_CONTROL
    print(
        f"simulated clock: {options.clock}; congestion control: {cc}; "
        f"slow-start threshold: {ssthresh};"
    )
    print(
        f"CPU = thread CPU seconds charged to each side, median of {repeat}; "
        "rates per CPU second of that side (MB = 10**6 bytes of body)"
    )
    header = (
        f"{'workload':<19} {'amount':>10} {'srv CPU s':>9} {'cli CPU s':>9} "
        f"{'server per CPU s':>18} {'client per CPU s':>18}"
    )
    print(header)
    print("-" * len(header))
    for label, amount, figures, unit in table_rows(results):
        print(
            f"{label:<19} {amount:>10} {figures['server_cpu_s']:>9.3f} "
            f"{figures['client_cpu_s']:>9.3f} "
            f"{figures['server']:>12.1f} {unit:<5} {figures['client']:>12.1f} {unit}"
        )


def print_engine_ratios(tables: dict[str, dict[str, Any]]) -> None:
    """qh3's figures over aioquic's, per workload and side (same run)."""
    rows = {engine: table_rows(results) for engine, results in tables.items()}
    print()
    print("qh3/aioquic, same run (per CPU second of each side; higher is better):")
    for (label, _, aioquic_row, _), (_, _, qh3_row, _) in zip(
        rows["aioquic"], rows["qh3"], strict=True
    ):
        server = qh3_row["server"] / aioquic_row["server"]
        client = qh3_row["client"] / aioquic_row["client"]
        print(f"  {label:<19} server {server:6.2f}x  client {client:6.2f}x")


def _progress(label: str, run: Run) -> None:
    print(
        f"  {label:<19} server CPU {run.server_cpu:6.3f} s  client CPU "
        f"{run.client_cpu:6.3f} s  datagrams: server {run.server_datagrams} "
        f"client {run.client_datagrams}  simulated {run.simulated:.3f} s",
        flush=True,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The ceiling: aioquic (or qh3) client and server in memory, "
        "CPU per side."
    )
    parser.add_argument(
        "--engine",
        choices=(*ENGINES, "all"),
        default="all",
        help="whose state machines run on both sides: one, or each installed "
        "one after the other (default all)",
    )
    parser.add_argument(
        "--cc",
        choices=("auto", "reno", "cubic"),
        default="auto",
        help="aioquic's congestion control (auto: cubic when qh3 is measured "
        "too, qh3 having nothing else; reno otherwise)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated, from {', '.join(WORKLOADS)} (default all)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"bytes per bulk transfer ({DEFAULT_SIZE}; --quick {QUICK_SIZE})",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="requests per h3-requests shape "
        f"({DEFAULT_REQUESTS}; --quick {QUICK_REQUESTS})",
    )
    parser.add_argument(
        "--handshakes",
        type=int,
        default=None,
        help=f"handshakes per run ({DEFAULT_HANDSHAKES}; --quick {QUICK_HANDSHAKES})",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"runs per workload, medians reported ({DEFAULT_REPEAT}; --quick 1)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test: small sizes, one run"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"wall seconds allowed per run ({DEFAULT_TIMEOUT:.0f})",
    )
    parser.add_argument(
        "--clock",
        choices=CLOCKS,
        default="cpu",
        help="how simulated time moves: 'cpu' (default) also by the CPU seconds "
        "of every call, 'idle' only when no side has anything to send",
    )
    parser.add_argument(
        "--ssthresh",
        type=int,
        default=DEFAULT_SSTHRESH,
        help="slow-start threshold set on every connection, in bytes "
        f"({DEFAULT_SSTHRESH}); 0 leaves aioquic's",
    )
    parser.add_argument(
        "--json", metavar="PATH", default=None, help="write the figures to PATH"
    )
    args = parser.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for workload in args.workloads:
        if workload not in WORKLOADS:
            parser.error(f"unknown workload {workload!r}; choose from {WORKLOADS}")
    if not args.workloads:
        parser.error("no workload given")
    if args.size is None:
        args.size = QUICK_SIZE if args.quick else DEFAULT_SIZE
    if args.requests is None:
        args.requests = QUICK_REQUESTS if args.quick else DEFAULT_REQUESTS
    if args.handshakes is None:
        args.handshakes = QUICK_HANDSHAKES if args.quick else DEFAULT_HANDSHAKES
    if args.repeat is None:
        args.repeat = 1 if args.quick else DEFAULT_REPEAT
    if args.size < 0 or args.requests < 1 or args.handshakes < 1 or args.repeat < 1:
        parser.error("--size must be >= 0; --requests, --handshakes and --repeat >= 1")
    if args.ssthresh < 0:
        parser.error("--ssthresh must be >= 0")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.json is not None and args.engine == "all":
        parser.error("--json writes one engine's figures: add --engine aioquic or qh3")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.engine == "all":
        engines = [e for e in ENGINES if importlib.util.find_spec(e) is not None]
    else:
        engines = [args.engine]
    if args.cc == "auto":
        args.cc = QH3_CONGESTION_CONTROL if "qh3" in engines else CONGESTION_CONTROL
    print(
        f"engines {', '.join(engines)}; "
        f"workloads {', '.join(args.workloads)}; size {args.size} bytes, "
        f"{args.requests} requests per shape, {args.handshakes} handshakes, "
        f"{args.repeat} repeat(s)",
        flush=True,
    )
    tables: dict[str, dict[str, Any]] = {}
    for engine in engines:
        options = Options(
            timeout=args.timeout,
            clock=args.clock,
            ssthresh=args.ssthresh if args.ssthresh > 0 else None,
            engine=engine,
            congestion_control=args.cc,
        )
        try:
            results = measure_all(
                args.workloads,
                size=args.size,
                requests=args.requests,
                count=args.handshakes,
                repeat=args.repeat,
                options=options,
                progress=_progress,
            )
        except BenchError as exc:
            print(f"benchmark failed: {exc} (on {engine})", file=sys.stderr)
            return 1
        print_table(results, args.repeat, options)
        tables[engine] = results
    if len(tables) > 1:
        print_engine_ratios(tables)
    if args.json is not None:
        meta = {
            "engine": args.engine,
            args.engine: use_engine(args.engine),
            "congestion_control": QH3_CONGESTION_CONTROL
            if args.engine == "qh3"
            else args.cc,
            "repeat": args.repeat,
            "cpu_clock": "time.thread_time",
            "simulated_clock": options.clock,
            "ssthresh": options.ssthresh,
        }
        with open(args.json, "w") as fp:
            json.dump({**results, "meta": meta}, fp, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
