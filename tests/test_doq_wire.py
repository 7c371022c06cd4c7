"""The DoQ wire rules of trioquic.doq (pure: bytes in, decisions out): the
length-prefixed query on a stream, the query checks, the responses the
server builds itself."""

from __future__ import annotations

import itertools

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import hypothesis
import hypothesis.strategies as st
import pytest

from trioquic.doq import DoqProtocolError
from trioquic.doq._wire import (
    QueryReader,
    QueryTooLarge,
    formerr_response,
    frame,
    parse_query,
    render_response,
    too_early_response,
)


def query_wire(name: str = "www.example.test", **kw: object) -> bytes:
    query = dns.message.make_query(name, "A", **kw)  # type: ignore[arg-type]
    query.id = 0
    return query.to_wire()


def feed_in_pieces(reader: QueryReader, data: bytes, cuts: list[int]) -> bytes | None:
    """Feed ``data`` split at ``cuts``; FIN with the last piece."""
    bounds = [0, *sorted(set(cuts)), len(data)]
    result = None
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    for index, piece in enumerate(pieces):
        result = reader.feed(piece, index == len(pieces) - 1)
    return result


@hypothesis.given(
    message=st.binary(min_size=0, max_size=600),
    cuts=st.lists(st.integers(min_value=0, max_value=602), max_size=8),
)
def test_any_split_of_a_framed_query_gives_it_back(
    message: bytes, cuts: list[int]
) -> None:
    data = frame(message)
    cuts = [c for c in cuts if c <= len(data)]
    assert feed_in_pieces(QueryReader(), data, cuts) == message


@hypothesis.given(
    message=st.binary(min_size=1, max_size=300),
    extra=st.binary(min_size=1, max_size=20),
    cut=st.integers(min_value=0, max_value=400),
)
def test_data_after_the_query_is_a_protocol_error(
    message: bytes, extra: bytes, cut: int
) -> None:
    data = frame(message) + extra
    with pytest.raises(DoqProtocolError, match="more data after"):
        feed_in_pieces(QueryReader(), data, [min(cut, len(data))])


@hypothesis.given(
    message=st.binary(min_size=1, max_size=300),
    missing=st.integers(min_value=1, max_value=302),
)
def test_fin_before_the_whole_query_is_a_protocol_error(
    message: bytes, missing: int
) -> None:
    data = frame(message)
    data = data[: max(0, len(data) - missing)]
    with pytest.raises(DoqProtocolError, match="the stream ended"):
        QueryReader().feed(data, True)


def test_no_fin_means_not_complete_yet() -> None:
    reader = QueryReader()
    assert reader.feed(frame(b"x" * 20), False) is None
    assert reader.received == 22
    assert reader.feed(b"", True) == b"x" * 20


def test_a_prefix_above_the_limit_is_refused_at_once() -> None:
    reader = QueryReader(max_size=100)
    assert reader.feed(b"\x00", False) is None
    with pytest.raises(QueryTooLarge) as info:
        reader.feed(b"\x65", False)  # 101
    assert info.value.size == 101 and info.value.limit == 100


def test_frame_refuses_oversized_messages() -> None:
    assert frame(b"ab") == b"\x00\x02ab"
    with pytest.raises(ValueError, match="65535"):
        frame(bytes(65536))


def test_parse_query_outcomes() -> None:
    query = parse_query(query_wire())
    assert isinstance(query, dns.message.Message) and query.id == 0
    with pytest.raises(DoqProtocolError, match="Message ID is 7"):
        parse_query(b"\x00\x07" + query_wire()[2:])
    with pytest.raises(DoqProtocolError, match="shorter than a DNS header"):
        parse_query(bytes(11))
    keepalive = dns.message.make_query(
        "a.test",
        "A",
        use_edns=0,
        options=[dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"")],
    )
    keepalive.id = 0
    with pytest.raises(DoqProtocolError, match="edns-tcp-keepalive"):
        parse_query(keepalive.to_wire())
    garbage = b"\x00\x00\x29\x00\x00\x05" + b"\xfe" * 30  # UPDATE, RD, junk
    answer = parse_query(garbage)
    assert isinstance(answer, bytes)
    formerr = dns.message.from_wire(answer)
    assert formerr.id == 0 and formerr.rcode() == dns.rcode.FORMERR
    assert formerr.opcode() == dns.opcode.UPDATE
    assert formerr.flags & dns.flags.QR and formerr.flags & dns.flags.RD


@hypothesis.given(st.binary(min_size=12, max_size=200))
def test_parse_query_never_raises_anything_else(data: bytes) -> None:
    try:
        result = parse_query(data)
    except DoqProtocolError:
        return
    if isinstance(result, bytes):
        assert dns.message.from_wire(result).rcode() == dns.rcode.FORMERR


def test_formerr_response_echoes_the_header() -> None:
    wire = formerr_response(b"\x00\x00\x01\x00" + bytes(8))
    assert wire == b"\x00\x00\x81\x01" + bytes(8)


def test_render_response_sets_id_zero_and_pads_padded_queries() -> None:
    padded = dns.message.from_wire(query_wire(use_edns=0, pad=128))
    response = dns.message.make_response(padded, pad=0)
    response.id = 4321
    wire = render_response(response, padded, pad=True)
    assert wire[:2] == b"\x00\x00" and len(wire) % 468 == 0
    plain = dns.message.from_wire(query_wire())
    unpadded = render_response(dns.message.make_response(plain), plain, pad=True)
    assert len(unpadded) % 468 != 0
    # A handler's response without EDNS gets an OPT record to carry padding.
    no_edns = dns.message.make_response(plain)
    assert len(render_response(no_edns, padded, pad=True)) % 468 == 0
    # Off when the server says so.
    response = dns.message.make_response(padded, pad=0)
    assert len(render_response(response, padded, pad=False)) % 468 != 0


def test_too_early_response() -> None:
    update = dns.message.make_query("a.test", "A")
    update.set_opcode(dns.opcode.UPDATE)
    response = too_early_response(update)
    assert response.rcode() == dns.rcode.REFUSED
    assert response.opcode() == dns.opcode.UPDATE
    (ede,) = response.options
    assert isinstance(ede, dns.edns.EDEOption)
    assert ede.code == dns.edns.EDECode.TOO_EARLY == 26
