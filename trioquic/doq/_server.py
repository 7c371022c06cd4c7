"""The DNS over QUIC server (RFC 9250): an :class:`~trioquic.ApplicationOverQuic`
per connection, and :func:`serve_doq`.

One query per client-initiated bidirectional stream: a 2-byte length
prefix, the DNS message (Message ID 0), the client's FIN. The server answers
with one length-prefixed message and its FIN. The wire rules are in
:mod:`._wire` (pure); this module holds the per-connection state, runs the
user's handler in a task of the connection's nursery per query, and maps bad
input to the outcomes RFC 9250 section 4.3 gives (see docs/doq.rst for the
table).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import dns.message
import dns.rcode
import trio

from .._application import ApplicationOverQuic, ConnectionIO
from .._endpoint import QuicServer, serve_application
from .._errors import CloseReason, StreamStateError
from .._events import (
    HandshakeInfo,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamResetReceived,
)
from .._settings import QuicSettings
from .._udp import DatagramSocket
from ._errors import DoqErrorCode, DoqProtocolError
from ._settings import DoqSettings
from ._wire import (
    DEFAULT_PORT,
    DOQ_ALPN,
    REPLAYABLE_OPCODES,
    QueryReader,
    QueryTooLarge,
    error_response,
    frame,
    parse_query,
    render_response,
    too_early_response,
)

logger = logging.getLogger("trioquic.doq")


@attrs.frozen(kw_only=True)
class QueryContext:
    """What a handler knows about a query besides the message itself."""

    #: The client's address (host, port).
    peer_address: Any
    #: The server address the query came to.
    local_address: Any
    #: The query's connection (its peer, statistics, close()).
    connection: ConnectionIO
    #: The QUIC stream the query came on.
    stream_id: int
    #: Whether the query arrived in 0-RTT (early) data, which an attacker
    #: can replay; only replayable queries (QUERY, NOTIFY) reach a handler
    #: so, unless ``DoqSettings.early_data`` is ``"defer"`` (then the others
    #: wait for the handshake and come with False).
    early_data: bool
    #: The query exactly as received (Message ID 0), e.g. to forward it.
    wire: bytes = attrs.field(repr=False)


#: A DoQ handler: ``async def handler(query, context) -> response``.
DoqHandler = Callable[
    [dns.message.Message, QueryContext], Awaitable[dns.message.Message]
]


@attrs.frozen(kw_only=True)
class DoqStatistics:
    """Counters of a DoQ server since it started."""

    #: Complete queries received (well-formed or not).
    queries: int
    #: Responses sent, whatever their RCODE.
    responses: int
    #: FORMERR responses to queries that could not be parsed.
    formerr: int
    #: SERVFAIL responses: the handler raised, timed out or returned no
    #: usable message.
    servfail: int
    #: Handler calls that ran past ``handler_timeout`` (counted in servfail).
    handler_timeouts: int
    #: Non-replayable 0-RTT queries answered REFUSED / Too Early.
    early_refused: int
    #: Non-replayable 0-RTT queries held until the handshake completed.
    early_deferred: int
    #: Queries the client cancelled (RESET_STREAM or STOP_SENDING).
    cancelled: int
    #: Queries refused for their size (DOQ_EXCESSIVE_LOAD on the stream).
    too_large: int
    #: Connections closed with DOQ_PROTOCOL_ERROR.
    protocol_errors: int


@attrs.define
class _Counters:
    queries: int = 0
    responses: int = 0
    formerr: int = 0
    servfail: int = 0
    handler_timeouts: int = 0
    early_refused: int = 0
    early_deferred: int = 0
    cancelled: int = 0
    too_large: int = 0
    protocol_errors: int = 0


class _ServerState:
    """What the connections of one server share."""

    def __init__(self, handler: DoqHandler, settings: DoqSettings) -> None:
        self.handler = handler
        self.settings = settings
        self.counters = _Counters()
        self.in_flight = 0
        self._idle = trio.lowlevel.ParkingLot()

    def query_started(self) -> None:
        self.in_flight += 1

    def query_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.unpark_all()

    async def wait_idle(self) -> None:
        while self.in_flight:
            await self._idle.park()
        await trio.lowlevel.checkpoint()


class DoqServer:
    """A running DoQ server, as ``await nursery.start(serve_doq, ...)``
    reports it."""

    def __init__(self, quic: QuicServer, state: _ServerState) -> None:
        #: The QUIC server underneath (connections, router statistics).
        self.quic = quic
        self._state = state

    def __repr__(self) -> str:
        return f"<trioquic.doq.DoqServer addresses={self.addresses!r}>"

    @property
    def addresses(self) -> list[Any]:
        """The bound local addresses."""
        return self.quic.addresses

    @property
    def port(self) -> int:
        return self.quic.port

    @property
    def queries_in_progress(self) -> int:
        return self._state.in_flight

    def statistics(self) -> DoqStatistics:
        return DoqStatistics(**attrs.asdict(self._state.counters))


class _Stream:
    """One query stream's state."""

    __slots__ = ("abandoned", "complete", "early", "reader", "scope", "started")

    def __init__(self, reader: QueryReader, *, early: bool, started: float) -> None:
        self.reader = reader
        self.early = early
        self.started = started
        self.complete = False
        self.abandoned = False
        self.scope: trio.CancelScope | None = None


class DoqConnection(ApplicationOverQuic):
    """The server side of one DoQ connection: what :func:`serve_doq` runs
    per connection."""

    def __init__(self, state: _ServerState) -> None:
        self._state = state
        self._streams: dict[int, _Stream] = {}
        #: Streams refused for their size whose late data is dropped.
        self._ignored: set[int] = set()
        self._running = 0
        self._closing = False
        self._handshake_done = trio.Event()

    # -- hooks ------------------------------------------------------------------

    def attach(self, io: ConnectionIO) -> None:
        # One query per stream: the QUIC stream limit is the per-connection
        # concurrency limit. One unidirectional stream is allowed only so that
        # a client opening one gets DOQ_PROTOCOL_ERROR, as RFC 9250 section
        # 4.3.3 says, rather than a QUIC STREAM_LIMIT_ERROR.
        io.set_peer_stream_limits(
            bidirectional=self._state.settings.max_concurrent_queries,
            unidirectional=1,
        )

    def on_connection_established(
        self, io: ConnectionIO, handshake: HandshakeInfo
    ) -> None:
        io.start_soon(self._watch_dangling, io, name="trioquic.doq dangling streams")

    def should_act(self) -> bool:
        return not self._closing

    def process_reads(self, io: ConnectionIO, events: Sequence[QuicEvent]) -> None:
        for event in events:
            if self._closing:
                return
            if isinstance(event, StreamDataReceived):
                self._on_data(io, event)
            elif isinstance(event, StreamResetReceived):
                self._abandon(io, event.stream_id, peer_reset=True)
            elif isinstance(event, StopSendingReceived):
                self._abandon(io, event.stream_id, peer_reset=False)

    def process_writes(self, io: ConnectionIO) -> None:
        if not self._handshake_done.is_set() and io.handshake_complete:
            self._handshake_done.set()

    def on_connection_close(self, io: ConnectionIO, reason: CloseReason) -> None:
        self._closing = True

    # -- reading queries ----------------------------------------------------------

    def _on_data(self, io: ConnectionIO, event: StreamDataReceived) -> None:
        stream_id = event.stream_id
        if stream_id & 0x2:
            self._protocol_error(
                io, "the client opened a unidirectional stream (RFC 9250 section 4.3.3)"
            )
            return
        if stream_id in self._ignored:
            if event.end_stream:
                self._ignored.discard(stream_id)
            return
        stream = self._streams.get(stream_id)
        settings = self._state.settings
        if stream is None:
            stream = _Stream(
                QueryReader(settings.max_query_size),
                early=not io.handshake_complete,
                started=trio.current_time(),
            )
            self._streams[stream_id] = stream
        try:
            wire = stream.reader.feed(event.data, event.end_stream)
        except QueryTooLarge as exc:
            self._state.counters.too_large += 1
            logger.info("trioquic.doq: stream %d refused: %s", stream_id, exc)
            del self._streams[stream_id]
            if not event.end_stream:
                self._ignored.add(stream_id)
                io.stop_stream(stream_id, DoqErrorCode.DOQ_EXCESSIVE_LOAD)
            io.reset_stream(stream_id, DoqErrorCode.DOQ_EXCESSIVE_LOAD)
            return
        except DoqProtocolError as exc:
            self._protocol_error(io, str(exc))
            return
        if wire is None:
            return
        stream.complete = True
        self._on_query(io, stream_id, stream, wire)

    def _on_query(
        self, io: ConnectionIO, stream_id: int, stream: _Stream, wire: bytes
    ) -> None:
        state = self._state
        try:
            parsed = parse_query(wire)
        except DoqProtocolError as exc:
            self._protocol_error(io, str(exc))
            return
        state.counters.queries += 1
        if isinstance(parsed, bytes):
            # Unparsable but with a header: answer FORMERR on the stream, as a
            # DNS server answers a malformed query; the connection goes on.
            state.counters.formerr += 1
            del self._streams[stream_id]
            self._send(io, stream_id, frame(parsed))
            return
        if (
            stream.early
            and parsed.opcode() not in REPLAYABLE_OPCODES
            and state.settings.early_data == "close"
        ):
            self._protocol_error(
                io,
                f"a non-replayable query (opcode {parsed.opcode()!r}) in 0-RTT data "
                "(RFC 9250 section 4.5)",
            )
            return
        if self._running >= state.settings.max_concurrent_queries:
            # Only when the client ignored the stream limit's timing (a stream
            # it reset is credited back before its task has ended).
            del self._streams[stream_id]
            io.reset_stream(stream_id, DoqErrorCode.DOQ_EXCESSIVE_LOAD)
            return
        self._running += 1
        state.query_started()
        io.start_soon(self._answer, io, stream_id, stream, parsed, wire)

    def _abandon(self, io: ConnectionIO, stream_id: int, *, peer_reset: bool) -> None:
        """The client cancelled a query (RFC 9250 section 4.3.1)."""
        self._ignored.discard(stream_id)
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return  # answered already, or never seen
        self._state.counters.cancelled += 1
        stream.abandoned = True
        if stream.scope is not None:
            stream.scope.cancel()
        if peer_reset:
            # "The server MUST issue a RESET_STREAM to indicate that the
            # transaction is abandoned."
            io.reset_stream(stream_id, DoqErrorCode.DOQ_REQUEST_CANCELLED)
        elif not stream.complete:
            # STOP_SENDING: the engine reset our side; stop reading too.
            io.stop_stream(stream_id, DoqErrorCode.DOQ_REQUEST_CANCELLED)

    def _protocol_error(self, io: ConnectionIO, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self._state.counters.protocol_errors += 1
        logger.info(
            "trioquic.doq: closing the connection from %s: %s", io.peer_address, reason
        )
        io.close(DoqErrorCode.DOQ_PROTOCOL_ERROR, reason)

    async def _watch_dangling(self, io: ConnectionIO) -> None:
        """Close the connection when a query stays incomplete (no FIN) for
        ``query_timeout`` (detected within twice that)."""
        timeout = self._state.settings.query_timeout
        while not self._closing:
            oldest = min(
                (s.started for s in self._streams.values() if not s.complete),
                default=None,
            )
            if oldest is None:
                await trio.sleep(timeout)
            elif trio.current_time() >= oldest + timeout:
                self._protocol_error(
                    io,
                    f"a query stream still incomplete (no FIN) after {timeout:g} s "
                    "(RFC 9250 section 4.3.3)",
                )
                return
            else:
                await trio.sleep_until(oldest + timeout)

    # -- answering ------------------------------------------------------------------

    def _send(self, io: ConnectionIO, stream_id: int, data: bytes) -> bool:
        if self._closing or io.error is not None:
            return False
        try:
            io.send_stream_data(stream_id, data, end_stream=True)
        except StreamStateError:
            return False  # the client reset the stream meanwhile
        self._state.counters.responses += 1
        return True

    async def _answer(
        self,
        io: ConnectionIO,
        stream_id: int,
        stream: _Stream,
        query: dns.message.Message,
        wire: bytes,
    ) -> None:
        try:
            with trio.CancelScope() as scope:
                stream.scope = scope
                response = await self._respond(io, stream_id, stream, query, wire)
            if not scope.cancelled_caught and not stream.abandoned:
                self._send(io, stream_id, frame(response))
        finally:
            self._running -= 1
            self._state.query_finished()
            if self._streams.get(stream_id) is stream:
                del self._streams[stream_id]

    async def _respond(
        self,
        io: ConnectionIO,
        stream_id: int,
        stream: _Stream,
        query: dns.message.Message,
        wire: bytes,
    ) -> bytes:
        state = self._state
        settings = state.settings
        counters = state.counters
        pad = settings.pad_responses
        early = stream.early
        if early and query.opcode() not in REPLAYABLE_OPCODES:
            if settings.early_data == "refuse":
                counters.early_refused += 1
                return render_response(too_early_response(query), query, pad=pad)
            counters.early_deferred += 1
            await self._handshake_done.wait()
            early = False
        context = QueryContext(
            peer_address=io.peer_address,
            local_address=io.local_address,
            connection=io,
            stream_id=stream_id,
            early_data=early,
            wire=wire,
        )
        response: object = None
        with trio.move_on_after(settings.handler_timeout) as deadline:
            try:
                response = await state.handler(query, context)
            except Exception:
                logger.exception(
                    "trioquic.doq: the handler raised on %s; answering SERVFAIL",
                    query.question,
                )
        if deadline.cancelled_caught:
            counters.handler_timeouts += 1
            logger.warning(
                "trioquic.doq: the handler took longer than %g s on %s; "
                "answering SERVFAIL",
                settings.handler_timeout,
                query.question,
            )
        elif response is not None and not isinstance(response, dns.message.Message):
            logger.error(
                "trioquic.doq: the handler returned %s, not a dns.message.Message; "
                "answering SERVFAIL",
                type(response).__name__,
            )
            response = None
        if isinstance(response, dns.message.Message):
            try:
                return render_response(response, query, pad=pad)
            except Exception:
                logger.exception(
                    "trioquic.doq: cannot send the handler's response; answering "
                    "SERVFAIL"
                )
        counters.servfail += 1
        return render_response(
            error_response(query, dns.rcode.SERVFAIL), query, pad=pad
        )


def doq_quic_settings(settings: QuicSettings | None) -> QuicSettings:
    """``settings`` with the ALPN set to ``doq`` (checked: a server needs a
    certificate)."""
    if settings is None:
        raise ValueError(
            "serve_doq needs QuicSettings with a certificate and private_key, e.g. "
            "from trioquic.generate_self_signed_certificate()"
        )
    if not isinstance(settings, QuicSettings):
        raise TypeError(
            f"settings must be a trioquic.QuicSettings, got {type(settings).__name__}"
        )
    if settings.certificate is None and settings.quic_configuration is None:
        raise ValueError(
            "serve_doq needs QuicSettings.certificate (and private_key): TLS is "
            "mandatory for DNS over QUIC"
        )
    if settings.alpn_protocols != (DOQ_ALPN,):
        settings = attrs.evolve(settings, alpn_protocols=[DOQ_ALPN])
    return settings


async def serve_doq(
    handler: DoqHandler,
    port: int = DEFAULT_PORT,
    *,
    host: str | None = None,
    settings: QuicSettings | None = None,
    doq_settings: DoqSettings | None = None,
    sockets: Sequence[DatagramSocket] | None = None,
    task_status: trio.TaskStatus[DoqServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve DNS over QUIC (RFC 9250) on ``port`` (853 by default).

    ``await handler(query, context)`` answers each query: ``query`` is a
    :class:`dns.message.Message`, ``context`` a :class:`QueryContext`; it
    returns the response message (``dns.message.make_response(query)`` plus
    answers). The server sets the Message ID to 0, pads the response when
    the query was padded, and sends it; a handler that raises or runs past
    ``doq_settings.handler_timeout`` gets the client a SERVFAIL.

    ``settings`` is the QUIC side and must hold the certificate; its ALPN
    is set to ``doq``. Use ``await nursery.start(serve_doq, handler, 0,
    settings=...)`` to get the :class:`DoqServer` once it listens; cancel
    the scope around it to stop: queries in progress get up to
    ``doq_settings.shutdown_grace`` seconds to be answered, then every
    connection is closed with CONNECTION_CLOSE DOQ_NO_ERROR (within
    ``settings.close_grace_period``).
    """
    if not callable(handler):
        raise TypeError(
            "handler must be an async function (query, context) returning a "
            "dns.message.Message"
        )
    quic_settings = doq_quic_settings(settings)
    if doq_settings is None:
        doq_settings = DoqSettings()
    elif not isinstance(doq_settings, DoqSettings):
        raise TypeError(
            "doq_settings must be a trioquic.doq.DoqSettings, got "
            f"{type(doq_settings).__name__}"
        )
    state = _ServerState(handler, doq_settings)
    # The QUIC server runs shielded from the caller's cancellation, so that a
    # cancelled serve_doq can still answer the queries in progress; it stops
    # when ``services`` is cancelled, after that.
    services = trio.CancelScope(shield=True)

    async def run_quic(*, task_status: trio.TaskStatus[QuicServer]) -> None:
        with services:
            await serve_application(
                functools.partial(DoqConnection, state),
                port,
                host=host,
                settings=quic_settings,
                sockets=sockets,
                task_status=task_status,
            )

    async with trio.open_nursery() as nursery:
        quic_server: QuicServer = await nursery.start(run_quic)
        task_status.started(DoqServer(quic_server, state))
        try:
            await trio.sleep_forever()
        finally:
            # Let the queries in progress be answered and the answers be
            # acknowledged (CONNECTION_CLOSE abandons unsent stream data), then
            # close every connection: the QUIC layer sends CONNECTION_CLOSE
            # with application error 0, DOQ_NO_ERROR, when it is cancelled.
            with trio.CancelScope(shield=True):
                with trio.move_on_after(doq_settings.shutdown_grace):
                    await state.wait_idle()
                    for io in quic_server.connections:
                        await io.wait_flushed()
            services.cancel()
