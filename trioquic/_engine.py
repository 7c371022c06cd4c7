"""The seam between trioquic and aioquic's sans-io QUIC state machine.

Only this module (and the HTTP/3 driver's seam) imports ``aioquic.quic``. It
builds aioquic configurations from :class:`~trioquic.QuicSettings`, wraps one
aioquic connection per QUIC connection in an :class:`Engine`, translates
aioquic's events and errors into trioquic's, and adds what aioquic lacks:

* receive credit granted as the application *consumes* data, instead of
  aioquic's "double the window whenever half of it has arrived", so a slow
  reader holds a bounded amount of memory (``_FlowControlledConnection``);
* a bounded outgoing datagram queue;
* stateless reset tokens derived from the connection ID with the endpoint's
  static key (HMAC, RFC 9000 section 10.3.2) instead of random ones, so the
  router can reset connections it has no state for; and the detection of
  the peer's stateless resets, which aioquic ignores;
* the anti-amplification limit (RFC 9000 section 8.1) applied to the
  CONNECTION_CLOSE aioquic sends on an unvalidated path, which it exempts.

These rely on aioquic internals (``_streams``, ``_local_max_data``,
``_write_stream_limits``, ``_write_connection_limits``, ``_close_event``,
``_state``, ``_host_cids``, ``_replenish_connection_ids``,
``_payload_received``, ``_peer_cid``, ``_network_paths``, ``_close_end``,
and the stream sender's ``_buffer_start``, ``_buffer_stop``,
``_buffer_fin`` and ``_reset_error_code``). They are pinned by the version
range in ``pyproject.toml`` and
``tests/test_engine.py::test_aioquic_internals_we_rely_on`` (and, for reset
and amplification, ``tests/test_stateless_reset.py``'s
``test_aioquic_internals_for_stateless_reset_and_amplification``) fails
loudly if they change.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import pathlib
import ssl
import types
from collections import OrderedDict
from collections.abc import Callable
from typing import IO, Any

import attrs
from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.buffer import size_uint_var
from aioquic.quic import connection as _aioquic_connection_module
from aioquic.quic import events as aq_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import (
    CONNECTION_LIMIT_FRAME_CAPACITY,
    MAX_STREAM_DATA_FRAME_CAPACITY,
    QuicConnectionId,
    QuicConnectionState,
)
from aioquic.quic.connection import (
    END_STATES as _END_STATES,
)
from aioquic.quic.connection import (
    QuicConnection as _AioquicConnection,
)
from aioquic.quic.crypto import NoCallback
from aioquic.quic.logger import QuicFileLogger
from aioquic.quic.packet import QuicErrorCode, QuicFrameType, encode_quic_retry
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketPacer, QuicPacketSpace
from aioquic.quic.stream import QuicStream as _AioquicStream

from ._errors import CloseReason
from ._events import (
    DatagramReceived,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamResetReceived,
)
from ._settings import QuicSettings
from ._stateless_reset import StatelessResetKey, is_stateless_reset

Address = Any

#: Capacity left to the TLS buffers of discarded packet number spaces.
_SPENT_BUFFER_SIZE = 64
#: Capacity left to the 1-RTT TLS buffer once the handshake is confirmed
#: (aioquic gives it 16 KiB): all TLS writes there after the handshake is a
#: server's NewSessionTicket (a few hundred bytes), and that is written
#: together with the handshake's end.
_ONE_RTT_BUFFER_SIZE = 1024

#: Longest burst the pacer allows, in seconds of the pacing rate.
_PACING_BURST = 0.002

# Largest packet overhead around a DATAGRAM frame in a 1-RTT packet: first byte,
# a 20-byte destination CID, a 4-byte packet number, the 16-byte AEAD tag, the
# frame type and a 4-byte length.
_DATAGRAM_OVERHEAD = 1 + 20 + 4 + 16 + 1 + 4


@attrs.frozen
class HandshakeInfo:
    """What the handshake settled."""

    alpn_protocol: str | None
    session_resumed: bool
    early_data_accepted: bool


@attrs.frozen
class ConnectionStatistics:
    """A snapshot of one connection's transport state (see ``statistics()``)."""

    #: Smoothed round-trip time in seconds (0 before the first sample).
    smoothed_rtt: float
    #: Smallest round-trip time seen, in seconds (0 before the first sample).
    min_rtt: float
    #: Congestion window in bytes.
    congestion_window: int
    #: Bytes sent and not yet acknowledged or declared lost.
    bytes_in_flight: int
    datagrams_sent: int
    datagrams_received: int
    bytes_sent: int
    bytes_received: int
    #: Datagrams the router dropped because this connection's queue was full.
    datagrams_dropped: int
    #: QUIC datagrams (RFC 9221) dropped from a full outgoing queue.
    quic_datagrams_dropped: int


#: Session tickets a server remembers (each is used once, then forgotten).
_TICKET_STORE_SIZE = 4096


def encode_session_ticket(ticket: tls.SessionTicket) -> bytes:
    """A TLS session ticket as opaque, self-contained bytes (JSON inside)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return json.dumps(
        {
            "version": 1,
            "age_add": ticket.age_add,
            "cipher_suite": int(ticket.cipher_suite),
            "not_valid_after": ticket.not_valid_after.isoformat(),
            "not_valid_before": ticket.not_valid_before.isoformat(),
            "resumption_secret": b64(ticket.resumption_secret),
            "server_name": ticket.server_name,
            "ticket": b64(ticket.ticket),
            "max_early_data_size": ticket.max_early_data_size,
            "other_extensions": [[t, b64(d)] for t, d in ticket.other_extensions],
        }
    ).encode()


def decode_session_ticket(data: bytes) -> tls.SessionTicket:
    """The inverse of :func:`encode_session_ticket`; ValueError if malformed."""
    try:
        fields = json.loads(data)
        if fields.get("version") != 1:
            raise ValueError("unknown session ticket format")
        return tls.SessionTicket(
            age_add=int(fields["age_add"]),
            cipher_suite=tls.CipherSuite(int(fields["cipher_suite"])),
            not_valid_after=datetime.datetime.fromisoformat(fields["not_valid_after"]),
            not_valid_before=datetime.datetime.fromisoformat(
                fields["not_valid_before"]
            ),
            resumption_secret=base64.b64decode(fields["resumption_secret"]),
            server_name=str(fields["server_name"]),
            ticket=base64.b64decode(fields["ticket"]),
            max_early_data_size=fields["max_early_data_size"],
            other_extensions=[
                (int(t), base64.b64decode(d)) for t, d in fields["other_extensions"]
            ],
        )
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a trioquic session ticket: {exc}") from None


class EndpointConfiguration:
    """aioquic configurations for one endpoint, built once from its settings.

    Owns the endpoint-wide resources they reference (the key-log file, the
    qlog writer); :meth:`close` releases them.
    """

    def __init__(self, settings: QuicSettings, *, is_client: bool) -> None:
        self.settings = settings
        self.is_client = is_client
        self._keylog: IO[str] | None = None
        base = settings.quic_configuration
        if base is not None:
            config = _copy_configuration(base)
            config.is_client = is_client
        else:
            config = QuicConfiguration(is_client=is_client)
            if settings.alpn_protocols:
                config.alpn_protocols = list(settings.alpn_protocols)
            config.congestion_control_algorithm = settings.congestion_control
            config.max_datagram_size = settings.max_udp_payload_size
            config.max_datagram_frame_size = settings.max_datagram_frame_size
            if is_client:
                if settings.ca_certs is not None:
                    config.load_verify_locations(os.fspath(settings.ca_certs))
                if not settings.verify_peer:
                    config.verify_mode = ssl.CERT_NONE
            elif settings.certificate is not None:
                _load_certificate(config, settings)
            if settings.qlog_dir is not None:
                pathlib.Path(settings.qlog_dir).mkdir(parents=True, exist_ok=True)
                config.quic_logger = QuicFileLogger(os.fspath(settings.qlog_dir))
            keylog = settings.effective_keylog_file()
            if keylog is not None:
                self._keylog = open(keylog, "a")  # noqa: SIM115 - closed in close()
                config.secrets_log_file = self._keylog
        # trioquic's own bounds always apply.
        config.idle_timeout = settings.idle_timeout
        config.connection_id_length = settings.connection_id_length
        config.max_data = settings.connection_receive_window
        config.max_stream_data = settings.stream_receive_window
        if not is_client and config.certificate is None:
            raise ValueError(
                "a QUIC server needs a certificate: set QuicSettings.certificate and "
                "private_key (trioquic.generate_self_signed_certificate() makes a "
                "development one)"
            )
        if is_client and settings.session_ticket is not None:
            config.session_ticket = decode_session_ticket(settings.session_ticket)
        self._base = config
        #: Derives the stateless reset tokens of every connection ID this
        #: endpoint issues (and the router's resets).
        self.stateless_reset_key = StatelessResetKey(settings.stateless_reset_key)
        # Server: tickets issued, by label, each usable once (which also makes
        # 0-RTT data unreplayable across connections to this endpoint).
        self._tickets: OrderedDict[bytes, tls.SessionTicket] = OrderedDict()

    def store_ticket(self, ticket: tls.SessionTicket) -> None:
        self._tickets[ticket.ticket] = ticket
        while len(self._tickets) > _TICKET_STORE_SIZE:
            self._tickets.popitem(last=False)

    def fetch_ticket(self, label: bytes) -> tls.SessionTicket | None:
        return self._tickets.pop(label, None)

    def for_connection(self, server_name: str | None = None) -> QuicConfiguration:
        """The configuration of one connection. aioquic only reads it, so a
        server's connections share the endpoint's; a client's gets a copy
        with its server name."""
        if not self.is_client:
            return self._base
        config = _copy_configuration(self._base)
        if server_name is not None and config.server_name is None:
            config.server_name = server_name
        return config

    def close(self) -> None:
        if self._keylog is not None:
            self._keylog.close()
            self._keylog = None


def _copy_configuration(config: QuicConfiguration) -> QuicConfiguration:
    """A shallow copy of an aioquic configuration (a dataclass)."""
    return dataclasses.replace(config)


def _load_certificate(config: QuicConfiguration, settings: QuicSettings) -> None:
    certificate = settings.certificate
    private_key = settings.private_key
    if isinstance(certificate, str | os.PathLike):
        key_path = (
            os.fspath(private_key)
            if isinstance(private_key, str | os.PathLike)
            else None
        )
        try:
            config.load_cert_chain(os.fspath(certificate), key_path)
        except FileNotFoundError as exc:
            raise ValueError(
                f"cannot read the certificate or key file: {exc.filename}"
            ) from None
        except ValueError as exc:
            raise ValueError(
                f"cannot load the certificate {os.fspath(certificate)!r}: {exc}"
            ) from None
        if key_path is None and private_key is not None:
            config.private_key = private_key
        if config.private_key is None:
            raise ValueError(
                f"the certificate file {os.fspath(certificate)!r} holds no private "
                "key: set QuicSettings.private_key"
            )
    else:
        config.certificate = certificate
        if isinstance(private_key, str | os.PathLike):
            from cryptography.hazmat.primitives.serialization import (
                load_pem_private_key,
            )

            with open(private_key, "rb") as fp:
                config.private_key = load_pem_private_key(fp.read(), password=None)
        else:
            config.private_key = private_key


# aioquic builds, in every connection's __init__, a table of its 33 frame
# handlers, each with a new frozenset of the packet spaces it is allowed in:
# about 11 KiB per connection and 33 set constructions per handshake. The
# sets are pure functions of a constant string: compute each once (the same
# immutable values, so aioquic behaves exactly as before), and
# _FlowControlledConnection shares one table per class instead of a dict of
# bound methods per connection.
_aioquic_connection_module.EPOCHS = functools.cache(_aioquic_connection_module.EPOCHS)
_FRAME_HANDLERS_ATTRIBUTE = "_QuicConnection__frame_handlers"


class _FrameHandlers:
    """aioquic's per-connection frame-handler table, as a view of one table
    per class: ``table[frame_type]`` is ``(bound handler, allowed epochs)``
    and a KeyError for an unknown type, as aioquic's dict gives."""

    __slots__ = ("_connection", "_table")

    def __init__(
        self,
        connection: _AioquicConnection,
        table: dict[int, tuple[Callable[..., None], frozenset[tls.Epoch]]],
    ) -> None:
        self._connection = connection
        self._table = table

    def __getitem__(self, frame_type: int) -> tuple[Any, frozenset[tls.Epoch]]:
        function, epochs = self._table[frame_type]
        return types.MethodType(function, self._connection), epochs


_frame_tables: dict[
    type, dict[int, tuple[Callable[..., None], frozenset[tls.Epoch]]]
] = {}


def _share_frame_handlers(connection: _AioquicConnection) -> None:
    handlers = getattr(connection, _FRAME_HANDLERS_ATTRIBUTE)
    table = _frame_tables.get(type(connection))
    if table is None:
        table = _frame_tables[type(connection)] = {
            frame_type: (handler.__func__, epochs)
            for frame_type, (handler, epochs) in handlers.items()
        }
    setattr(connection, _FRAME_HANDLERS_ATTRIBUTE, _FrameHandlers(connection, table))


class _FlowControlledConnection(_AioquicConnection):
    """aioquic's connection, granting receive credit on consumption.

    aioquic raises MAX_STREAM_DATA and MAX_DATA as data *arrives*, without
    bound. Here the limits move only when :meth:`consume` says the
    application has read the bytes: a stream's limit is its consumed offset
    plus the stream window, the connection's is the total consumed plus the
    connection window. Updates are sent once a quarter of a window has been
    consumed, to keep MAX_* frames rare.
    """

    def __init__(
        self,
        *,
        stream_window: int,
        connection_window: int,
        reset_key: StatelessResetKey | None = None,
        connection_id_limit: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _share_frame_handlers(self)
        # Announced in the transport parameters (serialized later) and the
        # bound on the IDs we issue (aioquic: 8 both ways).
        self._local_active_connection_id_limit = connection_id_limit
        self.tq_connection_id_limit = connection_id_limit
        # Pace in bursts an event loop's timers can keep up with.
        self._loss._pacer = _BurstPacer(max_datagram_size=self._max_datagram_size)
        self.tq_stream_window = stream_window
        self.tq_connection_window = connection_window
        self.tq_consumed_total = 0
        self.tq_consumed: dict[int, int] = {}
        #: Packets decrypted and handed to the frame parser (a stateless reset
        #: is a datagram of which none was).
        self.tq_packets_processed = 0
        # Stateless reset tokens are HMAC(key, cid), not random (RFC 9000
        # section 10.3.2), so the router can rebuild them without state. The
        # server's first token goes out in the transport parameters, which
        # aioquic serializes later, from _host_cids[0].
        self.tq_reset_key = reset_key if reset_key is not None else StatelessResetKey()
        for host_cid in self._host_cids:
            if host_cid.stateless_reset_token is not None:  # None: client's first
                host_cid.stateless_reset_token = self.tq_reset_key.token(host_cid.cid)

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if self._quic_logger is None:
            # The key-update callbacks only log to qlog: without one, share
            # aioquic's no-op instead of 12 partials of bound methods.
            for pair in self._cryptos.values():
                for context in (pair.recv, pair.send):
                    context._setup_cb = context._teardown_cb = NoCallback

    def _replenish_connection_ids(self) -> None:
        """Issue IDs up to the smaller of our limit and the peer's (aioquic:
        the peer's, at most 8), their reset tokens derived from the key."""
        limit = min(
            self.tq_connection_id_limit, self._remote_active_connection_id_limit
        )
        host_cids = self._host_cids
        key = self.tq_reset_key
        length = self._configuration.connection_id_length
        while len(host_cids) < limit:
            cid = os.urandom(length)
            host_cids.append(
                QuicConnectionId(
                    cid=cid,
                    sequence_number=self._host_cid_seq,
                    stateless_reset_token=key.token(cid),
                )
            )
            self._host_cid_seq += 1

    def _payload_received(self, *args: Any, **kwargs: Any) -> tuple[bool, bool]:
        self.tq_packets_processed += 1
        return super()._payload_received(*args, **kwargs)

    def consume(self, stream_id: int, count: int) -> bool:
        """Record ``count`` bytes of ``stream_id`` as read; True if a limit rose."""
        raised = False
        self.tq_consumed_total += count
        max_data = self._local_max_data
        target = self.tq_consumed_total + self.tq_connection_window
        if target - max_data.value >= self.tq_connection_window // 4:
            max_data.value = target
            raised = True
        stream = self._streams.get(stream_id)
        if stream is None:
            # aioquic discarded the stream (it ignores any later frame for
            # it): only the connection's credit still matters.
            self.tq_consumed.pop(stream_id, None)
            return raised
        consumed = self.tq_consumed.get(stream_id, 0) + count
        self.tq_consumed[stream_id] = consumed
        if len(self.tq_consumed) > 2 * len(self._streams) + 64:
            self._prune_consumed()
        if stream.max_stream_data_local:
            target = consumed + self.tq_stream_window
            if (
                target - stream.max_stream_data_local >= self.tq_stream_window // 4
                and not stream.receiver.is_finished
            ):
                stream.max_stream_data_local = target
                raised = True
        return raised

    def forget_stream(self, stream_id: int) -> None:
        self.tq_consumed.pop(stream_id, None)

    def _prune_consumed(self) -> None:
        """Drop the records of streams aioquic has discarded (amortized: runs
        when they outnumber the live streams), so finished streams cost no
        memory."""
        streams = self._streams
        self.tq_consumed = {
            sid: count for sid, count in self.tq_consumed.items() if sid in streams
        }

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: _AioquicStream
    ) -> None:
        if (
            stream.max_stream_data_local
            and stream.max_stream_data_local_sent != stream.max_stream_data_local
            and not stream.receiver.is_finished
        ):
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            stream_id = stream.stream_id
            assert stream_id is not None
            buf.push_uint_var(stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local
            frames = builder.quic_logger_frames
            if self._quic_logger is not None and frames is not None:
                frames.append(
                    self._quic_logger.encode_max_stream_data_frame(
                        maximum=stream.max_stream_data_local, stream_id=stream_id
                    )
                )

    def _write_connection_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace
    ) -> None:
        max_data = self._local_max_data
        bidi = self._local_max_streams_bidi
        uni = self._local_max_streams_uni
        if (
            max_data.value == max_data.sent
            and bidi.value == bidi.sent
            and uni.value == uni.sent
        ):
            return  # nothing to announce: the common case, once per packet
        for limit in (
            self._local_max_data,
            self._local_max_streams_bidi,
            self._local_max_streams_uni,
        ):
            if limit is not self._local_max_data and (
                limit.sent - limit.used >= limit.value - limit.sent
            ):
                continue
            if limit.value != limit.sent:
                buf = builder.start_frame(
                    limit.frame_type,
                    capacity=CONNECTION_LIMIT_FRAME_CAPACITY,
                    handler=self._on_connection_limit_delivery,
                    handler_args=(limit,),
                )
                buf.push_uint_var(limit.value)
                limit.sent = limit.value
                frames = builder.quic_logger_frames
                if self._quic_logger is not None and frames is not None:
                    frames.append(
                        self._quic_logger.encode_connection_limit_frame(
                            frame_type=limit.frame_type, maximum=limit.value
                        )
                    )


class _BurstPacer(QuicPacketPacer):
    """aioquic's pacer, allowed bursts of up to 2 ms of the pacing rate.

    aioquic's token bucket holds at most 16 packets, refilled at the pacing
    rate; timers in an event loop fire with about 1 ms of granularity, so on
    a low-RTT path the sender sleeps more than it sends. Like quinn, let the
    bucket hold 2 ms worth of packets (at least aioquic's own bound, at most
    256 packets).
    """

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window, smoothed_rtt)
        packet_time = self.packet_time
        if packet_time:
            burst = min(_PACING_BURST, 256 * packet_time)
            if burst > self.bucket_max:
                self.bucket_max = burst


class Engine:
    """One QUIC connection's state machine, in trioquic's terms.

    Synchronous: callers (the IoWorker, the applications) mutate it and the
    IoWorker flushes. Lifecycle facts found while polling events are left in
    attributes for the worker: :attr:`issued_cids`, :attr:`retired_cids`,
    :attr:`handshake`, :attr:`close_reason`.
    """

    def __init__(
        self,
        configuration: QuicConfiguration,
        settings: QuicSettings,
        *,
        original_destination_cid: bytes | None = None,
        retry_source_cid: bytes | None = None,
        endpoint: EndpointConfiguration | None = None,
    ) -> None:
        self.settings = settings
        #: The newest session ticket the server gave this client (opaque bytes
        #: for ``QuicSettings.session_ticket``), or None.
        self.session_ticket: bytes | None = None
        fetcher: Callable[[bytes], tls.SessionTicket | None] | None = None
        handler: Callable[[tls.SessionTicket], None] | None = None
        if configuration.is_client:
            handler = self._on_session_ticket
        elif endpoint is not None:
            fetcher, handler = endpoint.fetch_ticket, endpoint.store_ticket
        self.quic = _FlowControlledConnection(
            configuration=configuration,
            original_destination_connection_id=original_destination_cid,
            retry_source_connection_id=retry_source_cid,
            stream_window=settings.stream_receive_window,
            connection_window=settings.connection_receive_window,
            reset_key=endpoint.stateless_reset_key if endpoint is not None else None,
            connection_id_limit=settings.active_connection_id_limit,
            session_ticket_fetcher=fetcher,
            session_ticket_handler=handler,
        )
        for limit in (
            self.quic._local_max_streams_bidi,
            self.quic._local_max_streams_uni,
        ):
            limit.value = limit.sent = settings.max_concurrent_streams
        self.is_client = configuration.is_client
        self.issued_cids: list[bytes] = []
        self.retired_cids: list[bytes] = []
        self._host_cids_seen = 1
        self._handshake_memory_released = False
        self.handshake: HandshakeInfo | None = None
        self.close_reason: CloseReason | None = None
        self.idle_timed_out = False
        #: The connection ended by the peer's stateless reset.
        self.stateless_reset = False
        #: Datagrams not sent because of the anti-amplification limit.
        self.amplification_dropped = 0
        self._closed_locally = False
        self._datagram_queue_size = settings.datagram_queue_size
        self.quic_datagrams_dropped = 0
        # counters kept by the worker
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.datagrams_dropped = 0

    def _on_session_ticket(self, ticket: tls.SessionTicket) -> None:
        self.session_ticket = encode_session_ticket(ticket)

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

    @property
    def original_destination_cid(self) -> bytes:
        return self.quic.original_destination_connection_id

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
        quic.receive_datagram(data, addr, now=now)
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
        quic = self.quic
        self.stateless_reset = True
        self.close_reason = CloseReason(
            error_code=0,
            frame_type=None,
            reason="stateless reset",
            by_peer=True,
            is_transport=True,
        )
        if quic._close_event is None:
            quic._close_event = aq_events.ConnectionTerminated(
                error_code=0, frame_type=None, reason_phrase="stateless reset"
            )
        quic._close_end()

    def get_timer(self) -> float | None:
        return self.quic.get_timer()

    def handle_timer(self, now: float) -> None:
        quic = self.quic
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
            self.issued_cids.extend(c.cid for c in host_cids)
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
                    self.amplification_dropped += 1
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
                self.issued_cids.append(event.connection_id)
            elif isinstance(event, aq_events.ConnectionIdRetired):
                self.retired_cids.append(event.connection_id)
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

    def _note_close(self) -> None:
        if self.close_reason is not None:
            return
        event = self.quic._close_event
        if event is None:  # pragma: no cover - aioquic always sets it first
            return
        state = self.quic._state
        by_peer = state is QuicConnectionState.DRAINING
        idle = (
            not self._closed_locally
            and not by_peer
            and state is QuicConnectionState.TERMINATED
            and event.reason_phrase == "Idle timeout"
        )
        self.idle_timed_out = idle
        self.close_reason = CloseReason(
            error_code=event.error_code,
            frame_type=event.frame_type,
            reason="idle timeout" if idle else event.reason_phrase,
            by_peer=by_peer,
            is_transport=event.frame_type is not None,
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

    @property
    def is_terminated(self) -> bool:
        return self.quic._state is QuicConnectionState.TERMINATED

    def close(
        self, error_code: int = 0, reason: str = "", *, transport: bool = False
    ) -> None:
        """Start closing; CONNECTION_CLOSE goes out with the next flush."""
        self._closed_locally = True
        self.quic.close(
            error_code=error_code,
            frame_type=QuicFrameType.PADDING if transport else None,
            reason_phrase=reason,
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
        self.quic.send_stream_data(stream_id, data, end_stream=end_stream)

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

    def send_finished(self, stream_id: int) -> bool:
        """Whether all of the stream's data and FIN were acknowledged (or it was
        reset and the reset acknowledged)."""
        stream = self.quic._streams.get(stream_id)
        return stream is None or stream.sender.is_finished

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
            self.quic_datagrams_dropped += 1
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
            datagrams_dropped=self.datagrams_dropped,
            quic_datagrams_dropped=self.quic_datagrams_dropped,
        )


def encode_retry(
    *,
    version: int,
    destination_cid: bytes,
    source_cid: bytes,
    original_destination_cid: bytes,
    token: bytes,
) -> bytes:
    """A Retry packet with its integrity tag (RFC 9001 section 5.8)."""
    return bytes(
        encode_quic_retry(
            version=version,
            source_cid=source_cid,
            destination_cid=destination_cid,
            original_destination_cid=original_destination_cid,
            retry_token=token,
        )
    )


def invalid_token_close(
    data: bytes, addr: Address, endpoint: EndpointConfiguration, now: float
) -> list[bytes]:
    """The datagrams that close a connection attempt whose Initial carried an
    invalid or expired token with INVALID_TOKEN (RFC 9000 section 8.1.3):
    a throwaway engine reads the Initial (to derive its keys) and closes."""
    dcid = data[6 : 6 + data[5]]
    quic = _AioquicConnection(
        configuration=endpoint.for_connection(),
        original_destination_connection_id=bytes(dcid),
    )
    quic.receive_datagram(data, addr, now=now)
    # Whatever reading the ClientHello concluded (it may have failed on its
    # own), the answer is INVALID_TOKEN.
    quic._close_event = None
    quic.close(
        error_code=QuicErrorCode.INVALID_TOKEN,
        frame_type=QuicFrameType.PADDING,
        reason_phrase="invalid address validation token",
    )
    return [datagram for datagram, _ in quic.datagrams_to_send(now=now)]


def refuse_initial(
    *,
    version: int,
    destination_cid: bytes,
    source_cid: bytes,
    error_code: int = QuicErrorCode.CONNECTION_REFUSED,
    reason: str = "server busy",
) -> list[bytes]:
    """An Initial packet carrying CONNECTION_CLOSE that refuses a new client
    (RFC 9000 section 5.2.2) without reading its ClientHello.

    Stateless and cheap (the Initial keys are derived from the client's
    destination CID, then one small packet is sealed: no TLS, no
    connection): it is what a server at ``max_connections`` sends. The reply
    is smaller than the 1200-byte Initial it answers, so it cannot be used
    for amplification.
    """
    from aioquic.quic.crypto import CryptoPair
    from aioquic.quic.packet import QuicPacketType

    crypto = CryptoPair()
    crypto.setup_initial(cid=destination_cid, is_client=False, version=version)
    builder = QuicPacketBuilder(
        host_cid=os.urandom(8),
        peer_cid=source_cid,
        version=version,
        is_client=False,
        max_datagram_size=1200,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    reason_bytes = reason.encode()
    buf = builder.start_frame(
        QuicFrameType.TRANSPORT_CLOSE, capacity=3 * 8 + len(reason_bytes)
    )
    buf.push_uint_var(error_code)
    buf.push_uint_var(QuicFrameType.PADDING)
    buf.push_uint_var(len(reason_bytes))
    buf.push_bytes(reason_bytes)
    datagrams, _ = builder.flush()
    return [bytes(datagram) for datagram in datagrams]


#: Transport error codes, re-exported for callers that must not import aioquic.
PROTOCOL_VIOLATION = int(QuicErrorCode.PROTOCOL_VIOLATION)
