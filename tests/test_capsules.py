"""The Capsule Protocol (RFC 9297): encoding, the bounded streaming decoder,
and the reader over an HTTP/3 request stream."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trioquic._varint import decode_varint, encode_varint
from trioquic.h3 import (
    Capsule,
    CapsuleDecoder,
    CapsuleError,
    CapsuleReader,
    CapsuleType,
    H3ErrorCode,
    encode_capsule,
)

capsule_types = st.one_of(
    st.sampled_from([0, 0x2843, 0x78AE]), st.integers(0, 2**62 - 1)
)
capsules = st.builds(Capsule, capsule_types, st.binary(max_size=300))


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[last:point])
        last = point
    return pieces


@given(st.integers(0, 2**62 - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) in (1, 2, 4, 8)
    assert decode_varint(encoded) == (value, len(encoded))
    assert decode_varint(encoded[:-1]) is None


def test_varint_bounds() -> None:
    assert encode_varint(63) == b"\x3f"
    assert encode_varint(64) == b"\x40\x40"
    # RFC 9000 appendix A.1's examples
    assert decode_varint(bytes.fromhex("c2197c5eff14e88c")) == (151288809941952652, 8)
    assert decode_varint(bytes.fromhex("9d7f3e7d")) == (494878333, 4)
    with pytest.raises(ValueError, match="too large"):
        encode_varint(2**62)
    with pytest.raises(ValueError, match="negative"):
        encode_varint(-1)


@given(st.lists(capsules, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_split_decodes_the_same_capsules(
    sent: list[Capsule], cuts: list[int]
) -> None:
    wire = b"".join(c.encode() for c in sent)
    decoder = CapsuleDecoder(max_capsule_size=300)
    received: list[Capsule] = []
    for piece in _split(wire, cuts):
        received += decoder.feed(piece)
    decoder.finish()
    assert received == sent
    assert not decoder.pending


@given(st.lists(capsules, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_unknown_types_are_skipped_without_buffering(
    sent: list[Capsule], cuts: list[int]
) -> None:
    # A huge capsule of an unknown type among them: skipped as it streams.
    sent = [*sent, Capsule(0x1234, bytes(100_000)), *sent]
    wire = b"".join(c.encode() for c in sent)
    keep = {CapsuleType.DATAGRAM, CapsuleType.CLOSE_WEBTRANSPORT_SESSION}
    decoder = CapsuleDecoder(types=keep, max_capsule_size=300)
    received: list[Capsule] = []
    for piece in _split(wire, cuts):
        received += decoder.feed(piece)
        assert len(decoder._buffer) <= 300 + 16
    decoder.finish()
    assert received == [c for c in sent if c.type in keep]
    assert decoder.skipped == len(sent) - len(received)


def test_known_types_come_back_as_members() -> None:
    (capsule,) = CapsuleDecoder().feed(encode_capsule(0x2843, b"\0\0\0\0bye"))
    assert capsule.type is CapsuleType.CLOSE_WEBTRANSPORT_SESSION
    (other,) = CapsuleDecoder().feed(encode_capsule(0x77, b""))
    assert other == Capsule(0x77, b"")


def test_too_long_capsule_is_a_protocol_error() -> None:
    decoder = CapsuleDecoder(max_capsule_size=100)
    with pytest.raises(CapsuleError) as info:
        # only the header has arrived: refused before the value is buffered
        decoder.feed(encode_varint(0) + encode_varint(101))
    assert info.value.error_code == H3ErrorCode.GENERAL_PROTOCOL_ERROR
    assert "101 bytes" in str(info.value)


@pytest.mark.parametrize(
    "wire",
    [encode_capsule(0, b"abc")[:-1], b"\x40", encode_varint(0x2843)],
    ids=["in the value", "in the type", "before the length"],
)
def test_stream_ending_inside_a_capsule(wire: bytes) -> None:
    decoder = CapsuleDecoder()
    assert decoder.feed(wire) == []
    with pytest.raises(CapsuleError, match="ended inside a capsule"):
        decoder.finish()


def test_stream_ending_inside_a_skipped_capsule() -> None:
    decoder = CapsuleDecoder(types={0})
    assert decoder.feed(encode_capsule(9, b"x" * 50)[:20]) == []
    with pytest.raises(CapsuleError):
        decoder.finish()


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="capsule_type must be an int"):
        encode_capsule("0", b"")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="capsule_type"):
        encode_capsule(-1, b"")
    with pytest.raises(TypeError, match="value must be bytes"):
        encode_capsule(0, "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_capsule_size"):
        CapsuleDecoder(max_capsule_size=-1)
    with pytest.raises(TypeError, match="receive must be"):
        CapsuleReader(b"")  # type: ignore[arg-type]


async def test_reader_over_a_trio_stream() -> None:
    left, right = trio.testing.memory_stream_pair()
    reader = CapsuleReader(right.receive_some)
    sent = [Capsule(0, b"one"), Capsule(0x99, b"x" * 5000), Capsule(0, b"two")]
    async with trio.open_nursery() as nursery:

        async def write() -> None:
            for capsule in sent:
                await left.send_all(capsule.encode())
            await left.send_eof()

        nursery.start_soon(write)
        received = [c async for c in reader]
    assert received == sent
    assert await reader.receive() is None


async def test_reader_raises_on_truncated_stream() -> None:
    left, right = trio.testing.memory_stream_pair()
    reader = CapsuleReader(right.receive_some)
    await left.send_all(encode_capsule(0, b"abcdef")[:-2])
    await left.send_eof()
    with pytest.raises(CapsuleError):
        await reader.receive()
