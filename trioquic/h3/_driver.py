"""H3Driver: HTTP/3 as an :class:`~trioquic.ApplicationOverQuic`.

One driver per QUIC connection. It feeds the transport's events to the
HTTP/3 engine (made through :meth:`ConnectionIO.create_h3_engine`, so this
package never touches a QUIC library) and keeps an :class:`Exchange` per
request stream: a bounded body buffer that grants QUIC credit as the
application reads, trailers, datagrams, and the send side's backpressure.
The server side is in ``_server.py``, the client side in ``_client.py``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence

import trio

from .._application import ApplicationOverQuic, ConnectionIO, take_when_ready
from .._engine import (
    DataReceived,
    GoawayReceived,
    H3ConnectionError,
    H3DatagramReceived,
    H3Engine,
    HeadersReceived,
    PushCancelled,
    PushPromiseReceived,
    PushStreamOpened,
    RequestStopSending,
    RequestStreamReset,
    WebTransportStreamData,
)
from .._errors import CloseReason, DatagramError
from .._events import HandshakeInfo, QuicEvent, StreamDataReceived, StreamResetReceived
from .._settings import QuicSettings
from .._varint import encode_varint
from ._errors import H3Error, H3ErrorCode, RequestRejected, _Stopped
from ._headers import Headers
from ._settings import Http3Settings

logger = logging.getLogger("trioquic.h3")

#: Largest DATA frame written at once (larger sends are split, each waiting
#: for room in the stream's send buffer).
_MAX_CHUNK = 64 * 1024
#: Unidirectional streams a peer may open: HTTP/3 needs three (control, QPACK
#: encoder and decoder), and extensions a few more.
_UNI_STREAMS = 16
#: 1xx responses a client keeps per request; a server that sends more is
#: misbehaving, and the request fails with H3_EXCESSIVE_LOAD.
_MAX_INFORMATIONAL = 16


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
        # client: the response (at most _MAX_INFORMATIONAL 1xx responses)
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
        self.cancel_on_abort = True
        self.peer_aborted = False
        self.abort_event: trio.Event | None = None  # made by wait_aborted()
        # RFC 9297 datagrams
        self.datagrams: deque[bytes] = deque()
        self.datagram_lot = trio.lowlevel.ParkingLot()

    def wake_all(self) -> None:
        self.receive_lot.unpark_all()
        self.send_lot.unpark_all()
        self.datagram_lot.unpark_all()
        if self.abort_event is not None and (
            self.peer_aborted or self.driver.io.error is not None
        ):
            self.abort_event.set()

    @property
    def aborted(self) -> bool:
        """The peer reset or stopped the stream, or the connection ended."""
        return self.peer_aborted or self.driver.io.error is not None

    async def wait_aborted(self) -> None:
        if self.abort_event is None:
            self.abort_event = trio.Event()
            if self.aborted:
                self.abort_event.set()
        await self.abort_event.wait()

    @property
    def response_complete(self) -> bool:
        return self.send_finished or self.send_reset


#: draft-ietf-webtrans-http3: a WebTransport stream refused (its session is
#: unknown, or it is beyond the session's limit).
WT_BUFFERED_STREAM_REJECTED = 0x3994BD84


class StreamExtension:
    """Streams and datagrams of an HTTP/3 extension (WebTransport) on one
    connection: the driver hands it what belongs to no request. Set on
    :attr:`H3Driver.extension`; the methods here are what happens without
    one."""

    def on_stream_data(self, driver: H3Driver, event: WebTransportStreamData) -> None:
        """Data on one of its streams (the first event of a stream too)."""
        driver.refuse_stream(event.stream_id, WT_BUFFERED_STREAM_REJECTED)

    def on_stream_reset(self, stream_id: int, error_code: int) -> None:
        """The peer reset a stream that is no request's."""

    def on_stop_sending(self, stream_id: int, error_code: int) -> None:
        """The peer stopped reading a stream that is no request's."""

    def on_datagram(self, stream_id: int, data: bytes) -> bool:
        """An HTTP datagram; True if it was the extension's."""
        return False

    def held_beyond_buffer(self, stream_id: int) -> int:
        """Bytes of one of its streams held beyond its buffer's size (no
        credit is granted for them yet)."""
        return 0

    def process_writes(self) -> None:
        """Once per step, before datagrams go out: wake blocked senders."""

    def on_shutdown(self) -> None:
        """The server is shutting down (GOAWAY sent)."""

    def on_connection_close(self) -> None:
        """The connection ended."""


_NO_EXTENSION = StreamExtension()


class H3Driver(ApplicationOverQuic):
    """HTTP/3 over one QUIC connection (base of the server and client drivers).

    Receive credit is granted as request and response bodies are read
    (``manual_flow_control``): up to :attr:`Http3Settings.body_buffer_size`
    bytes of a body are buffered, beyond that the peer waits for QUIC credit.
    """

    manual_flow_control = True

    io: ConnectionIO  # from attach(), before anything else
    engine: H3Engine  # likewise

    def __init__(
        self,
        http3_settings: Http3Settings | None = None,
        quic_settings: QuicSettings | None = None,
    ) -> None:
        self.http3_settings = http3_settings or Http3Settings()
        self.quic_settings = quic_settings or QuicSettings()
        #: Whether HTTP/3 is set up on the connection (:meth:`start`).
        self.started = False
        self.exchanges: dict[int, Exchange] = {}
        self._raw: dict[int, int] = {}
        self._credited: dict[int, int] = {}
        self._blocked_senders: set[Exchange] = set()
        self._settings_lot = trio.lowlevel.ParkingLot()
        self.closed = trio.Event()
        self.goaway_id: int | None = None
        #: Called once when the connection has ended.
        self.on_closed: Callable[[], object] | None = None
        #: The WebTransport streams and datagrams of this connection (set by
        #: :mod:`trioquic.webtransport`); without one they are refused.
        self.extension: StreamExtension = _NO_EXTENSION

    # -- hooks ----------------------------------------------------------------

    def _peer_request_limit(self) -> int:
        """How many requests the peer may have open at once (its QUIC limit
        on bidirectional streams)."""
        return self.quic_settings.max_concurrent_streams

    def attach(self, io: ConnectionIO) -> None:
        self.io = io
        h3 = self.http3_settings
        io.set_peer_stream_limits(
            bidirectional=self._peer_request_limit(), unidirectional=_UNI_STREAMS
        )
        self.engine = io.create_h3_engine(
            max_field_section_size=h3.max_header_list_size,
            enable_connect_protocol=h3.enable_connect_protocol,
            enable_datagrams=h3.enable_datagrams,
            max_push_id=self._max_push_id(),
        )
        if h3.enable_webtransport:
            self.engine.enable_webtransport()

    def _max_push_id(self) -> int | None:
        """The largest push ID the peer may use (None: no push)."""
        return None

    def on_connection_established(
        self, io: ConnectionIO, handshake: HandshakeInfo
    ) -> None:
        self.start()

    def start(self) -> None:
        """Set up HTTP/3 on the connection (control streams, SETTINGS). Done
        when the handshake completes, or earlier by a 0-RTT client."""
        self.engine.start()
        self.started = True

    def process_reads(self, io: ConnectionIO, events: Sequence[QuicEvent]) -> None:
        engine = self.engine
        touched: set[int] = set()
        for event in events:
            if isinstance(event, StreamDataReceived):
                sid = event.stream_id
                if sid in self._raw:
                    self._raw[sid] += len(event.data)
                    touched.add(sid)
                elif sid & 2:
                    # Control and QPACK streams (and a push stream's first
                    # bytes): HTTP/3 consumes them at once.
                    io.consume(sid, len(event.data))
                elif self._is_new_stream(sid):
                    self._raw[sid] = len(event.data)
                    self._credited[sid] = 0
                    touched.add(sid)
                else:
                    io.consume(sid, len(event.data))
        try:
            h3_events = engine.handle(events)
        except H3ConnectionError as exc:
            logger.debug("trioquic.h3: connection error 0x%x: %s", exc.error_code, exc)
            io.close(exc.error_code, exc.reason)
            return
        had_settings = engine.peer_settings_received
        for h3_event in h3_events:
            if isinstance(h3_event, HeadersReceived):
                self._on_headers(h3_event)
            elif isinstance(h3_event, DataReceived):
                self._on_data(h3_event)
            elif isinstance(h3_event, RequestStreamReset):
                self._on_reset(h3_event.stream_id, h3_event.error_code)
            elif isinstance(h3_event, RequestStopSending):
                self._on_stop_sending(h3_event.stream_id, h3_event.error_code)
            elif isinstance(h3_event, H3DatagramReceived):
                self._on_datagram(h3_event)
            elif isinstance(h3_event, GoawayReceived):
                self.goaway_id = h3_event.last_id
                self._on_goaway(h3_event.last_id)
            elif isinstance(h3_event, PushPromiseReceived | PushStreamOpened):
                self._on_push(h3_event)
            elif isinstance(h3_event, PushCancelled):
                self._on_push_cancelled(h3_event.push_id)
            elif isinstance(h3_event, WebTransportStreamData):
                self.extension.on_stream_data(self, h3_event)
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
        extension = self.extension
        if extension is not _NO_EXTENSION:
            extension.process_writes()

    def on_connection_close(self, io: ConnectionIO, reason: CloseReason) -> None:
        for ex in self.exchanges.values():
            ex.wake_all()
        self._blocked_senders.clear()
        self._settings_lot.unpark_all()
        self.extension.on_connection_close()
        self.closed.set()
        if self.on_closed is not None:
            self.on_closed()

    def close(self) -> None:
        """Close the connection now (H3ErrorCode.NO_ERROR)."""
        if self.io.error is None:
            self.io.close(H3ErrorCode.NO_ERROR, "")

    # -- to be specialised ---------------------------------------------------

    def _is_new_stream(self, stream_id: int) -> bool:
        # A client: the server's bidirectional streams are WebTransport's,
        # credited as they are read.
        return self.http3_settings.enable_webtransport and stream_id & 3 == 1

    def _on_headers(self, event: HeadersReceived) -> None:
        raise NotImplementedError

    def _on_goaway(self, last_id: int) -> None:
        pass

    def _on_push(self, event: PushPromiseReceived | PushStreamOpened) -> None:
        """Client: a push promised, or its stream opened (the engine reports
        push events only where pushes are allowed)."""

    def _on_push_cancelled(self, push_id: int) -> None:
        """Client: the server withdrew a promised push."""

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
            self.extension.on_stream_reset(stream_id, error_code)
            return
        if not ex.eof and ex.reset_code is None:
            ex.reset_code = error_code
            ex.failure = self._reset_error(error_code, "the peer reset the stream")
            ex.chunks.clear()
            ex.buffered = 0
        ex.peer_aborted = True
        # Cancel the handler before waking its readers: a reader woken first
        # would raise the reset into the handler before the cancellation.
        self._peer_aborted(ex)
        ex.wake_all()

    def _on_stop_sending(self, stream_id: int, error_code: int) -> None:
        ex = self.exchanges.get(stream_id)
        if ex is None:
            self.extension.on_stop_sending(stream_id, error_code)
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
        if code == H3ErrorCode.REQUEST_REJECTED:
            return RequestRejected(code, message)
        return H3Error(code, message)

    def _on_datagram(self, event: H3DatagramReceived) -> None:
        if self.extension.on_datagram(event.stream_id, event.data):
            return
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
        if raw is None:
            return
        target = raw - self.engine.buffered(stream_id)
        ex = self.exchanges.get(stream_id)
        if ex is not None:
            if not ex.abandoned:
                target -= max(0, ex.buffered - self.http3_settings.body_buffer_size)
        else:
            target -= self.extension.held_beyond_buffer(stream_id)
        credited = self._credited[stream_id]
        if target > credited:
            self._credited[stream_id] = target
            self.io.consume(stream_id, target - credited)

    def _drop_credit(self, stream_id: int) -> None:
        """Nothing more of this stream will be read: credit all that arrived
        (and, once it is known, up to the final size)."""
        raw = self._raw.pop(stream_id, None)
        credited = self._credited.pop(stream_id, 0)
        if raw is None:
            return
        if raw > credited:
            self.io.consume(stream_id, raw - credited)
        final = self.io.received_final_size(stream_id)
        if final is not None:
            self.io.credit_unread(stream_id, final)

    # -- extension streams (WebTransport) ----------------------------------------

    def track_stream(self, stream_id: int) -> None:
        """Credit an extension's stream as it is read (a stream we opened,
        or a unidirectional one the peer opened), not as it arrives."""
        if stream_id not in self._raw:
            self._raw[stream_id] = 0
            self._credited[stream_id] = 0

    def credit_stream(self, stream_id: int) -> None:
        """An extension's stream was read from: grant the credit now due."""
        self._update_credit(stream_id)

    def forget_stream(self, stream_id: int, *, receive_ended: bool) -> None:
        """An extension is done with its stream: credit what arrived (and
        will arrive) unread, and drop the stream's state."""
        self._drop_credit(stream_id)
        self.engine.forget_webtransport_stream(stream_id, receive_ended=receive_ended)

    def refuse_stream(self, stream_id: int, code: int) -> None:
        """Refuse a peer's extension stream: STOP_SENDING (and RESET_STREAM
        on a bidirectional one) with ``code``."""
        if self.io.error is None:
            self.io.stop_stream(stream_id, code)
            if not stream_id & 2:
                self.io.reset_stream(stream_id, code)
        self.forget_stream(stream_id, receive_ended=False)

    def abandon_receive(self, ex: Exchange, code: int) -> None:
        """Stop reading ex's body (STOP_SENDING with ``code``) and give its
        credit back."""
        if ex.abandoned:
            return
        ex.abandoned = True
        ex.chunks.clear()
        ex.buffered = 0
        if not ex.eof and ex.reset_code is None:
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
                    raise H3Error(
                        H3ErrorCode.REQUEST_CANCELLED, "the body was abandoned"
                    )
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
        if self.io.error is not None:
            raise self.io.error

    # -- sending --------------------------------------------------------------

    def _check_send(self, ex: Exchange) -> None:
        self._raise_if_closed()
        if ex.stop_code is not None:
            raise _Stopped(
                ex.stop_code, "the peer stopped reading the stream (STOP_SENDING)"
            )
        if ex.send_reset:
            raise H3Error(H3ErrorCode.REQUEST_CANCELLED, "the stream was reset")
        if ex.send_finished:
            raise trio.ClosedResourceError("the message was already finished")

    def send_headers_nowait(
        self, ex: Exchange, headers: Headers, end_stream: bool
    ) -> None:
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
        if self.io.error is not None:
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
        self.send_datagram_nowait(ex, data)

    def send_datagram_nowait(self, ex: Exchange, data: bytes) -> None:
        self._raise_if_closed()
        if not self.http3_settings.enable_datagrams:
            raise DatagramError(
                "HTTP datagrams are disabled: set Http3Settings.enable_datagrams"
            )
        if not self.engine.peer_enabled_datagrams():
            raise DatagramError("the peer did not enable HTTP datagrams (H3_DATAGRAM)")
        # RFC 9297 section 2.1: the quarter stream ID, then the payload.
        payload = encode_varint(ex.stream_id // 4) + bytes(data)
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

    def receive_datagram_nowait(self, ex: Exchange) -> bytes:
        if ex.datagrams:
            return ex.datagrams.popleft()
        self._raise_if_closed()
        if ex.failure is not None:
            raise ex.failure
        raise trio.WouldBlock

    async def wait_settings(self) -> None:
        """Wait until the peer's SETTINGS arrived."""
        await trio.lowlevel.checkpoint()
        while not self.engine.peer_settings_received:
            self._raise_if_closed()
            await self._settings_lot.park()


class Body:
    """Reading a message body (shared by Request and Response)."""

    _driver: H3Driver
    _exchange: Exchange

    async def read(self) -> bytes:
        """The whole (rest of the) body. Raises :exc:`~trioquic.h3.H3Error`
        if the peer reset the stream, :exc:`~trioquic.ConnectionClosed` if the
        connection ended."""
        parts = []
        while chunk := await self._driver.receive_chunk(self._exchange):
            parts.append(chunk)
        return b"".join(parts)

    async def receive_chunk(self) -> bytes:
        """The next chunk of the body as it arrives, ``b""`` at its end (what
        ``async for`` yields, one call at a time: a stream's
        ``receive_some``, e.g. for :class:`~trioquic.h3.CapsuleReader`)."""
        return await self._driver.receive_chunk(self._exchange)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as it arrives (QUIC credit is granted as
        chunks are taken: a slow reader slows the peer down)."""
        while chunk := await self._driver.receive_chunk(self._exchange):
            yield chunk

    @property
    def trailers(self) -> Headers | None:
        """The trailers, once the body has been read to its end (None if the
        peer sent none)."""
        return self._exchange.trailers
