"""WebTransport sessions (draft-ietf-webtrans-http3-02, as Chromium speaks
it) over one HTTP/3 connection.

A session is an extended CONNECT request (``:protocol webtransport``); its
ID is the CONNECT stream's. :class:`_Hub`, one per connection, is the
driver's :class:`~trioquic.h3._driver.StreamExtension`: it takes the
WebTransport streams and datagrams HTTP/3 hands it and gives each to its
session. The CONNECT stream then carries capsules (RFC 9297):
CLOSE_WEBTRANSPORT_SESSION and DRAIN_WEBTRANSPORT_SESSION.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import types
from collections import deque
from typing import TYPE_CHECKING

import trio

from .._application import take_when_ready
from .._engine import WebTransportStreamData
from .._errors import ConnectionClosed
from .._varint import encode_varint
from ..h3._capsules import CapsuleError, CapsuleReader, CapsuleType, encode_capsule
from ..h3._driver import Exchange, H3Driver, StreamExtension
from ..h3._errors import H3Error, H3ErrorCode
from ..h3._headers import Headers
from ._errors import (
    MAX_CLOSE_REASON,
    WT_BUFFERED_STREAM_REJECTED,
    WT_SESSION_GONE,
    SessionClosed,
    SessionCloseInfo,
    _check_code,
)
from ._stream import (
    WebTransportReceiveStream,
    WebTransportSendStream,
    WebTransportStream,
    _StreamState,
)

if TYPE_CHECKING:
    from typing import Self

logger = logging.getLogger("trioquic.webtransport")

_CAPSULE_TYPES = (
    CapsuleType.CLOSE_WEBTRANSPORT_SESSION,
    CapsuleType.DRAIN_WEBTRANSPORT_SESSION,
    CapsuleType.DATAGRAM,
)
#: A CLOSE_WEBTRANSPORT_SESSION capsule: 4 bytes of code, then the reason.
_MAX_CAPSULE = 4 + MAX_CLOSE_REASON + 64 * 1024


def hub_of(driver: H3Driver) -> _Hub:
    """The connection's WebTransport hub (made on first use)."""
    extension = driver.extension
    if isinstance(extension, _Hub):
        return extension
    if not driver.http3_settings.enable_webtransport:
        raise RuntimeError(
            "WebTransport is not enabled on this connection: use "
            "Http3Settings(enable_webtransport=True, enable_connect_protocol="
            "True, enable_datagrams=True)"
        )
    hub = _Hub(driver)
    driver.extension = hub
    return hub


class _Hub(StreamExtension):
    """Every WebTransport session and stream of one connection."""

    def __init__(self, driver: H3Driver) -> None:
        self.driver = driver
        self.sessions: dict[int, WebTransportSession] = {}
        self.streams: dict[int, _StreamState] = {}
        self.blocked: set[_StreamState] = set()
        #: Tasks waiting for the peer's stream limit to allow a new stream.
        self.open_lot = trio.lowlevel.ParkingLot()
        #: Peer streams refused (unknown session, or over a session's limit).
        self.streams_refused = 0
        #: Datagrams for no session (and no other request) dropped.
        self.datagrams_unknown_session = 0

    # -- from the driver -----------------------------------------------------------

    def on_stream_data(self, driver: H3Driver, event: WebTransportStreamData) -> None:
        sid = event.stream_id
        state = self.streams.get(sid)
        if state is None:
            session = self.sessions.get(event.session_id)
            if session is None or session.close_info is not None:
                code = (
                    WT_BUFFERED_STREAM_REJECTED if session is None else WT_SESSION_GONE
                )
                self._refuse(sid, code)
                return
            if (
                session.incoming_streams
                >= driver.http3_settings.webtransport_max_streams
            ):
                self._refuse(sid, WT_BUFFERED_STREAM_REJECTED)
                return
            bidi = not sid & 2
            state = _StreamState(
                self, session, sid, can_send=bidi, can_receive=True, incoming=True
            )
            self.streams[sid] = state
            session.streams.add(state)
            session.incoming_streams += 1
            if not bidi:
                driver.track_stream(sid)
                session.incoming_uni.append(state)
            else:
                session.incoming_bidi.append(state)
            session.accept_lot.unpark_all()
        if state.abandoned:
            return
        if event.data:
            state.chunks.append(event.data)
            state.buffered += len(event.data)
        if event.stream_ended:
            state.eof = True
        state.receive_lot.unpark_all()

    def _refuse(self, stream_id: int, code: int) -> None:
        self.streams_refused += 1
        logger.debug("trioquic.webtransport: stream %d refused (0x%x)", stream_id, code)
        self.driver.refuse_stream(stream_id, code)

    def on_stream_reset(self, stream_id: int, error_code: int) -> None:
        state = self.streams.get(stream_id)
        if state is None or state.eof:
            return
        state.reset_code = error_code
        state.chunks.clear()
        state.buffered = 0
        state.eof = True
        state.receive_lot.unpark_all()
        self.maybe_forget(state)

    def on_stop_sending(self, stream_id: int, error_code: int) -> None:
        state = self.streams.get(stream_id)
        if state is None or state.send_over:
            return
        # The transport has reset our side already.
        state.stop_code = error_code
        state.send_reset = True
        self.blocked.discard(state)
        state.send_lot.unpark_all()
        self.maybe_forget(state)

    def on_datagram(self, stream_id: int, data: bytes) -> bool:
        session = self.sessions.get(stream_id)
        if session is None:
            if stream_id in self.driver.exchanges:
                return False  # another extended CONNECT's (e.g. MASQUE)
            self.datagrams_unknown_session += 1
            return True
        session._queue_datagram(data)
        return True

    def held_beyond_buffer(self, stream_id: int) -> int:
        state = self.streams.get(stream_id)
        if state is None:
            return 0
        return max(0, state.buffered - self.driver.http3_settings.body_buffer_size)

    def process_writes(self) -> None:
        if self.open_lot:
            self.open_lot.unpark_all()
        if self.blocked:
            io = self.driver.io
            limit = self.driver.quic_settings.stream_send_buffer
            for state in list(self.blocked):
                if (
                    state.send_over
                    or io.error is not None
                    or io.send_buffered(state.stream_id) < limit
                ):
                    self.blocked.discard(state)
                    state.send_lot.unpark_all()

    def on_shutdown(self) -> None:
        for session in list(self.sessions.values()):
            session._drain()

    def on_connection_close(self) -> None:
        error = self.driver.io.error
        for session in list(self.sessions.values()):
            session._ended(
                SessionCloseInfo(
                    0, str(error) if error else "", by_peer=True, clean=False
                ),
                send=False,
            )
        for state in self.streams.values():
            state.wake()
        self.blocked.clear()
        self.open_lot.unpark_all()

    # -- for sessions and streams ------------------------------------------------------

    def maybe_forget(self, state: _StreamState) -> None:
        """Drop a stream once both of its sides are over."""
        if state.forgotten:
            return
        if state.receive_over or state.abandoned:
            # Nothing more will be read: credit what is left at once.
            self.driver.credit_stream(state.stream_id)
        if not (state.send_over and (state.receive_over or state.abandoned)):
            return
        if state.chunks and not state.abandoned:
            return  # still to be read
        state.forgotten = True
        self.streams.pop(state.stream_id, None)
        self.blocked.discard(state)
        session = state.session
        session.streams.discard(state)
        if state.incoming:
            session.incoming_streams -= 1
        receive_ended = state.eof or state.reset_code is not None
        self.driver.forget_stream(state.stream_id, receive_ended=receive_ended)


class WebTransportSession:
    """One WebTransport session: what a server's handler and a client hold.

    Streams: :meth:`accept_bidirectional_stream`,
    :meth:`accept_unidirectional_stream`, :meth:`open_bidirectional_stream`,
    :meth:`open_unidirectional_stream`; datagrams: :meth:`send_datagram`,
    :meth:`receive_datagram`; the end: :meth:`close`, :meth:`wait_closed`.
    ``async with session:`` closes it (code 0) on leaving, if still open.
    """

    def __init__(
        self,
        hub: _Hub,
        exchange: Exchange,
        *,
        path: str,
        authority: str,
        headers: Headers,
    ) -> None:
        self._hub = hub
        self._driver = hub.driver
        self._exchange = exchange
        #: The session's ID (its CONNECT stream's).
        self.session_id = exchange.stream_id
        #: The CONNECT request's path, authority and regular header fields.
        self.path = path
        self.authority = authority
        self.headers = headers
        self.streams: set[_StreamState] = set()
        self.incoming_streams = 0
        self.incoming_bidi: deque[_StreamState] = deque()
        self.incoming_uni: deque[_StreamState] = deque()
        self.accept_lot = trio.lowlevel.ParkingLot()
        self._datagrams: deque[bytes] = deque()
        self._datagram_lot = trio.lowlevel.ParkingLot()
        #: Received datagrams dropped because the queue was full.
        self.datagrams_dropped = 0
        #: How the session ended, once it has.
        self.close_info: SessionCloseInfo | None = None
        self._closed = trio.Event()
        self._peer_close: tuple[int, str] | None = None
        self._draining = trio.Event()
        self._reader_done = trio.Event()

    def __repr__(self) -> str:
        state = "closed" if self.close_info is not None else "open"
        return (
            f"<trioquic.webtransport.WebTransportSession {self.session_id} "
            f"{self.path} {state}>"
        )

    def _start(self) -> None:
        hub = self._hub
        hub.sessions[self.session_id] = self
        # Datagrams that came before the session was accepted.
        while self._exchange.datagrams:
            self._queue_datagram(self._exchange.datagrams.popleft())
        self._driver.io.start_soon(self._read_capsules)

    # -- the CONNECT stream: capsules ----------------------------------------------

    async def _receive_connect(self) -> bytes:
        return await self._driver.receive_chunk(self._exchange)

    async def _read_capsules(self) -> None:
        reader = CapsuleReader(
            self._receive_connect, types=_CAPSULE_TYPES, max_capsule_size=_MAX_CAPSULE
        )
        try:
            while True:
                capsule = await reader.receive()
                if capsule is None:
                    break
                if self._peer_close is not None:
                    raise CapsuleError("data after CLOSE_WEBTRANSPORT_SESSION")
                if capsule.type == CapsuleType.CLOSE_WEBTRANSPORT_SESSION:
                    value = capsule.value
                    if len(value) < 4 or len(value) > 4 + MAX_CLOSE_REASON:
                        raise CapsuleError("malformed CLOSE_WEBTRANSPORT_SESSION")
                    (code,) = struct.unpack("!I", value[:4])
                    try:
                        reason = bytes(value[4:]).decode("utf-8")
                    except UnicodeDecodeError:
                        raise CapsuleError(
                            "CLOSE_WEBTRANSPORT_SESSION reason is not UTF-8"
                        ) from None
                    self._peer_close = (code, reason)
                elif capsule.type == CapsuleType.DRAIN_WEBTRANSPORT_SESSION:
                    self._draining.set()
                elif capsule.type == CapsuleType.DATAGRAM:
                    self._queue_datagram(bytes(capsule.value))
        except CapsuleError as exc:
            logger.debug("trioquic.webtransport: session %d: %s", self.session_id, exc)
            self._abort(H3ErrorCode.GENERAL_PROTOCOL_ERROR, str(exc))
            return
        except (H3Error, ConnectionClosed, trio.BrokenResourceError) as exc:
            self._ended(
                SessionCloseInfo(0, str(exc), by_peer=True, clean=False), send=False
            )
            return
        finally:
            self._reader_done.set()
        code, reason = self._peer_close or (0, "")
        self._ended(SessionCloseInfo(code, reason, by_peer=True), send=True)

    def _abort(self, code: int, message: str) -> None:
        """End the session abruptly: reset the CONNECT stream with ``code``."""
        self._ended(
            SessionCloseInfo(0, message, by_peer=False, clean=False), send=False
        )
        self._driver.reset(self._exchange, code)

    def _ended(self, info: SessionCloseInfo, *, send: bool) -> None:
        """The session is over: its streams are reset and stopped
        (WT_SESSION_GONE), waiters woken. With ``send``, FIN on the CONNECT
        stream (the answer to the peer's close)."""
        if self.close_info is None:
            self.close_info = info
        if send:
            self._finish_connect(b"")
        hub, io = self._hub, self._driver.io
        for state in list(self.streams):
            if io.error is None:
                if not state.send_over:
                    state.send_reset = True
                    io.reset_stream(state.stream_id, WT_SESSION_GONE)
                if not state.receive_over and not state.eof:
                    state.abandoned = True
                    state.chunks.clear()
                    state.buffered = 0
                    io.stop_stream(state.stream_id, WT_SESSION_GONE)
            state.send_finished = True
            state.abandoned = True
            state.wake()
            hub.maybe_forget(state)
        self.incoming_bidi.clear()
        self.incoming_uni.clear()
        if hub.sessions.get(self.session_id) is self:
            del hub.sessions[self.session_id]
        self.accept_lot.unpark_all()
        self._datagram_lot.unpark_all()
        self._closed.set()

    def _finish_connect(self, data: bytes) -> None:
        """Write ``data`` and FIN on the CONNECT stream, if it is open."""
        driver, ex = self._driver, self._exchange
        if driver.io.error is not None or ex.response_complete:
            return
        with contextlib.suppress(H3Error, ConnectionClosed, trio.ClosedResourceError):
            driver._check_send(ex)
            driver.engine.send_data(ex.stream_id, data, True)
            driver._mark_finished(ex)
            driver.io.wake()

    def _drain(self) -> None:
        """The server is shutting down: DRAIN_WEBTRANSPORT_SESSION."""
        driver, ex = self._driver, self._exchange
        if self.close_info is not None or driver.io.error is not None:
            return
        if not ex.response_complete:
            with contextlib.suppress(H3Error, trio.ClosedResourceError):
                driver.engine.send_data(
                    ex.stream_id,
                    encode_capsule(CapsuleType.DRAIN_WEBTRANSPORT_SESSION, b""),
                    False,
                )
                driver.io.wake()
        self._draining.set()

    def _raise_if_gone(self) -> None:
        if self.close_info is not None:
            raise SessionClosed(self.close_info)
        error = self._driver.io.error
        if error is not None:
            raise error

    # -- closing --------------------------------------------------------------------

    def close(self, code: int = 0, reason: str = "") -> None:
        """Close the session: CLOSE_WEBTRANSPORT_SESSION with ``code`` (32
        bits) and ``reason`` (at most 1024 bytes of UTF-8), then FIN; every
        stream of the session is reset. Idempotent (the first close wins)."""
        code = _check_code(code)
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, got {type(reason).__name__}")
        encoded = reason.encode("utf-8")
        if len(encoded) > MAX_CLOSE_REASON:
            raise ValueError(
                f"the close reason is {len(encoded)} bytes of UTF-8; at most "
                f"{MAX_CLOSE_REASON} fit in CLOSE_WEBTRANSPORT_SESSION"
            )
        if self.close_info is not None:
            return
        self._finish_connect(
            encode_capsule(
                CapsuleType.CLOSE_WEBTRANSPORT_SESSION,
                struct.pack("!I", code) + encoded,
            )
        )
        self._ended(SessionCloseInfo(code, reason, by_peer=False), send=False)

    async def aclose(self) -> None:
        """:meth:`close` with code 0, then wait (at most the connection's
        ``close_grace_period``) for the peer to finish the CONNECT stream."""
        self.close()
        with trio.move_on_after(self._driver.io.settings.close_grace_period):
            await self._reader_done.wait()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        with trio.CancelScope(shield=exc is not None):
            await self.aclose()

    @property
    def is_closed(self) -> bool:
        return self.close_info is not None

    async def wait_closed(self) -> SessionCloseInfo:
        """Wait until the session has ended; return how (code and reason of
        whoever closed it). Cancel-safe."""
        await self._closed.wait()
        assert self.close_info is not None
        return self.close_info

    @property
    def draining(self) -> bool:
        """Whether the server asked to end the session soon
        (DRAIN_WEBTRANSPORT_SESSION, sent when a server shuts down)."""
        return self._draining.is_set()

    async def wait_draining(self) -> None:
        """Return once :attr:`draining` is true."""
        await self._draining.wait()

    # -- streams --------------------------------------------------------------------

    async def _accept(self, queue: deque[_StreamState]) -> _StreamState:
        return await take_when_ready(queue, self.accept_lot, self._raise_if_gone)

    async def accept_bidirectional_stream(self) -> WebTransportStream:
        """Wait for the peer's next bidirectional stream. Cancel-safe."""
        return WebTransportStream(await self._accept(self.incoming_bidi))

    async def accept_unidirectional_stream(self) -> WebTransportReceiveStream:
        """Wait for the peer's next unidirectional stream. Cancel-safe."""
        return WebTransportReceiveStream(await self._accept(self.incoming_uni))

    async def _open(self, unidirectional: bool) -> _StreamState:
        driver = self._driver
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            self._raise_if_gone()
            sid = driver.engine.open_webtransport_stream(
                self.session_id, unidirectional
            )
            if sid is not None:
                break
            # The peer's MAX_STREAMS: wait for the next step (new credit
            # arrives in one) and try again.
            await self._hub.open_lot.park()
        driver.io.wake()
        if not unidirectional:
            driver.track_stream(sid)
        state = _StreamState(
            self._hub,
            self,
            sid,
            can_send=True,
            can_receive=not unidirectional,
            incoming=False,
        )
        self._hub.streams[sid] = state
        self.streams.add(state)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return state

    async def open_bidirectional_stream(self) -> WebTransportStream:
        """Open a bidirectional stream (waits while the peer's stream limit
        is reached)."""
        return WebTransportStream(await self._open(False))

    async def open_unidirectional_stream(self) -> WebTransportSendStream:
        """Open a unidirectional stream (waits while the peer's stream limit
        is reached)."""
        return WebTransportSendStream(await self._open(True))

    # -- datagrams ---------------------------------------------------------------------

    def _queue_datagram(self, data: bytes) -> None:
        if self.close_info is not None:
            return
        if (
            len(self._datagrams)
            >= self._driver.http3_settings.webtransport_datagram_queue
        ):
            self._datagrams.popleft()
            self.datagrams_dropped += 1
        self._datagrams.append(data)
        self._datagram_lot.unpark_all()

    @property
    def max_datagram_size(self) -> int:
        """The largest datagram payload :meth:`send_datagram` can send now."""
        size = self._driver.io.max_datagram_size()
        return max(0, size - len(encode_varint(self.session_id // 4)))

    async def send_datagram(self, data: bytes | bytearray | memoryview) -> None:
        """Send a datagram (unreliable; raises
        :exc:`~trioquic.DatagramError` if it does not fit in a packet)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._raise_if_gone()
        await self._driver.send_datagram(self._exchange, bytes(data))

    async def receive_datagram(self) -> bytes:
        """Wait for the next datagram (the queue keeps the newest
        ``Http3Settings.webtransport_datagram_queue``). Cancel-safe."""
        return await take_when_ready(
            self._datagrams, self._datagram_lot, self._raise_if_gone
        )
