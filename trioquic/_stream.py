"""QUIC streams as trio streams.

* :class:`QuicStream`: bidirectional, a :class:`trio.abc.HalfCloseableStream`
  (``send_eof`` sends FIN);
* :class:`QuicSendStream` / :class:`QuicReceiveStream`: the two ends of a
  unidirectional stream, a :class:`trio.abc.SendStream` /
  :class:`trio.abc.ReceiveStream`.

Backpressure both ways: ``send_all`` waits while the stream holds more than
``QuicSettings.stream_send_buffer`` unacknowledged plus unsent bytes, and
receive credit (MAX_STREAM_DATA / MAX_DATA) is granted as ``receive_some``
hands data to the application, so a slow reader holds at most
``stream_receive_window`` bytes per stream.

Cancellation: ``receive_some``, ``wait_send_all_might_not_block`` and
``aclose`` are cancel-safe. ``send_all`` is not, like trio's own streams: when
cancelled part of the data may have been sent, and the stream should be
closed or reset.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import trio

from ._errors import StreamReset, StreamStopped
from ._statistics import StreamStatistics

if TYPE_CHECKING:
    from ._connection import StreamApplication


class _Conflict:
    """Raises BusyResourceError when two tasks use the same side at once."""

    __slots__ = ("_held", "_message")

    def __init__(self, message: str) -> None:
        self._message = message
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(self._message)
        self._held = True

    def __exit__(self, *exc: object) -> None:
        self._held = False


class StreamState:
    """Everything trioquic keeps about one stream, shared by its facades."""

    __slots__ = (
        "app",
        "buffer",
        "can_receive",
        "can_send",
        "eof_received",
        "eof_returned",
        "eof_sent",
        "receive_closed",
        "receive_conflict",
        "receive_lot",
        "reset_code",
        "send_closed",
        "send_conflict",
        "send_lot",
        "stop_code",
        "stream_id",
    )

    def __init__(
        self,
        app: StreamApplication,
        stream_id: int,
        *,
        can_send: bool,
        can_receive: bool,
    ) -> None:
        self.app = app
        self.stream_id = stream_id
        self.can_send = can_send
        self.can_receive = can_receive
        self.buffer = bytearray()
        self.eof_received = not can_receive
        self.eof_returned = not can_receive
        self.reset_code: int | None = None
        self.stop_code: int | None = None
        self.send_closed = not can_send  # aclose()d on our side
        self.receive_closed = not can_receive
        self.eof_sent = not can_send
        self.receive_lot = trio.lowlevel.ParkingLot()
        self.send_lot = trio.lowlevel.ParkingLot()
        self.receive_conflict = _Conflict(
            "another task is already receiving on this stream"
        )
        self.send_conflict = _Conflict("another task is already sending on this stream")

    # -- called by the application on events --------------------------------

    def on_data(self, data: bytes, end_stream: bool) -> None:
        if self.receive_closed:
            # Nobody will read it: give the credit back at once.
            self.app.io.consume(self.stream_id, len(data))
        else:
            self.buffer += data
        if end_stream:
            self.eof_received = True
        self.receive_lot.unpark_all()

    def on_reset(self, error_code: int) -> None:
        if self.reset_code is None and not self.eof_received:
            self.reset_code = error_code
            # Bytes up to the final size will never be read: credit them.
            final = self.app.io.received_final_size(self.stream_id)
            self.app.credit_abandoned(self, final)
            self.buffer.clear()
            self.app.maybe_forget(self)
        self.receive_lot.unpark_all()

    def on_stop_sending(self, error_code: int) -> None:
        if self.stop_code is None:
            self.stop_code = error_code
        self.send_lot.unpark_all()

    def wake_all(self) -> None:
        self.receive_lot.unpark_all()
        self.send_lot.unpark_all()

    @property
    def finished(self) -> bool:
        receive_done = (
            self.receive_closed or self.eof_returned or self.reset_code is not None
        )
        send_done = self.send_closed or self.eof_sent or self.stop_code is not None
        return receive_done and send_done

    # -- receive side -------------------------------------------------------

    async def receive_some(self, max_bytes: int | None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be at least 1")
        with self.receive_conflict:
            await trio.lowlevel.checkpoint_if_cancelled()
            blocked = False
            while True:
                if self.receive_closed:
                    raise trio.ClosedResourceError("this stream was closed")
                buffer = self.buffer
                if buffer:
                    if max_bytes is None or max_bytes >= len(buffer):
                        data = bytes(buffer)
                        buffer.clear()
                    else:
                        data = bytes(buffer[:max_bytes])
                        del buffer[:max_bytes]
                    self.app.io.consume(self.stream_id, len(data))
                    break
                if self.reset_code is not None:
                    raise StreamReset(self.stream_id, self.reset_code)
                if self.eof_received:
                    data = b""
                    self.eof_returned = True
                    self.app.maybe_forget(self)
                    break
                error = self.app.io.error
                if error is not None:
                    raise error
                blocked = True
                await self.receive_lot.park()
            if not blocked:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    def close_receive(self, error_code: int) -> None:
        """Stop reading: STOP_SENDING unless the peer finished, credit the rest."""
        if self.receive_closed:
            return
        self.receive_closed = True
        if (
            not self.eof_received
            and self.reset_code is None
            and self.app.io.error is None
        ):
            self.app.io.stop_stream(self.stream_id, error_code)
        if self.buffer:
            self.app.io.consume(self.stream_id, len(self.buffer))
            self.buffer.clear()
        self.receive_lot.unpark_all()

    # -- send side --------------------------------------------------------

    def _check_send(self) -> None:
        if self.send_closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self.stop_code is not None:
            raise StreamStopped(self.stream_id, self.stop_code)
        error = self.app.io.error
        if error is not None:
            raise error
        if self.eof_sent:
            raise trio.ClosedResourceError("cannot send after send_eof()")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with self.send_conflict:
            self._check_send()
            await trio.lowlevel.checkpoint_if_cancelled()
            view = memoryview(data).cast("B")
            total = len(view)
            position = 0
            blocked = False
            limit = self.app.send_buffer
            io = self.app.io
            while position < total:
                room = limit - io.send_buffered(self.stream_id)
                if room <= 0:
                    self.app.blocked_senders.add(self)
                    blocked = True
                    await self.send_lot.park()
                    self._check_send()
                    continue
                chunk = bytes(view[position : position + room])
                io.send_stream_data(self.stream_id, chunk)
                position += len(chunk)
            if not blocked:
                await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        with self.send_conflict:
            self._check_send()
            await trio.lowlevel.checkpoint_if_cancelled()
            blocked = False
            while self.app.io.send_buffered(self.stream_id) >= self.app.send_buffer:
                self.app.blocked_senders.add(self)
                blocked = True
                await self.send_lot.park()
                if self.send_closed:
                    raise trio.ClosedResourceError("this stream was closed")
                if self.stop_code is not None or self.app.io.error is not None:
                    return
            if not blocked:
                await trio.lowlevel.cancel_shielded_checkpoint()

    def send_fin(self) -> None:
        if not self.eof_sent and self.stop_code is None and self.app.io.error is None:
            self.eof_sent = True
            self.app.io.send_stream_data(self.stream_id, b"", end_stream=True)
        self.eof_sent = True

    async def send_eof(self) -> None:
        with self.send_conflict:
            if self.send_closed:
                raise trio.ClosedResourceError("this stream was closed")
            await trio.lowlevel.checkpoint_if_cancelled()
            if not self.eof_sent:
                error = self.app.io.error
                if error is not None:
                    raise error
                self.send_fin()
                self.app.maybe_forget(self)
            await trio.lowlevel.cancel_shielded_checkpoint()

    def close_send(self) -> None:
        if self.send_closed:
            return
        self.send_fin()
        self.send_closed = True
        self.send_lot.unpark_all()

    def reset(self, error_code: int) -> None:
        if self.can_send and not self.send_closed:
            if self.app.io.error is None and self.stop_code is None:
                self.app.io.reset_stream(self.stream_id, error_code)
            self.eof_sent = True
            self.send_closed = True
            self.send_lot.unpark_all()
            self.app.maybe_forget(self)

    def stop_sending(self, error_code: int) -> None:
        self.close_receive(error_code)
        self.app.maybe_forget(self)

    async def aclose(self) -> None:
        self.close_send()
        self.close_receive(0)
        self.app.maybe_forget(self)
        await trio.lowlevel.checkpoint()


def _check_code(error_code: int) -> int:
    code = operator.index(error_code)
    if not 0 <= code < 2**62:
        raise ValueError(f"error codes are 0 to 2**62-1, got {code}")
    return code


class _StreamBase:
    __slots__ = ("_state",)

    def __init__(self, state: StreamState) -> None:
        self._state = state

    @property
    def stream_id(self) -> int:
        """The QUIC stream ID."""
        return self._state.stream_id

    def __repr__(self) -> str:
        return f"<trioquic.{type(self).__name__} id={self._state.stream_id}>"

    def statistics(self) -> StreamStatistics:
        """Bytes this stream holds: written and not yet acknowledged, and
        received and not yet read."""
        state = self._state
        return StreamStatistics(
            stream_id=state.stream_id,
            send_buffered=state.app.io.send_buffered(state.stream_id)
            if state.can_send
            else 0,
            receive_buffered=len(state.buffer),
        )


class QuicSendStream(_StreamBase, trio.abc.SendStream):
    """The sending end of a unidirectional QUIC stream.

    ``aclose`` sends FIN (graceful); :meth:`reset` abandons the stream.
    """

    __slots__ = ()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._state.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._state.wait_send_all_might_not_block()

    def reset(self, error_code: int) -> None:
        """Abandon sending (RESET_STREAM with ``error_code``)."""
        self._state.reset(_check_code(error_code))

    async def aclose(self) -> None:
        await self._state.aclose()


class QuicReceiveStream(_StreamBase, trio.abc.ReceiveStream):
    """The receiving end of a unidirectional QUIC stream.

    ``receive_some`` returns ``b""`` at the peer's FIN and raises
    :exc:`~trioquic.StreamReset` if the peer reset the stream. ``aclose``
    sends STOP_SENDING (code 0) if the peer has not finished.
    """

    __slots__ = ()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._state.receive_some(max_bytes)

    def stop_sending(self, error_code: int) -> None:
        """Tell the peer to stop sending (STOP_SENDING) and discard what comes."""
        self._state.stop_sending(_check_code(error_code))

    async def aclose(self) -> None:
        await self._state.aclose()


class QuicStream(_StreamBase, trio.abc.HalfCloseableStream):
    """A bidirectional QUIC stream.

    ``send_eof`` sends FIN; ``aclose`` sends FIN if not sent yet and
    STOP_SENDING (code 0) if the peer has not finished sending.
    """

    __slots__ = ()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._state.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._state.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._state.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._state.receive_some(max_bytes)

    def reset(self, error_code: int) -> None:
        """Abandon the send side (RESET_STREAM with ``error_code``)."""
        self._state.reset(_check_code(error_code))

    def stop_sending(self, error_code: int) -> None:
        """Ask the peer to stop sending (STOP_SENDING with ``error_code``)."""
        self._state.stop_sending(_check_code(error_code))

    async def aclose(self) -> None:
        await self._state.aclose()
