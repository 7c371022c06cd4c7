"""H3Driver: HTTP/3 as an :class:`~trioquic.ApplicationOverQuic`.

One driver per QUIC connection. It feeds the transport's events to the
HTTP/3 engine (aioquic's ``H3Connection`` behind :mod:`._engine`) and keeps an
:class:`Exchange` per request stream: a bounded body buffer that grants QUIC
credit as the application reads, trailers, datagrams, and the send side's
backpressure. :class:`ServerH3Driver` runs a handler per request in the
connection's nursery; :class:`ClientH3Driver` opens requests.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import trio

from .._application import ApplicationOverQuic, ConnectionIO, take_when_ready
from .._engine import HandshakeInfo
from .._errors import CloseReason, ConnectionClosed, DatagramError
from .._events import QuicEvent, StreamDataReceived, StreamResetReceived
from .._settings import QuicSettings
from ._engine import (
    H3_EXCESSIVE_LOAD,
    H3_INTERNAL_ERROR,
    H3_MESSAGE_ERROR,
    H3_NO_ERROR,
    H3_REQUEST_CANCELLED,
    H3_REQUEST_REJECTED,
    ConnectionError_,
    DataReceived,
    GoawayReceived,
    H3DatagramReceived,
    H3Engine,
    Headers,
    HeadersReceived,
    StopSending,
    StreamReset,
)
from ._errors import ConnectionGoingAway, H3Error, RequestRejected
from ._settings import Http3Settings

if TYPE_CHECKING:
    from ._messages import Request

logger = logging.getLogger("trioquic.h3")

#: Largest DATA frame written at once (larger sends are split, each waiting
#: for room in the stream's send buffer).
_MAX_CHUNK = 64 * 1024


class _Stopped(H3Error):
    """The peer sent STOP_SENDING: our side of the stream is reset."""


def normalize_headers(headers: Iterable[tuple[bytes | str, bytes | str]]) -> Headers:
    """Headers as lowercase-name byte pairs; pseudo-headers are refused."""
    out: Headers = []
    for name, value in headers:
        bname = name.encode("ascii") if isinstance(name, str) else bytes(name)
        bvalue = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        bname = bname.lower()
        if bname.startswith(b":"):
            raise ValueError(
                f"pseudo-headers are set by trioquic, not passed: {name!r}"
            )
        out.append((bname, bvalue))
    return out


def split_pseudo(headers: Headers) -> tuple[dict[bytes, bytes], Headers]:
    pseudo: dict[bytes, bytes] = {}
    regular: Headers = []
    for name, value in headers:
        if name.startswith(b":"):
            pseudo[name] = value
        else:
            regular.append((name, value))
    return pseudo, regular


def field_section_size(headers: Headers) -> int:
    """RFC 9114 section 4.2.2: names + values + 32 bytes per field."""
    return sum(len(name) + len(value) + 32 for name, value in headers)


class Exchange:
    """One request stream: what was received and how sending goes."""

    def __init__(self, driver: H3Driver, stream_id: int) -> None:
        self.driver = driver
        self.stream_id = stream_id
        # receive side
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.body_received = 0
        self.eof = False
        self.trailers: Headers | None = None
        self.reset_code: int | None = None
        self.failure: H3Error | None = None  # what readers raise
        self.abandoned = False
        self.headers_received = False
        self.receive_lot = trio.lowlevel.ParkingLot()
        self.receiving = False
        # client: the response
        self.informational: list[tuple[int, Headers]] = []
        self.response_status: int | None = None
        self.response_headers: Headers | None = None
        # send side
        self.headers_sent = False
        self.send_finished = False
        self.send_reset = False
        self.stop_code: int | None = None
        self.send_lot = trio.lowlevel.ParkingLot()
        self.sending = False
        # server: the handler's cancel scope
        self.cancel_scope: trio.CancelScope | None = None
        self.peer_aborted = False
        # RFC 9297 datagrams
        self.datagrams: deque[bytes] = deque()
        self.datagram_lot = trio.lowlevel.ParkingLot()

    def wake_all(self) -> None:
        self.receive_lot.unpark_all()
        self.send_lot.unpark_all()
        self.datagram_lot.unpark_all()

    @property
    def response_complete(self) -> bool:
        return self.send_finished or self.send_reset


class H3Driver(ApplicationOverQuic):
    """HTTP/3 over one QUIC connection (base of the server and client drivers).

    Receive credit is granted as request and response bodies are read
    (``manual_flow_control``): up to :attr:`Http3Settings.body_buffer_size`
    bytes of a body are buffered, beyond that the peer waits for QUIC credit.
    """

    manual_flow_control = True

    def __init__(
        self,
        http3_settings: Http3Settings | None = None,
        quic_settings: QuicSettings | None = None,
    ) -> None:
        self.http3_settings = http3_settings or Http3Settings()
        self.quic_settings = quic_settings or QuicSettings()
        self.io: ConnectionIO | None = None
        self.engine: H3Engine | None = None
        self.exchanges: dict[int, Exchange] = {}
        self._raw: dict[int, int] = {}
        self._credited: dict[int, int] = {}
        self._blocked_senders: set[Exchange] = set()
        self._settings_lot = trio.lowlevel.ParkingLot()
        self.closed = trio.Event()
        self.goaway_id: int | None = None
        #: Called once when the connection has ended.
        self.on_closed: Callable[[], object] | None = None

    # -- hooks ----------------------------------------------------------------

    def on_connection_established(
        self, io: ConnectionIO, handshake: HandshakeInfo
    ) -> None:
        self.start(io)

    def start(self, io: ConnectionIO) -> None:
        """Set up HTTP/3 on the connection (control streams, SETTINGS). Done
        when the handshake completes, or earlier by a 0-RTT client."""
        if self.engine is not None:
            return
        self.io = io
        h3 = self.http3_settings
        self.engine = H3Engine(
            io._worker.engine.quic,
            max_field_section_size=h3.max_header_list_size,
            enable_connect_protocol=h3.enable_connect_protocol,
            enable_datagrams=h3.enable_datagrams,
        )

    def process_reads(self, io: ConnectionIO, events: Sequence[QuicEvent]) -> None:
        engine = self.engine
        if engine is None:  # pragma: no cover - events follow the handshake
            return
        touched: set[int] = set()
        for event in events:
            if isinstance(event, StreamDataReceived):
                sid = event.stream_id
                if sid & 2:
                    # Control and QPACK streams: HTTP/3 consumes them at once.
                    io.consume(sid, len(event.data))
                elif sid in self._raw:
                    self._raw[sid] += len(event.data)
                    touched.add(sid)
                elif self._is_new_stream(sid):
                    self._raw[sid] = len(event.data)
                    self._credited[sid] = 0
                    touched.add(sid)
                else:
                    io.consume(sid, len(event.data))
        try:
            h3_events = engine.handle(events)
        except ConnectionError_ as exc:
            logger.debug("trioquic.h3: connection error 0x%x: %s", exc.error_code, exc)
            io.close(exc.error_code, exc.reason)
            return
        had_settings = engine.peer_settings is not None
        for h3_event in h3_events:
            if isinstance(h3_event, HeadersReceived):
                self._on_headers(h3_event)
            elif isinstance(h3_event, DataReceived):
                self._on_data(h3_event)
            elif isinstance(h3_event, StreamReset):
                self._on_reset(h3_event.stream_id, h3_event.error_code)
            elif isinstance(h3_event, StopSending):
                self._on_stop_sending(h3_event.stream_id, h3_event.error_code)
            elif isinstance(h3_event, H3DatagramReceived):
                self._on_datagram(h3_event)
            elif isinstance(h3_event, GoawayReceived):
                self.goaway_id = h3_event.last_id
                self._on_goaway(h3_event.last_id)
            if io.error is not None or io.close_reason is not None:
                return
        for event in events:
            if isinstance(event, StreamResetReceived) and event.stream_id in self._raw:
                self._drop_credit(event.stream_id)
        for sid in touched:
            if sid in self._raw and sid not in self.exchanges:
                self._check_unparsed(sid)
            self._update_credit(sid)
        if had_settings:
            self._settings_lot.unpark_all()

    def process_writes(self, io: ConnectionIO) -> None:
        if self._blocked_senders:
            limit = self.quic_settings.stream_send_buffer
            for ex in list(self._blocked_senders):
                if ex.stop_code is not None or io.send_buffered(ex.stream_id) < limit:
                    self._blocked_senders.discard(ex)
                    ex.send_lot.unpark_all()

    def on_connection_close(self, io: ConnectionIO, reason: CloseReason) -> None:
        for ex in self.exchanges.values():
            ex.wake_all()
        self._blocked_senders.clear()
        self._settings_lot.unpark_all()
        self.closed.set()
        if self.on_closed is not None:
            self.on_closed()

    def close(self) -> None:
        """Close the connection now (H3_NO_ERROR)."""
        if self.io is not None and self.io.error is None:
            self.io.close(H3_NO_ERROR, "")

    # -- to be specialised ---------------------------------------------------

    def _is_new_stream(self, stream_id: int) -> bool:
        return False

    def _on_headers(self, event: HeadersReceived) -> None:
        raise NotImplementedError

    def _on_goaway(self, last_id: int) -> None:
        pass

    def _check_unparsed(self, stream_id: int) -> None:
        """A stream's bytes wait for a message's headers to be complete."""

    def _exchange_done(self, ex: Exchange) -> None:
        pass

    # -- receiving ----------------------------------------------------------------

    def _on_data(self, event: DataReceived) -> None:
        ex = self.exchanges.get(event.stream_id)
        if ex is None or ex.abandoned:
            return
        if event.data:
            ex.body_received += len(event.data)
            if self._body_too_large(ex):
                return
            ex.chunks.append(event.data)
            ex.buffered += len(event.data)
        if event.stream_ended:
            ex.eof = True
        ex.receive_lot.unpark_all()

    def _body_too_large(self, ex: Exchange) -> bool:
        return False

    def _on_trailers(self, ex: Exchange, event: HeadersReceived) -> None:
        ex.trailers = event.headers
        if event.stream_ended:
            ex.eof = True
        ex.receive_lot.unpark_all()

    def _on_reset(self, stream_id: int, error_code: int) -> None:
        ex = self.exchanges.get(stream_id)
        if ex is None:
            return
        if not ex.eof and ex.reset_code is None:
            ex.reset_code = error_code
            ex.failure = self._reset_error(error_code, "the peer reset the stream")
            ex.chunks.clear()
            ex.buffered = 0
        ex.peer_aborted = True
        ex.wake_all()
        self._peer_aborted(ex)

    def _on_stop_sending(self, stream_id: int, error_code: int) -> None:
        ex = self.exchanges.get(stream_id)
        if ex is None:
            return
        if not ex.send_finished:
            ex.stop_code = error_code
            ex.send_reset = True  # the transport reset our side already
            ex.peer_aborted = True
            self._peer_aborted(ex)
        ex.wake_all()

    def _peer_aborted(self, ex: Exchange) -> None:
        pass

    @staticmethod
    def _reset_error(code: int, message: str) -> H3Error:
        if code == H3_REQUEST_REJECTED:
            return RequestRejected(code, message)
        return H3Error(code, message)

    def _on_datagram(self, event: H3DatagramReceived) -> None:
        ex = self.exchanges.get(event.stream_id)
        if ex is None:
            return
        if len(ex.datagrams) >= self.quic_settings.datagram_queue_size:
            ex.datagrams.popleft()
        ex.datagrams.append(event.data)
        ex.datagram_lot.unpark_all()

    # -- credit ---------------------------------------------------------------------

    def _update_credit(self, stream_id: int) -> None:
        """Credit what arrived on a request stream, except what HTTP/3 still
        holds and what a full body buffer holds beyond its size."""
        raw = self._raw.get(stream_id)
        if raw is None or self.io is None or self.engine is None:
            return
        target = raw - self.engine.buffered(stream_id)
        ex = self.exchanges.get(stream_id)
        if ex is not None and not ex.abandoned:
            target -= max(0, ex.buffered - self.http3_settings.body_buffer_size)
        credited = self._credited[stream_id]
        if target > credited:
            self._credited[stream_id] = target
            self.io.consume(stream_id, target - credited)

    def _drop_credit(self, stream_id: int) -> None:
        """Nothing more of this stream will be read: credit all that arrived
        (and, once it is known, up to the final size)."""
        raw = self._raw.pop(stream_id, None)
        credited = self._credited.pop(stream_id, 0)
        if raw is None or self.io is None:
            return
        if raw > credited:
            self.io.consume(stream_id, raw - credited)
        final = self.io.received_final_size(stream_id)
        if final is not None:
            self.io.credit_unread(stream_id, final)

    def abandon_receive(self, ex: Exchange, code: int) -> None:
        """Stop reading ex's body (STOP_SENDING with ``code``) and give its
        credit back."""
        if ex.abandoned:
            return
        ex.abandoned = True
        ex.chunks.clear()
        ex.buffered = 0
        if not ex.eof and ex.reset_code is None and self.io is not None:
            self.io.stop_stream(ex.stream_id, code)
        self._drop_credit(ex.stream_id)
        ex.receive_lot.unpark_all()

    async def receive_chunk(self, ex: Exchange) -> bytes:
        """The next chunk of ex's body; b"" at its end."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if ex.receiving:
            raise trio.BusyResourceError("another task is already reading this body")
        ex.receiving = True
        try:
            blocked = False
            while not ex.chunks and not ex.eof:
                if ex.failure is not None:
                    raise ex.failure
                if ex.abandoned:
                    raise H3Error(H3_REQUEST_CANCELLED, "the body was abandoned")
                self._raise_if_closed()
                blocked = True
                await ex.receive_lot.park()
            if ex.chunks:
                chunk = ex.chunks.popleft()
                ex.buffered -= len(chunk)
                self._update_credit(ex.stream_id)
            else:
                chunk = b""
                self._body_finished(ex)
            if not blocked:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return chunk
        finally:
            ex.receiving = False

    def _body_finished(self, ex: Exchange) -> None:
        pass

    def _raise_if_closed(self) -> None:
        if self.io is not None and self.io.error is not None:
            raise self.io.error

    # -- sending --------------------------------------------------------------

    def _check_send(self, ex: Exchange) -> None:
        self._raise_if_closed()
        if ex.stop_code is not None:
            raise _Stopped(
                ex.stop_code, "the peer stopped reading the stream (STOP_SENDING)"
            )
        if ex.send_reset:
            raise H3Error(H3_REQUEST_CANCELLED, "the stream was reset")
        if ex.send_finished:
            raise trio.ClosedResourceError("the message was already finished")

    def send_headers_nowait(
        self, ex: Exchange, headers: Headers, end_stream: bool
    ) -> None:
        assert self.engine is not None and self.io is not None
        self._check_send(ex)
        self.engine.send_headers(ex.stream_id, headers, end_stream)
        if end_stream:
            self._mark_finished(ex)
        self.io.wake()

    async def send_headers(
        self, ex: Exchange, headers: Headers, end_stream: bool
    ) -> None:
        await trio.lowlevel.checkpoint()
        self.send_headers_nowait(ex, headers, end_stream)

    async def send_data(self, ex: Exchange, data: bytes, end_stream: bool) -> None:
        """Send body bytes, waiting while the stream's send buffer is full.
        Not cancel-safe (part of the data may have been sent)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if ex.sending:
            raise trio.BusyResourceError("another task is already sending")
        ex.sending = True
        try:
            assert self.engine is not None and self.io is not None
            view = memoryview(data)
            limit = self.quic_settings.stream_send_buffer
            first = True
            while first or view:
                first = False
                self._check_send(ex)
                while self.io.send_buffered(ex.stream_id) >= limit:
                    self._blocked_senders.add(ex)
                    await ex.send_lot.park()
                    self._check_send(ex)
                chunk, view = view[:_MAX_CHUNK], view[_MAX_CHUNK:]
                last = end_stream and not view
                self.engine.send_data(ex.stream_id, bytes(chunk), last)
                if last:
                    self._mark_finished(ex)
                self.io.wake()
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            ex.sending = False

    def _mark_finished(self, ex: Exchange) -> None:
        ex.send_finished = True
        self._maybe_done(ex)

    def reset(self, ex: Exchange, code: int) -> None:
        """Reset our side of ex's stream (if not finished) and stop reading."""
        if self.io is None or self.io.error is not None:
            return
        if not ex.send_finished and not ex.send_reset:
            ex.send_reset = True
            self.io.reset_stream(ex.stream_id, code)
        self.abandon_receive(ex, code)
        ex.wake_all()
        self._maybe_done(ex)

    def _maybe_done(self, ex: Exchange) -> None:
        """Forget an exchange once both sides are over."""
        receive_over = ex.eof or ex.abandoned or ex.reset_code is not None
        if (
            ex.response_complete
            and receive_over
            and not ex.chunks
            and self.exchanges.get(ex.stream_id) is ex
            and self._can_forget(ex)
        ):
            del self.exchanges[ex.stream_id]
            if ex.eof and not ex.abandoned:
                self._drop_credit(ex.stream_id)
            self._exchange_done(ex)

    def _can_forget(self, ex: Exchange) -> bool:
        return True

    # -- datagrams (RFC 9297) ----------------------------------------------------------

    async def send_datagram(self, ex: Exchange, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self._raise_if_closed()
        assert self.engine is not None and self.io is not None
        if not self.http3_settings.enable_datagrams:
            raise DatagramError(
                "HTTP datagrams are disabled: set Http3Settings.enable_datagrams"
            )
        if not self.engine.peer_enabled_datagrams():
            raise DatagramError("the peer did not enable HTTP datagrams (H3_DATAGRAM)")
        payload = self.engine.datagram_payload(ex.stream_id, bytes(data))
        limit = self.io.max_datagram_size()
        if len(payload) > limit:
            raise DatagramError(
                f"HTTP datagram of {len(data)} bytes does not fit in one packet"
            )
        self.io.send_datagram(payload)

    async def receive_datagram(self, ex: Exchange) -> bytes:
        def check() -> None:
            self._raise_if_closed()
            if ex.failure is not None:
                raise ex.failure

        return await take_when_ready(ex.datagrams, ex.datagram_lot, check)

    async def wait_settings(self) -> None:
        """Wait until the peer's SETTINGS arrived."""
        await trio.lowlevel.checkpoint()
        assert self.engine is not None
        while self.engine.peer_settings is None:
            self._raise_if_closed()
            await self._settings_lot.park()


RequestHandler = Callable[["Request"], Awaitable[None]]


class ServerH3Driver(H3Driver):
    """The server side: runs ``await handler(request)`` for each request, in
    its own task in the connection's nursery."""

    def __init__(
        self,
        handler: RequestHandler,
        http3_settings: Http3Settings | None = None,
        quic_settings: QuicSettings | None = None,
    ) -> None:
        super().__init__(http3_settings, quic_settings)
        self.handler = handler
        self.requests_seen = 0
        self._post_accept_deadline: float | None = None
        self._post_accept_scope = trio.CancelScope()
        self.active = 0
        self._highest_request = -4
        self.shutting_down = False
        self._closing = False
        #: Request streams already handled (their late frames are ignored);
        #: pruned once the transport has forgotten them.
        self._done_ids: set[int] = set()

    def on_connection_established(
        self, io: ConnectionIO, handshake: HandshakeInfo
    ) -> None:
        super().on_connection_established(io, handshake)
        timeout = self.http3_settings.post_accept_timeout
        if timeout is not None:
            # The timer task starts at the end of this step only if no
            # request came with the handshake (clients usually send theirs
            # in the same flight): most connections never need it.
            self._post_accept_deadline = trio.current_time() + timeout
        if self.shutting_down:
            self.shutting_down = False
            self.begin_shutdown()

    def process_writes(self, io: ConnectionIO) -> None:
        super().process_writes(io)
        deadline = self._post_accept_deadline
        if deadline is not None:
            self._post_accept_deadline = None
            if self.requests_seen == 0:
                io.start_soon(self._post_accept_timeout, deadline)

    async def _post_accept_timeout(self, deadline: float) -> None:
        # Cancelled at the first request: no task is left per connection.
        with self._post_accept_scope:
            await trio.sleep_until(deadline)
        if self.requests_seen == 0:
            logger.debug("trioquic.h3: no request within the post-accept timeout")
            self.begin_shutdown()

    def _is_new_stream(self, stream_id: int) -> bool:
        return stream_id % 4 == 0 and stream_id not in self._done_ids

    def _mark_done(self, stream_id: int) -> None:
        done = self._done_ids
        done.add(stream_id)
        if len(done) > 2 * self.http3_settings.max_concurrent_requests + 64:
            io = self.io
            assert io is not None
            self._done_ids = {
                sid for sid in done if io.received_final_size(sid) is not None
            }

    def _on_headers(self, event: HeadersReceived) -> None:
        assert self.io is not None
        sid = event.stream_id
        ex = self.exchanges.get(sid)
        if ex is not None:
            if not ex.abandoned:
                self._on_trailers(ex, event)
            return
        if sid % 4 != 0 or sid in self._done_ids:
            return
        self._highest_request = max(self._highest_request, sid)
        ex = Exchange(self, sid)
        ex.headers_received = True
        if self.shutting_down and (
            self.engine is None
            or self.engine.goaway_sent is None
            or sid >= self.engine.goaway_sent
        ):
            # Beyond our GOAWAY: refuse it unprocessed (RFC 9114 section 5.2).
            self.io.stop_stream(sid, H3_REQUEST_REJECTED)
            self.io.reset_stream(sid, H3_REQUEST_REJECTED)
            self._drop_credit(sid)
            self._mark_done(sid)
            return
        self.exchanges[sid] = ex
        if event.stream_ended:
            ex.eof = True
        pseudo, headers = split_pseudo(event.headers)
        from ._messages import Request

        request = Request._from_exchange(self, ex, pseudo, headers)
        self.requests_seen += 1
        self._post_accept_scope.cancel()
        self.active += 1
        limit = self.http3_settings.max_requests_per_connection
        if limit is not None and self.requests_seen >= limit:
            self.begin_shutdown()
        if field_section_size(event.headers) > self.http3_settings.max_header_list_size:
            self._simple_response(ex, 431)
            self.abandon_receive(ex, H3_NO_ERROR)
            self._finish_request(ex)
            return
        protocol = pseudo.get(b":protocol")
        # RFC 9114 section 4.3.1: a request other than CONNECT carries
        # :scheme and :path (aioquic only checks :method and :authority);
        # otherwise it is malformed.
        incomplete = pseudo.get(b":method") != b"CONNECT" and (
            b":scheme" not in pseudo or b":path" not in pseudo
        )
        if incomplete or (
            protocol is not None
            and (
                not self.http3_settings.enable_connect_protocol
                or pseudo.get(b":method") != b"CONNECT"
            )
        ):
            self.reset(ex, H3_MESSAGE_ERROR)
            self._finish_request(ex)
            return
        self.io.start_soon(self._run_handler, ex, request, name=self.handler)

    def _check_unparsed(self, stream_id: int) -> None:
        # No credit is granted for a header block until it is complete: one
        # far larger than max_header_list_size is refused before it fills
        # the stream window (QPACK never makes a field section much larger).
        assert self.io is not None and self.engine is not None
        limit = 2 * self.http3_settings.max_header_list_size + 4096
        if self.engine.buffered(stream_id) > limit:
            logger.debug("trioquic.h3: header block too large (stream %d)", stream_id)
            self.io.stop_stream(stream_id, H3_EXCESSIVE_LOAD)
            self.io.reset_stream(stream_id, H3_EXCESSIVE_LOAD)
            self.engine.abandon(stream_id)
            self._drop_credit(stream_id)
            self._mark_done(stream_id)

    def _body_too_large(self, ex: Exchange) -> bool:
        limit = self.http3_settings.max_request_body_size
        if limit is None or ex.body_received <= limit:
            return False
        ex.failure = H3Error(H3_EXCESSIVE_LOAD, "the request body is too large")
        if not ex.headers_sent:
            self._simple_response(ex, 413)
            self.abandon_receive(ex, H3_NO_ERROR)
        else:
            self.reset(ex, H3_EXCESSIVE_LOAD)
        if ex.cancel_scope is not None:
            ex.cancel_scope.cancel()
        ex.wake_all()
        return True

    def _simple_response(self, ex: Exchange, status: int) -> None:
        with contextlib.suppress(H3Error, ConnectionClosed, trio.ClosedResourceError):
            self.send_headers_nowait(
                ex,
                [(b":status", str(status).encode()), (b"content-length", b"0")],
                True,
            )

    def _peer_aborted(self, ex: Exchange) -> None:
        # The peer gave up on this request: its handler stops.
        if ex.cancel_scope is not None:
            ex.cancel_scope.cancel()

    async def _run_handler(self, ex: Exchange, request: Request) -> None:
        try:
            with trio.CancelScope() as scope:
                ex.cancel_scope = scope
                if ex.peer_aborted or ex.response_complete:
                    scope.cancel()
                try:
                    await self.handler(request)
                except Exception as exc:
                    if ex.peer_aborted or ex.response_complete:
                        logger.debug("trioquic.h3: handler ended: %r", exc)
                    else:
                        logger.exception(
                            "trioquic.h3: request handler raised (stream %d)",
                            ex.stream_id,
                        )
                        self._fail(ex)
                else:
                    if not ex.response_complete and not ex.peer_aborted:
                        if not ex.headers_sent:
                            logger.warning(
                                "trioquic.h3: request handler returned without "
                                "responding (stream %d): sending 500",
                                ex.stream_id,
                            )
                        self._fail(ex)
        finally:
            self._finish_request(ex)

    def _fail(self, ex: Exchange) -> None:
        if not ex.headers_sent:
            self._simple_response(ex, 500)
        else:
            self.reset(ex, H3_INTERNAL_ERROR)

    def _finish_request(self, ex: Exchange) -> None:
        if self.io is None:
            return
        ex.cancel_scope = None
        if not ex.response_complete:
            self.reset(ex, H3_INTERNAL_ERROR)
        if not ex.eof:
            # The response is complete: the rest of the request is not needed
            # (RFC 9114 section 4.1.1).
            self.abandon_receive(ex, H3_NO_ERROR)
        self.active -= 1
        self.exchanges.pop(ex.stream_id, None)
        self._drop_credit(ex.stream_id)
        self._mark_done(ex.stream_id)
        self._maybe_close()

    def _can_forget(self, ex: Exchange) -> bool:
        return False  # the handler's task forgets it

    # -- GOAWAY and closing ----------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Send GOAWAY (requests not yet received are refused) and close the
        connection once the requests in flight are answered."""
        if self.shutting_down:
            return
        self.shutting_down = True
        io, engine = self.io, self.engine
        if io is None or engine is None or io.error is not None:
            return
        engine.send_goaway(self._highest_request + 4)
        io.wake()
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.shutting_down and self.active == 0 and not self._closing:
            self._closing = True
            if self.io is not None and self.io.error is None:
                self.io.start_soon(self._close_when_flushed)

    async def _close_when_flushed(self) -> None:
        assert self.io is not None
        worker = self.io._worker
        with trio.move_on_after(worker.engine.settings.close_grace_period):
            await worker.wait_flushed()
        self.close()


class ClientH3Driver(H3Driver):
    """The client side: opens requests and delivers responses."""

    def __init__(
        self,
        http3_settings: Http3Settings | None = None,
        quic_settings: QuicSettings | None = None,
        *,
        authority: str = "",
    ) -> None:
        super().__init__(http3_settings, quic_settings)
        self.authority = authority
        self._open_lot = trio.lowlevel.ParkingLot()

    def process_writes(self, io: ConnectionIO) -> None:
        super().process_writes(io)
        if self._open_lot:
            self._open_lot.unpark_all()

    def on_connection_close(self, io: ConnectionIO, reason: CloseReason) -> None:
        super().on_connection_close(io, reason)
        self._open_lot.unpark_all()

    def send_goaway(self) -> None:
        """Tell the server this client is leaving (GOAWAY with push ID 0: no
        server push is accepted, RFC 9114 section 5.2)."""
        io, engine = self.io, self.engine
        if io is None or engine is None or io.error is not None:
            return
        engine.send_goaway(0)
        io.wake()

    def _on_goaway(self, last_id: int) -> None:
        for sid, ex in list(self.exchanges.items()):
            if sid >= last_id and ex.response_status is None:
                # The server will not process it (RFC 9114 section 5.2).
                ex.failure = RequestRejected(
                    H3_REQUEST_REJECTED,
                    f"the server sent GOAWAY({last_id}): request {sid} not processed",
                )
                self.reset(ex, H3_REQUEST_CANCELLED)
                self.exchanges.pop(sid, None)
                ex.wake_all()
        self._open_lot.unpark_all()

    def _on_headers(self, event: HeadersReceived) -> None:
        ex = self.exchanges.get(event.stream_id)
        if ex is None or ex.abandoned:
            return
        if ex.response_status is not None:
            self._on_trailers(ex, event)
            return
        pseudo, headers = split_pseudo(event.headers)
        status = int(pseudo[b":status"])
        if 100 <= status < 200:
            ex.informational.append((status, headers))
        else:
            ex.response_status = status
            ex.response_headers = headers
            ex.headers_received = True
            if event.stream_ended:
                ex.eof = True
        ex.receive_lot.unpark_all()

    def _body_finished(self, ex: Exchange) -> None:
        self._maybe_done(ex)

    async def start_request(
        self,
        method: str,
        path: str,
        headers: Headers,
        *,
        authority: str | None,
        protocol: str | None,
        end_stream: bool,
    ) -> Exchange:
        await trio.lowlevel.checkpoint_if_cancelled()
        assert self.io is not None and self.engine is not None
        if protocol is not None:
            await self.wait_settings()
            if not self.engine.peer_enabled_connect_protocol():
                raise H3Error(
                    H3_REQUEST_REJECTED,
                    "the server did not enable extended CONNECT "
                    "(SETTINGS_ENABLE_CONNECT_PROTOCOL)",
                )
        while True:
            if self.goaway_id is not None:
                raise ConnectionGoingAway(
                    H3_REQUEST_REJECTED,
                    "the server sent GOAWAY: no new requests on this connection",
                )
            self._raise_if_closed()
            sid = self.io.open_stream()
            if sid is not None:
                break
            await self._open_lot.park()
        ex = Exchange(self, sid)
        self.exchanges[sid] = ex
        self._raw[sid] = 0
        self._credited[sid] = 0
        pseudo: Headers = [(b":method", method.encode())]
        if method == "CONNECT" and protocol is None:
            pseudo.append((b":authority", (authority or self.authority).encode()))
        else:
            pseudo += [
                (b":scheme", b"https"),
                (b":authority", (authority or self.authority).encode()),
                (b":path", path.encode()),
            ]
            if protocol is not None:
                pseudo.append((b":protocol", protocol.encode()))
        ex.headers_sent = True
        self.send_headers_nowait(ex, pseudo + headers, end_stream)
        return ex

    async def wait_response(self, ex: Exchange) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while ex.response_status is None:
            if ex.failure is not None:
                raise ex.failure
            if ex.eof:
                raise H3Error(H3_MESSAGE_ERROR, "the stream ended without a response")
            self._raise_if_closed()
            await ex.receive_lot.park()

    def _can_forget(self, ex: Exchange) -> bool:
        return ex.response_status is not None or ex.failure is not None
