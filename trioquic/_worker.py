"""IoWorker: the task that drives one QUIC connection.

Each step, in a fixed order (DESIGN.md section 2):

1. feed the datagrams that arrived (``receive_datagram``);
2. handle the timer if it is due;
3. collect events: connection-ID changes go to the router's table, the
   handshake and the close are noted, the rest go to the application's
   ``process_reads``;
4. let the application write (``process_writes``);
5. flush every datagram the engine has, as one batch;
6. re-arm the timer from ``get_timer()``.

``now`` is always :func:`trio.current_time`, so ``trio.testing.MockClock``
drives QUIC time in tests. The worker knows its engine only through the
engine interface (:class:`~trioquic._engine.QuicEngine`).
"""

from __future__ import annotations

import errno
import logging
import math
import os
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ._application import ApplicationOverQuic, ConnectionIO
from ._engine import Address, QuicEngine
from ._errors import INTERNAL_ERROR, CloseCause, CloseReason, ConnectionClosed
from ._events import DatagramReceived, QuicEvent, StreamDataReceived
from ._routing import RoutingTable
from ._settings import QuicSettings
from ._statistics import ConnectionStatistics
from ._udp import DatagramSocket

logger = logging.getLogger("trioquic")

#: How long to wait before handling the engine's timer again when handling it
#: left it due (RFC 9002's timer granularity).
_TIMER_GRANULARITY = 0.001

#: How many times a closing connection answers the peer with its
#: CONNECTION_CLOSE again before it stops listening.
_CLOSING_REPLIES = 8


class _Inbox:
    """A worker's input: datagrams queued by the router (bounded: ``put``
    refuses when full, never blocks) and the application's wake-up flag.

    The worker takes everything at once; only the first arrival while it
    waits reschedules it, so a burst of datagrams costs one task switch.
    """

    __slots__ = ("_waiter", "capacity", "closed", "datagrams", "woken")

    def __init__(self, capacity: int) -> None:
        self.datagrams: list[tuple[bytes, Address]] = []
        self.capacity = capacity
        self.woken = False
        self.closed = False
        self._waiter: trio.lowlevel.Task | None = None

    def put(self, datagram: tuple[bytes, Address]) -> bool:
        datagrams = self.datagrams
        if self.closed or len(datagrams) >= self.capacity:
            return False
        datagrams.append(datagram)
        if self._waiter is not None:
            self._notify()
        return True

    def wake(self) -> None:
        self.woken = True
        if self._waiter is not None:
            self._notify()

    def _notify(self) -> None:
        task, self._waiter = self._waiter, None
        assert task is not None
        trio.lowlevel.reschedule(task)

    def ready(self) -> bool:
        return self.woken or bool(self.datagrams)

    def take(self) -> list[tuple[bytes, Address]]:
        """Every datagram queued (and clear the wake-up flag)."""
        datagrams = self.datagrams
        self.datagrams = []
        self.woken = False
        return datagrams

    async def wait(self) -> None:
        """Return once something is queued; a checkpoint (cancellable)."""
        if self.ready():
            await trio.lowlevel.checkpoint()
            return
        self._waiter = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class IoWorker:
    """Drives one :class:`~trioquic._engine.QuicEngine` and its
    :class:`ApplicationOverQuic`.

    Datagrams arrive in a bounded inbox fed by the InboundPacketRouter
    (:meth:`deliver` never blocks: a full inbox drops); the application asks
    for steps with :meth:`wake`, which sets a flag in the same inbox. The
    application is attached (:meth:`ApplicationOverQuic.attach`) here, before
    anything else happens on the connection.
    """

    def __init__(
        self,
        *,
        engine: QuicEngine,
        application: ApplicationOverQuic,
        socket: DatagramSocket,
        table: RoutingTable[IoWorker],
        settings: QuicSettings,
    ) -> None:
        self.engine = engine
        self.application = application
        self.socket = socket
        self.table = table
        self.settings = settings
        #: Client: moves the connection to a new local port (set by the client
        #: endpoint; ``None`` on servers). See ``QuicConnection.rebind``.
        self.rebinder: Callable[[], Awaitable[Address]] | None = None
        self.io = ConnectionIO(self)
        self.nursery: trio.Nursery | None = None
        #: Why the connection ended (the one record of it), and the exception
        #: its users get, built from it.
        self.close_reason: CloseReason | None = None
        self.error: ConnectionClosed | None = None
        #: UDP datagrams dropped because the inbox was full.
        self.datagrams_dropped = 0
        #: QUIC datagrams received and dropped before the application took them.
        self.quic_datagrams_receive_dropped = 0
        self.established = trio.Event()
        self.finished = trio.Event()
        self._inbox = _Inbox(settings.inbound_queue_size)
        self._wake_pending = False
        self._stepped = trio.lowlevel.ParkingLot()
        self._pending_events: list[QuicEvent] = []
        # Past this many held events, look for QUIC datagrams to shed.
        self._datagram_bound = 2 * settings.datagram_queue_size
        self._manual_credit = application.manual_flow_control
        self._handshake_deadline = trio.current_time() + settings.handshake_timeout
        #: Keep-alive: when to send a PING if nothing is heard before (armed
        #: once the handshake is done; see QuicSettings.keep_alive_interval).
        self._keep_alive = settings.keep_alive_interval
        self._keep_alive_at = math.inf
        self._grace = settings.close_grace_period
        self._cids: set[bytes] = set()
        #: The peer's stateless reset tokens registered in the table.
        self._reset_tokens: tuple[bytes, ...] = ()
        self._closing_datagrams: list[tuple[bytes, Address]] = []
        # Attach first: if the application fails to, nothing is registered
        # in the routing table for a connection that never runs.
        application.attach(self.io)
        self.register_cid(engine.host_cid)

    # -- inputs ---------------------------------------------------------------

    def deliver(self, data: bytes, addr: Address) -> bool:
        """Queue a datagram for this connection; False (dropped) when full."""
        if self._inbox.put((data, addr)):
            return True
        self.datagrams_dropped += 1
        return False

    def wake(self) -> None:
        """Request a driver step (idempotent until the step runs)."""
        if self._wake_pending or self.error is not None:
            return
        self._wake_pending = True
        self._inbox.wake()

    def close(
        self,
        error_code: int,
        reason: str,
        *,
        transport: bool = False,
        cause: CloseCause = CloseCause.CLOSED_LOCALLY,
    ) -> None:
        if self.error is None and self.engine.close_reason is None:
            self.engine.close(error_code, reason, transport=transport, cause=cause)
            self._wake_pending = False
            self.wake()

    def statistics(self) -> ConnectionStatistics:
        return attrs.evolve(
            self.engine.statistics(),
            datagrams_dropped=self.datagrams_dropped,
            quic_datagrams_receive_dropped=self.quic_datagrams_receive_dropped,
        )

    async def wait_flushed(self) -> None:
        """Wait until every stream byte, FIN and reset written so far has been
        acknowledged by the peer, or the connection has ended. Not bounded:
        callers put a deadline around it."""
        while (
            self.error is None
            and not self.finished.is_set()
            and self.engine.has_unacknowledged_stream_data()
        ):
            await self._stepped.park()
        await trio.lowlevel.checkpoint()

    def peer_unreachable(self, addr: Address, error: int) -> None:
        """The network reported ``addr`` unreachable (ICMP, a client socket's
        report). Acted on only during the handshake, and only for the
        address this connection sends to: it then ends at once, sending
        nothing, with :exc:`~trioquic.ConnectionRefused` (port unreachable)
        or :exc:`~trioquic.PeerUnreachable`. Later, ICMP is ignored (it can
        be transient or forged; QUIC's own timers decide)."""
        engine = self.engine
        if self.error is not None or engine.handshake is not None:
            return
        if engine.close_reason is not None:
            return
        peer = engine.peer_address()
        if peer is None or tuple(peer[:2]) != tuple(addr[:2]):
            return
        where = (
            f"[{addr[0]}]:{addr[1]}" if ":" in str(addr[0]) else f"{addr[0]}:{addr[1]}"
        )
        if error == errno.ECONNREFUSED:
            cause = CloseCause.CONNECTION_REFUSED
            text = f"connection refused: nothing listens on UDP {where}"
        else:
            cause = CloseCause.PEER_UNREACHABLE
            text = f"{where} is unreachable ({os.strerror(error)})"
        engine.abandon(CloseReason(error_code=0, reason=text, cause=cause))
        self.wake()

    def register_cid(self, cid: bytes) -> None:
        self._cids.add(cid)
        self.table.add(cid, self)

    # -- the task -------------------------------------------------------------

    async def run(self, nursery: trio.Nursery) -> None:
        """The worker task; ``nursery`` is the connection's own nursery, which
        it cancels when the connection ends."""
        self.nursery = nursery
        try:
            await self._loop()
            await self._linger()
        except trio.Cancelled:
            await self._close_on_cancel()
            raise
        except Exception as exc:  # a bug, or an engine failure: contain it
            logger.exception("trioquic: connection worker failed")
            if self.error is None:
                await self._close_on_failure(exc)
        finally:
            self._unregister()
            try:
                self.engine.end_logging()
            except Exception:  # a full disk must not break the shutdown
                logger.exception("trioquic: could not write the qlog trace")
            self._inbox.closed = True
            self.finished.set()
            self._stepped.unpark_all()
            nursery.cancel_scope.cancel()

    async def _loop(self) -> None:
        engine = self.engine
        inbox = self._inbox
        last_step = -math.inf
        while True:
            # Block (with the timer as deadline) only when nothing is queued,
            # so a busy connection costs one checkpoint per step and no
            # cancel scope. One timer per connection, re-armed here.
            timer = engine.get_timer()
            if inbox.ready():
                await trio.lowlevel.checkpoint()
            else:
                deadline = math.inf if timer is None else timer
                if engine.handshake is None and self._handshake_deadline < deadline:
                    deadline = self._handshake_deadline
                if self._keep_alive_at < deadline:
                    deadline = self._keep_alive_at
                if deadline <= last_step:
                    # The step just handled this timer and it is still due:
                    # the engine's loss timer can land a rounding error short
                    # of the packet's loss threshold. Retrying at once would
                    # spin forever under a mock clock (and busy-loop under a
                    # real one); wait a timer granularity, when the threshold
                    # has surely passed.
                    deadline = last_step + _TIMER_GRANULARITY
                if deadline == math.inf:
                    await inbox.wait()
                elif deadline > trio.current_time():
                    with trio.move_on_at(deadline):
                        await inbox.wait()
                else:
                    await trio.lowlevel.checkpoint()
            items = inbox.take()
            last_step = now = trio.current_time()
            await self._step(items, now, timer is not None and timer <= now)
            if self._stepped:
                self._stepped.unpark_all()
            if self.error is not None:
                return

    async def _step(
        self, datagrams: list[tuple[bytes, Address]], now: float, timer_due: bool
    ) -> None:
        """One step (see the module docstring). ``timer_due``: the engine's
        timer, as armed before the datagrams, is due. Datagrams can only
        postpone a timer (what they make overdue, aioquic handles as it
        receives them), so the timer is looked at again only then."""
        engine = self.engine
        self._wake_pending = False
        for data, addr in datagrams:
            engine.receive_datagram(data, addr, now)
        if timer_due:
            timer = engine.get_timer()
            if timer is not None and timer <= now:
                engine.handle_timer(now)
        self._dispatch()
        if self._keep_alive is not None:
            self._keep_connection_alive(now, bool(datagrams))
        if (
            engine.handshake is None
            and engine.close_reason is None
            and now >= self._handshake_deadline
        ):
            engine.close(
                INTERNAL_ERROR,
                "handshake timeout",
                transport=True,
                cause=CloseCause.HANDSHAKE_TIMEOUT,
            )
        sent = await self._flush(now)
        self._apply_cid_changes()
        tokens = engine.peer_reset_tokens()
        if tokens != self._reset_tokens:
            self._register_reset_tokens(tokens)
        reason = engine.close_reason
        if reason is not None:
            if not reason.by_peer:
                self._closing_datagrams = sent
            self._finish(reason)

    def _keep_connection_alive(self, now: float, heard: bool) -> None:
        """Send a PING when nothing was heard from the peer for the
        keep-alive interval (RFC 9000 section 10.1.2); the PING's
        acknowledgement restarts both idle timers."""
        engine = self.engine
        interval = self._keep_alive
        if interval is None or engine.handshake is None:
            return
        if engine.close_reason is not None:
            self._keep_alive_at = math.inf  # closing: nothing to keep alive
            return
        if heard or self._keep_alive_at == math.inf:
            self._keep_alive_at = now + interval
        elif now >= self._keep_alive_at:
            engine.send_ping()
            self._keep_alive_at = now + interval

    def _dispatch(self) -> None:
        engine = self.engine
        app = self.application
        events = engine.poll_events()
        self._apply_cid_changes()
        if engine.handshake is not None and not self.established.is_set():
            self.established.set()
            self.table.handshake_finished(self)
            app.on_connection_established(self.io, engine.handshake)
            if type(app).wait_for_data is not ApplicationOverQuic.wait_for_data:
                # The default never returns: no task for it.
                self.nursery_start(self._wait_for_data_loop)
        if engine.close_reason is not None:
            return
        if events:
            pending = self._pending_events
            pending.extend(events)
            if len(pending) > self._datagram_bound:
                self._shed_datagrams()
        if app.should_act():
            if self._pending_events:
                pending, self._pending_events = self._pending_events, []
                if not self._manual_credit:
                    # Credit is granted as data reaches the application, so
                    # events held while should_act() is false stay bounded
                    # by the flow-control windows.
                    for event in pending:
                        if isinstance(event, StreamDataReceived) and event.data:
                            engine.consume(event.stream_id, len(event.data))
                app.process_reads(self.io, pending)
            app.process_writes(self.io)

    def _shed_datagrams(self) -> None:
        """Stream events held while the application does not act are bounded
        by flow control; QUIC datagrams are not: keep only the newest
        ``datagram_queue_size`` of them (datagrams are unreliable anyway)."""
        pending = self._pending_events
        datagrams = [e for e in pending if isinstance(e, DatagramReceived)]
        excess = len(datagrams) - self.settings.datagram_queue_size
        if excess <= 0:
            return
        dropped = set(map(id, datagrams[:excess]))
        self._pending_events = [e for e in pending if id(e) not in dropped]
        self.quic_datagrams_receive_dropped += excess

    def _apply_cid_changes(self) -> None:
        """Keep the router's table in step with the engine's connection IDs."""
        issued, retired = self.engine.take_cid_changes()
        for cid in issued:
            if cid not in self._cids:
                self.register_cid(cid)
        for cid in retired:
            self._cids.discard(cid)
            self.table.remove(cid, self)

    def _register_reset_tokens(self, tokens: tuple[bytes, ...]) -> None:
        """Let the router send us datagrams for unknown connection IDs that
        end with one of the peer's stateless reset tokens in use (a reset's
        destination connection ID is random); the engine decides."""
        for token in self._reset_tokens:
            if token not in tokens:
                self.table.remove_reset_token(token, self)
        for token in tokens:
            self.table.add_reset_token(token, self)
        self._reset_tokens = tokens

    def nursery_start(self, fn: Any) -> None:
        if self.nursery is not None:
            self.nursery.start_soon(fn)

    async def _wait_for_data_loop(self) -> None:
        while self.error is None:
            await self.application.wait_for_data(self.io)
            self.wake()

    async def _flush(self, now: float) -> list[tuple[bytes, Address]]:
        datagrams = self.engine.datagrams_to_send(now)
        if datagrams:
            await self.socket.send_batch(datagrams)
        return datagrams

    async def _linger(self) -> None:
        """The closing period (RFC 9000 section 10.2.1): for three PTOs (at
        most the close grace period) answer whatever the peer still sends with
        our CONNECTION_CLOSE again, so a lost close costs the peer no idle
        timeout. Bounded in time and in replies."""
        datagrams = self._closing_datagrams
        self._closing_datagrams = []
        if not datagrams:
            return
        inbox = self._inbox
        replies = 0
        pto = self.engine.probe_timeout()
        interval = pto / 4  # answer at most this often (RFC 9000 section 10.2.1)
        next_reply = trio.current_time()
        # Before the client's address is validated, the replies count against
        # the anti-amplification limit (RFC 9000 section 8.1), which aioquic
        # no longer tracks once closing.
        budget = self.engine.amplification_budget()
        size = sum(len(datagram) for datagram, _ in datagrams)
        with trio.move_on_at(trio.current_time() + min(self._grace, 3 * pto)):
            while replies < _CLOSING_REPLIES:
                await inbox.wait()
                received = inbox.take()
                if budget is not None:
                    budget += 3 * sum(len(data) for data, _ in received)
                now = trio.current_time()
                if (
                    now >= next_reply
                    and received
                    and (budget is None or size <= budget)
                ):
                    await self.socket.send_batch(datagrams)
                    replies += 1
                    next_reply = now + interval
                    if budget is not None:
                        budget -= size

    def _finish(self, reason: CloseReason) -> None:
        """The connection is over: record why and tell the application."""
        if self.error is not None:
            return
        self.close_reason = reason
        self.error = ConnectionClosed.from_reason(reason)
        try:
            self.application.on_connection_close(self.io, reason)
        except Exception:
            logger.exception("trioquic: on_connection_close raised")

    async def _close_on_failure(self, exc: Exception) -> None:
        """The worker itself failed: tell the peer (CONNECTION_CLOSE with
        INTERNAL_ERROR) if the engine still can, so it does not wait for its
        idle timeout, and record the cause either way."""
        reason = f"internal error: {exc!r}"
        try:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self._grace
                self.engine.close(
                    INTERNAL_ERROR,
                    "internal error",
                    transport=True,
                    cause=CloseCause.INTERNAL_ERROR,
                )
                await self._flush(trio.current_time())
        except Exception:
            logger.exception("trioquic: could not send CONNECTION_CLOSE either")
        self._finish(
            CloseReason(
                error_code=INTERNAL_ERROR,
                reason=reason,
                cause=CloseCause.INTERNAL_ERROR,
            )
        )

    async def _close_on_cancel(self) -> None:
        """Shutdown: send CONNECTION_CLOSE within the grace period."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self._grace
            if self.error is None:
                engine = self.engine
                engine.poll_events()
                engine.close(0, "shutting down", cause=CloseCause.SHUTDOWN)
                self._closing_datagrams = await self._flush(trio.current_time())
                assert engine.close_reason is not None  # close() sets it
                self._finish(engine.close_reason)
            await self._linger()

    def _unregister(self) -> None:
        for cid in self._cids:
            self.table.remove(cid, self)
        self._cids.clear()
        for token in self._reset_tokens:
            self.table.remove_reset_token(token, self)
        self._reset_tokens = ()
        self.table.connection_finished(self)
