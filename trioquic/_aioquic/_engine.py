"""The aioquic engine of one connection: :class:`AioquicEngine`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.buffer import size_uint_var
from aioquic.quic import events as aq_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import END_STATES as _END_STATES
from aioquic.quic.connection import QuicConnectionState
from aioquic.quic.packet import QuicErrorCode, QuicFrameType
from aioquic.quic.stream import QuicStream as _AioquicStream

from .._engine import Address
from .._errors import CloseCause, CloseReason, StreamStateError
from .._events import (
    DatagramReceived,
    HandshakeInfo,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamResetReceived,
)
from .._settings import QuicSettings
from .._stateless_reset import StatelessResetKey, is_stateless_reset
from .._statistics import ConnectionStatistics
from ._connection import TrioquicConnection
from ._h3 import AioquicH3Engine
from ._tickets import TicketStore, encode_session_ticket

#: Capacity left to the TLS buffers of discarded packet number spaces.
_SPENT_BUFFER_SIZE = 64
#: Capacity left to the 1-RTT TLS buffer once the handshake is confirmed
#: (aioquic gives it 16 KiB): all TLS writes there after the handshake is a
#: server's NewSessionTicket (a few hundred bytes), and that is written
#: together with the handshake's end.
_ONE_RTT_BUFFER_SIZE = 1024

# Largest packet overhead around a DATAGRAM frame in a 1-RTT packet: first byte,
# a 20-byte destination CID, a 4-byte packet number, the 16-byte AEAD tag, the
# frame type and a 4-byte length.
_DATAGRAM_OVERHEAD = 1 + 20 + 4 + 16 + 1 + 4


class AioquicEngine:
    """One QUIC connection over aioquic (a :class:`~trioquic._engine.QuicEngine`).

    Synchronous: callers (the IoWorker, the applications) mutate it and the
    IoWorker flushes. aioquic's exceptions stop here: a misuse raises
    :exc:`~trioquic.StreamStateError`.
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
    ) -> None:
        #: The newest session ticket the server gave this client (opaque bytes
        #: for ``QuicSettings.session_ticket``), or None.
        self.session_ticket: bytes | None = None
        fetcher: Callable[[bytes], tls.SessionTicket | None] | None = None
        handler: Callable[[tls.SessionTicket], None] | None = None
        if configuration.is_client:
            handler = self._on_session_ticket
        elif tickets is not None:
            fetcher, handler = tickets.fetch, tickets.store
        self._tickets = tickets
        self.quic = TrioquicConnection(
            configuration=configuration,
            original_destination_connection_id=original_destination_cid,
            retry_source_connection_id=retry_source_cid,
            stream_window=settings.stream_receive_window,
            connection_window=settings.connection_receive_window,
            reset_key=reset_key,
            connection_id_limit=settings.active_connection_id_limit,
            new_cid=None if settings.quic_lb is None else settings.quic_lb.generate,
            session_ticket_fetcher=fetcher,
            session_ticket_handler=handler,
        )
        for limit in (
            self.quic._local_max_streams_bidi,
            self.quic._local_max_streams_uni,
        ):
            limit.value = limit.sent = settings.max_concurrent_streams
        self.is_client: bool = configuration.is_client
        #: Server, client sent a valid Retry token: its address is validated
        #: (RFC 9000 section 8.1.2), so its path is exempt from the 3x limit
        #: as soon as aioquic makes it (with the first datagram).
        self._retry_validated = retry_source_cid is not None
        self._issued_cids: list[bytes] = []
        self._retired_cids: list[bytes] = []
        self._host_cids_seen = 1
        self._handshake_memory_released = False
        self.handshake: HandshakeInfo | None = None
        self.close_reason: CloseReason | None = None
        #: Why the connection is ending, when trioquic (not aioquic) knows it
        #: first: a local close, an idle timeout.
        self._cause: CloseCause | None = None
        self._datagram_queue_size = settings.datagram_queue_size
        self.quic_datagrams_send_dropped = 0
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    def _on_session_ticket(self, ticket: tls.SessionTicket) -> None:
        self.session_ticket = encode_session_ticket(ticket)

    @property
    def handshake_complete(self) -> bool:
        return bool(self.quic._handshake_complete)

    def early_data_ready(self) -> bool:
        """Client, after connect(): whether 0-RTT keys are in place (a session
        ticket that allows early data was given), so data written now leaves
        before the handshake completes."""
        crypto = self.quic._cryptos.get(tls.Epoch.ZERO_RTT)
        return crypto is not None and crypto.send.is_valid()

    def set_peer_stream_limits(
        self, *, bidirectional: int, unidirectional: int
    ) -> None:
        """How many streams of each kind the peer may have open at once
        (before the handshake: they are transport parameters). HTTP/3 needs a
        different bound for its few unidirectional streams than for requests."""
        self.quic._local_max_streams_bidi.value = bidirectional
        self.quic._local_max_streams_bidi.sent = bidirectional
        self.quic._local_max_streams_uni.value = unidirectional
        self.quic._local_max_streams_uni.sent = unidirectional

    # -- identity ---------------------------------------------------------

    @property
    def host_cid(self) -> bytes:
        return self.quic.host_cid

    def peer_address(self) -> Address | None:
        return self.quic.get_peer_address()

    # -- driving ------------------------------------------------------------

    def connect(self, addr: Address, now: float) -> None:
        self.quic.connect(addr, now=now)

    def change_connection_id(self) -> None:
        """Switch to the peer's next spare connection ID, retiring the one in
        use (a no-op when the peer issued no spare one)."""
        self.quic.change_connection_id()

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.datagrams_received += 1
        self.bytes_received += len(data)
        quic = self.quic
        processed = quic.tq_packets_processed
        if self._tickets is not None:
            self._tickets.now = now  # the handshake may store or fetch one
        quic.receive_datagram(data, addr, now=now)
        if not quic._network_paths:
            # A server's first datagram that aioquic could not even parse
            # (the router lets through only well-formed Initials; this is the
            # backstop): aioquic has no path to answer on, and would fail in
            # datagrams_to_send. End the connection, sending nothing.
            self.abandon(
                CloseReason(
                    error_code=QuicErrorCode.PROTOCOL_VIOLATION,
                    reason="the first datagram could not be parsed",
                    cause=CloseCause.CLOSED_LOCALLY,
                )
            )
            return
        if self._retry_validated:
            self._validate_retry_path()
        # Stateless reset (RFC 9000 section 10.3.1), which aioquic ignores: a
        # datagram of which not a single packet could be processed, ending
        # with one of the peer's tokens in use. Checked only in that rare
        # case, so the per-datagram path pays one integer comparison.
        if (
            quic.tq_packets_processed == processed
            and quic._state not in _END_STATES
            and is_stateless_reset(data, self.peer_reset_tokens())
        ):
            self._on_stateless_reset()

    def _validate_retry_path(self) -> None:
        paths = self.quic._network_paths
        if paths:
            paths[0].is_validated = True
            self._retry_validated = False

    def peer_reset_tokens(self) -> tuple[bytes, ...]:
        """The stateless reset tokens of the peer's connection IDs we use: the
        current one, and those reserved for paths being probed (RFC 9000
        section 10.3.1: never those of unused or retired IDs)."""
        quic = self.quic
        token = quic._peer_cid.stateless_reset_token
        tokens: tuple[bytes, ...] = (token,) if token else ()
        for path in quic._network_paths:
            peer_cid = path.peer_cid
            if peer_cid is not None and peer_cid.stateless_reset_token:
                tokens += (peer_cid.stateless_reset_token,)
        return tokens

    def _on_stateless_reset(self) -> None:
        """End the connection at once, sending nothing (RFC 9000 section
        10.3.1: enter the draining period... which has nothing left to do)."""
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
            quic._close_event = aq_events.ConnectionTerminated(
                error_code=reason.error_code,
                frame_type=reason.frame_type,
                reason_phrase=reason.reason,
            )
        quic._close_end()

    def send_ping(self) -> None:
        self.quic.send_ping(0)

    def get_timer(self) -> float | None:
        return self.quic.get_timer()

    def handle_timer(self, now: float) -> None:
        quic = self.quic
        close_at = quic._close_at
        if not self.datagrams_sent and (close_at is None or now < close_at):
            # Nothing sent yet: aioquic's loss-detection deadline counts from
            # the time of the last packet sent, 0 when there is none, so it
            # lies in the past and would declare a probe timeout before the
            # first packet leaves. That PTO would double every later one (a
            # lost first Initial resent after 0.4 s instead of 0.2 s). Only
            # the idle deadline can be due now.
            return
        if quic._close_event is None and close_at is not None and now >= close_at:
            # With no close under way, aioquic's close deadline is the idle
            # deadline: this call ends the connection by idle timeout.
            self._cause = CloseCause.IDLE_TIMEOUT
        quic.handle_timer(now=now)
        if (
            self.is_client
            and quic._handshake_complete
            and not quic._handshake_confirmed
            and quic._close_event is None
        ):
            # Between the handshake's completion and HANDSHAKE_DONE, aioquic's
            # client probes only with Handshake packets. If its address
            # changed meanwhile (NAT rebinding), the server cannot read those
            # from a new address and the connection dies at its idle timeout:
            # also probe with a 1-RTT PING, which the server can read and
            # which moves its path to us (RFC 9001 section 4.1.2).
            quic.send_ping(0)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        quic = self.quic
        if not quic._network_paths:
            return []  # a server that never read a datagram has nowhere to send
        budget = self.amplification_budget()
        datagrams = quic.datagrams_to_send(now=now)
        if budget is not None and datagrams:
            datagrams = self._within_budget(datagrams, budget)
        host_cids = quic._host_cids
        if len(host_cids) != self._host_cids_seen:
            # aioquic announces a new ID (ConnectionIdIssued) while writing its
            # NEW_CONNECTION_ID frame, i.e. during this call: report every ID
            # it holds now, so the router knows them before the peer can use
            # them (the event that follows is a harmless repeat).
            self._host_cids_seen = len(host_cids)
            self._issued_cids.extend(c.cid for c in host_cids)
        self.datagrams_sent += len(datagrams)
        for data, _ in datagrams:
            self.bytes_sent += len(data)
        return datagrams

    def amplification_budget(self) -> int | None:
        """Server, before the client's address is validated: how many more
        bytes we may send it (RFC 9000 section 8.1: three times what it sent
        us); None when unlimited."""
        quic = self.quic
        if self.is_client or not quic._network_paths:
            return None
        path = quic._network_paths[0]
        if path.is_validated:
            return None
        return max(0, 3 * path.bytes_received - path.bytes_sent)

    def _within_budget(
        self, datagrams: list[tuple[bytes, Address]], budget: int
    ) -> list[tuple[bytes, Address]]:
        """aioquic keeps to the anti-amplification limit, except for the
        CONNECTION_CLOSE it sends when closing (for example on a handshake
        timeout, after the client went silent): drop what exceeds it. aioquic
        has counted those bytes as sent, which only makes it stricter."""
        address = self.quic._network_paths[0].addr
        kept: list[tuple[bytes, Address]] = []
        for datagram in datagrams:
            if datagram[1] == address:
                if len(datagram[0]) > budget:
                    continue
                budget -= len(datagram[0])
            kept.append(datagram)
        return kept

    def poll_events(self) -> list[QuicEvent]:
        """Drain aioquic's events: lifecycle ones are recorded on self, the
        rest returned as trioquic events for the application."""
        out: list[QuicEvent] = []
        quic = self.quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, aq_events.StreamDataReceived):
                out.append(
                    StreamDataReceived(event.stream_id, event.data, event.end_stream)
                )
            elif isinstance(event, aq_events.StreamReset):
                out.append(StreamResetReceived(event.stream_id, event.error_code))
            elif isinstance(event, aq_events.StopSendingReceived):
                out.append(StopSendingReceived(event.stream_id, event.error_code))
            elif isinstance(event, aq_events.DatagramFrameReceived):
                out.append(DatagramReceived(event.data))
            elif isinstance(event, aq_events.ConnectionIdIssued):
                self._issued_cids.append(event.connection_id)
            elif isinstance(event, aq_events.ConnectionIdRetired):
                self._retired_cids.append(event.connection_id)
            elif isinstance(event, aq_events.HandshakeCompleted):
                self.handshake = HandshakeInfo(
                    alpn_protocol=event.alpn_protocol,
                    session_resumed=event.session_resumed,
                    early_data_accepted=event.early_data_accepted,
                )
            elif isinstance(event, aq_events.ConnectionTerminated):
                self._note_close()
        if self.close_reason is None and quic._close_event is not None:
            self._note_close()
        elif self.handshake is None and not self.is_client:
            self._note_early_data()
        elif not self._handshake_memory_released and quic._handshake_confirmed:
            self._release_handshake_memory()
        return out

    def _release_handshake_memory(self) -> None:
        """Once the handshake is confirmed the Initial and Handshake spaces are
        discarded, but aioquic keeps their 16 KiB TLS buffers and their
        crypto streams (with any unacknowledged handshake data) for the
        connection's life. Give that memory back, and shrink the 1-RTT TLS
        buffer (16 KiB, empty by now) too: about 40 % of what an idle
        connection costs."""
        self._handshake_memory_released = True
        quic = self.quic
        for epoch in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE):
            space = quic._spaces.get(epoch)
            if space is None or not space.discarded:
                continue
            if epoch in quic._crypto_buffers:
                quic._crypto_buffers[epoch] = Buffer(capacity=_SPENT_BUFFER_SIZE)
            if epoch in quic._crypto_streams:
                quic._crypto_streams[epoch] = _AioquicStream()
        one_rtt = quic._crypto_buffers.get(tls.Epoch.ONE_RTT)
        if (
            one_rtt is not None
            and one_rtt.tell() == 0
            and one_rtt.capacity > (_ONE_RTT_BUFFER_SIZE)
        ):
            quic._crypto_buffers[tls.Epoch.ONE_RTT] = Buffer(
                capacity=_ONE_RTT_BUFFER_SIZE
            )

    def _note_early_data(self) -> None:
        """Server: when the client's 0-RTT data was accepted, the connection
        is usable before the handshake completes (we can already answer in
        1-RTT packets): report it established now, so the application
        handles 0-RTT requests at once (RFC 9001 section 4.1.1's 0.5-RTT
        data) instead of a round trip later."""
        quic = self.quic
        tls_context = getattr(quic, "tls", None)
        if tls_context is None or not tls_context.early_data_accepted:
            return
        crypto = quic._cryptos.get(tls.Epoch.ONE_RTT)
        if crypto is None or not crypto.send.is_valid():
            return
        self.handshake = HandshakeInfo(
            alpn_protocol=tls_context.alpn_negotiated,
            session_resumed=True,
            early_data_accepted=True,
        )

    def take_cid_changes(self) -> tuple[list[bytes], list[bytes]]:
        issued, retired = self._issued_cids, self._retired_cids
        if issued:
            self._issued_cids = []
        if retired:
            self._retired_cids = []
        return issued, retired

    def _note_close(self) -> None:
        """Record why aioquic ended the connection (its close event)."""
        if self.close_reason is not None:
            return
        event = self.quic._close_event
        if event is None:  # pragma: no cover - aioquic always sets it first
            return
        cause = self._cause
        if cause is None:
            # Not ours: the peer's CONNECTION_CLOSE (aioquic then drains), or
            # aioquic closing on an error in the peer's input.
            cause = (
                CloseCause.CLOSED_BY_PEER
                if self.quic._state is QuicConnectionState.DRAINING
                else CloseCause.CLOSED_LOCALLY
            )
        idle = cause is CloseCause.IDLE_TIMEOUT
        self.close_reason = CloseReason(
            error_code=0 if idle else event.error_code,
            frame_type=None if idle else event.frame_type,
            reason="idle timeout" if idle else event.reason_phrase,
            cause=cause,
            is_transport=idle or event.frame_type is not None,
        )

    def end_logging(self) -> None:
        """Write the connection's qlog trace now. aioquic writes it only at the
        end of its closing period, which trioquic does not wait out."""
        trace = self.quic._quic_logger
        logger = self.quic.configuration.quic_logger
        if trace is not None and logger is not None:
            self.quic._quic_logger = None
            logger.end_trace(trace)

    def probe_timeout(self) -> float:
        """The current PTO in seconds (RFC 9002 section 6.2)."""
        return float(self.quic._loss.get_probe_timeout())

    def close(
        self,
        error_code: int,
        reason: str = "",
        *,
        transport: bool = False,
        cause: CloseCause | None = None,
    ) -> None:
        """Start closing; CONNECTION_CLOSE goes out with the next flush and
        :attr:`close_reason` is set now (if the connection had not ended
        already)."""
        quic = self.quic
        if self.close_reason is not None:
            return
        if quic._close_event is not None:
            self._note_close()  # it ended first
            return
        self._cause = cause or CloseCause.CLOSED_LOCALLY
        quic.close(
            error_code=error_code,
            frame_type=QuicFrameType.PADDING if transport else None,
            reason_phrase=reason,
        )
        self.close_reason = CloseReason(
            error_code=error_code,
            reason=reason,
            cause=self._cause,
            is_transport=transport,
        )

    # -- streams --------------------------------------------------------------

    def open_stream(self, unidirectional: bool) -> int | None:
        """Allocate a local stream, or None while the peer's limit forbids it."""
        quic = self.quic
        stream_id = quic.get_next_available_stream_id(is_unidirectional=unidirectional)
        limit = (
            quic._remote_max_streams_uni
            if unidirectional
            else quic._remote_max_streams_bidi
        )
        if stream_id // 4 >= limit:
            return None
        quic.send_stream_data(stream_id, b"")
        return stream_id

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        try:
            self.quic.send_stream_data(stream_id, data, end_stream=end_stream)
        except (ValueError, RuntimeError, AssertionError) as exc:
            # aioquic: a receive-only or unknown peer stream, data after FIN
            # or after a reset.
            raise StreamStateError(
                f"cannot send on stream {stream_id}: {exc}"
            ) from None

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        with contextlib.suppress(ValueError):  # finished: nothing left to reset
            self.quic.reset_stream(stream_id, error_code)

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        with contextlib.suppress(ValueError):  # already finished or discarded
            self.quic.stop_stream(stream_id, error_code)

    def sending_held(self, now: float) -> bool:
        """Whether new stream data could not leave now anyway: the congestion
        window is full (an ACK or a loss timer will run the next step) or the
        pacer holds the next packet (its timer is armed). Then a write need
        not wake the worker."""
        quic = self.quic
        loss = quic._loss
        if loss.congestion_window - loss.bytes_in_flight < quic._max_datagram_size:
            return True
        pacing_at = quic._pacing_at
        return pacing_at is not None and pacing_at > now

    def send_buffered(self, stream_id: int) -> int:
        """Unacknowledged plus unsent bytes held for ``stream_id``."""
        stream = self.quic._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return sender._buffer_stop - sender._buffer_start

    def has_unacknowledged_stream_data(self) -> bool:
        """Whether some stream data, FIN or RESET_STREAM written so far has
        not been acknowledged yet (what a graceful close waits for)."""
        for stream in self.quic._streams.values():
            sender = stream.sender
            if sender.is_finished:
                continue
            if (
                sender._buffer_stop > sender._buffer_start
                or sender._buffer_fin is not None
                or sender._reset_error_code is not None
            ):
                return True
        return False

    def consume(self, stream_id: int, count: int) -> bool:
        return self.quic.consume(stream_id, count) if count else False

    def credit_unread(self, stream_id: int, final_size: int) -> bool:
        unread = final_size - self.quic.tq_consumed.get(stream_id, 0)
        return self.consume(stream_id, unread) if unread > 0 else False

    def forget_stream(self, stream_id: int) -> None:
        self.quic.forget_stream(stream_id)

    def received_final_size(self, stream_id: int) -> int | None:
        stream = self.quic._streams.get(stream_id)
        if stream is None:
            return None
        return stream.receiver.highest_offset

    # -- datagrams ----------------------------------------------------------

    def max_datagram_size(self) -> int:
        """Largest QUIC datagram payload that can be sent now (0: disabled)."""
        remote = self.quic._remote_max_datagram_frame_size
        if remote is None:
            return 0
        local = self.quic._max_datagram_size - _DATAGRAM_OVERHEAD
        frame_limit = remote - 1 - size_uint_var(remote)
        return max(0, min(local, frame_limit))

    def send_datagram(self, data: bytes) -> None:
        pending = self.quic._datagrams_pending
        if len(pending) >= self._datagram_queue_size:
            pending.popleft()
            self.quic_datagrams_send_dropped += 1
        self.quic.send_datagram_frame(data)

    # -- observation ----------------------------------------------------------

    def statistics(self) -> ConnectionStatistics:
        loss = self.quic._loss
        min_rtt = loss._rtt_min
        return ConnectionStatistics(
            smoothed_rtt=loss._rtt_smoothed,
            min_rtt=0.0 if min_rtt == float("inf") else min_rtt,
            congestion_window=loss.congestion_window,
            bytes_in_flight=loss.bytes_in_flight,
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
    ) -> AioquicH3Engine:
        return AioquicH3Engine(
            self.quic,
            max_field_section_size=max_field_section_size,
            enable_connect_protocol=enable_connect_protocol,
            enable_datagrams=enable_datagrams,
            max_push_id=max_push_id,
        )
