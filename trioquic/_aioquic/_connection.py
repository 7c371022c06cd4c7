"""aioquic's QuicConnection, subclassed: what trioquic changes in aioquic's
transport lives here, on trioquic's own class (aioquic's modules are left
as they are).

* receive credit granted as the application *consumes* data, instead of
  aioquic's "double the window whenever half of it has arrived", so a slow
  reader holds a bounded amount of memory;
* stateless reset tokens derived from the connection ID with the endpoint's
  static key (HMAC, RFC 9000 section 10.3.2) instead of random ones, so the
  router can reset connections it has no state for;
* at most ``active_connection_id_limit`` connection IDs issued;
* a count of processed packets (to detect stateless resets);
* one frame-handler table per class, and no qlog key callbacks without qlog
  (idle memory);
* a pacer that allows 2 ms bursts (:class:`BurstPacer`).
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from typing import Any, ClassVar

from aioquic import tls
from aioquic.quic.connection import (
    CONNECTION_LIMIT_FRAME_CAPACITY,
    MAX_STREAM_DATA_FRAME_CAPACITY,
    QuicConnectionId,
)
from aioquic.quic.connection import QuicConnection as _AioquicConnection
from aioquic.quic.crypto import NoCallback
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketPacer, QuicPacketSpace
from aioquic.quic.stream import QuicStream as _AioquicStream

from .._stateless_reset import StatelessResetKey

#: Longest burst the pacer allows, in seconds of the pacing rate.
_PACING_BURST = 0.002

# aioquic builds, in every connection's __init__, a dict of its 33 frame
# handlers (bound methods, each with its set of allowed packet spaces): about
# 11 KiB per connection. TrioquicConnection keeps one table per class and
# gives each connection a view of it (same handlers, same sets, so aioquic
# behaves exactly as before). Nothing of aioquic's own modules is changed.
_FRAME_HANDLERS_ATTRIBUTE = "_QuicConnection__frame_handlers"


class _FrameHandlers:
    """aioquic's per-connection frame-handler table, as a view of one table
    per class: ``table[frame_type]`` is ``(bound handler, allowed epochs)``
    and a KeyError for an unknown type, as aioquic's dict gives."""

    __slots__ = ("_connection", "_table")

    def __init__(
        self,
        connection: TrioquicConnection,
        table: dict[int, tuple[Callable[..., None], frozenset[tls.Epoch]]],
    ) -> None:
        self._connection = connection
        self._table = table

    def __getitem__(self, frame_type: int) -> tuple[Any, frozenset[tls.Epoch]]:
        function, epochs = self._table[frame_type]
        return types.MethodType(function, self._connection), epochs


class TrioquicConnection(_AioquicConnection):
    """aioquic's connection with what trioquic adds (see the package
    docstring); every overridden or copied upstream method is pinned in
    :mod:`._pins`.

    Receive credit is granted on consumption.

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
        new_cid: Callable[[], bytes] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        #: Makes the connection IDs we issue (QUIC-LB layout); None: random.
        self.tq_new_cid = new_cid
        if new_cid is not None:
            # The first ID (the server's source CID in its Initial, announced
            # in the transport parameters, serialized later) too.
            first = self._host_cids[0]
            first.cid = self.host_cid = new_cid()
            self._local_initial_source_connection_id = first.cid
        self._share_frame_handlers()
        # Announced in the transport parameters (serialized later) and the
        # bound on the IDs we issue (aioquic: 8 both ways).
        self._local_active_connection_id_limit = connection_id_limit
        self.tq_connection_id_limit = connection_id_limit
        # Pace in bursts an event loop's timers can keep up with.
        self._loss._pacer = BurstPacer(max_datagram_size=self._max_datagram_size)
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

    #: One frame-handler table per class: ``frame type -> (function, epochs)``.
    _tq_frame_table: ClassVar[
        dict[int, tuple[Callable[..., None], frozenset[tls.Epoch]]] | None
    ] = None

    def _share_frame_handlers(self) -> None:
        handlers = getattr(self, _FRAME_HANDLERS_ATTRIBUTE)
        cls = type(self)
        table = cls.__dict__.get("_tq_frame_table")
        if table is None:
            table = {
                frame_type: (handler.__func__, epochs)
                for frame_type, (handler, epochs) in handlers.items()
            }
            cls._tq_frame_table = table
        setattr(self, _FRAME_HANDLERS_ATTRIBUTE, _FrameHandlers(self, table))

    def _initialize(self, peer_cid: bytes) -> None:
        # A client initializes again when the server answers with Retry
        # (aioquic's _receive_retry_packet calls _connect, which calls this),
        # and aioquic then replaces its packet spaces:
        # what the first flight carried would be forgotten, never resent,
        # including 0-RTT stream data, and still counted in flight. Declare
        # those packets lost first (not a congestion event), so their data is
        # sent again in the new spaces: 0-RTT data as 0-RTT to the new
        # connection ID, the ticket allowing (RFC 9000 section 17.2.5.3).
        old_spaces = getattr(self, "_spaces", None)
        if old_spaces:
            for space in old_spaces.values():
                packets = list(space.sent_packets.values())
                if packets:
                    # (``now`` only matters for a congestion event.)
                    self._loss._on_packets_lost(
                        congestion_event=False, now=0.0, packets=packets, space=space
                    )
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
        new_cid = self.tq_new_cid
        while len(host_cids) < limit:
            cid = os.urandom(length) if new_cid is None else new_cid()
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


class BurstPacer(QuicPacketPacer):
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
