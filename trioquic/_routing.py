"""Where a datagram goes: the InboundPacketRouter's decisions, as pure code.

:class:`RoutingTable` takes a datagram's bytes, source address and the time,
and answers with a decision (deliver to a connection, accept a new one,
answer with Version Negotiation, Retry, a refusal or a stateless reset, or
drop and why). It owns every routing policy: the connection and handshake
limits, when to require Retry, the stateless reset rate. It does no I/O and
keeps no clock (``now`` is passed in), so it is tested on bytes alone; the
router task in ``_router.py`` is a thin loop that carries decisions out.

Parsing is limited to what routing needs (RFC 9000 section 17 and RFC 8999):
the first byte, the version and the connection IDs of long headers, and the
destination connection ID of short headers, whose length is the one setting
shared with the QUIC engine (``QuicSettings.connection_id_length``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Generic, Literal, TypeVar

import attrs

from ._retry import RetryTokens
from ._stateless_reset import (
    MIN_STATELESS_RESET_SIZE,
    STATELESS_RESET_TOKEN_SIZE,
    TokenBucket,
    stateless_reset_size,
)
from ._statistics import DropReason as DropReason
from ._varint import decode_varint

T = TypeVar("T")

QUIC_VERSION_1 = 0x00000001
QUIC_VERSION_2 = 0x6B3343CF
SUPPORTED_VERSIONS: tuple[int, ...] = (QUIC_VERSION_1, QUIC_VERSION_2)

#: RFC 9000 section 14.1: a client's Initial datagram is at least this large.
MIN_INITIAL_DATAGRAM_SIZE = 1200
#: Source addresses whose stateless-reset rate is tracked (the least recent
#: is forgotten past this many).
RESET_SOURCES = 4096
MAX_CID_LENGTH = 20


#: When a server requires Retry (``QuicSettings.retry``).
RetryPolicy = Literal["never", "always", "under-load"]


@attrs.frozen
class Deliver(Generic[T]):
    """Hand the datagram to this connection."""

    target: T


@attrs.frozen
class Accept:
    """A valid-looking Initial that opens a new connection.

    ``original_destination_cid`` is the client's first destination ID (from
    the Retry token when the client was sent a Retry, then
    ``retry_source_cid`` is set too).
    """

    version: int
    destination_cid: bytes
    source_cid: bytes
    original_destination_cid: bytes = b""
    retry_source_cid: bytes | None = None


@attrs.frozen
class SendRetry:
    """Validate the client's address first: answer with a Retry packet
    (RFC 9000 section 8.1.2) carrying ``token`` and our new ``source_cid``."""

    version: int
    destination_cid: bytes
    source_cid: bytes
    original_destination_cid: bytes
    token: bytes


@attrs.frozen
class RejectToken:
    """An Initial with an invalid or expired token: close it with
    INVALID_TOKEN (RFC 9000 section 8.1.3)."""

    version: int


@attrs.frozen
class RefuseConnection:
    """A new client while ``max_connections`` connections are alive: refuse
    it with CONNECTION_CLOSE (CONNECTION_REFUSED) in an Initial packet,
    without reading its ClientHello (RFC 9000 section 5.2.2)."""

    version: int
    destination_cid: bytes
    source_cid: bytes


@attrs.frozen
class SendVersionNegotiation:
    """Answer with this Version Negotiation packet."""

    packet: bytes


@attrs.frozen
class SendStatelessReset:
    """A short-header packet for a connection ID we do not know (we lost the
    connection's state, or it ended): answer with a stateless reset of
    ``size`` bytes (smaller than the datagram) carrying the token of
    ``destination_cid`` (RFC 9000 section 10.3)."""

    destination_cid: bytes
    size: int


@attrs.frozen
class Drop:
    """Drop the datagram, counted under ``reason`` (UDP semantics: the peer
    retransmits, or it was never a packet of ours)."""

    reason: DropReason


Decision = (
    Deliver[T]
    | Accept
    | SendVersionNegotiation
    | SendRetry
    | RejectToken
    | RefuseConnection
    | SendStatelessReset
    | Drop
)


@attrs.frozen
class LongHeader:
    first_byte: int
    version: int
    destination_cid: bytes
    source_cid: bytes


def parse_long_header(data: bytes) -> LongHeader | None:
    """The invariant fields of a long header (RFC 8999 section 5.1), or None."""
    length = len(data)
    if length < 7:
        return None
    version = int.from_bytes(data[1:5], "big")
    dcid_length = data[5]
    if dcid_length > MAX_CID_LENGTH and version in SUPPORTED_VERSIONS:
        return None
    scid_offset = 6 + dcid_length
    if length < scid_offset + 1:
        return None
    scid_length = data[scid_offset]
    if scid_length > MAX_CID_LENGTH and version in SUPPORTED_VERSIONS:
        return None
    end = scid_offset + 1 + scid_length
    if length < end:
        return None
    return LongHeader(
        first_byte=data[0],
        version=version,
        destination_cid=bytes(data[6:scid_offset]),
        source_cid=bytes(data[scid_offset + 1 : end]),
    )


def initial_token(data: bytes, header: LongHeader) -> bytes | None:
    """The token field of an Initial packet, or None if the packet is
    truncated: the token, or the packet its Length field announces, runs
    past the end of the datagram (RFC 9000 section 17.2.2)."""
    field = decode_varint(
        data, 7 + len(header.destination_cid) + len(header.source_cid)
    )
    if field is None:
        return None
    token_length, start = field
    if start + token_length > len(data):
        return None
    length = decode_varint(data, start + token_length)
    if length is None or length[1] + length[0] > len(data):
        return None
    return bytes(data[start : start + token_length])


def is_initial(first_byte: int, version: int) -> bool:
    """Whether a long header's packet type is Initial for this version."""
    packet_type = (first_byte & 0x30) >> 4
    if version == QUIC_VERSION_2:
        return packet_type == 1
    return packet_type == 0


def encode_version_negotiation(
    *, destination_cid: bytes, source_cid: bytes, versions: Iterable[int]
) -> bytes:
    """A Version Negotiation packet (RFC 9000 section 17.2.1).

    ``destination_cid`` / ``source_cid`` are ours to send, so they are the
    client's source and destination connection IDs, swapped by the caller.
    """
    first = 0x80 | 0x40 | (os.urandom(1)[0] & 0x3F)
    parts = [
        bytes([first]),
        b"\x00\x00\x00\x00",
        bytes([len(destination_cid)]),
        destination_cid,
        bytes([len(source_cid)]),
        source_cid,
    ]
    parts.extend(v.to_bytes(4, "big") for v in versions)
    return b"".join(parts)


class RoutingTable(Generic[T]):
    """Maps connection IDs to connections and decides each datagram's fate.

    ``accept_new`` is true on servers. The table holds every live connection
    ID of every connection: the ones its engine issued (kept in step with
    the engine's issued and retired IDs) and the client's original
    destination connection ID (until the connection ends, so that late
    Initials still find it). It also counts the
    connections alive and handshaking (:meth:`connection_accepted`,
    :meth:`handshake_finished`, :meth:`connection_finished`), which its
    policies read:

    * ``max_connections``: past it, new clients get :class:`RefuseConnection`;
    * ``max_pending_handshakes``: past it, new clients' Initials are dropped
      (:attr:`DropReason.BACKLOG_FULL`; the client retransmits);
    * ``retry``: ``"always"`` validates every new client's address with Retry,
      ``"under-load"`` once ``retry_threshold`` handshakes are pending (needs
      ``retry_tokens``);
    * ``stateless_reset``: answer short-header packets for unknown connection
      IDs with :class:`SendStatelessReset`, at most ``stateless_reset_rate``
      per second in all (None: no limit) and at most
      ``stateless_reset_rate_per_address`` per second to one source IP
      address (None: no limit per address), so that one source cannot use
      up the budget of everyone else; the per-address buckets are kept for
      the :data:`RESET_SOURCES` most recent addresses.
    """

    __slots__ = (
        "_by_cid",
        "_by_reset_token",
        "_handshaking",
        "_live",
        "_reset_bucket",
        "_reset_rate_per_address",
        "_reset_sources",
        "accept_new",
        "cid_length",
        "max_connections",
        "max_pending_handshakes",
        "new_cid",
        "retry",
        "retry_threshold",
        "retry_tokens",
        "stateless_reset",
        "supported_versions",
    )

    def __init__(
        self,
        *,
        cid_length: int,
        accept_new: bool,
        supported_versions: Iterable[int] = SUPPORTED_VERSIONS,
        retry_tokens: RetryTokens | None = None,
        retry: RetryPolicy = "never",
        retry_threshold: int = 0,
        max_connections: int | None = None,
        max_pending_handshakes: int | None = None,
        stateless_reset: bool = False,
        stateless_reset_rate: float | None = None,
        stateless_reset_rate_per_address: float | None = None,
        new_cid: Callable[[], bytes] | None = None,
    ) -> None:
        if not 1 <= cid_length <= MAX_CID_LENGTH:
            raise ValueError(f"cid_length must be 1..20, got {cid_length}")
        if retry not in ("never", "always", "under-load"):
            raise ValueError(
                f"retry must be 'never', 'always' or 'under-load', got {retry!r}"
            )
        if retry != "never" and retry_tokens is None:
            raise ValueError(f"retry={retry!r} needs retry_tokens")
        self.cid_length = cid_length
        #: Makes the connection IDs this endpoint issues (a Retry's source
        #: CID; QUIC-LB layout); None: random.
        self.new_cid = new_cid
        self.accept_new = accept_new
        self.supported_versions = tuple(supported_versions)
        #: Checks Retry tokens; None when this endpoint never sends Retry.
        self.retry_tokens = retry_tokens
        self.retry: RetryPolicy = retry
        self.retry_threshold = retry_threshold
        self.max_connections = max_connections
        self.max_pending_handshakes = max_pending_handshakes
        self._by_cid: dict[bytes, T] = {}
        self.stateless_reset = stateless_reset
        self._reset_bucket = (
            TokenBucket(stateless_reset_rate)
            if stateless_reset_rate is not None
            else None
        )
        self._reset_rate_per_address = stateless_reset_rate_per_address
        #: One token bucket per recent source address (least recent first).
        self._reset_sources: OrderedDict[Any, TokenBucket] = OrderedDict()
        #: The peers' stateless reset tokens in use, by connection: a
        #: datagram for an unknown connection ID that ends with one goes to
        #: that connection, whose engine checks it (RFC 9000 section 10.3.1).
        self._by_reset_token: dict[bytes, T] = {}
        self._live: set[T] = set()
        self._handshaking: set[T] = set()

    def __len__(self) -> int:
        return len(self._by_cid)

    # -- connections and their limits -------------------------------------------

    @property
    def connections(self) -> int:
        """Connections alive (handshaking or established)."""
        return len(self._live)

    @property
    def pending_handshakes(self) -> int:
        return len(self._handshaking)

    def connection_accepted(self, target: T) -> None:
        """A connection was started for an :class:`Accept` decision."""
        self._live.add(target)
        self._handshaking.add(target)

    def handshake_finished(self, target: T) -> None:
        self._handshaking.discard(target)

    def connection_finished(self, target: T) -> None:
        self._handshaking.discard(target)
        self._live.discard(target)

    def _require_retry(self) -> bool:
        if self.retry == "always":
            return True
        if self.retry == "under-load":
            return len(self._handshaking) >= self.retry_threshold
        return False

    def _at_max_connections(self) -> bool:
        limit = self.max_connections
        return limit is not None and len(self._live) >= limit

    def _accept(self, decision: Accept) -> Decision[T]:
        """The limits on new connections, applied to an Accept."""
        if self._at_max_connections():
            return RefuseConnection(
                decision.version, decision.destination_cid, decision.source_cid
            )
        backlog = self.max_pending_handshakes
        if backlog is not None and len(self._handshaking) >= backlog:
            return Drop(DropReason.BACKLOG_FULL)
        return decision

    # -- connection IDs and reset tokens -------------------------------------------

    def add(self, cid: bytes, target: T) -> None:
        self._by_cid[cid] = target

    def remove(self, cid: bytes, target: T | None = None) -> None:
        """Forget ``cid`` (only if it still points at ``target``, when given)."""
        if target is None or self._by_cid.get(cid) is target:
            self._by_cid.pop(cid, None)

    def add_reset_token(self, token: bytes, target: T) -> None:
        """Datagrams for unknown connection IDs ending with the peer's stateless
        reset ``token`` go to ``target``."""
        self._by_reset_token[token] = target

    def remove_reset_token(self, token: bytes, target: T | None = None) -> None:
        if target is None or self._by_reset_token.get(token) is target:
            self._by_reset_token.pop(token, None)

    def short_header_target(self, data: bytes) -> T | None:
        """Fast path for the common case: the connection a well-formed
        short-header datagram is for, or None (then call :meth:`route`)."""
        end = 1 + self.cid_length
        if len(data) > end and data[0] & 0xC0 == 0x40:
            return self._by_cid.get(data[1:end])
        return None

    def _reset_allowed(self, addr: Any, now: float) -> bool:
        """Whether the rate limits allow one more stateless reset to ``addr``
        at ``now`` (spending the tokens if so)."""
        rate = self._reset_rate_per_address
        if rate is not None:
            host = addr[0] if isinstance(addr, tuple) else addr
            sources = self._reset_sources
            bucket = sources.get(host)
            if bucket is None:
                bucket = sources[host] = TokenBucket(rate)
                if len(sources) > RESET_SOURCES:
                    sources.popitem(last=False)
            else:
                sources.move_to_end(host)
            if not bucket.take(now):
                return False
        overall = self._reset_bucket
        return overall is None or overall.take(now)

    def _unknown_short_header(
        self, data: bytes, cid: bytes, addr: Any, now: float
    ) -> Decision[T]:
        """A short-header datagram for no connection of ours: the peer's
        stateless reset for one of them, or a packet of a connection whose
        state we lost (answer it with a stateless reset, servers only)."""
        size = len(data)
        if self._by_reset_token and size >= MIN_STATELESS_RESET_SIZE:
            target = self._by_reset_token.get(bytes(data[-STATELESS_RESET_TOKEN_SIZE:]))
            if target is not None:
                return Deliver(target)
        if self.stateless_reset:
            reset_size = stateless_reset_size(size)
            if reset_size is not None and self._reset_allowed(addr, now):
                return SendStatelessReset(destination_cid=cid, size=reset_size)
        return Drop(DropReason.UNKNOWN_CONNECTION_ID)

    def route(self, data: bytes, addr: Any = None, now: float = 0.0) -> Decision[T]:
        """Decide where ``data`` (one UDP payload) from ``addr`` goes at time
        ``now``."""
        if not data:
            return Drop(DropReason.MALFORMED)
        first = data[0]
        if not first & 0x80:
            # Short header: 1 byte, then our connection ID of fixed length.
            end = 1 + self.cid_length
            if len(data) < end + 1 or not first & 0x40:
                return Drop(DropReason.MALFORMED)
            cid = bytes(data[1:end])
            target = self._by_cid.get(cid)
            if target is not None:
                return Deliver(target)
            return self._unknown_short_header(data, cid, addr, now)

        header = parse_long_header(data)
        if header is None:
            return Drop(DropReason.MALFORMED)
        if header.version == 0:
            # Never answer a Version Negotiation packet; clients handle it in
            # their engine, servers never expect one.
            target = self._by_cid.get(header.destination_cid)
            if target is not None and not self.accept_new:
                return Deliver(target)
            return Drop(DropReason.VERSION_NEGOTIATION)
        target = self._by_cid.get(header.destination_cid)
        if target is not None:
            return Deliver(target)
        if header.version not in self.supported_versions:
            if not self.accept_new:
                return Drop(DropReason.UNSUPPORTED_VERSION)
            if len(data) < MIN_INITIAL_DATAGRAM_SIZE:
                return Drop(DropReason.INITIAL_TOO_SMALL)
            return SendVersionNegotiation(
                encode_version_negotiation(
                    destination_cid=header.source_cid,
                    source_cid=header.destination_cid,
                    versions=self.supported_versions,
                )
            )
        if not first & 0x40:
            return Drop(DropReason.MALFORMED)
        if not self.accept_new:
            return Drop(DropReason.UNKNOWN_CONNECTION_ID)
        if not is_initial(first, header.version):
            return Drop(DropReason.NOT_INITIAL)
        if len(data) < MIN_INITIAL_DATAGRAM_SIZE:
            return Drop(DropReason.INITIAL_TOO_SMALL)
        token = initial_token(data, header)
        if token is None:
            return Drop(DropReason.MALFORMED)
        tokens = self.retry_tokens
        if token and tokens is not None:
            valid = tokens.validate(token, addr, now)
            if valid is None or valid.retry_source_cid != header.destination_cid:
                return RejectToken(version=header.version)
            return self._accept(
                Accept(
                    version=header.version,
                    destination_cid=header.destination_cid,
                    source_cid=header.source_cid,
                    original_destination_cid=valid.original_destination_cid,
                    retry_source_cid=valid.retry_source_cid,
                )
            )
        if len(header.destination_cid) < 8:
            # RFC 9000 section 7.2: a client's first DCID is at least 8 bytes.
            return Drop(DropReason.MALFORMED)
        if tokens is not None and self._require_retry():
            if self._at_max_connections():
                # No room even once the address is validated: refuse now.
                return RefuseConnection(
                    header.version, header.destination_cid, header.source_cid
                )
            new_cid = (
                os.urandom(self.cid_length) if self.new_cid is None else self.new_cid()
            )
            return SendRetry(
                version=header.version,
                destination_cid=header.source_cid,
                source_cid=new_cid,
                original_destination_cid=header.destination_cid,
                token=tokens.mint(addr, header.destination_cid, new_cid, now),
            )
        return self._accept(
            Accept(
                version=header.version,
                destination_cid=header.destination_cid,
                source_cid=header.source_cid,
                original_destination_cid=header.destination_cid,
            )
        )
