"""QUIC wire format for the fuzzer: varints, packet headers, frames, packet
protection, and the parts of a TLS ClientHello it mutates.

Written from RFC 9000 (packets and frames), RFC 9001 (packet protection, with
aioquic's crypto primitives) and RFC 8446 (the ClientHello), to build packets
that are wrong in one chosen place and right everywhere else: a datagram whose
header is valid but whose length field lies, an Initial whose encryption is
correct but whose ClientHello carries a broken transport parameter, a 1-RTT
packet of a live connection whose frames reference streams that do not exist.
Nothing here is trioquic's code: the fuzzer must not share the server's
parser, or it would share its bugs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import attrs
from aioquic.quic.crypto import CryptoContext, CryptoPair
from aioquic.tls import CipherSuite

QUIC_VERSION_1 = 0x00000001
QUIC_VERSION_2 = 0x6B3343CF
#: Long-header packet types of QUIC version 1 (RFC 9000 section 17.2).
INITIAL, ZERO_RTT, HANDSHAKE, RETRY = 0, 1, 2, 3
PACKET_TYPE_NAMES = {INITIAL: "initial", ZERO_RTT: "0rtt", HANDSHAKE: "handshake"}
#: The largest UDP payload over IPv4.
MAX_DATAGRAM = 65507
MAX_VARINT = (1 << 62) - 1
#: A client's first flight must fill a datagram of at least this size.
MIN_INITIAL_SIZE = 1200
AEAD_TAG_SIZE = 16
#: The cipher suite the fuzzer's own clients offer (so that it can derive the
#: keys of their connections from the secrets they log).
FUZZ_CIPHER_SUITE = CipherSuite.AES_128_GCM_SHA256

# -- varints -----------------------------------------------------------------


def encode_varint(value: int, size: int | None = None) -> bytes:
    """``value`` as a QUIC variable-length integer, in ``size`` bytes (1, 2, 4
    or 8) or the fewest that hold it."""
    if size is None:
        if value < 0x40:
            size = 1
        elif value < 0x4000:
            size = 2
        elif value < 0x40000000:
            size = 4
        else:
            size = 8
    prefix = {1: 0, 2: 1, 4: 2, 8: 3}[size]
    value &= (1 << (8 * size - 2)) - 1
    return ((prefix << (8 * size - 2)) | value).to_bytes(size, "big")


def decode_varint(data: bytes, offset: int) -> tuple[int, int] | None:
    """The varint at ``offset`` and the offset after it, or None if cut."""
    if offset >= len(data):
        return None
    first = data[offset]
    size = 1 << (first >> 6)
    if offset + size > len(data):
        return None
    value = first & 0x3F
    for byte in data[offset + 1 : offset + size]:
        value = (value << 8) | byte
    return value, offset + size


def random_varint(rng: random.Random) -> int:
    """A varint value drawn to hit every encoding size and the edges."""
    choice = rng.random()
    if choice < 0.3:
        return rng.randrange(0x40)
    if choice < 0.5:
        return rng.randrange(0x4000)
    if choice < 0.65:
        return rng.randrange(0x40000000)
    if choice < 0.8:
        return rng.randrange(MAX_VARINT + 1)
    return rng.choice([0, 1, 0x3F, 0x40, 0x3FFF, 0x4000, 0x3FFFFFFF, MAX_VARINT])


# -- packet headers ---------------------------------------------------------


@attrs.frozen
class LongHeader:
    """Where the fields of a long-header packet are in a datagram."""

    first_byte: int
    version: int
    destination_cid: bytes
    source_cid: bytes
    #: Offsets of the DCID length byte, the SCID length byte, the token
    #: length varint (Initial only, else -1), the length varint (-1 for
    #: Retry and Version Negotiation), and the packet number.
    dcid_length_at: int
    scid_length_at: int
    token_length_at: int
    length_at: int
    packet_number_at: int
    #: Where this packet ends in the datagram (its length field says so), or
    #: the datagram's end.
    end: int

    @property
    def packet_type(self) -> int:
        return (self.first_byte & 0x30) >> 4


def parse_long_header(data: bytes, offset: int = 0) -> LongHeader | None:
    """The long header at ``offset`` (not decrypted: packet number bits are
    still protected), or None when it is not one or is cut short."""
    if len(data) < offset + 7 or not data[offset] & 0x80:
        return None
    first = data[offset]
    version = int.from_bytes(data[offset + 1 : offset + 5], "big")
    dcid_at = offset + 5
    dcid_len = data[dcid_at]
    scid_at = dcid_at + 1 + dcid_len
    if scid_at >= len(data):
        return None
    dcid = bytes(data[dcid_at + 1 : scid_at])
    scid_len = data[scid_at]
    position = scid_at + 1 + scid_len
    if position > len(data):
        return None
    scid = bytes(data[scid_at + 1 : position])
    token_at = length_at = -1
    packet_type = (first & 0x30) >> 4
    if version == 0 or packet_type == RETRY:
        return LongHeader(
            first, version, dcid, scid, dcid_at, scid_at, -1, -1, -1, len(data)
        )
    if packet_type == INITIAL:
        token_at = position
        decoded = decode_varint(data, position)
        if decoded is None:
            return None
        token_length, position = decoded
        position += token_length
    length_at = position
    decoded = decode_varint(data, position)
    if decoded is None:
        return None
    length, position = decoded
    end = min(len(data), position + length)
    return LongHeader(
        first, version, dcid, scid, dcid_at, scid_at, token_at, length_at, position, end
    )


def split_coalesced(data: bytes) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each packet of a datagram: long headers carry their
    length; a short header runs to the end."""
    offset = 0
    while offset < len(data):
        header = parse_long_header(data, offset)
        if header is None or header.length_at < 0 or header.end <= offset:
            yield offset, len(data)
            return
        yield offset, header.end
        offset = header.end


def packet_class(data: bytes) -> str:
    """``initial``, ``handshake``, ``0rtt``, ``short`` or ``other``."""
    if not data:
        return "other"
    if not data[0] & 0x80:
        return "short" if data[0] & 0x40 else "other"
    header = parse_long_header(data)
    if header is None or header.version != QUIC_VERSION_1:
        return "other"
    return PACKET_TYPE_NAMES.get(header.packet_type, "other")


def long_header_bytes(
    *,
    packet_type: int,
    destination_cid: bytes,
    source_cid: bytes,
    payload_length: int,
    packet_number: int,
    packet_number_size: int = 4,
    version: int = QUIC_VERSION_1,
    token: bytes = b"",
    low_bits: int | None = None,
) -> bytes:
    """A long header in plaintext (before header protection), whose length
    field covers a payload of ``payload_length`` bytes after the packet
    number (the AEAD tag included)."""
    first = 0xC0 | (packet_type << 4) | (packet_number_size - 1)
    if low_bits is not None:
        first = (first & 0xF0) | low_bits
    parts = [
        bytes([first]),
        version.to_bytes(4, "big"),
        bytes([len(destination_cid)]),
        destination_cid,
        bytes([len(source_cid)]),
        source_cid,
    ]
    if packet_type == INITIAL:
        parts += [encode_varint(len(token)), token]
    parts.append(encode_varint(packet_number_size + payload_length, 2))
    parts.append(
        (packet_number & ((1 << (8 * packet_number_size)) - 1)).to_bytes(
            packet_number_size, "big"
        )
    )
    return b"".join(parts)


def short_header_bytes(
    destination_cid: bytes,
    packet_number: int,
    *,
    packet_number_size: int = 4,
    key_phase: int = 0,
    spin: int = 0,
) -> bytes:
    first = 0x40 | (spin << 5) | (key_phase << 2) | (packet_number_size - 1)
    return (
        bytes([first])
        + destination_cid
        + (packet_number & ((1 << (8 * packet_number_size)) - 1)).to_bytes(
            packet_number_size, "big"
        )
    )


# -- packet protection ------------------------------------------------------


def initial_crypto(destination_cid: bytes, *, client: bool = True) -> CryptoPair:
    """The Initial keys of a connection whose client chose
    ``destination_cid``, for the client's side (``client``) or the server's."""
    pair = CryptoPair()
    pair.setup_initial(destination_cid, is_client=client, version=QUIC_VERSION_1)
    return pair


def crypto_context(secret: bytes) -> CryptoContext:
    """Packet protection for one direction from a TLS traffic secret."""
    context = CryptoContext()
    context.setup(cipher_suite=FUZZ_CIPHER_SUITE, secret=secret, version=QUIC_VERSION_1)
    return context


def seal_long(
    context: CryptoContext,
    *,
    packet_type: int,
    destination_cid: bytes,
    source_cid: bytes,
    payload: bytes,
    packet_number: int,
    token: bytes = b"",
    pad_to: int = 0,
) -> bytes:
    """A protected long-header packet carrying ``payload`` (frames), padded
    with PADDING frames so that the packet is at least ``pad_to`` bytes."""
    payload = bytes(payload) or b"\x01"
    header = long_header_bytes(
        packet_type=packet_type,
        destination_cid=destination_cid,
        source_cid=source_cid,
        payload_length=len(payload) + AEAD_TAG_SIZE,
        packet_number=packet_number,
        token=token,
    )
    missing = pad_to - (len(header) + len(payload) + AEAD_TAG_SIZE)
    if missing > 0:
        payload += bytes(missing)
        header = long_header_bytes(
            packet_type=packet_type,
            destination_cid=destination_cid,
            source_cid=source_cid,
            payload_length=len(payload) + AEAD_TAG_SIZE,
            packet_number=packet_number,
            token=token,
        )
    return context.encrypt_packet(header, payload, packet_number)


def seal_short(
    context: CryptoContext,
    *,
    destination_cid: bytes,
    payload: bytes,
    packet_number: int,
    key_phase: int = 0,
) -> bytes:
    payload = bytes(payload)
    if len(payload) < 4:
        payload += bytes(4 - len(payload))
    header = short_header_bytes(destination_cid, packet_number, key_phase=key_phase)
    return context.encrypt_packet(header, payload, packet_number)


def open_initial(datagram: bytes, *, client_sent: bool) -> tuple[bytes, bytes] | None:
    """Decrypt the first packet of a datagram if it is a QUIC v1 Initial:
    ``(destination_cid, frames)``. ``client_sent``: whether a client sent it
    (then its own DCID gives the keys)."""
    header = parse_long_header(datagram)
    if (
        header is None
        or header.version != QUIC_VERSION_1
        or header.packet_type != INITIAL
        or header.packet_number_at < 0
    ):
        return None
    if not client_sent:
        return None
    pair = initial_crypto(header.destination_cid, client=False)
    try:
        _, payload, _ = pair.decrypt_packet(
            datagram[: header.end], header.packet_number_at, 0
        )
    except Exception:
        return None
    return header.destination_cid, payload


def open_server_initial(
    datagram: bytes, client_dcid: bytes
) -> tuple[LongHeader, bytes] | None:
    """Decrypt a server's Initial (the first packet of ``datagram``) of a
    connection whose client first chose ``client_dcid``."""
    header = parse_long_header(datagram)
    if header is None or header.packet_type != INITIAL or header.packet_number_at < 0:
        return None
    pair = initial_crypto(client_dcid, client=True)
    try:
        _, payload, _ = pair.decrypt_packet(
            datagram[: header.end], header.packet_number_at, 0
        )
    except Exception:
        return None
    return header, payload


# -- frames -----------------------------------------------------------------

PADDING, PING, ACK, ACK_ECN = 0x00, 0x01, 0x02, 0x03
RESET_STREAM, STOP_SENDING, CRYPTO, NEW_TOKEN = 0x04, 0x05, 0x06, 0x07
STREAM = 0x08
MAX_DATA, MAX_STREAM_DATA, MAX_STREAMS_BIDI, MAX_STREAMS_UNI = 0x10, 0x11, 0x12, 0x13
DATA_BLOCKED, STREAM_DATA_BLOCKED = 0x14, 0x15
STREAMS_BLOCKED_BIDI, STREAMS_BLOCKED_UNI = 0x16, 0x17
NEW_CONNECTION_ID, RETIRE_CONNECTION_ID = 0x18, 0x19
PATH_CHALLENGE, PATH_RESPONSE = 0x1A, 0x1B
CONNECTION_CLOSE, APPLICATION_CLOSE, HANDSHAKE_DONE = 0x1C, 0x1D, 0x1E
DATAGRAM, DATAGRAM_LENGTH = 0x30, 0x31


def v(value: int) -> bytes:
    return encode_varint(value)


def crypto_frame(offset: int, data: bytes) -> bytes:
    return v(CRYPTO) + v(offset) + v(len(data)) + data


def stream_frame(stream_id: int, offset: int, data: bytes, fin: bool) -> bytes:
    frame_type = STREAM | 0x02 | (0x04 if offset else 0) | (0x01 if fin else 0)
    out = v(frame_type) + v(stream_id)
    if offset:
        out += v(offset)
    return out + v(len(data)) + data


def ack_frame(largest: int, delay: int, first_range: int, ranges: list[int]) -> bytes:
    """An ACK frame; ``ranges`` alternate gap and range lengths."""
    out = v(ACK) + v(largest) + v(delay) + v(len(ranges) // 2) + v(first_range)
    return out + b"".join(v(x) for x in ranges[: len(ranges) // 2 * 2])


def connection_close_frame(code: int, frame_type: int, reason: bytes) -> bytes:
    return v(CONNECTION_CLOSE) + v(code) + v(frame_type) + v(len(reason)) + reason


@attrs.frozen
class CloseFrame:
    error_code: int
    frame_type: int | None
    reason: bytes


def find_connection_close(frames: bytes) -> CloseFrame | None:
    """The CONNECTION_CLOSE among the frames of an Initial or Handshake
    packet (which may also hold only PADDING, PING, ACK and CRYPTO)."""
    offset = 0
    while offset < len(frames):
        decoded = decode_varint(frames, offset)
        if decoded is None:
            return None
        frame_type, offset = decoded
        if frame_type in (PADDING, PING):
            continue
        if frame_type in (ACK, ACK_ECN):
            fields = 4
            values = []
            for _ in range(fields):
                decoded = decode_varint(frames, offset)
                if decoded is None:
                    return None
                value, offset = decoded
                values.append(value)
            for _ in range(2 * values[2] + (3 if frame_type == ACK_ECN else 0)):
                decoded = decode_varint(frames, offset)
                if decoded is None:
                    return None
                offset = decoded[1]
            continue
        if frame_type == CRYPTO:
            decoded = decode_varint(frames, offset)
            if decoded is None:
                return None
            decoded = decode_varint(frames, decoded[1])
            if decoded is None:
                return None
            length, offset = decoded
            offset += length
            continue
        if frame_type in (CONNECTION_CLOSE, APPLICATION_CLOSE):
            decoded = decode_varint(frames, offset)
            if decoded is None:
                return None
            code, offset = decoded
            closing_type: int | None = None
            if frame_type == CONNECTION_CLOSE:
                decoded = decode_varint(frames, offset)
                if decoded is None:
                    return None
                closing_type, offset = decoded
            decoded = decode_varint(frames, offset)
            if decoded is None:
                return None
            length, offset = decoded
            return CloseFrame(
                code, closing_type, bytes(frames[offset : offset + length])
            )
        return None
    return None


def crypto_data(frames: bytes) -> bytes | None:
    """The CRYPTO data at offset 0 of a client's first Initial, joined."""
    offset = 0
    pieces: dict[int, bytes] = {}
    while offset < len(frames):
        decoded = decode_varint(frames, offset)
        if decoded is None:
            break
        frame_type, offset = decoded
        if frame_type in (PADDING, PING):
            continue
        if frame_type != CRYPTO:
            break
        decoded = decode_varint(frames, offset)
        if decoded is None:
            return None
        start, offset = decoded
        decoded = decode_varint(frames, offset)
        if decoded is None:
            return None
        length, offset = decoded
        pieces[start] = bytes(frames[offset : offset + length])
        offset += length
    data = b""
    while len(data) in pieces:
        data += pieces.pop(len(data))
    return data or None


# -- TLS ClientHello --------------------------------------------------------

EXT_SUPPORTED_GROUPS = 10
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43
EXT_PSK_MODES = 45
EXT_KEY_SHARE = 51
EXT_QUIC_TRANSPORT_PARAMETERS = 0x39


@attrs.define
class ClientHello:
    """A ClientHello split into the fields the mutations change; ``encode``
    puts it back together with every length recomputed."""

    legacy_version: bytes
    random: bytes
    session_id: bytes
    cipher_suites: bytes
    compression: bytes
    extensions: list[tuple[int, bytes]]

    @classmethod
    def parse(cls, message: bytes) -> ClientHello | None:
        if len(message) < 4 or message[0] != 1:
            return None
        body = message[4 : 4 + int.from_bytes(message[1:4], "big")]
        try:
            position = 0
            legacy_version = body[0:2]
            random_bytes = body[2:34]
            position = 34
            sid_len = body[position]
            session_id = body[position + 1 : position + 1 + sid_len]
            position += 1 + sid_len
            cs_len = int.from_bytes(body[position : position + 2], "big")
            cipher_suites = body[position + 2 : position + 2 + cs_len]
            position += 2 + cs_len
            comp_len = body[position]
            compression = body[position + 1 : position + 1 + comp_len]
            position += 1 + comp_len
            ext_total = int.from_bytes(body[position : position + 2], "big")
            position += 2
            end = position + ext_total
            extensions = []
            while position + 4 <= end:
                ext_type = int.from_bytes(body[position : position + 2], "big")
                ext_len = int.from_bytes(body[position + 2 : position + 4], "big")
                extensions.append(
                    (ext_type, bytes(body[position + 4 : position + 4 + ext_len]))
                )
                position += 4 + ext_len
        except IndexError:
            return None
        return cls(
            bytes(legacy_version),
            bytes(random_bytes),
            bytes(session_id),
            bytes(cipher_suites),
            bytes(compression),
            extensions,
        )

    def encode(self) -> bytes:
        extensions = b"".join(
            t.to_bytes(2, "big") + len(d).to_bytes(2, "big") + d
            for t, d in self.extensions
        )
        body = (
            self.legacy_version
            + self.random
            + bytes([len(self.session_id)])
            + self.session_id
            + len(self.cipher_suites).to_bytes(2, "big")
            + self.cipher_suites
            + bytes([len(self.compression)])
            + self.compression
            + len(extensions).to_bytes(2, "big")
            + extensions
        )
        return b"\x01" + len(body).to_bytes(3, "big") + body


def parse_transport_parameters(data: bytes) -> list[tuple[int, bytes]] | None:
    params = []
    offset = 0
    while offset < len(data):
        decoded = decode_varint(data, offset)
        if decoded is None:
            return None
        param_id, offset = decoded
        decoded = decode_varint(data, offset)
        if decoded is None:
            return None
        length, offset = decoded
        if offset + length > len(data):
            return None
        params.append((param_id, bytes(data[offset : offset + length])))
        offset += length
    return params


def encode_transport_parameters(params: list[tuple[int, bytes]]) -> bytes:
    return b"".join(v(i) + v(len(d)) + d for i, d in params)
