"""Statistics of UDP tunnels and of a proxy: frozen snapshots."""

from __future__ import annotations

import collections
import time
from typing import Any

import attrs
import trio

#: Why a datagram was not relayed (the keys of ``drops``).
DROP_QUEUE_FULL = "queue_full"
DROP_UNKNOWN_CONTEXT = "unknown_context"
DROP_TOO_LARGE = "too_large"
DROP_MALFORMED = "malformed"
DROP_TARGET_UNREACHABLE = "target_unreachable"


@attrs.frozen
class TunnelStatistics:
    """One tunnel, at the time of the snapshot. "To target" is the client's
    direction (client to proxy to target), "from target" the other."""

    target_host: str
    target_port: int
    #: The resolved address (proxy side), or None (client side).
    target_address: Any
    #: ``"datagram"`` (HTTP/3 datagrams) or ``"capsule"`` (DATAGRAM capsules
    #: on the stream): how payloads go to the peer.
    transport: str
    #: Wall-clock start (``time.time()``) and duration in seconds (trio's clock).
    started_at: float
    duration: float
    to_target_datagrams: int
    to_target_bytes: int
    from_target_datagrams: int
    from_target_bytes: int
    #: Datagrams not relayed, by reason: ``queue_full_to_target``,
    #: ``queue_full_from_target``, ``unknown_context``, ``too_large``,
    #: ``malformed``, ``target_unreachable``.
    drops: dict[str, int]
    #: Why it ended (``client_closed``, ``idle_timeout``, ``shutdown``,
    #: ``protocol_error``, ``proxy_closed``, ``closed``), None while open.
    ended: str | None


class TunnelState:
    """The counters of one live tunnel (mutable, owned by its task)."""

    def __init__(self, host: str, port: int, address: Any, transport: str) -> None:
        self.host = host
        self.port = port
        self.address = address
        self.transport = transport
        self.started_at = time.time()
        self.start = trio.current_time()
        self.last_activity = self.start
        self.to_target_datagrams = 0
        self.to_target_bytes = 0
        self.from_target_datagrams = 0
        self.from_target_bytes = 0
        self.drops: collections.Counter[str] = collections.Counter()
        self.ended: str | None = None
        self.end_time: float | None = None
        self.cancel_scope = trio.CancelScope()

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            self.end_time = trio.current_time()

    def snapshot(self) -> TunnelStatistics:
        end = self.end_time if self.end_time is not None else trio.current_time()
        return TunnelStatistics(
            target_host=self.host,
            target_port=self.port,
            target_address=self.address,
            transport=self.transport,
            started_at=self.started_at,
            duration=end - self.start,
            to_target_datagrams=self.to_target_datagrams,
            to_target_bytes=self.to_target_bytes,
            from_target_datagrams=self.from_target_datagrams,
            from_target_bytes=self.from_target_bytes,
            drops=dict(self.drops),
            ended=self.ended,
        )


@attrs.frozen
class MasqueProxyStatistics:
    """A proxy's totals (closed and open tunnels together) and its open
    tunnels."""

    tunnels_open: int
    tunnels_total: int
    #: Requests refused, by HTTP status.
    refused: dict[int, int]
    to_target_datagrams: int
    to_target_bytes: int
    from_target_datagrams: int
    from_target_bytes: int
    drops: dict[str, int]
    tunnels: tuple[TunnelStatistics, ...]
