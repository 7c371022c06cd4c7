"""InboundPacketRouter: owns a UDP socket's receive side.

One task per socket. It drains every datagram that is ready, asks the pure
:class:`~trioquic._routing.RoutingTable` where each goes, and acts: queue it
on a connection's bounded channel (dropping when full: it never blocks and
never awaits application code), start a new connection, answer with Version
Negotiation, Retry or a stateless reset (rate-limited by a token bucket), or
drop and count. Nothing a peer sends can make it raise.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import attrs
import trio

from ._engine import encode_retry, refuse_initial
from ._routing import (
    Accept,
    Deliver,
    Drop,
    DropReason,
    RejectToken,
    RoutingTable,
    SendRetry,
    SendStatelessReset,
    SendVersionNegotiation,
)
from ._stateless_reset import StatelessResetKey, TokenBucket, encode_stateless_reset
from ._udp import Address, DatagramSocket

if TYPE_CHECKING:
    from ._worker import IoWorker

logger = logging.getLogger("trioquic")

AcceptHandler = Callable[[Accept, bytes, Address, DatagramSocket], "IoWorker | None"]
#: Builds the datagrams that answer an Initial with an invalid token.
RejectHandler = Callable[[bytes, Address], list[bytes]]


@attrs.frozen
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

    @property
    def refused_max_pending_handshakes(self) -> int:
        """New clients' Initials dropped because
        ``QuicSettings.max_pending_handshakes`` handshakes were pending."""
        return self.dropped.get(DropReason.BACKLOG_FULL.value, 0)

    @property
    def datagrams_dropped(self) -> int:
        return sum(self.dropped.values())


class RouterCounters:
    """Mutable counters shared by the routers of one endpoint."""

    def __init__(self) -> None:
        self.received = 0
        self.delivered = 0
        self.accepted = 0
        self.version_negotiations = 0
        self.retries = 0
        self.stateless_resets = 0
        self.invalid_tokens = 0
        self.dropped: Counter[str] = Counter()
        self.pending_handshakes = 0
        self.connections = 0
        self.refused_max_connections = 0

    def snapshot(self) -> RouterStatistics:
        return RouterStatistics(
            datagrams_received=self.received,
            datagrams_delivered=self.delivered,
            connections_accepted=self.accepted,
            version_negotiations_sent=self.version_negotiations,
            retries_sent=self.retries,
            stateless_resets_sent=self.stateless_resets,
            invalid_tokens=self.invalid_tokens,
            dropped=MappingProxyType(dict(self.dropped)),
            refused_max_connections=self.refused_max_connections,
            connections=self.connections,
            pending_handshakes=self.pending_handshakes,
        )


class InboundPacketRouter:
    """The receive loop of one socket (see the module docstring)."""

    def __init__(
        self,
        socket: DatagramSocket,
        table: RoutingTable[IoWorker],
        counters: RouterCounters,
        *,
        accept: AcceptHandler | None = None,
        accept_backlog: int = 0,
        max_connections: int | None = None,
        retry: str = "never",
        retry_threshold: int = 0,
        reject_token: RejectHandler | None = None,
        stateless_reset_key: StatelessResetKey | None = None,
        stateless_reset_rate: float = 0.0,
    ) -> None:
        self.socket = socket
        self.table = table
        self.counters = counters
        self._accept = accept
        self._backlog = accept_backlog
        self._retry = retry
        self._retry_threshold = retry_threshold
        self._reject_token = reject_token
        self._reset_key = stateless_reset_key
        self._reset_bucket = TokenBucket(stateless_reset_rate)
        self._max_connections = max_connections
        self._handshaking: set[IoWorker] = set()
        self._live: set[IoWorker] = set()

    def handshake_finished(self, worker: IoWorker) -> None:
        if worker in self._handshaking:
            self._handshaking.discard(worker)
            self.counters.pending_handshakes -= 1

    def connection_finished(self, worker: IoWorker) -> None:
        self.handshake_finished(worker)
        if worker in self._live:
            self._live.discard(worker)
            self.counters.connections -= 1

    def _at_max_connections(self) -> bool:
        limit = self._max_connections
        return limit is not None and self.counters.connections >= limit

    def _refuse(
        self, version: int, destination_cid: bytes, source_cid: bytes
    ) -> list[bytes]:
        self.counters.refused_max_connections += 1
        return refuse_initial(
            version=version, destination_cid=destination_cid, source_cid=source_cid
        )

    async def run(self) -> None:
        socket = self.socket
        counters = self.counters
        short_header_target = self.table.short_header_target
        while True:
            batch = await socket.receive_batch()
            replies: list[tuple[bytes, Address]] = []
            for data, addr in batch:
                counters.received += 1
                # The fast path: a short-header packet of a known connection
                # goes straight to its worker's inbox.
                target = short_header_target(data)
                if target is not None:
                    self._deliver(target, data, addr)
                    continue
                try:
                    reply = self.route(data, addr)
                except Exception:  # never let one datagram take the router down
                    logger.exception("trioquic: router failed on a datagram")
                    self.counters.dropped[DropReason.MALFORMED.value] += 1
                    continue
                if reply:
                    replies.extend((datagram, addr) for datagram in reply)
            if replies:
                await socket.send_batch(replies)

    def _require_retry(self) -> bool:
        if self._retry == "always":
            return True
        if self._retry == "under-load":
            return self.counters.pending_handshakes >= self._retry_threshold
        return False

    def _deliver(self, target: IoWorker, data: bytes, addr: Address) -> None:
        if target.deliver(data, addr):
            self.counters.delivered += 1
        else:
            self.counters.dropped[DropReason.QUEUE_FULL.value] += 1

    def route(self, data: bytes, addr: Address) -> list[bytes] | None:
        """Route a datagram the short-header fast path did not take (a long
        header, or a connection ID the table does not know); returns the
        replies to send, if any."""
        counters = self.counters
        decision = self.table.route(
            data, addr, trio.current_time(), require_retry=self._require_retry()
        )
        cls = type(decision)
        if cls is Deliver:
            assert isinstance(decision, Deliver)
            self._deliver(decision.target, data, addr)
            return None
        if cls is Drop:
            assert isinstance(decision, Drop)
            counters.dropped[decision.reason.value] += 1
            return None
        if cls is SendVersionNegotiation:
            assert isinstance(decision, SendVersionNegotiation)
            counters.version_negotiations += 1
            return [decision.packet]
        if cls is SendRetry:
            assert isinstance(decision, SendRetry)
            if self._at_max_connections():
                # No room even once the address is validated: refuse now.
                return self._refuse(
                    decision.version,
                    decision.original_destination_cid,
                    decision.destination_cid,
                )
            counters.retries += 1
            return [
                encode_retry(
                    version=decision.version,
                    destination_cid=decision.destination_cid,
                    source_cid=decision.source_cid,
                    original_destination_cid=decision.original_destination_cid,
                    token=decision.token,
                )
            ]
        if cls is SendStatelessReset:
            assert isinstance(decision, SendStatelessReset)
            key = self._reset_key
            if key is None or not self._reset_bucket.take(trio.current_time()):
                counters.dropped[DropReason.UNKNOWN_CONNECTION_ID.value] += 1
                return None
            # Still a datagram for an unknown connection: counted as dropped
            # for that reason, and as a reset sent.
            counters.stateless_resets += 1
            counters.dropped[DropReason.UNKNOWN_CONNECTION_ID.value] += 1
            token = key.token(decision.destination_cid)
            return [encode_stateless_reset(token, decision.size)]
        if cls is RejectToken:
            counters.invalid_tokens += 1
            if self._reject_token is None:
                return None
            return self._reject_token(data, addr)
        assert isinstance(decision, Accept)
        if self._accept is None:
            counters.dropped[DropReason.NOT_ACCEPTING.value] += 1
            return None
        if self._at_max_connections():
            return self._refuse(
                decision.version, decision.destination_cid, decision.source_cid
            )
        if counters.pending_handshakes >= self._backlog:
            counters.dropped[DropReason.BACKLOG_FULL.value] += 1
            return None
        worker = self._accept(decision, data, addr, self.socket)
        if worker is None:
            counters.dropped[DropReason.NOT_ACCEPTING.value] += 1
            return None
        counters.accepted += 1
        counters.pending_handshakes += 1
        counters.connections += 1
        self._handshaking.add(worker)
        self._live.add(worker)
        worker.router = self
        if worker.deliver(data, addr):
            counters.delivered += 1
        return None
