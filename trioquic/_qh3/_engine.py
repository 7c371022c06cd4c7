"""The qh3 engine of one connection: :class:`Qh3Engine`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import attrs
from qh3 import tls
from qh3.quic import events as qh3_events
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnectionError

from .._engine import Address
from .._errors import CloseCause, CloseReason, StreamStateError
from .._events import HandshakeInfo, QuicEvent
from .._settings import QuicSettings
from .._stateless_reset import StatelessResetKey, is_stateless_reset
from .._statistics import ConnectionStatistics
from ._connection import Qh3Connection
from ._h3 import Qh3H3Engine
from ._tickets import TicketStore, encode_session_ticket

#: What qh3 raises where aioquic raises or returns: its own error, asserts,
#: and the native core's ValueError / RuntimeError.
_QH3_ERRORS = (QuicConnectionError, AssertionError, ValueError, RuntimeError)
#: The initial RTT before a sample (as the endpoint configures it).
_INITIAL_RTT = 0.1
# Largest packet overhead around a DATAGRAM frame in a 1-RTT packet: first byte,
# a 20-byte destination CID, a 4-byte packet number, the 16-byte AEAD tag, the
# frame type and a 4-byte length.
_DATAGRAM_OVERHEAD = 1 + 20 + 4 + 16 + 1 + 4
#: TLS alert no_application_protocol, as a QUIC CRYPTO_ERROR (0x100 + 120).
_NO_APPLICATION_PROTOCOL = 0x178
_PADDING = 0
_INTERNAL_ERROR = 0x1
#: RFC 9002 section 6.2: the timer granularity, and the peer's max_ack_delay
#: until its transport parameters say otherwise.
_GRANULARITY = 0.001
_DEFAULT_MAX_ACK_DELAY = 0.025
#: The kind of the core's timer while its pacer holds packets back.
_PACING = "pacing"


@attrs.define
class _FinInFlight:
    """A FIN written alone, held while the stream's data may be
    unacknowledged (see :meth:`Qh3Engine._hold_fin_in_flight`)."""

    #: The last packet that may carry the stream's data.
    last: int
    #: The core's count of packets declared lost when ``last`` was set.
    losses: int
    #: Data declared lost may not have left again yet (the congestion
    #: window or the pacer held the last flush back): ``last`` moves on
    #: after the next flush too.
    unsettled: bool = False


class Qh3Engine:
    """One QUIC connection over qh3 (a :class:`~trioquic._engine.QuicEngine`).

    Synchronous: callers (the IoWorker, the applications) mutate it and the
    IoWorker flushes. qh3's exceptions and assertions stop here: a misuse
    raises :exc:`~trioquic.StreamStateError`, a failure inside qh3 ends the
    connection with INTERNAL_ERROR.
    """

    def __init__(
        self,
        configuration: QuicConfiguration,
        settings: QuicSettings,
        *,
        original_destination_cid: bytes | None = None,
        retry_source_cid: bytes | None = None,
        reset_key: StatelessResetKey | None,
        tickets: TicketStore | None = None,
        pins: tuple[bytes, ...] = (),
    ) -> None:
        self.session_ticket: bytes | None = None
        fetcher: Callable[[bytes], tls.SessionTicket | None] | None = None
        handler: Callable[[tls.SessionTicket], None] | None = None
        if configuration.is_client:
            handler = self._on_session_ticket
        elif tickets is not None:
            fetcher, handler = tickets.fetch, tickets.store
        self._tickets = tickets
        self.quic = Qh3Connection(
            configuration=configuration,
            original_destination_connection_id=original_destination_cid,
            retry_source_connection_id=retry_source_cid,
            connection_window=settings.connection_receive_window,
            max_streams_bidi=settings.max_concurrent_streams,
            max_streams_uni=settings.max_concurrent_streams,
            initial_rtt=_INITIAL_RTT,
            reset_key=reset_key,
            pins=pins,
            session_ticket_fetcher=fetcher,
            session_ticket_handler=handler,
        )
        self.is_client: bool = configuration.is_client
        self._retry_validated = retry_source_cid is not None
        self._host_cid = self.quic.host_cid
        self.handshake: HandshakeInfo | None = None
        self.close_reason: CloseReason | None = None
        self._cause: CloseCause | None = None
        self._datagram_queue_size = settings.datagram_queue_size
        self._datagrams_queued = 0
        #: The credit gate opened: take the events waiting in the core.
        self._drain_due = False
        #: Streams the core finished before the last take: their received
        #: sizes go at the next (the application has seen their events).
        self._retiring: list[int] = []
        #: RTT variation (RFC 9002 section 5.3) from the core's samples: the
        #: last sample seen, None before the first.
        self._rtt_sample: float | None = None
        self._rtt_smoothed: float | None = None
        self._rtt_variance = 0.0
        self.quic_datagrams_send_dropped = 0
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        #: Client, 0-RTT unresolved: streams whose data left as early data,
        #: and the FINs held back for them (see :meth:`send_stream_data`).
        self._early_streams: set[int] = set()
        self._held_fins: list[int] = []
        #: FINs written alone while packets were in flight, held until those
        #: are acknowledged or the stream's data is queued again (see
        #: :meth:`_hold_fin_in_flight`), by stream.
        self._fins_in_flight: dict[int, _FinInFlight] = {}

    def _on_session_ticket(self, ticket: tls.SessionTicket) -> None:
        self.session_ticket = encode_session_ticket(ticket)

    @property
    def handshake_complete(self) -> bool:
        return bool(self.quic._handshake_complete)

    def early_data_ready(self) -> bool:
        return (
            bool(self.quic._early_data_attempted) and not self.quic._zero_rtt_resolved
        )

    def set_peer_stream_limits(
        self, *, bidirectional: int, unidirectional: int
    ) -> None:
        self.quic.tq_max_streams_bidi = bidirectional
        self.quic.tq_max_streams_uni = unidirectional

    # -- identity ---------------------------------------------------------

    @property
    def host_cid(self) -> bytes:
        return self._host_cid

    def peer_address(self) -> Address | None:
        core = self.quic._core
        if core is None:
            return self.quic._remote_addr
        return core.active_path[2]

    # -- errors at the boundary --------------------------------------------------

    def _call(self, operation: Callable[..., Any], *args: Any) -> Any:
        """Run a qh3 call that must not fail; if it does, end the connection
        with INTERNAL_ERROR rather than let qh3's exception out."""
        try:
            return operation(*args)
        except _QH3_ERRORS as exc:
            self._fail(str(exc) or type(exc).__name__)
            return None

    def _fail(self, reason: str) -> None:
        if self.close_reason is not None:
            return
        with contextlib.suppress(*_QH3_ERRORS):
            self.quic.close(_INTERNAL_ERROR, _PADDING, reason[:200])
        self.close_reason = CloseReason(
            error_code=_INTERNAL_ERROR,
            reason=reason,
            cause=CloseCause.CLOSED_LOCALLY,
            is_transport=True,
        )

    # -- driving ------------------------------------------------------------

    def connect(self, addr: Address, now: float) -> None:
        self._call(self.quic.connect, addr, now)

    def change_connection_id(self) -> None:
        """Switch to the peer's next spare connection ID (a no-op when the
        peer issued none)."""
        with contextlib.suppress(*_QH3_ERRORS):  # no spare connection ID
            self.quic.change_connection_id()

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.datagrams_received += 1
        self.bytes_received += len(data)
        quic = self.quic
        if self._tickets is not None:
            self._tickets.now = now
        was_live = quic._close_event is None
        self._call(quic.receive_datagram, data, addr, now)
        self._note_rtt_sample()
        if quic._core is None and not self.is_client and self.close_reason is None:
            # A server's first datagram qh3 could not read: no path to answer
            # on. End the connection, sending nothing.
            self.abandon(
                CloseReason(
                    error_code=0x0A,
                    reason="the first datagram could not be parsed",
                    cause=CloseCause.CLOSED_LOCALLY,
                )
            )
            return
        if was_live and quic.tq_silent_end and self.close_reason is None:
            # The core ended the connection on reading this datagram, without
            # a close frame: a stateless reset (RFC 9000 section 10.3.1).
            self._on_stateless_reset()
        elif (
            was_live
            and quic._close_event is None
            and is_stateless_reset(data, self.peer_reset_tokens())
            and quic._core is not None
            and not quic._core.received_authenticated_packet
        ):
            self._on_stateless_reset()  # pragma: no cover - the core detects it

    def peer_reset_tokens(self) -> tuple[bytes, ...]:
        """The stateless reset token of the peer's first connection ID (the
        transport parameter); those of later IDs stay inside qh3's core,
        which detects resets that use them by itself. (A client announces
        none: a server's TLS bridge may be gone after the handshake.)"""
        tls_bridge = self.quic._tls
        if tls_bridge is None:
            return ()
        parameters = tls_bridge.remote_transport_parameters
        if parameters is None or parameters.stateless_reset_token is None:
            return ()
        return (parameters.stateless_reset_token,)

    def _on_stateless_reset(self) -> None:
        self.abandon(
            CloseReason(
                error_code=0, reason="stateless reset", cause=CloseCause.STATELESS_RESET
            )
        )

    def abandon(self, reason: CloseReason) -> None:
        quic = self.quic
        if self.close_reason is None:
            self.close_reason = reason
        if quic._close_event is None:
            quic._close_event = qh3_events.ConnectionTerminated(
                error_code=reason.error_code,
                frame_type=reason.frame_type,
                reason_phrase=reason.reason,
            )
        quic._core = None  # nothing more is sent or timed

    def send_ping(self) -> None:
        if self.quic._core is not None:
            self._call(self.quic.send_ping, 0)

    def get_timer(self) -> float | None:
        if self.close_reason is not None and self.quic._core is None:
            return None
        return self.quic.get_timer()

    def handle_timer(self, now: float) -> None:
        quic = self.quic
        core = quic._core
        if core is None:
            return
        timer = core.get_timer()
        if (
            timer is not None
            and timer[0] == "idle"
            and now >= timer[1]
            and quic._close_event is None
        ):
            self._cause = CloseCause.IDLE_TIMEOUT
        self._call(quic.handle_timer, now)
        if (
            self._cause is CloseCause.IDLE_TIMEOUT
            and self.close_reason is None
            and quic._close_event is None  # pragma: no cover - the core ends it
        ):
            self._cause = None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        quic = self.quic
        if quic._core is None:
            return []
        if self._early_streams and not self.early_data_ready():
            self._release_fins()
        if self._fins_in_flight:
            self._release_fins_in_flight()
        datagrams: list[tuple[bytes, Address]] | None = self._call(
            quic.datagrams_to_send, now
        )
        if self._fins_in_flight:
            self._follow_fins_in_flight(now)
        if not datagrams:
            return []
        self._datagrams_queued = 0
        self.datagrams_sent += len(datagrams)
        for data, _ in datagrams:
            self.bytes_sent += len(data)
        return datagrams

    def amplification_budget(self) -> int | None:
        """Server, before the client's address is validated (the handshake
        completed, or a Retry token): three times what it sent us, less what
        we sent; None when unlimited. qh3's core keeps to it."""
        quic = self.quic
        core = quic._core
        if self.is_client or core is None:
            return None
        if self._retry_validated or quic._handshake_complete:
            return None
        path = core.active_path
        return max(0, 3 * path[4] - path[3])

    def poll_events(self) -> list[QuicEvent]:
        quic = self.quic
        if self._drain_due:
            self._drain_due = False
            quic.tq_drain()
        events = quic.tq_events
        if events:
            quic.tq_events = []
        if self._retiring:
            received = quic.tq_received
            for stream_id in self._retiring:
                received.pop(stream_id, None)
            self._retiring = []
        if quic.tq_finished:
            self._retiring, quic.tq_finished = quic.tq_finished, []
        while (event := quic.next_event()) is not None:
            if isinstance(event, qh3_events.HandshakeCompleted):
                self.handshake = HandshakeInfo(
                    alpn_protocol=event.alpn_protocol,
                    session_resumed=event.session_resumed,
                    early_data_accepted=event.early_data_accepted,
                )
        if self.close_reason is None and quic._close_event is not None:
            self._note_close()
        elif self.handshake is None and not self.is_client:
            self._note_early_data()
        elif quic._tls is not None and not self.is_client:
            quic.tq_release_tls()  # once the handshake is complete
        return events

    def _note_early_data(self) -> None:
        """Server: the client's 0-RTT data was accepted: report the
        connection established now (0.5-RTT data), as the aioquic engine
        does."""
        tls_context = self.quic.tls
        if tls_context is None or not tls_context.early_data_accepted:
            return
        self.handshake = HandshakeInfo(
            alpn_protocol=tls_context.alpn_negotiated,
            session_resumed=True,
            early_data_accepted=True,
        )

    def take_cid_changes(self) -> tuple[list[bytes], list[bytes]]:
        quic = self.quic
        issued, retired = quic.tq_issued, quic.tq_retired
        if issued:
            quic.tq_issued = []
        if retired:
            quic.tq_retired = []
        return issued, retired

    def _note_close(self) -> None:
        if self.close_reason is not None:
            return
        quic = self.quic
        event = quic._close_event
        if event is None:  # pragma: no cover
            return
        cause = self._cause
        if cause is None:
            if quic.tq_peer_closed:
                cause = CloseCause.CLOSED_BY_PEER
            elif quic.tq_silent_end and not quic.tq_protocol_error:
                cause = CloseCause.IDLE_TIMEOUT
            else:
                cause = CloseCause.CLOSED_LOCALLY
        idle = cause is CloseCause.IDLE_TIMEOUT
        error_code = event.error_code
        self.close_reason = CloseReason(
            error_code=0 if idle else error_code,
            frame_type=None if idle else event.frame_type,
            reason="idle timeout" if idle else event.reason_phrase,
            cause=cause,
            is_transport=idle or event.frame_type is not None,
        )

    def end_logging(self) -> None:
        self.quic._end_trace()

    def _note_rtt_sample(self) -> None:
        """Follow the RTT variation (RFC 9002 section 5.3) from the core's
        samples: qh3's core keeps its own but does not expose it. A sample
        equal to the last one cannot be told from it and is not counted."""
        core = self.quic._core
        if core is None:
            return
        latest = core.latest_rtt
        if latest is None or latest == self._rtt_sample:
            return
        previous = self._rtt_smoothed
        if self._rtt_sample is None or previous is None:
            self._rtt_variance = latest / 2
        else:
            self._rtt_variance = 0.75 * self._rtt_variance + 0.25 * abs(
                previous - latest
            )
        self._rtt_smoothed = core.smoothed_rtt
        self._rtt_sample = latest

    def probe_timeout(self) -> float:
        """The current PTO in seconds, without backoff, as the aioquic
        engine's (RFC 9002 section 6.2.1): the smoothed RTT plus four RTT
        variations (at least the timer granularity) plus the peer's
        max_ack_delay; twice the initial RTT before the first sample."""
        smoothed = self._rtt_smoothed
        if smoothed is None:
            return 2 * _INITIAL_RTT
        return (
            smoothed
            + max(4 * self._rtt_variance, _GRANULARITY)
            + self._peer_max_ack_delay()
        )

    def _peer_max_ack_delay(self) -> float:
        quic = self.quic
        tls_bridge = quic._tls
        if tls_bridge is None:  # a server's, let go after the handshake
            kept = quic.tq_peer_max_ack_delay
            return _DEFAULT_MAX_ACK_DELAY if kept is None else kept
        parameters = tls_bridge.remote_transport_parameters
        if parameters is None or parameters.max_ack_delay is None:
            return _DEFAULT_MAX_ACK_DELAY
        return parameters.max_ack_delay / 1000

    def close(
        self,
        error_code: int,
        reason: str = "",
        *,
        transport: bool = False,
        cause: CloseCause | None = None,
    ) -> None:
        quic = self.quic
        if self.close_reason is not None:
            return
        if quic._close_event is not None:
            self._note_close()
            return
        self._cause = cause or CloseCause.CLOSED_LOCALLY
        try:
            quic.close(
                error_code=error_code,
                frame_type=_PADDING if transport else None,
                reason_phrase=reason,
            )
        except _QH3_ERRORS:
            quic._core = None
        self.close_reason = CloseReason(
            error_code=error_code,
            reason=reason,
            cause=self._cause,
            is_transport=transport,
        )

    # -- streams --------------------------------------------------------------

    def open_stream(self, unidirectional: bool) -> int | None:
        quic = self.quic
        stream_id = quic.get_next_available_stream_id(is_unidirectional=unidirectional)
        core = quic._core
        if core is not None and quic._handshake_complete:
            limits = core.stream_limits
            if stream_id // 4 >= (limits[1] if unidirectional else limits[0]):
                return None
        try:
            quic._open_stream(unidirectional)
        except _QH3_ERRORS:
            return None
        return stream_id

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        quic = self.quic
        core = quic._core
        if (
            self.is_client
            and self.early_data_ready()
            and self._hold_fin(stream_id, data, end_stream)
        ):
            return
        if (
            core is not None
            and quic._handshake_complete
            and not core.can_send_stream(stream_id)
        ):
            if not data and end_stream:
                # A FIN alone on a send side already over (the core
                # answered the peer's STOP_SENDING with a reset the
                # application has not seen yet): nothing to send.
                return
            raise StreamStateError(f"cannot send on stream {stream_id}")
        if end_stream and not data and self._hold_fin_in_flight(stream_id):
            return
        try:
            quic.send_stream_data(stream_id, data, end_stream=end_stream)
        except _QH3_ERRORS as exc:
            raise StreamStateError(
                f"cannot send on stream {stream_id}: {exc}"
            ) from None

    def _hold_fin(self, stream_id: int, data: bytes, end_stream: bool) -> bool:
        """Client, 0-RTT not yet accepted or rejected: hold back a FIN
        written alone after the stream's data left as early data.

        Such a FIN goes in a STREAM frame of its own (offset > 0, length 0),
        in a 0-RTT packet of its own. When the server rejects 0-RTT, qh3's
        core queues the data of rejected packets again but loses that FIN
        (its stream's send side does not take back an empty range past the
        unacknowledged data, so the FIN is never pending again): the peer
        gets the data as 1-RTT and never the end of the stream. The FIN held
        here goes once 0-RTT is resolved (:meth:`_release_fins`). A FIN
        written with data, or while the data is still queued, leaves in the
        same frame as data and is queued again with it."""
        if data:
            self._early_streams.add(stream_id)
            return False
        if (
            end_stream
            and stream_id in self._early_streams
            and not self.send_buffered(stream_id)
        ):
            self._held_fins.append(stream_id)
            return True
        return False

    def _release_fins(self) -> None:
        """0-RTT resolved: send the FINs held back meanwhile."""
        held, self._held_fins = self._held_fins, []
        self._early_streams.clear()
        for stream_id in held:
            # (the peer may have stopped the stream meanwhile)
            with contextlib.suppress(*_QH3_ERRORS):
                self.quic.send_stream_data(stream_id, b"", end_stream=True)

    def _hold_fin_in_flight(self, stream_id: int) -> bool:
        """Hold back a FIN written alone while packets are in flight (the
        stream's data may be among them), until the data is acknowledged.

        Such a FIN goes in a STREAM frame of its own (offset > 0, length 0).
        When qh3's core declares that packet lost while the data before the
        FIN is still unacknowledged (the data's packets lost too, or sent
        again after a spurious loss, under reordering or duplication), it
        does not queue the FIN again: the peer gets the data and never the
        end of the stream (the connection idles out). A lost FIN-only frame
        after the data was acknowledged is sent again, and a FIN written
        while data is queued leaves with that data (and is queued again with
        it). The FIN held here goes once the packets outstanding now are
        acknowledged, with no packet declared lost meanwhile: a loss may have
        queued the data again, sent in later packets, which are then waited
        for in turn (:meth:`_follow_fins_in_flight`). It goes at once when
        nothing is in flight (the core's outstanding packets include
        ACK-only ones, which the peer acknowledges only with its next
        ack-eliciting packet), or when the stream's data is queued (it then
        leaves with the data): see :meth:`_release_fins_in_flight`."""
        core = self.quic._core
        if core is None or not core.bytes_in_flight or self.send_buffered(stream_id):
            return False
        outstanding = self._outstanding_packets()
        if not outstanding:
            return False
        self._fins_in_flight[stream_id] = _FinInFlight(
            last=max(outstanding), losses=core.loss_total
        )
        return True

    def _outstanding_packets(self) -> list[int]:
        """The numbers of the 1-RTT packets the core awaits acknowledgements
        of: those in flight, and ACK-only ones (acknowledged along with the
        next ack-eliciting packet the peer acknowledges)."""
        core = self.quic._core
        if core is None:
            return []
        return [number for number, _, _ in core.outstanding_application_packets]

    def _release_fins_in_flight(self) -> None:
        core = self.quic._core
        idle = core is None or not core.bytes_in_flight
        losses = 0 if core is None else core.loss_total
        oldest = min(self._outstanding_packets(), default=None)
        for stream_id, held in list(self._fins_in_flight.items()):
            acknowledged = oldest is None or (
                oldest > held.last and held.losses == losses and not held.unsettled
            )
            if idle or acknowledged or self.send_buffered(stream_id):
                del self._fins_in_flight[stream_id]
                # (the peer may have stopped the stream meanwhile)
                with contextlib.suppress(*_QH3_ERRORS):
                    self.quic.send_stream_data(stream_id, b"", end_stream=True)

    def _follow_fins_in_flight(self, now: float) -> None:
        """After a flush: packets declared lost since a held FIN's packets
        were counted may have held its stream's data, which the core then
        sends again: wait for the packets sent up to now as well, and after
        the next flush too while the congestion window or the pacer holds
        packets back (the data may not have left yet)."""
        core = self.quic._core
        if core is None:
            return
        losses = core.loss_total
        newest = max(self._outstanding_packets(), default=None)
        unsettled: bool | None = None
        for held in self._fins_in_flight.values():
            if held.losses == losses and not held.unsettled:
                continue
            if unsettled is None:
                timer = core.get_timer()
                unsettled = self.sending_held(now) or (
                    timer is not None and timer[0] == _PACING
                )
            if newest is not None:
                held.last = max(held.last, newest)
            held.losses = losses
            held.unsettled = unsettled

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        if stream_id in self._held_fins:
            self._held_fins.remove(stream_id)
        self._fins_in_flight.pop(stream_id, None)
        with contextlib.suppress(*_QH3_ERRORS):  # finished: nothing left to reset
            self.quic.reset_stream(stream_id, error_code)

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        with contextlib.suppress(*_QH3_ERRORS):  # already finished or discarded
            self.quic.stop_stream(stream_id, error_code)

    def sending_held(self, now: float) -> bool:
        core = self.quic._core
        if core is None:
            return False
        return bool(core.congestion_window - core.bytes_in_flight < 1200)

    def send_buffered(self, stream_id: int) -> int:
        """Bytes queued for ``stream_id`` that have not left yet (qh3 counts
        only those; what is in flight is held by its core, bounded by the
        congestion window)."""
        try:
            return int(self.quic.get_send_buffer_size(stream_id))
        except _QH3_ERRORS:
            return 0

    def has_unacknowledged_stream_data(self) -> bool:
        core = self.quic._core
        if core is None:
            return False
        if self.send_buffered_total() or self._held_fins or self._fins_in_flight:
            return True
        # Packets that carry stream frames count in flight until acknowledged
        # or declared lost (then their frames are queued again). The core's
        # outstanding packets include ACK-only ones, which the peer
        # acknowledges only with its next ack-eliciting packet.
        return bool(core.bytes_in_flight)

    def send_buffered_total(self) -> int:
        try:
            return int(self.quic.get_send_buffer_size())
        except _QH3_ERRORS:
            return 0

    def consume(self, stream_id: int, count: int) -> bool:
        if not count:
            return False
        if self.quic.tq_consume(stream_id, count):
            self._drain_due = True
        return self._drain_due

    def credit_unread(self, stream_id: int, final_size: int) -> bool:
        if self.quic.tq_release(stream_id):
            self._drain_due = True
        return self._drain_due

    def forget_stream(self, stream_id: int) -> None:
        if self.quic.tq_release(stream_id):
            self._drain_due = True

    def received_final_size(self, stream_id: int) -> int | None:
        """The bytes received on the stream (the final size once its FIN
        arrived; on a reset, what arrived before it: qh3's core does not say
        the reset's final size), counted as the core delivers them in order;
        None once the core has finished with the stream, as aioquic's is
        once it discards the stream."""
        return self.quic.tq_received.get(stream_id)

    # -- datagrams ----------------------------------------------------------

    def max_datagram_size(self) -> int:
        quic = self.quic
        remote = quic._remote_max_datagram_frame_size
        if remote is None:
            return 0
        local = quic._configuration.max_datagram_size - _DATAGRAM_OVERHEAD
        frame_limit = remote - 1 - (1 if remote < 64 else 2 if remote < 16384 else 4)
        return max(0, min(local, frame_limit))

    def send_datagram(self, data: bytes) -> None:
        if self._datagrams_queued >= self._datagram_queue_size:
            self.quic_datagrams_send_dropped += 1
            return
        try:
            self.quic.send_datagram_frame(data)
        except _QH3_ERRORS:
            self.quic_datagrams_send_dropped += 1
            return
        self._datagrams_queued += 1

    # -- observation ----------------------------------------------------------

    def statistics(self) -> ConnectionStatistics:
        core = self.quic._core
        rtt = None if core is None else core.smoothed_rtt
        latest = None if core is None else core.latest_rtt
        return ConnectionStatistics(
            smoothed_rtt=rtt if rtt is not None else _INITIAL_RTT,
            min_rtt=latest if latest is not None else 0.0,
            congestion_window=0 if core is None else core.congestion_window,
            bytes_in_flight=0 if core is None else core.bytes_in_flight,
            datagrams_sent=self.datagrams_sent,
            datagrams_received=self.datagrams_received,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            quic_datagrams_send_dropped=self.quic_datagrams_send_dropped,
        )

    def create_h3(
        self,
        *,
        max_field_section_size: int,
        enable_connect_protocol: bool,
        enable_datagrams: bool,
        max_push_id: int | None = None,
    ) -> Qh3H3Engine:
        return Qh3H3Engine(
            self.quic,
            max_field_section_size=max_field_section_size,
            enable_connect_protocol=enable_connect_protocol,
            enable_datagrams=enable_datagrams,
            max_push_id=max_push_id,
        )
