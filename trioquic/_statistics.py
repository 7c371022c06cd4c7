"""Statistics: frozen snapshots of counters, as ``statistics()`` methods
return them (like :meth:`trio.MemorySendChannel.statistics`)."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs


class DropReason(enum.Enum):
    """Why the router dropped a datagram (each one has its own counter)."""

    MALFORMED = "malformed"
    UNKNOWN_CONNECTION_ID = "unknown_connection_id"
    INITIAL_TOO_SMALL = "initial_too_small"
    NOT_INITIAL = "not_initial"
    VERSION_NEGOTIATION = "version_negotiation"
    UNSUPPORTED_VERSION = "unsupported_version"
    NOT_ACCEPTING = "not_accepting"
    BACKLOG_FULL = "backlog_full"
    QUEUE_FULL = "queue_full"


@attrs.frozen(kw_only=True)
class ConnectionStatistics:
    """A snapshot of one connection's transport state (see
    :meth:`trioquic.QuicConnection.statistics`)."""

    #: Smoothed round-trip time in seconds (0 before the first sample).
    smoothed_rtt: float
    #: Smallest round-trip time seen, in seconds (0 before the first sample).
    min_rtt: float
    #: Congestion window in bytes.
    congestion_window: int
    #: Bytes sent and not yet acknowledged or declared lost.
    bytes_in_flight: int
    #: UDP datagrams sent and received, and their bytes.
    datagrams_sent: int
    datagrams_received: int
    bytes_sent: int
    bytes_received: int
    #: UDP datagrams the router dropped because this connection's inbound
    #: queue (``QuicSettings.inbound_queue_size``) was full.
    datagrams_dropped: int = 0
    #: QUIC datagrams (RFC 9221) dropped from the full outgoing queue
    #: (``QuicSettings.datagram_queue_size``) before they were sent.
    quic_datagrams_send_dropped: int = 0
    #: QUIC datagrams received and dropped because the application did not
    #: take them in time (its queue of ``datagram_queue_size`` was full).
    quic_datagrams_receive_dropped: int = 0


@attrs.frozen(kw_only=True)
class StreamStatistics:
    """A snapshot of one stream's buffers (see ``QuicStream.statistics()``)."""

    stream_id: int
    #: Bytes written and not yet acknowledged by the peer (sent or not): what
    #: ``send_all`` keeps below ``QuicSettings.stream_send_buffer``.
    send_buffered: int
    #: Bytes received and not yet read by the application (at most the
    #: stream's receive window: credit is granted as they are read).
    receive_buffered: int


@attrs.frozen(kw_only=True)
class RouterStatistics:
    """Counters of an endpoint's routers (all of its sockets together)."""

    datagrams_received: int
    datagrams_delivered: int
    connections_accepted: int
    version_negotiations_sent: int
    retries_sent: int
    invalid_tokens: int
    #: Dropped datagrams by reason (``DropReason`` values).
    dropped: Mapping[str, int]
    #: New clients refused with CONNECTION_CLOSE (CONNECTION_REFUSED) because
    #: ``QuicSettings.max_connections`` connections were alive.
    refused_max_connections: int = 0
    #: Stateless resets sent in answer to packets for unknown connections
    #: (those packets are also counted as dropped, ``unknown_connection_id``).
    stateless_resets_sent: int = 0
    #: Connections alive now (handshaking or established).
    connections: int = 0
    #: Connections still handshaking now.
    pending_handshakes: int = 0
    #: Connection IDs the routing table maps now (every live ID of every
    #: connection: bounded by ``active_connection_id_limit`` per connection).
    connection_ids: int = 0

    @property
    def refused_max_pending_handshakes(self) -> int:
        """New clients' Initials dropped because
        ``QuicSettings.max_pending_handshakes`` handshakes were pending."""
        return self.dropped.get(DropReason.BACKLOG_FULL.value, 0)

    @property
    def datagrams_dropped(self) -> int:
        return sum(self.dropped.values())
