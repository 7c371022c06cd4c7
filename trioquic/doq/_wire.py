"""The DoQ wire rules (RFC 9250 section 4.2), pure: bytes in, a decision
out. :class:`QueryReader` collects one stream's query; :func:`parse_query`
checks it; the ``*_response`` functions build the answers the server sends
on its own."""

from __future__ import annotations

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode

from ._errors import DoqProtocolError

#: The ALPN token of DNS over QUIC (RFC 9250 section 4.1).
DOQ_ALPN = "doq"
#: The DoQ port (RFC 9250 section 4.1.1).
DEFAULT_PORT = 853
#: A DNS message over DoQ is at most this long (its 2-byte length prefix).
MAX_MESSAGE_SIZE = 65535
#: Size of a DNS message header (RFC 1035 section 4.1.1).
HEADER_SIZE = 12
#: Responses to a padded query are padded to a multiple of this (RFC 8467
#: section 4.1, the Block-Length Padding strategy for responses).
RESPONSE_PADDING_BLOCK = 468
#: Opcodes whose transactions may be replayed, so may come in 0-RTT data
#: (RFC 9250 section 4.5).
REPLAYABLE_OPCODES = frozenset({dns.opcode.QUERY, dns.opcode.NOTIFY})


def frame(wire: bytes) -> bytes:
    """``wire`` with its 2-byte length prefix."""
    if len(wire) > MAX_MESSAGE_SIZE:
        raise ValueError(
            f"a DNS message over DoQ is at most {MAX_MESSAGE_SIZE} bytes, "
            f"got {len(wire)}"
        )
    return len(wire).to_bytes(2, "big") + wire


class QueryTooLarge(Exception):
    """The length prefix announces a query larger than the server accepts."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the query is {size} bytes, more than the {limit} accepted")
        self.size = size
        self.limit = limit


class QueryReader:
    """One stream's query: the 2-byte length prefix, exactly that many bytes,
    and the FIN (RFC 9250 section 4.2). Holds at most ``2 + max_size``
    bytes.

    :meth:`feed` returns the query's bytes once the FIN arrived, None while
    more is expected; it raises :exc:`DoqProtocolError` for data after the
    query (a second message on the stream) or a FIN before the whole query,
    and :exc:`QueryTooLarge` for a prefix above ``max_size``.
    """

    __slots__ = ("_buffer", "_length", "max_size")

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._length: int | None = None

    @property
    def received(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes, end_stream: bool) -> bytes | None:
        buffer = self._buffer
        if self._length is None:
            need = 2 - len(buffer)
            buffer += data[:need]
            data = data[need:]
            if len(buffer) == 2:
                self._length = int.from_bytes(buffer, "big")
                if self._length > self.max_size:
                    raise QueryTooLarge(self._length, self.max_size)
        if data:
            assert self._length is not None
            if len(buffer) - 2 + len(data) > self._length:
                raise DoqProtocolError(
                    f"more data after the {self._length}-byte query on its stream "
                    "(one query per stream, then FIN: RFC 9250 section 4.2)"
                )
            buffer += data
        if not end_stream:
            return None
        if self._length is None:
            raise DoqProtocolError(
                "the stream ended before the query's 2-byte length prefix"
            )
        if len(buffer) - 2 < self._length:
            raise DoqProtocolError(
                f"the stream ended after {len(buffer) - 2} bytes of a query whose "
                f"length prefix says {self._length} (RFC 9250 section 4.3.3)"
            )
        return bytes(buffer[2:])


def parse_query(wire: bytes) -> dns.message.Message | bytes:
    """The query in ``wire``, or the FORMERR response to send when it is not
    a DNS query that can be parsed (its header can: it is echoed).

    Raises :exc:`DoqProtocolError` where RFC 9250 section 4.3.3 makes it a
    protocol error: a non-zero Message ID, an edns-tcp-keepalive option; and
    for a message too short to hold a DNS header (nothing to answer).
    """
    if len(wire) < HEADER_SIZE:
        raise DoqProtocolError(
            f"a {len(wire)}-byte message is shorter than a DNS header "
            f"({HEADER_SIZE} bytes)"
        )
    message_id = int.from_bytes(wire[:2], "big")
    if message_id != 0:
        raise DoqProtocolError(
            f"the query's Message ID is {message_id}: over DoQ it must be 0 "
            "(RFC 9250 section 4.2.1)"
        )
    flags = int.from_bytes(wire[2:4], "big")
    if flags & dns.flags.QR:
        return formerr_response(wire)  # a response is no query
    try:
        query = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError, IndexError):
        return formerr_response(wire)
    for option in query.options:
        if option.otype == dns.edns.OptionType.KEEPALIVE:
            raise DoqProtocolError(
                "the query carries the edns-tcp-keepalive option, which DoQ "
                "forbids (RFC 9250 section 5.5.2)"
            )
    return query


def formerr_response(wire: bytes) -> bytes:
    """A FORMERR response to the query whose header starts ``wire``: Message
    ID 0, the query's opcode and RD bit, no sections (RFC 1035 section 4.1.1)."""
    flags = int.from_bytes(wire[2:4], "big")
    opcode_bits = flags & 0x7800
    answer_flags = (
        dns.flags.QR | opcode_bits | (flags & dns.flags.RD) | dns.rcode.FORMERR
    )
    return b"\x00\x00" + answer_flags.to_bytes(2, "big") + bytes(8)


def error_response(
    query: dns.message.Message, rcode: dns.rcode.Rcode
) -> dns.message.Message:
    """A response to ``query`` with ``rcode`` and no answer."""
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    return response


def too_early_response(query: dns.message.Message) -> dns.message.Message:
    """REFUSED with the Extended DNS Error "Too Early" (RFC 9250 section 4.5)."""
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.REFUSED)
    options = [*response.options, dns.edns.EDEOption(dns.edns.EDECode.TOO_EARLY)]
    response.use_edns(
        0, response.ednsflags, response.payload, options=options, pad=response.pad
    )
    return response


def wants_padding(query: dns.message.Message) -> bool:
    return any(option.otype == dns.edns.OptionType.PADDING for option in query.options)


def render_response(
    response: dns.message.Message, query: dns.message.Message, *, pad: bool
) -> bytes:
    """``response`` as DoQ sends it: Message ID 0 (RFC 9250 section 4.2.1),
    padded when ``pad`` and the query was (RFC 9250 section 5.4); at most
    65535 bytes (:exc:`dns.exception.TooBig` otherwise)."""
    response.id = 0
    if pad and wants_padding(query) and not response.pad:
        options = [
            option
            for option in response.options
            if option.otype != dns.edns.OptionType.PADDING
        ]
        edns = response.edns if response.edns >= 0 else 0
        response.use_edns(
            edns,
            response.ednsflags,
            response.payload,
            options=options,
            pad=RESPONSE_PADDING_BLOCK,
        )
    return response.to_wire(max_size=MAX_MESSAGE_SIZE)
