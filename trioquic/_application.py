"""ApplicationOverQuic: any protocol over one QUIC connection.

The IoWorker calls an application's six hooks around every driver step; see
:class:`ApplicationOverQuic`. The raw-stream API
(:class:`~trioquic.QuicConnection`) and HTTP/3's ``H3Driver`` are both
implementations.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ._errors import CloseReason, ConnectionClosed
from ._events import HandshakeInfo, QuicEvent

if TYPE_CHECKING:
    from ._engine import H3Engine
    from ._settings import QuicSettings
    from ._statistics import ConnectionStatistics
    from ._worker import IoWorker


class ConnectionIO:
    """What an application may do with its connection, from inside its hooks
    or from its own tasks.

    Every method here but the ``wait_*`` ones is synchronous: it changes the
    QUIC state machine and, where there is something to send, asks the
    IoWorker for a driver step (:meth:`wake`). The worker sends the resulting
    datagrams in one batch. It is also how a server's connections are listed
    (:attr:`trioquic.QuicServer.connections`).
    """

    __slots__ = ("_worker",)

    def __init__(self, worker: IoWorker) -> None:
        self._worker = worker

    def __repr__(self) -> str:
        side = "client" if self.is_client else "server"
        state = "closed" if self.error is not None else "open"
        return f"<trioquic.ConnectionIO {side} {state} peer={self.peer_address!r}>"

    # -- scheduling -------------------------------------------------------

    def wake(self) -> None:
        """Ask the IoWorker to run a driver step soon (after writes)."""
        self._worker.wake()

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None:
        """Run ``fn(*args)`` in this connection's nursery: it is cancelled when
        the connection ends, and never outlives it."""
        nursery = self._worker.nursery
        if nursery is None:
            raise RuntimeError("the connection's nursery is not running")
        nursery.start_soon(fn, *args, name=name)

    async def rebind(self) -> Any:
        """Client: move the connection to a new local UDP port (see
        :meth:`trioquic.QuicConnection.rebind`). Returns the new local
        address."""
        worker = self._worker
        if worker.rebinder is None:
            raise RuntimeError(
                "rebind() moves a client connection to a new local port; "
                "a server connection cannot rebind"
            )
        if worker.error is not None:
            raise worker.error
        return await worker.rebinder()

    # -- facts ------------------------------------------------------------

    @property
    def is_client(self) -> bool:
        return self._worker.engine.is_client

    @property
    def settings(self) -> QuicSettings:
        """The settings of the endpoint this connection belongs to."""
        return self._worker.settings

    @property
    def handshake(self) -> HandshakeInfo | None:
        return self._worker.engine.handshake

    @property
    def handshake_complete(self) -> bool:
        """Whether the handshake has completed. A server that accepted 0-RTT
        data is established (:attr:`handshake` is set) before it completes:
        what arrives until then is early data (RFC 8470), which an attacker
        may replay."""
        return self._worker.engine.handshake_complete

    @property
    def session_ticket(self) -> bytes | None:
        """Client: the newest session ticket from the server (opaque bytes)."""
        return self._worker.engine.session_ticket

    async def wait_handshake(self) -> HandshakeInfo:
        """Wait until the handshake has completed; raise the connection's
        error if it ended first."""
        worker = self._worker
        if not worker.established.is_set():
            async with trio.open_nursery() as nursery:

                async def watch_end() -> None:
                    await worker.finished.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch_end)
                await worker.established.wait()
                nursery.cancel_scope.cancel()
        else:
            await trio.lowlevel.checkpoint()
        info = worker.engine.handshake
        if info is None or not worker.established.is_set():
            error = worker.error
            assert error is not None
            raise error
        return info

    @property
    def local_address(self) -> Any:
        return self._worker.socket.local_address

    @property
    def peer_address(self) -> Any:
        return self._worker.engine.peer_address()

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the connection ended, once it has (``error.reason``)."""
        return self._worker.close_reason

    @property
    def error(self) -> ConnectionClosed | None:
        """The exception users of a closed connection get, once it closed."""
        return self._worker.error

    def statistics(self) -> ConnectionStatistics:
        """RTT, congestion window, datagrams and bytes in and out, drops."""
        return self._worker.statistics()

    async def wait_closed(self) -> ConnectionClosed:
        """Wait until the connection has ended (and its worker finished);
        return the exception that describes how. Cancel-safe."""
        await self._worker.finished.wait()
        error = self._worker.error
        assert error is not None
        return error

    async def wait_flushed(self) -> None:
        """Wait until every stream byte, FIN and reset written so far has been
        acknowledged by the peer, or the connection has ended. Not bounded:
        put a deadline around it. Cancel-safe."""
        await self._worker.wait_flushed()

    # -- streams and datagrams -------------------------------------------

    def open_stream(self, *, unidirectional: bool = False) -> int | None:
        """A new local stream's ID, or None while the peer's limit is reached."""
        return self._worker.engine.open_stream(unidirectional)

    def send_stream_data(
        self, stream_id: int, data: bytes, end_stream: bool = False
    ) -> None:
        engine = self._worker.engine
        engine.send_stream_data(stream_id, data, end_stream)
        # While the congestion window or the pacer holds sending back, a step
        # is already due (on the next ACK or timer): don't run an empty one.
        if end_stream or not engine.sending_held(trio.current_time()):
            self._worker.wake()

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self._worker.engine.reset_stream(stream_id, error_code)
        self._worker.wake()

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        self._worker.engine.stop_stream(stream_id, error_code)
        self._worker.wake()

    def send_buffered(self, stream_id: int) -> int:
        """Unacknowledged plus unsent bytes the stream holds."""
        return self._worker.engine.send_buffered(stream_id)

    def consume(self, stream_id: int, count: int) -> None:
        """Grant the peer credit for ``count`` bytes of ``stream_id`` the
        application has read (only for applications with
        ``manual_flow_control``)."""
        if self._worker.engine.consume(stream_id, count):
            self._worker.wake()

    def credit_unread(self, stream_id: int, final_size: int) -> None:
        """Grant credit for every byte up to ``final_size`` not yet consumed
        (the stream was reset or abandoned: they will never be read)."""
        if self._worker.engine.credit_unread(stream_id, final_size):
            self._worker.wake()

    def forget_stream(self, stream_id: int) -> None:
        self._worker.engine.forget_stream(stream_id)

    def received_final_size(self, stream_id: int) -> int | None:
        return self._worker.engine.received_final_size(stream_id)

    def max_datagram_size(self) -> int:
        return self._worker.engine.max_datagram_size()

    def send_datagram(self, data: bytes) -> None:
        self._worker.engine.send_datagram(data)
        self._worker.wake()

    def note_datagram_dropped(self) -> None:
        """Count a received QUIC datagram the application dropped (its queue
        was full), in ``statistics().quic_datagrams_receive_dropped``."""
        self._worker.quic_datagrams_receive_dropped += 1

    def close(
        self, error_code: int = 0, reason: str = "", *, transport: bool = False
    ) -> None:
        """Close the connection with an application error code (a transport
        error code with ``transport=True``). Idempotent."""
        self._worker.close(error_code, reason, transport=transport)

    # -- for protocols: set-up before the handshake, HTTP/3 ------------------

    def set_peer_stream_limits(
        self, *, bidirectional: int, unidirectional: int
    ) -> None:
        """How many streams of each kind the peer may have open at once.
        Only from :meth:`ApplicationOverQuic.attach` (they are transport
        parameters, sent in the handshake)."""
        if self._worker.established.is_set():
            raise RuntimeError(
                "stream limits are transport parameters: set them in attach(), "
                "before the handshake"
            )
        self._worker.engine.set_peer_stream_limits(
            bidirectional=bidirectional, unidirectional=unidirectional
        )

    def create_h3_engine(
        self,
        *,
        max_field_section_size: int,
        enable_connect_protocol: bool,
        enable_datagrams: bool,
        max_push_id: int | None = None,
    ) -> H3Engine:
        """The QUIC engine's HTTP/3 state machine for this connection (what
        ``trioquic.h3``'s driver runs on); call its ``start()`` once the
        connection can carry data. ``max_push_id`` (client): the largest
        push ID the server may use; None (the default) allows no push."""
        return self._worker.engine.create_h3(
            max_field_section_size=max_field_section_size,
            enable_connect_protocol=enable_connect_protocol,
            enable_datagrams=enable_datagrams,
            max_push_id=max_push_id,
        )


class ApplicationOverQuic:
    """A protocol that runs over one QUIC connection.

    :meth:`attach` is called once, first, when the application is bound to
    its connection (before the handshake). Then the IoWorker owns the
    connection and calls these hooks, in this order, after every input
    (datagrams, a timer, or a :meth:`ConnectionIO.wake`):

    1. :meth:`on_connection_established` once, when the handshake completes;
    2. :meth:`process_reads` with the transport events of the step, when
       :meth:`should_act` is true (events wait while it is false);
    3. :meth:`process_writes`, when :meth:`should_act` is true;

    then it flushes datagrams. :meth:`wait_for_data` runs in a task of the
    connection's nursery and triggers a step each time it returns, for
    applications with inputs of their own. :meth:`on_connection_close` is
    called once, however the connection ends. Hooks must not block: they are
    plain functions, except :meth:`wait_for_data`.

    Set ``manual_flow_control = True`` to grant receive credit yourself with
    :meth:`ConnectionIO.consume` as your application reads; otherwise credit
    is granted as data is handed to :meth:`process_reads`. Either way, events
    held back while :meth:`should_act` is false are bounded by the
    flow-control windows.
    """

    manual_flow_control: bool = False

    def attach(self, io: ConnectionIO) -> None:
        """The application is bound to its connection: keep ``io`` to act from
        your own tasks later. Called once, before any other hook and before
        the handshake (so this is where transport parameters such as
        :meth:`ConnectionIO.set_peer_stream_limits` are set); the
        connection's nursery is not running yet (no ``io.start_soon``)."""

    def on_connection_established(
        self, io: ConnectionIO, handshake: HandshakeInfo
    ) -> None:
        """The handshake completed; the connection can carry application data."""

    def should_act(self) -> bool:
        """Whether the worker should call the read and write hooks now."""
        return True

    async def wait_for_data(self, io: ConnectionIO) -> None:
        """Wait for the application's own input; returning requests a step.

        The default never returns: most applications write from their own
        tasks and call :meth:`ConnectionIO.wake` instead. It runs in the
        connection's nursery and is cancelled when the connection ends, but
        it can return just after :meth:`on_connection_close` ran (it was
        already rescheduled): check ``io.error`` before acting on what it
        received.
        """
        await trio.sleep_forever()

    def process_reads(self, io: ConnectionIO, events: Sequence[QuicEvent]) -> None:
        """Handle the transport events of one driver step."""

    def process_writes(self, io: ConnectionIO) -> None:
        """Write what is ready to be sent, just before the worker flushes."""

    def on_connection_close(self, io: ConnectionIO, reason: CloseReason) -> None:
        """The connection ended (``io.error`` is what waiters should raise)."""


_T = TypeVar("_T")


async def take_when_ready(
    queue: deque[_T], lot: trio.lowlevel.ParkingLot, check: Callable[[], None]
) -> _T:
    """Pop the oldest item of ``queue``, parking on ``lot`` while it is empty
    (whoever appends unparks it); ``check()`` raises when waiting can no
    longer succeed (the connection ended, ...). A checkpoint either way, and
    cancel-safe: a cancelled wait takes nothing."""
    await trio.lowlevel.checkpoint_if_cancelled()
    blocked = False
    while not queue:
        check()
        blocked = True
        await lot.park()
    item = queue.popleft()
    if not blocked:
        await trio.lowlevel.cancel_shielded_checkpoint()
    return item
