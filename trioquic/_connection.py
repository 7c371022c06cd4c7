"""The raw-stream API: :class:`QuicConnection`, built as an ApplicationOverQuic."""

from __future__ import annotations

import logging
import operator
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import trio

from ._application import ApplicationOverQuic, ConnectionIO, take_when_ready
from ._errors import CloseReason, ConnectionClosed, DatagramError
from ._events import (
    DatagramReceived,
    HandshakeInfo,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamResetReceived,
)
from ._settings import QuicSettings
from ._statistics import ConnectionStatistics
from ._stream import QuicReceiveStream, QuicSendStream, QuicStream, StreamState

logger = logging.getLogger("trioquic")

#: Application error code used to refuse streams beyond the accept backlog.
STREAM_REFUSED = 0x0


def _is_unidirectional(stream_id: int) -> bool:
    return bool(stream_id & 2)


def _is_client_initiated(stream_id: int) -> bool:
    return not stream_id & 1


class StreamApplication(ApplicationOverQuic):
    """Maps QUIC events onto :class:`QuicStream` objects and datagram queues.

    Receive credit is granted as streams are read (manual flow control).
    ``on_established()`` is called once the handshake completes.
    """

    manual_flow_control = True
    io: ConnectionIO  # from attach(), before anything else

    def __init__(
        self,
        settings: QuicSettings,
        on_established: Callable[[StreamApplication], None] | None = None,
    ) -> None:
        self.settings = settings
        self.send_buffer = settings.stream_send_buffer
        self.streams: dict[int, StreamState] = {}
        self.blocked_senders: set[StreamState] = set()
        self._accept_queue: deque[StreamState] = deque()
        self._accept_lot = trio.lowlevel.ParkingLot()
        self._datagrams: deque[bytes] = deque()
        self._datagram_lot = trio.lowlevel.ParkingLot()
        self._open_lot = trio.lowlevel.ParkingLot()
        self._highest_peer_stream = {False: -1, True: -1}  # by unidirectional
        self.is_client = False
        self._on_established = on_established
        #: The user's facade (made here, so it exists as soon as attached).
        self.connection = QuicConnection(self)

    def attach(self, io: ConnectionIO) -> None:
        self.io = io
        self.is_client = io.is_client

    # -- hooks ----------------------------------------------------------------

    def on_connection_established(
        self, io: ConnectionIO, handshake: HandshakeInfo
    ) -> None:
        if self._on_established is not None:
            self._on_established(self)

    def process_reads(self, io: ConnectionIO, events: Sequence[QuicEvent]) -> None:
        for event in events:
            cls = type(event)
            if cls is StreamDataReceived:
                assert isinstance(event, StreamDataReceived)
                state = self._stream_for_event(event.stream_id)
                if state is None:
                    io.consume(event.stream_id, len(event.data))
                else:
                    state.on_data(event.data, event.end_stream)
            elif cls is StreamResetReceived:
                assert isinstance(event, StreamResetReceived)
                state = self._stream_for_event(event.stream_id)
                if state is None:
                    self.credit_abandoned(
                        None, io.received_final_size(event.stream_id), event.stream_id
                    )
                else:
                    state.on_reset(event.error_code)
            elif cls is StopSendingReceived:
                assert isinstance(event, StopSendingReceived)
                # STOP_SENDING may be the first frame of a peer's stream that
                # we hear of (the engine has reset our side already).
                state = self._stream_for_event(event.stream_id)
                if state is not None:
                    state.on_stop_sending(event.error_code)
                    self.maybe_forget(state)
            elif cls is DatagramReceived:
                assert isinstance(event, DatagramReceived)
                if len(self._datagrams) >= self.settings.datagram_queue_size:
                    self._datagrams.popleft()
                    io.note_datagram_dropped()
                self._datagrams.append(event.data)
                self._datagram_lot.unpark_all()

    def process_writes(self, io: ConnectionIO) -> None:
        if self.blocked_senders:
            limit = self.send_buffer
            for state in list(self.blocked_senders):
                if (
                    io.send_buffered(state.stream_id) < limit
                    or state.stop_code is not None
                ):
                    self.blocked_senders.discard(state)
                    state.send_lot.unpark_all()
        if self._open_lot:
            self._open_lot.unpark_all()

    def on_connection_close(self, io: ConnectionIO, reason: CloseReason) -> None:
        for state in self.streams.values():
            state.wake_all()
        for state in self._accept_queue:
            state.wake_all()
        self._accept_lot.unpark_all()
        self._datagram_lot.unpark_all()
        self._open_lot.unpark_all()

    # -- streams --------------------------------------------------------------

    def _stream_for_event(self, stream_id: int) -> StreamState | None:
        state = self.streams.get(stream_id)
        if state is not None:
            return state
        if _is_client_initiated(stream_id) == self.is_client:
            return None  # one of ours that we already forgot
        uni = _is_unidirectional(stream_id)
        if stream_id <= self._highest_peer_stream[uni]:
            return None  # a peer stream we already finished with
        # The peer opened this stream, and implicitly every lower one of the
        # same kind (RFC 9000 section 3.2); accept them in order.
        step_from = self._highest_peer_stream[uni]
        first = stream_id % 4 if step_from < 0 else step_from + 4
        self._highest_peer_stream[uni] = stream_id
        created = None
        for sid in range(first, stream_id + 1, 4):
            state = StreamState(self, sid, can_send=not uni, can_receive=True)
            if len(self._accept_queue) >= self.settings.stream_accept_backlog:
                # Refuse: too many streams wait for accept_stream().
                self.io.stop_stream(sid, STREAM_REFUSED)
                if not uni:
                    self.io.reset_stream(sid, STREAM_REFUSED)
                state.receive_closed = True
                state.send_closed = True
                if sid == stream_id:
                    created = state
                continue
            self.streams[sid] = state
            self._accept_queue.append(state)
            if sid == stream_id:
                created = state
        self._accept_lot.unpark_all()
        return created

    def credit_abandoned(
        self,
        state: StreamState | None,
        final_size: int | None,
        stream_id: int | None = None,
    ) -> None:
        """Give back the credit of bytes that will never be read."""
        if final_size is None:
            return
        sid = state.stream_id if state is not None else stream_id
        assert sid is not None
        self.io.credit_unread(sid, final_size)

    def maybe_forget(self, state: StreamState) -> None:
        if state.finished and self.streams.get(state.stream_id) is state:
            del self.streams[state.stream_id]
            self.blocked_senders.discard(state)

    async def open(self, unidirectional: bool) -> StreamState:
        await trio.lowlevel.checkpoint_if_cancelled()
        blocked = False
        while True:
            self._raise_if_closed()
            stream_id = self.io.open_stream(unidirectional=unidirectional)
            if stream_id is not None:
                break
            blocked = True
            await self._open_lot.park()
        state = StreamState(
            self, stream_id, can_send=True, can_receive=not unidirectional
        )
        self.streams[stream_id] = state
        if not blocked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return state

    def _raise_if_closed(self) -> None:
        error = self.io.error
        if error is not None:
            raise error

    async def accept(self) -> StreamState:
        return await take_when_ready(
            self._accept_queue, self._accept_lot, self._raise_if_closed
        )

    async def receive_datagram(self) -> bytes:
        return await take_when_ready(
            self._datagrams, self._datagram_lot, self._raise_if_closed
        )


class QuicConnection:
    """A QUIC connection carrying raw streams and datagrams.

    You get one from :func:`~trioquic.open_quic_connection` (client) or as the
    argument of a :func:`~trioquic.serve_quic` handler (server). It lives in
    its own nursery with the IoWorker that drives it; when the connection ends
    (closed by either side, idle timeout), every waiting call raises
    :exc:`~trioquic.ConnectionClosed` carrying a :class:`~trioquic.CloseReason`.
    """

    def __init__(self, application: StreamApplication) -> None:
        # Made by trioquic (StreamApplication makes its own).
        self._app = application

    @property
    def _io(self) -> ConnectionIO:
        return self._app.io

    # -- streams ------------------------------------------------------------

    async def open_stream(self) -> QuicStream:
        """Open a bidirectional stream (waits while the peer's stream limit is
        reached). The peer learns of it when the first data or FIN is sent."""
        return QuicStream(await self._app.open(False))

    async def open_unidirectional_stream(self) -> QuicSendStream:
        """Open a unidirectional stream to the peer."""
        return QuicSendStream(await self._app.open(True))

    async def accept_stream(self) -> QuicStream | QuicReceiveStream:
        """Wait for the next stream the peer opened: a :class:`QuicStream` for a
        bidirectional one, a :class:`QuicReceiveStream` for a unidirectional
        one. Cancel-safe."""
        state = await self._app.accept()
        if state.can_send:
            return QuicStream(state)
        return QuicReceiveStream(state)

    # -- datagrams ------------------------------------------------------------

    @property
    def max_datagram_size(self) -> int:
        """Largest datagram :meth:`send_datagram` takes now; 0 if the peer did
        not enable QUIC datagrams (RFC 9221)."""
        return self._io.max_datagram_size()

    async def send_datagram(self, data: bytes | bytearray | memoryview) -> None:
        """Send an unreliable QUIC datagram (RFC 9221).

        Raises :exc:`~trioquic.DatagramError` if datagrams are disabled or
        ``data`` is larger than :attr:`max_datagram_size`. When the outgoing
        queue (``datagram_queue_size``) is full the oldest datagram is dropped.
        """
        await trio.lowlevel.checkpoint()
        error = self._io.error
        if error is not None:
            raise error
        data = bytes(data)
        limit = self._io.max_datagram_size()
        if limit == 0:
            raise DatagramError(
                "the peer did not enable QUIC datagrams: both sides need "
                "QuicSettings.max_datagram_frame_size set"
            )
        if len(data) > limit:
            raise DatagramError(
                f"datagram of {len(data)} bytes is larger than the {limit} bytes "
                "that fit in one packet"
            )
        self._io.send_datagram(data)

    async def receive_datagram(self) -> bytes:
        """Wait for the next QUIC datagram from the peer. Cancel-safe."""
        return await self._app.receive_datagram()

    # -- lifecycle and facts -------------------------------------------------------

    async def aclose(self, error_code: int = 0, reason: str = "") -> None:
        """Close the connection (CONNECTION_CLOSE with an application error
        code) and wait, at most the close grace period, until it is gone.
        Idempotent."""
        self.close(error_code, reason)
        with trio.move_on_after(self._io.settings.close_grace_period):
            await self._io.wait_closed()
        await trio.lowlevel.checkpoint()

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Start closing the connection without waiting."""
        code = operator.index(error_code)
        if not 0 <= code < 2**62:
            raise ValueError(f"error codes are 0 to 2**62-1, got {code}")
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, got {type(reason).__name__}")
        self._io.close(code, reason)

    @property
    def is_closed(self) -> bool:
        return self._io.error is not None

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the connection ended, once it has."""
        return self._io.close_reason

    @property
    def handshake(self) -> HandshakeInfo | None:
        """What the handshake settled (ALPN, resumption, 0-RTT), or None while
        a 0-RTT connection's handshake is still running."""
        return self._io.handshake

    async def wait_handshake(self) -> HandshakeInfo:
        """Wait for the handshake to complete (immediate unless the connection
        was opened with 0-RTT); raises :exc:`ConnectionClosed` if it failed."""
        return await self._io.wait_handshake()

    @property
    def alpn_protocol(self) -> str | None:
        """The negotiated ALPN protocol (None before the handshake completed)."""
        info = self._io.handshake
        return info.alpn_protocol if info is not None else None

    @property
    def session_ticket(self) -> bytes | None:
        """The newest TLS session ticket the server sent (client side), as
        opaque bytes: pass it as ``QuicSettings.session_ticket`` to resume the
        session on a later connection, and with ``zero_rtt=True`` to send data
        in the first flight. None until the server sends one."""
        return self._io.session_ticket

    @property
    def local_address(self) -> Any:
        return self._io.local_address

    @property
    def peer_address(self) -> Any:
        """The peer's current address (it changes if the peer migrates)."""
        return self._io.peer_address

    def statistics(self) -> ConnectionStatistics:
        """RTT, congestion window, datagrams and bytes in and out, drops."""
        return self._io.statistics()

    async def rebind(self) -> Any:
        """Client: move this connection to a new local UDP port and keep
        going (connection migration, RFC 9000 section 9). Returns the new
        local address.

        trioquic opens a new socket of the same address family, receives on
        both for a short drain (so packets already on their way to the old
        port are not lost), then closes the old one. The connection switches
        to a fresh connection ID the server issued, so the new path cannot be
        linked to the old one by an observer (RFC 9000 section 9.5); the
        server validates the new path (PATH_CHALLENGE) before sending more
        than three times what it received on it. Streams carry on: at worst
        a few packets are retransmitted.

        With a caller-owned ``socket`` (``open_quic_connection(socket=...)``)
        the socket must have a ``rebind()`` method that moves it in place
        (``trioquic.testing.MemorySocket`` has one); otherwise, and on server
        connections, :exc:`RuntimeError` is raised. Raises
        :exc:`ConnectionClosed` if the connection has ended. Not cancel-safe
        once the new socket is in use: a cancelled call may leave the
        connection on either port (it keeps working either way).
        """
        return await self._io.rebind()

    async def wait_closed(self) -> ConnectionClosed:
        """Wait until the connection has ended; return the exception that
        describes how."""
        return await self._io.wait_closed()

    def __repr__(self) -> str:
        side = "client" if self._io.is_client else "server"
        return f"<trioquic.QuicConnection {side} peer={self.peer_address!r}>"
