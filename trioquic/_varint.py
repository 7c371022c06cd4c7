"""QUIC variable-length integers (RFC 9000 section 16), used by the packet
router, HTTP/3 datagrams and capsules."""

from __future__ import annotations

#: Variable-length integers are below 2**62.
VARINT_LIMIT = 1 << 62


def encode_varint(value: int) -> bytes:
    """A QUIC variable-length integer (RFC 9000 section 16)."""
    if value < 0x40:
        if value < 0:
            raise ValueError(
                f"a QUIC variable-length integer cannot be negative: {value}"
            )
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x4000_0000:
        return (value | 0x8000_0000).to_bytes(4, "big")
    if value < VARINT_LIMIT:
        return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")
    raise ValueError(f"{value} is too large for a QUIC variable-length integer")


def decode_varint(
    data: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[int, int] | None:
    """The QUIC variable-length integer at ``offset`` of ``data``: ``(value,
    offset after it)``, or ``None`` if ``data`` ends first."""
    if offset >= len(data):
        return None
    first = data[offset]
    size = 1 << (first >> 6)
    end = offset + size
    if end > len(data):
        return None
    value = first & 0x3F
    for byte in data[offset + 1 : end]:
        value = (value << 8) | byte
    return value, end
