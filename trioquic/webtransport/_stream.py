"""WebTransport streams: trio streams over the QUIC streams of a session.

Receiving grants the peer QUIC credit as the application reads (at most
``Http3Settings.body_buffer_size`` bytes are held unread per stream);
sending waits while the stream's send buffer
(``QuicSettings.stream_send_buffer``) is full.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import TYPE_CHECKING

import trio

from .._errors import StreamStateError
from ._errors import (
    StreamResetError,
    StreamStoppedError,
    webtransport_code_to_http3,
)

if TYPE_CHECKING:
    from ._session import WebTransportSession, _Hub

#: Largest piece written to the QUIC stream at once.
_MAX_CHUNK = 64 * 1024


class _StreamState:
    """One WebTransport stream's state, shared by its stream objects."""

    def __init__(
        self,
        hub: _Hub,
        session: WebTransportSession,
        stream_id: int,
        *,
        can_send: bool,
        can_receive: bool,
        incoming: bool,
    ) -> None:
        self.hub = hub
        self.session = session
        self.stream_id = stream_id
        self.incoming = incoming
        # receive side
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.eof = not can_receive
        self.eof_read = not can_receive
        self.reset_code: int | None = None
        self.abandoned = False  # we stopped reading (STOP_SENDING)
        self.receive_lot = trio.lowlevel.ParkingLot()
        self.receiving = False
        # send side
        self.send_finished = not can_send
        self.send_reset = False
        self.stop_code: int | None = None
        self.send_lot = trio.lowlevel.ParkingLot()
        self.sending = False
        self.closed = False  # aclose() was called
        self.forgotten = False

    @property
    def receive_over(self) -> bool:
        return self.eof_read or self.abandoned or self.reset_code is not None

    @property
    def send_over(self) -> bool:
        return self.send_finished or self.send_reset

    def wake(self) -> None:
        self.receive_lot.unpark_all()
        self.send_lot.unpark_all()

    # -- receiving ---------------------------------------------------------

    async def receive_some(self, max_bytes: int | None) -> bytes:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.receiving:
            raise trio.BusyResourceError("another task is already reading the stream")
        self.receiving = True
        try:
            blocked = False
            while not self.chunks and not self.eof:
                self._check_receive()
                blocked = True
                await self.receive_lot.park()
            if self.closed:
                raise trio.ClosedResourceError("the stream was closed")
            if self.chunks:
                chunk = self.chunks.popleft()
                if max_bytes is not None and len(chunk) > max_bytes:
                    self.chunks.appendleft(chunk[max_bytes:])
                    chunk = chunk[:max_bytes]
                self.buffered -= len(chunk)
                self.hub.driver.credit_stream(self.stream_id)
            else:
                if self.reset_code is not None or self.abandoned:
                    self._check_receive()  # raises
                chunk = b""
                self.eof_read = True
                self.hub.maybe_forget(self)
            if not blocked:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return chunk
        finally:
            self.receiving = False

    def _check_receive(self) -> None:
        if self.closed:
            raise trio.ClosedResourceError("the stream was closed")
        self.session._raise_if_gone()
        if self.reset_code is not None:
            raise StreamResetError(
                self.stream_id, self.reset_code, "the peer reset the stream"
            )
        if self.abandoned:
            raise trio.ClosedResourceError("reading was stopped (stop_sending)")

    def stop_sending(self, code: int) -> None:
        if self.abandoned or self.eof or self.reset_code is not None:
            return
        http3 = webtransport_code_to_http3(code)
        self.abandoned = True
        self.chunks.clear()
        self.buffered = 0
        driver = self.hub.driver
        if driver.io.error is None:
            driver.io.stop_stream(self.stream_id, http3)
        self.receive_lot.unpark_all()
        self.hub.maybe_forget(self)

    # -- sending -------------------------------------------------------------

    def _check_send(self) -> None:
        if self.closed:
            raise trio.ClosedResourceError("the stream was closed")
        self.session._raise_if_gone()
        if self.stop_code is not None:
            raise StreamStoppedError(
                self.stream_id,
                self.stop_code,
                "the peer stopped reading (STOP_SENDING)",
            )
        if self.send_reset:
            raise trio.ClosedResourceError("the stream was reset")
        if self.send_finished:
            raise trio.ClosedResourceError("send_eof() was called")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.sending:
            raise trio.BusyResourceError("another task is already sending")
        self.sending = True
        try:
            view = memoryview(bytes(data))
            io = self.hub.driver.io
            limit = self.hub.driver.quic_settings.stream_send_buffer
            while view:
                self._check_send()
                while io.send_buffered(self.stream_id) >= limit:
                    self.hub.blocked.add(self)
                    await self.send_lot.park()
                    self._check_send()
                chunk, view = view[:_MAX_CHUNK], view[_MAX_CHUNK:]
                io.send_stream_data(self.stream_id, bytes(chunk))
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self.sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        io = self.hub.driver.io
        limit = self.hub.driver.quic_settings.stream_send_buffer
        blocked = False
        while not self.send_over and self.stop_code is None:
            self.session._raise_if_gone()
            if io.send_buffered(self.stream_id) < limit:
                break
            self.hub.blocked.add(self)
            blocked = True
            await self.send_lot.park()
        if not blocked:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def finish(self) -> None:
        """FIN, if the send side is still open (no error otherwise)."""
        if self.send_over:
            return
        self.send_finished = True
        driver = self.hub.driver
        if driver.io.error is None:
            with contextlib.suppress(StreamStateError):
                driver.io.send_stream_data(self.stream_id, b"", True)
        self.hub.maybe_forget(self)

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.sending:
            raise trio.BusyResourceError("another task is sending")
        if self.closed:
            raise trio.ClosedResourceError("the stream was closed")
        if not self.send_over:
            if self.stop_code is None:
                self.session._raise_if_gone()
            self.finish()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def reset(self, code: int) -> None:
        if self.send_over:
            return
        http3 = webtransport_code_to_http3(code)
        self.send_reset = True
        driver = self.hub.driver
        if driver.io.error is None:
            driver.io.reset_stream(self.stream_id, http3)
        self.send_lot.unpark_all()
        self.hub.maybe_forget(self)

    async def aclose(self) -> None:
        """FIN on the send side (if still open), STOP_SENDING with code 0 on
        the receive side (if the peer has not finished). Idempotent."""
        if not self.closed:
            self.finish()
            self.stop_sending(0)
            self.closed = True
            self.wake()
        await trio.lowlevel.checkpoint()


class _Base:
    _state: _StreamState

    @property
    def stream_id(self) -> int:
        """The QUIC stream's ID."""
        return self._state.stream_id

    @property
    def session(self) -> WebTransportSession:
        """The session the stream belongs to."""
        return self._state.session

    def __repr__(self) -> str:
        return f"<trioquic.webtransport.{type(self).__name__} {self.stream_id}>"


class _Sending(_Base):
    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``, waiting while the stream's send buffer is full.
        Raises :exc:`StreamStoppedError` if the peer stopped reading,
        :exc:`SessionClosed` once the session has ended. Not cancel-safe:
        part of the data may have been sent."""
        await self._state.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Return when the stream's send buffer has room."""
        await self._state.wait_send_all_might_not_block()

    def reset(self, code: int = 0) -> None:
        """Abandon sending: RESET_STREAM with WebTransport error ``code`` (32
        bits). Idempotent; nothing happens once the send side ended."""
        self._state.reset(code)


class _Receiving(_Base):
    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next bytes as they arrive, ``b""`` once the peer finished.
        Raises :exc:`StreamResetError` if the peer reset the stream,
        :exc:`SessionClosed` once the session has ended. Cancel-safe."""
        return await self._state.receive_some(max_bytes)

    def stop_sending(self, code: int = 0) -> None:
        """Stop reading: STOP_SENDING with WebTransport error ``code``; what
        is buffered is dropped. Idempotent."""
        self._state.stop_sending(code)


class WebTransportStream(_Sending, _Receiving, trio.abc.HalfCloseableStream):
    """A bidirectional WebTransport stream."""

    def __init__(self, state: _StreamState) -> None:
        self._state = state

    async def send_eof(self) -> None:
        """Finish the send side (FIN); reading goes on."""
        await self._state.send_eof()

    async def aclose(self) -> None:
        """FIN if the send side is open; STOP_SENDING (code 0) if the peer
        is still sending. Idempotent."""
        await self._state.aclose()


class WebTransportSendStream(_Sending, trio.abc.SendStream):
    """A unidirectional WebTransport stream this side opened."""

    def __init__(self, state: _StreamState) -> None:
        self._state = state

    async def aclose(self) -> None:
        """Finish the stream (FIN), if not done yet. Idempotent."""
        await self._state.aclose()


class WebTransportReceiveStream(_Receiving, trio.abc.ReceiveStream):
    """A unidirectional WebTransport stream the peer opened."""

    def __init__(self, state: _StreamState) -> None:
        self._state = state

    async def aclose(self) -> None:
        """Stop reading (STOP_SENDING, code 0) unless the peer finished.
        Idempotent."""
        await self._state.aclose()
