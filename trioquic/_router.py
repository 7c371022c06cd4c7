"""InboundPacketRouter: owns a UDP socket's receive side.

One task per socket. It drains every datagram that is ready, asks the pure
:class:`~trioquic._routing.RoutingTable` where each goes, and carries the
decision out: queue it on a connection's bounded inbox (dropping when full:
it never blocks and never awaits application code), start a new connection,
or send the reply the decision names (Version Negotiation, Retry, a refusal,
INVALID_TOKEN, a stateless reset), built by the endpoint's engine. Every
policy is the table's; nothing a peer sends can make the router raise.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING

import trio

from ._engine import Address, EndpointEngine
from ._routing import (
    Accept,
    Deliver,
    Drop,
    DropReason,
    RefuseConnection,
    RejectToken,
    RoutingTable,
    SendRetry,
    SendStatelessReset,
    SendVersionNegotiation,
)
from ._stateless_reset import encode_stateless_reset
from ._statistics import RouterStatistics
from ._udp import DatagramSocket

if TYPE_CHECKING:
    from ._worker import IoWorker

logger = logging.getLogger("trioquic")

#: Starts the connection for an Accept decision; None when it cannot.
AcceptHandler = Callable[[Accept, DatagramSocket], "IoWorker | None"]
#: Told of a destination the network reported unreachable (ICMP), with the
#: error number.
UnreachableHandler = Callable[[Address, int], None]


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
        self.refused_max_connections = 0
        self.dropped: Counter[str] = Counter()

    def snapshot(self, table: RoutingTable[IoWorker]) -> RouterStatistics:
        """The counters and ``table``'s connection counts, frozen."""
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
            connections=table.connections,
            pending_handshakes=table.pending_handshakes,
            connection_ids=len(table),
        )


class InboundPacketRouter:
    """The receive loop of one socket (see the module docstring).

    ``engine`` builds the replies; ``accept`` starts a connection (servers;
    a router without it drops new connections as ``not_accepting``);
    ``on_unreachable`` is told of the ICMP errors a client socket reports
    (sockets with ``take_unreachable()``).
    """

    def __init__(
        self,
        socket: DatagramSocket,
        table: RoutingTable[IoWorker],
        counters: RouterCounters,
        engine: EndpointEngine,
        *,
        accept: AcceptHandler | None = None,
        on_unreachable: UnreachableHandler | None = None,
    ) -> None:
        self.socket = socket
        self.table = table
        self.counters = counters
        self._engine = engine
        self._accept = accept
        self._on_unreachable = on_unreachable
        # Drained either way (a server's socket may report too), acted on
        # only with a handler: a server never acts on ICMP.
        self._take_unreachable: Callable[[], list[tuple[Address, int]]] | None = (
            getattr(socket, "take_unreachable", None)
        )

    async def run(self) -> None:
        socket = self.socket
        counters = self.counters
        short_header_target = self.table.short_header_target
        while True:
            batch = await socket.receive_batch()
            if self._take_unreachable is not None:
                self._report_unreachable()
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
                    counters.dropped[DropReason.MALFORMED.value] += 1
                    continue
                if reply:
                    replies.extend((datagram, addr) for datagram in reply)
            if replies:
                await socket.send_batch(replies)

    def _report_unreachable(self) -> None:
        assert self._take_unreachable is not None
        reports = self._take_unreachable()
        if self._on_unreachable is None:
            return
        for addr, error in reports:
            try:
                self._on_unreachable(addr, error)
            except Exception:  # never let a report take the router down
                logger.exception("trioquic: handling an ICMP error failed")

    def _deliver(self, target: IoWorker, data: bytes, addr: Address) -> None:
        if target.deliver(data, addr):
            self.counters.delivered += 1
        else:
            self.counters.dropped[DropReason.QUEUE_FULL.value] += 1

    def route(self, data: bytes, addr: Address) -> list[bytes] | None:
        """Route a datagram the short-header fast path did not take (a long
        header, or a connection ID the table does not know) and carry the
        decision out; returns the replies to send, if any."""
        counters = self.counters
        now = trio.current_time()
        decision = self.table.route(data, addr, now)
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
            counters.retries += 1
            return [
                self._engine.retry_packet(
                    version=decision.version,
                    destination_cid=decision.destination_cid,
                    source_cid=decision.source_cid,
                    original_destination_cid=decision.original_destination_cid,
                    token=decision.token,
                )
            ]
        if cls is RefuseConnection:
            assert isinstance(decision, RefuseConnection)
            counters.refused_max_connections += 1
            return self._engine.refusal_packets(
                version=decision.version,
                destination_cid=decision.destination_cid,
                source_cid=decision.source_cid,
            )
        if cls is SendStatelessReset:
            assert isinstance(decision, SendStatelessReset)
            # Still a datagram for an unknown connection: counted as dropped
            # for that reason, and as a reset sent.
            counters.stateless_resets += 1
            counters.dropped[DropReason.UNKNOWN_CONNECTION_ID.value] += 1
            token = self._engine.stateless_reset_key.token(decision.destination_cid)
            return [encode_stateless_reset(token, decision.size)]
        if cls is RejectToken:
            counters.invalid_tokens += 1
            return self._engine.invalid_token_packets(data, addr, now)
        assert isinstance(decision, Accept)
        worker = self._accept(decision, self.socket) if self._accept else None
        if worker is None:
            counters.dropped[DropReason.NOT_ACCEPTING.value] += 1
            return None
        counters.accepted += 1
        self.table.connection_accepted(worker)
        if worker.deliver(data, addr):
            counters.delivered += 1
        return None
