"""What the fuzzer sends: the corpus of captured datagrams, the mutation
kinds, and the frames it puts in the packets it seals itself.

Every choice is drawn from the ``random.Random`` handed in, so a run's
sequence of decisions follows from its seed. The captured material differs
between runs (TLS is randomized), so the bytes do too: the fuzzer keeps the
last datagrams it sent and writes them out with any finding.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import pylsqpack
from _fuzz_wire import (
    ACK_ECN,
    DATA_BLOCKED,
    DATAGRAM_LENGTH,
    EXT_ALPN,
    EXT_KEY_SHARE,
    EXT_QUIC_TRANSPORT_PARAMETERS,
    HANDSHAKE,
    HANDSHAKE_DONE,
    INITIAL,
    MAX_DATA,
    MAX_DATAGRAM,
    MAX_STREAM_DATA,
    MAX_STREAMS_BIDI,
    MAX_STREAMS_UNI,
    MIN_INITIAL_SIZE,
    NEW_CONNECTION_ID,
    NEW_TOKEN,
    PATH_CHALLENGE,
    PATH_RESPONSE,
    PING,
    QUIC_VERSION_1,
    QUIC_VERSION_2,
    RESET_STREAM,
    RETIRE_CONNECTION_ID,
    RETRY,
    STOP_SENDING,
    STREAM_DATA_BLOCKED,
    STREAMS_BLOCKED_BIDI,
    STREAMS_BLOCKED_UNI,
    ZERO_RTT,
    ClientHello,
    ack_frame,
    connection_close_frame,
    crypto_frame,
    encode_transport_parameters,
    encode_varint,
    initial_crypto,
    long_header_bytes,
    packet_class,
    parse_long_header,
    parse_transport_parameters,
    random_varint,
    seal_long,
    split_coalesced,
    stream_frame,
    v,
)

#: The server's connection IDs are this long (QuicSettings.connection_id_length).
SERVER_CID_LENGTH = 8

# -- the corpus --------------------------------------------------------------


class Corpus:
    """Datagrams captured on their way to the server, kept per packet class
    (a reservoir sample), and the server's connection IDs seen in use."""

    CLASSES = ("initial", "handshake", "0rtt", "short", "other")

    def __init__(self, rng: random.Random, per_class: int = 96) -> None:
        self._rng = rng
        self._per_class = per_class
        self._samples: dict[str, list[bytes]] = {c: [] for c in self.CLASSES}
        self._seen: dict[str, int] = dict.fromkeys(self.CLASSES, 0)
        #: Server connection IDs in use (most recently seen last).
        self.live_cids: OrderedDict[bytes, None] = OrderedDict()
        #: Client-chosen first destination IDs (routed while a connection
        #: lives) and the ClientHellos of captured Initials.
        self.original_cids: OrderedDict[bytes, None] = OrderedDict()
        self.client_hellos: list[bytes] = []

    def __len__(self) -> int:
        return sum(len(s) for s in self._samples.values())

    def add(self, datagram: bytes) -> None:
        cls = packet_class(datagram)
        samples = self._samples[cls]
        self._seen[cls] += 1
        if len(samples) < self._per_class:
            samples.append(datagram)
        else:
            index = self._rng.randrange(self._seen[cls])
            if index < self._per_class:
                samples[index] = datagram
        for start, end in split_coalesced(datagram):
            packet = datagram[start:end]
            if not packet:
                continue
            if packet[0] & 0xC0 == 0x40 and len(packet) > SERVER_CID_LENGTH:
                self.note_cid(packet[1 : 1 + SERVER_CID_LENGTH])
            header = parse_long_header(packet)
            if header is not None and header.version == QUIC_VERSION_1:
                if header.packet_type == INITIAL:
                    self._remember(self.original_cids, header.destination_cid, 64)
                elif len(header.destination_cid) == SERVER_CID_LENGTH:
                    self.note_cid(header.destination_cid)

    def note_cid(self, cid: bytes) -> None:
        self._remember(self.live_cids, bytes(cid), 64)

    @staticmethod
    def _remember(table: OrderedDict[bytes, None], key: bytes, bound: int) -> None:
        table[key] = None
        table.move_to_end(key)
        while len(table) > bound:
            table.popitem(last=False)

    def pick(self, rng: random.Random, cls: str | None = None) -> bytes | None:
        if cls is None:
            pools = [s for s in self._samples.values() if s]
            if not pools:
                return None
            pool = rng.choice(pools)
        else:
            pool = self._samples[cls]
            if not pool:
                return None
        return rng.choice(pool)

    def pick_cid(self, rng: random.Random) -> bytes | None:
        if not self.live_cids:
            return None
        keys = list(self.live_cids)
        # Recent IDs are the ones most likely still live.
        return keys[-1 - min(int(rng.expovariate(0.3)), len(keys) - 1)]

    def pick_original_cid(self, rng: random.Random) -> bytes | None:
        if not self.original_cids:
            return None
        return rng.choice(list(self.original_cids))


# -- the connections the fuzzer seals packets for ---------------------------


class SealingTarget(Protocol):
    """A connection of the fuzzer's own whose keys it knows (see
    ``_fuzz_own.py``)."""

    streams: StreamPlan
    #: Whether any frame at all may be sealed for it (else mostly valid ones).
    chaos: bool

    def send(self, data: bytes) -> None:
        """Send from the connection's own address."""
        ...

    def seal_initial(self, frames: bytes) -> bytes | None: ...
    def seal_handshake(self, frames: bytes) -> bytes | None: ...
    def seal_1rtt(self, frames: bytes, key_phase: int = 0) -> bytes | None: ...


class Targets(Protocol):
    def handshaking(self, rng: random.Random) -> SealingTarget | None: ...
    def established(self, rng: random.Random) -> SealingTarget | None: ...


# -- HTTP/3 content ---------------------------------------------------------

H3_DATA, H3_HEADERS, H3_CANCEL_PUSH, H3_SETTINGS = 0x00, 0x01, 0x03, 0x04
H3_PUSH_PROMISE, H3_GOAWAY, H3_MAX_PUSH_ID = 0x05, 0x07, 0x0D
#: HTTP/2 frame types reserved in HTTP/3 (an error on any stream).
H3_RESERVED = (0x02, 0x06, 0x08, 0x09)


def grease(rng: random.Random) -> int:
    return 0x1F * rng.randrange(1 << 20) + 0x21


def h3_frame(frame_type: int, payload: bytes) -> bytes:
    return v(frame_type) + v(len(payload)) + payload


class StreamPlan:
    """The streams the fuzzer opened on one connection and how far each got."""

    def __init__(self) -> None:
        self.offsets: dict[int, int] = {}
        self.next_bidi = 0
        self.control_sent = False
        self.next_uni = 3  # 2, 6 and 10 are the control and QPACK streams

    def open_request(self, rng: random.Random) -> int:
        if rng.random() < 0.02:
            return 4 * rng.randrange(100, 1 << 16)  # beyond the stream limit
        stream_id = 4 * self.next_bidi
        self.next_bidi += 1
        return stream_id

    def open_uni(self) -> int:
        stream_id = 4 * self.next_uni + 2
        self.next_uni += 1
        return stream_id

    def frame(
        self, rng: random.Random, stream_id: int, data: bytes, fin: bool
    ) -> bytes:
        offset = self.offsets.get(stream_id, 0)
        if rng.random() < 0.03:
            offset = random_varint(rng) & ((1 << 40) - 1)  # a gap, or far beyond
        self.offsets[stream_id] = offset + len(data)
        return stream_frame(stream_id, offset, data, fin)


METHODS = [b"GET", b"GET", b"GET", b"POST", b"HEAD", b"CONNECT", b"PUT", b"G\x00T"]


def request_headers(rng: random.Random) -> list[tuple[bytes, bytes]]:
    size = rng.choice([0, 1, 100, 1000, 20_000, 70_000, 1 << 20, 1 << 24])
    path = rng.choice(
        [f"/data/{size}".encode(), b"/echo", b"/", b"*", b"", b"/data/x", b"/data/-1"]
    )
    headers = [
        (b":method", rng.choice(METHODS)),
        (b":scheme", rng.choice([b"https", b"https", b"http", b""])),
        (b":authority", rng.choice([b"localhost", b"localhost", b"", b"a" * 300])),
        (b":path", path),
    ]
    mutation = rng.random()
    if mutation < 0.5:
        pass
    elif mutation < 0.6:
        del headers[rng.randrange(len(headers))]
    elif mutation < 0.65:
        headers.append(rng.choice(headers))
    elif mutation < 0.7:
        headers.append((b"connection", b"keep-alive"))
    elif mutation < 0.75:
        headers.append((b"Upper-Case", b"x"))
    elif mutation < 0.8:
        headers.append((b"content-length", str(rng.randrange(1 << 20)).encode()))
    elif mutation < 0.85:
        headers.append((b"x-big", b"v" * rng.choice([1000, 20_000, 100_000])))
    elif mutation < 0.9:
        headers.insert(0, (b"regular", b"before-pseudo"))
    elif mutation < 0.95:
        headers.append((b":protocol", b"websocket"))
    else:
        headers.append((b"te", rng.choice([b"trailers", b"gzip"])))
    return headers


def header_block(rng: random.Random, headers: list[tuple[bytes, bytes]]) -> bytes:
    if rng.random() < 0.15:
        # Garbage QPACK: a dynamic-table reference, a bad prefix, random.
        return rng.choice(
            [
                b"\x05\x00\x80",
                b"\xff\xff\xff\xff\xff",
                rng.randbytes(rng.randrange(1, 64)),
                b"\x00\x00" + rng.randbytes(rng.randrange(0, 32)),
            ]
        )
    encoder = pylsqpack.Encoder()
    try:
        _, block = encoder.encode(0, headers)
    except ValueError:  # a value longer than pylsqpack encodes
        return b"\x00\x00" + rng.randbytes(rng.randrange(0, 32))
    if rng.random() < 0.1:
        block = block[: rng.randrange(len(block) + 1)]
    return bytes(block)


def request_body(rng: random.Random) -> tuple[bytes, bool]:
    """The bytes of a request stream (HTTP/3 frames) and whether it ends."""
    frames = [h3_frame(H3_HEADERS, header_block(rng, request_headers(rng)))]
    for _ in range(rng.choice([0, 0, 1, 2, 5])):
        choice = rng.random()
        if choice < 0.6:
            frames.append(h3_frame(H3_DATA, rng.randbytes(rng.randrange(0, 1200))))
        elif choice < 0.7:
            frames.append(h3_frame(grease(rng), rng.randbytes(rng.randrange(8))))
        elif choice < 0.8:
            frames.append(h3_frame(H3_HEADERS, header_block(rng, [(b"x-t", b"1")])))
        elif choice < 0.85:
            frames.append(h3_frame(rng.choice(H3_RESERVED), b""))
        elif choice < 0.9:
            frames.append(h3_frame(rng.choice([H3_SETTINGS, H3_GOAWAY]), b"\x00"))
        elif choice < 0.95:
            frames.append(h3_frame(H3_PUSH_PROMISE, b"\x00\x00\x00"))
        else:
            # A frame whose length runs past the end of the stream.
            frames.append(v(H3_DATA) + v(rng.randrange(1, 1 << 30)) + b"x")
    data = b"".join(frames)
    if rng.random() < 0.05:
        data = data[: rng.randrange(len(data) + 1)]
    return data, rng.random() < 0.8


def settings_frame(rng: random.Random) -> bytes:
    pairs = [(0x01, 0), (0x06, 16_384), (0x07, 0)]
    if rng.random() < 0.3:
        pairs.append((grease(rng), random_varint(rng)))
    if rng.random() < 0.1:
        pairs.append((rng.choice([0x02, 0x03, 0x04, 0x05]), 1))  # HTTP/2 only
    if rng.random() < 0.1:
        pairs.append(pairs[0])  # a duplicate
    if rng.random() < 0.1:
        pairs.append((0x08, rng.choice([0, 1, 2])))
    if rng.random() < 0.1:
        pairs.append((0x33, rng.choice([0, 1, 7])))
    return h3_frame(H3_SETTINGS, b"".join(v(i) + v(x) for i, x in pairs))


def control_stream_data(rng: random.Random, first: bool) -> bytes:
    if first:
        head = b"\x00" if rng.random() < 0.95 else b"\x01"  # control, or push
        return head + settings_frame(rng)
    choice = rng.random()
    if choice < 0.3:
        return h3_frame(H3_GOAWAY, v(rng.choice([0, 4, 8, random_varint(rng)])))
    if choice < 0.5:
        return h3_frame(H3_MAX_PUSH_ID, v(random_varint(rng)))
    if choice < 0.6:
        return h3_frame(H3_CANCEL_PUSH, v(random_varint(rng)))
    if choice < 0.7:
        return settings_frame(rng)
    if choice < 0.8:
        return h3_frame(rng.choice([H3_DATA, H3_HEADERS, *H3_RESERVED]), b"\x00")
    return h3_frame(grease(rng), rng.randbytes(rng.randrange(16)))


def uni_stream_data(rng: random.Random) -> bytes:
    stream_type = rng.choice([0x02, 0x03, 0x01, 0x00, grease(rng), 0x54])
    return v(stream_type) + rng.randbytes(rng.randrange(0, 200))


# -- QUIC frames ------------------------------------------------------------


def random_ack(rng: random.Random, largest_bound: int = 1 << 20) -> bytes:
    largest = rng.randrange(largest_bound)
    ranges = [
        rng.randrange(0, 1 << rng.randrange(1, 20))
        for _ in range(rng.choice([0, 0, 2, 4, 20]))
    ]
    first = rng.choice([0, rng.randrange(largest + 1), largest, largest + 1])
    frame = ack_frame(largest, rng.randrange(1 << 14), first, ranges)
    if rng.random() < 0.1:
        frame = v(ACK_ECN) + frame[1:] + v(1) + v(2) + v(3)
    return frame


def handshake_level_frames(rng: random.Random, hello: bytes | None) -> bytes:
    """Frames for an Initial or Handshake packet: mostly what is allowed
    there, sometimes what is not."""
    frames = []
    for _ in range(rng.choice([1, 1, 2, 3, 6])):
        choice = rng.random()
        if choice < 0.35:
            data = hello if hello is not None and rng.random() < 0.5 else b""
            if not data:
                data = rng.randbytes(rng.randrange(1, 300))
            frames.append(
                crypto_frame(
                    rng.choice([0, 0, rng.randrange(1 << 16), random_varint(rng)]), data
                )
            )
        elif choice < 0.55:
            frames.append(random_ack(rng, 64))
        elif choice < 0.65:
            frames.append(v(PING))
        elif choice < 0.72:
            frames.append(bytes(rng.randrange(1, 100)))
        elif choice < 0.78:
            frames.append(connection_close_frame(rng.randrange(0x200), 0x06, b"fuzz"))
        elif choice < 0.9:
            frames.append(any_frame(rng, None))  # not allowed at this level
        else:
            frames.append(rng.randbytes(rng.randrange(1, 40)))
    return b"".join(frames)


def any_frame(rng: random.Random, plan: StreamPlan | None) -> bytes:
    """One frame of any type, most with plausible fields."""
    stream = rng.choice([0, 2, 4, 1, 3, 4 * rng.randrange(200), random_varint(rng)])
    builders: list[Callable[[], bytes]] = [
        lambda: v(PING),
        lambda: bytes(rng.randrange(1, 50)),
        lambda: random_ack(rng),
        lambda: (
            v(RESET_STREAM)
            + v(stream)
            + v(rng.randrange(0x200))
            + v(random_varint(rng))
        ),
        lambda: v(STOP_SENDING) + v(stream) + v(rng.randrange(0x200)),
        lambda: crypto_frame(
            rng.randrange(1 << 20), rng.randbytes(rng.randrange(1, 200))
        ),
        lambda: v(NEW_TOKEN) + v(8) + rng.randbytes(8),
        lambda: stream_frame(
            stream,
            rng.choice([0, rng.randrange(1 << 20)]),
            rng.randbytes(rng.randrange(0, 300)),
            rng.random() < 0.5,
        ),
        lambda: v(MAX_DATA) + v(random_varint(rng)),
        lambda: v(MAX_STREAM_DATA) + v(stream) + v(random_varint(rng)),
        lambda: (
            v(rng.choice([MAX_STREAMS_BIDI, MAX_STREAMS_UNI])) + v(random_varint(rng))
        ),
        lambda: v(DATA_BLOCKED) + v(random_varint(rng)),
        lambda: v(STREAM_DATA_BLOCKED) + v(stream) + v(random_varint(rng)),
        lambda: (
            v(rng.choice([STREAMS_BLOCKED_BIDI, STREAMS_BLOCKED_UNI]))
            + v(random_varint(rng))
        ),
        lambda: new_connection_id_frame(rng),
        lambda: v(RETIRE_CONNECTION_ID) + v(rng.choice([0, 1, 2, random_varint(rng)])),
        lambda: v(PATH_CHALLENGE) + rng.randbytes(8),
        lambda: v(PATH_RESPONSE) + rng.randbytes(8),
        lambda: v(HANDSHAKE_DONE),
        lambda: v(DATAGRAM_LENGTH) + v(4) + b"dgrm",
        lambda: (
            v(rng.choice([0x1F, 0x20, 0x40, 0x3FFF, random_varint(rng)]))
            + rng.randbytes(rng.randrange(8))
        ),
        lambda: v(rng.randrange(0x1F)),  # a known type, cut off
    ]
    frame = rng.choice(builders)()
    if rng.random() < 0.05:
        frame = frame[: rng.randrange(1, len(frame) + 1)]
    return frame


def new_connection_id_frame(rng: random.Random) -> bytes:
    sequence = rng.choice([1, 2, 3, 100, random_varint(rng)])
    retire = rng.choice([0, 0, sequence, sequence + 1])
    length = rng.choice([8, 8, 0, 1, 20, 21])
    return (
        v(NEW_CONNECTION_ID)
        + v(sequence)
        + v(retire)
        + bytes([length])
        + rng.randbytes(length)
        + rng.randbytes(16)
    )


def application_frames(rng: random.Random, plan: StreamPlan, chaos: bool) -> bytes:
    """The frames of one fuzzed 1-RTT packet of an established connection:
    HTTP/3 requests, control and QPACK streams, flow control and connection
    ID frames; a chaotic connection also gets any frame at all."""
    frames: list[bytes] = []
    if not plan.control_sent:
        plan.control_sent = True
        frames.append(plan.frame(rng, 2, control_stream_data(rng, True), False))
        frames.append(plan.frame(rng, 6, b"\x02", False))
        frames.append(plan.frame(rng, 10, b"\x03", False))
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        choice = rng.random()
        if chaos and choice < 0.25:
            frames.append(any_frame(rng, plan))
        elif choice < 0.55:
            data, fin = request_body(rng)
            frames.append(plan.frame(rng, plan.open_request(rng), data, fin))
        elif choice < 0.62:
            frames.append(plan.frame(rng, 2, control_stream_data(rng, False), False))
        elif choice < 0.67:
            stream = rng.choice([6, 10])
            data = rng.choice([b"\x3f\xe1\x1f", b"\x80", b"\x00", rng.randbytes(4)])
            frames.append(plan.frame(rng, stream, data, False))
        elif choice < 0.7:
            frames.append(plan.frame(rng, plan.open_uni(), uni_stream_data(rng), False))
        elif choice < 0.8:
            frames.append(v(PING))
        elif choice < 0.85:
            frames.append(v(MAX_DATA) + v(rng.randrange(1 << 30)))
        elif choice < 0.9:
            frames.append(bytes(rng.randrange(1, 40)))
        elif choice < 0.93:
            stream = 4 * rng.randrange(max(plan.next_bidi, 1))
            frames.append(
                v(RESET_STREAM) + v(stream) + v(0x10C) + v(plan.offsets.get(stream, 0))
            )
        elif choice < 0.96:
            stream = 4 * rng.randrange(max(plan.next_bidi, 1))
            frames.append(v(STOP_SENDING) + v(stream) + v(0x10C))
        elif choice < 0.98:
            frames.append(v(PATH_CHALLENGE) + rng.randbytes(8))
        else:
            frames.append(random_ack(rng, 16))
    return b"".join(frames)


# -- ClientHello mutations --------------------------------------------------


def mutate_client_hello(rng: random.Random, hello: bytes) -> bytes:
    """A mutation of a real ClientHello, in one of its fields."""
    parsed = ClientHello.parse(hello)
    if parsed is None:
        return flip_bits(rng, hello)
    choice = rng.random()
    ext = parsed.extensions
    if choice < 0.3:
        index = next(
            (i for i, (t, _) in enumerate(ext) if t == EXT_QUIC_TRANSPORT_PARAMETERS),
            None,
        )
        if index is not None:
            ext[index] = (
                ext[index][0],
                mutate_transport_parameters(rng, ext[index][1]),
            )
    elif choice < 0.4 and ext:
        del ext[rng.randrange(len(ext))]
    elif choice < 0.45 and ext:
        ext.append(rng.choice(ext))
    elif choice < 0.55 and ext:
        index = rng.randrange(len(ext))
        ext[index] = (ext[index][0], flip_bits(rng, ext[index][1] or b"\x00"))
    elif choice < 0.62:
        alpn = rng.choice([b"", b"\x00", b"\x02h3", b"\x03h3x", b"\x02h2", b"\xffh3"])
        ext[:] = [(t, d) for t, d in ext if t != EXT_ALPN]
        ext.append((EXT_ALPN, len(alpn).to_bytes(2, "big") + alpn))
    elif choice < 0.68:
        parsed.cipher_suites = rng.choice(
            [
                b"",
                b"\x13\x01",
                b"\x13\x05",
                b"\x00\xff",
                rng.randbytes(rng.randrange(1, 10)),
            ]
        )
    elif choice < 0.75:
        index = next((i for i, (t, _) in enumerate(ext) if t == EXT_KEY_SHARE), None)
        if index is not None:
            data = ext[index][1]
            cut = rng.randrange(len(data) + 1)
            ext[index] = (EXT_KEY_SHARE, data[:cut] + rng.randbytes(len(data) - cut))
    elif choice < 0.8:
        parsed.session_id = rng.randbytes(rng.choice([0, 32, 33]))
    elif choice < 0.85:
        parsed.legacy_version = rng.choice([b"\x03\x01", b"\x03\x04", b"\x00\x00"])
    elif choice < 0.9:
        ext.append((rng.randrange(1 << 16), rng.randbytes(rng.randrange(0, 64))))
    else:
        encoded = parsed.encode()
        return encoded[: rng.randrange(1, len(encoded))]
    encoded = parsed.encode()
    if rng.random() < 0.1:
        # A length that lies (the handshake message's or the extensions').
        position = rng.choice([1, 2, 3])
        encoded = (
            encoded[:position] + bytes([rng.randrange(256)]) + encoded[position + 1 :]
        )
    return encoded


TRANSPORT_PARAMETER_IDS = [*range(0x00, 0x11), 0x20, 0x2AB2, 0xFF73DB]


def mutate_transport_parameters(rng: random.Random, data: bytes) -> bytes:
    params = parse_transport_parameters(data)
    if params is None:
        return flip_bits(rng, data)
    choice = rng.random()
    if choice < 0.4 and params:
        index = rng.randrange(len(params))
        param_id = params[index][0]
        value = rng.choice(
            [
                encode_varint(random_varint(rng)),
                b"",
                rng.randbytes(rng.randrange(1, 24)),
                encode_varint(0),
                encode_varint(1),
            ]
        )
        params[index] = (param_id, value)
    elif choice < 0.55 and params:
        del params[rng.randrange(len(params))]
    elif choice < 0.65 and params:
        params.append(rng.choice(params))
    elif choice < 0.9:
        param_id = rng.choice(TRANSPORT_PARAMETER_IDS)
        params.append(
            (
                param_id,
                rng.choice(
                    [
                        encode_varint(random_varint(rng)),
                        rng.randbytes(rng.randrange(0, 50)),
                    ]
                ),
            )
        )
    else:
        encoded = encode_transport_parameters(params)
        return encoded[: rng.randrange(len(encoded) + 1)] + rng.randbytes(
            rng.randrange(3)
        )
    return encode_transport_parameters(params)


# -- byte-level mutations -----------------------------------------------------


def flip_bits(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    out = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def set_varint_at(data: bytes, offset: int, value: int) -> bytes:
    """Replace the varint at ``offset`` with ``value`` (in the same size when
    it fits, so the rest of the packet stays where it was)."""
    size = 1 << (data[offset] >> 6)
    fits = value < 1 << (8 * size - 2)
    encoded = encode_varint(value, size if fits else None)
    return data[:offset] + encoded + data[offset + size :]


VERSIONS = [0, QUIC_VERSION_2, 0xFF00001D, 0x1A2A3A4A, 0x00000002, 0xFFFFFFFF]


def mutate_header_field(rng: random.Random, data: bytes) -> bytes:
    """Change one header field of the datagram's first packet."""
    header = parse_long_header(data)
    if header is None:
        # Short header: the first byte's bits or the connection ID.
        short = bytearray(data or b"\x40")
        if rng.random() < 0.5 or len(short) < 2:
            short[0] ^= rng.choice([0x80, 0x40, 0x20, 0x18, 0x04, 0x03])
        else:
            position = rng.randrange(1, min(len(short), 1 + SERVER_CID_LENGTH))
            short[position] ^= 1 << rng.randrange(8)
        return bytes(short)
    choice = rng.randrange(8)
    out = bytes(data)
    if choice == 0:  # packet type, fixed bit, reserved bits, PN length
        first = out[0] ^ rng.choice([0x10, 0x20, 0x30, 0x40, 0x0C, 0x03])
        return bytes([first]) + out[1:]
    if choice == 1:
        version = rng.choice(VERSIONS).to_bytes(4, "big")
        return out[:1] + version + out[5:]
    if choice == 2:
        position = header.dcid_length_at
    elif choice == 3:
        position = header.scid_length_at
    else:
        position = -1
    if position >= 0:
        length = out[position]
        new = rng.choice(
            [0, 1, 7, 9, 20, 21, 255, (length + 1) % 256, max(length - 1, 0)]
        )
        return out[:position] + bytes([new]) + out[position + 1 :]
    if choice in (4, 5) and header.token_length_at >= 0:
        value = rng.choice([0, 1, 64, len(out), random_varint(rng)])
        return set_varint_at(out, header.token_length_at, value)
    if choice in (4, 5, 6) and header.length_at >= 0:
        # Oversized, undersized, zero, or the largest varint.
        current = header.end - header.packet_number_at
        value = rng.choice(
            [0, 1, current - 1, current + 1, current * 2, len(out) * 4, (1 << 62) - 1]
        )
        return set_varint_at(out, header.length_at, max(value, 0))
    # The packet number bytes (still under header protection).
    if header.packet_number_at >= 0 and header.packet_number_at < len(out):
        position = header.packet_number_at
        return (
            out[:position]
            + rng.randbytes(min(4, len(out) - position))
            + out[position + 4 :]
        )
    return flip_bits(rng, out)


def truncate(rng: random.Random, data: bytes) -> bytes:
    if len(data) <= 1:
        return b""
    header = parse_long_header(data)
    points = [1, 5, 6, len(data) - 1, len(data) // 2]
    if header is not None:
        points += [
            header.dcid_length_at + 1,
            header.scid_length_at,
            header.scid_length_at + 1,
            max(header.length_at, 1),
            max(header.packet_number_at, 1),
            max(header.packet_number_at + 2, 1),
            max(header.end - 1, 1),
        ]
    if rng.random() < 0.5:
        return data[: min(rng.choice(points), len(data) - 1)]
    return data[: rng.randrange(len(data))]


# -- the kinds --------------------------------------------------------------

#: Every kind of datagram, with its weight in the mix. The ``sealed-`` kinds
#: are encrypted with real keys (a fresh connection's Initial keys, or the
#: keys of one of the fuzzer's own connections), so the server decrypts them
#: and parses what is inside.
KINDS: dict[str, int] = {
    "empty": 1,
    "tiny": 2,
    "random": 5,
    "oversized": 2,
    "bit-flip": 9,
    "header-field": 10,
    "truncate": 6,
    "coalesce": 6,
    "append-garbage": 4,
    "replay-payload": 7,
    "replay": 2,
    "short-live-cid": 8,
    "short-unknown-cid": 3,
    "long-live-cid": 4,
    "initial-random-dcid": 3,
    "version-negotiation": 2,
    "retry-like": 2,
    "unknown-version": 2,
    "stateless-reset-like": 2,
    "sealed-initial": 5,
    "sealed-handshake": 3,
    "sealed-1rtt": 12,
}


class Mutator:
    """Draws a kind and makes its datagram from the corpus and targets."""

    def __init__(self, rng: random.Random, corpus: Corpus, targets: Targets) -> None:
        self.rng = rng
        self.corpus = corpus
        self.targets = targets
        self._kinds = list(KINDS)
        self._weights = list(KINDS.values())
        #: sealed-initial: the DCID the fuzzer chose, by the SCID it sent
        #: (the DCID of the server's answer), to read the answer.
        self.sealed_initials: OrderedDict[bytes, bytes] = OrderedDict()
        #: For the datagram just made by a sealed kind: the connection it
        #: was sealed for, and the frames in plaintext (to replay them).
        self.target: SealingTarget | None = None
        self.plain = b""

    def next(self) -> tuple[str, bytes]:
        rng = self.rng
        self.target = None
        self.plain = b""
        kind = rng.choices(self._kinds, self._weights)[0]
        data = getattr(self, "_" + kind.replace("-", "_"))()
        if data is None:  # no material for it yet
            kind = "random"
            data = self._random()
        return kind, data[:MAX_DATAGRAM]

    # -- raw kinds -----------------------------------------------------------

    def _empty(self) -> bytes:
        return b""

    def _tiny(self) -> bytes:
        return self.rng.randbytes(self.rng.randrange(1, 7))

    def _random(self) -> bytes:
        rng = self.rng
        data = rng.randbytes(rng.randrange(7, 1501))
        if rng.random() < 0.5:
            # A plausible first byte: short header, or a v1 long header.
            first = rng.choice([0x40, 0x41, 0x43, 0xC0, 0xC3, 0xE0, 0xD0])
            data = bytes([first]) + data[1:]
        return data

    def _oversized(self) -> bytes:
        rng = self.rng
        size = rng.choice(
            [
                1501,
                1600,
                9000,
                16384,
                32768,
                MAX_DATAGRAM,
                rng.randrange(1501, MAX_DATAGRAM + 1),
            ]
        )
        base = self.corpus.pick(rng) or b""
        if rng.random() < 0.5 and base:
            return base + rng.randbytes(max(size - len(base), 0))
        if rng.random() < 0.5:
            header = long_header_bytes(
                packet_type=INITIAL,
                destination_cid=rng.randbytes(8),
                source_cid=rng.randbytes(8),
                payload_length=size,
                packet_number=0,
            )
            return header + bytes(size - len(header))
        return rng.randbytes(size)

    def _bit_flip(self) -> bytes | None:
        data = self.corpus.pick(self.rng)
        return None if data is None else flip_bits(self.rng, data)

    def _header_field(self) -> bytes | None:
        rng = self.rng
        cls = rng.choice(["initial", "handshake", "short", None])
        data = self.corpus.pick(rng, cls) or self.corpus.pick(rng)
        return None if data is None else mutate_header_field(rng, data)

    def _truncate(self) -> bytes | None:
        data = self.corpus.pick(self.rng)
        return None if data is None else truncate(self.rng, data)

    def _coalesce(self) -> bytes | None:
        rng = self.rng
        parts = []
        for _ in range(rng.randrange(2, 6)):
            choice = rng.random()
            if choice < 0.35:
                part = self.corpus.pick(rng)
            elif choice < 0.5:
                part = self._sealed_handshake() or self._sealed_initial()
            elif choice < 0.65:
                part = self._header_field()
            elif choice < 0.8:
                part = self._long_live_cid()
            else:
                part = self._truncate()
            if part:
                parts.append(part)
        if len(parts) < 2:
            return None
        if rng.random() < 0.3:
            # The first packet's length field off, so the next is misparsed.
            header = parse_long_header(parts[0])
            if header is not None and header.length_at >= 0:
                current = header.end - header.packet_number_at
                parts[0] = set_varint_at(
                    parts[0],
                    header.length_at,
                    max(current + rng.choice([-3, -1, 1, 17, 1000]), 0),
                )
        return b"".join(parts)

    def _append_garbage(self) -> bytes | None:
        rng = self.rng
        data = self.corpus.pick(rng)
        if data is None:
            return None
        tail = rng.choice(
            [
                bytes(rng.randrange(1, 200)),
                rng.randbytes(rng.randrange(1, 200)),
                b"\xc0\x00\x00\x00\x01",
                b"\x40" + rng.randbytes(30),
                b"\xff" * rng.randrange(1, 64),
            ]
        )
        return data + tail

    def _replay_payload(self) -> bytes | None:
        """A captured packet with its header kept (live connection ID) and
        its protected payload replaced."""
        rng = self.rng
        data = self.corpus.pick(
            rng, rng.choice(["short", "short", "handshake", "initial"])
        )
        if data is None:
            return None
        header = parse_long_header(data)
        keep = (
            1 + SERVER_CID_LENGTH if header is None else max(header.packet_number_at, 7)
        )
        keep = min(keep, len(data))
        return data[:keep] + rng.randbytes(len(data) - keep)

    def _replay(self) -> bytes | None:
        return self.corpus.pick(self.rng)

    def _short_live_cid(self) -> bytes | None:
        rng = self.rng
        cid = self.corpus.pick_cid(rng)
        if cid is None:
            return None
        first = 0x40 | rng.randrange(0x40)
        return (
            bytes([first])
            + cid
            + rng.randbytes(
                rng.choice([0, 1, 3, 20, 21, 100, 1200, rng.randrange(1400)])
            )
        )

    def _short_unknown_cid(self) -> bytes:
        rng = self.rng
        return bytes([0x40 | rng.randrange(0x40)]) + rng.randbytes(
            rng.choice([8, 30, 60, 1200])
        )

    def _long_live_cid(self) -> bytes | None:
        """A Handshake, 0-RTT or Initial header for a live connection ID (or
        a live original destination ID), with a random payload."""
        rng = self.rng
        cid = self.corpus.pick_cid(rng)
        packet_type = rng.choice([HANDSHAKE, HANDSHAKE, ZERO_RTT, INITIAL])
        if rng.random() < 0.3:
            cid = self.corpus.pick_original_cid(rng) or cid
            packet_type = INITIAL
        if cid is None:
            return None
        payload = rng.randbytes(rng.choice([0, 1, 20, 40, 200, 1200]))
        header = long_header_bytes(
            packet_type=packet_type,
            destination_cid=cid,
            source_cid=rng.randbytes(rng.choice([0, 8, 20])),
            payload_length=len(payload) + rng.choice([0, 0, 0, -1, 1, 100]),
            packet_number=rng.randrange(1 << 16),
        )
        return header + payload

    def _initial_random_dcid(self) -> bytes:
        rng = self.rng
        dcid = rng.randbytes(rng.choice([8, 8, 8, 12, 20, 0, 4, 7]))
        token = rng.choice([b"", b"", b"", rng.randbytes(rng.randrange(1, 80))])
        payload_length = rng.choice([1162, 1200, 1300, 40, 2000])
        header = long_header_bytes(
            packet_type=INITIAL,
            destination_cid=dcid,
            source_cid=rng.randbytes(rng.choice([0, 8, 20])),
            payload_length=payload_length,
            packet_number=rng.randrange(1 << 8),
            token=token,
        )
        size = (
            max(payload_length, MIN_INITIAL_SIZE - len(header))
            if rng.random() < 0.8
            else payload_length
        )
        return header + rng.randbytes(max(size, 0))

    def _version_negotiation(self) -> bytes:
        rng = self.rng
        cid = self.corpus.pick_cid(rng) or rng.randbytes(8)
        versions = b"".join(
            rng.choice([1, 2, QUIC_VERSION_2, rng.randrange(1 << 32)]).to_bytes(
                4, "big"
            )
            for _ in range(rng.randrange(0, 8))
        )
        return (
            bytes([0x80 | rng.randrange(0x80)])
            + b"\x00\x00\x00\x00"
            + bytes([len(cid)])
            + cid
            + b"\x08"
            + rng.randbytes(8)
            + versions
        )

    def _retry_like(self) -> bytes:
        rng = self.rng
        cid = self.corpus.pick_cid(rng) or rng.randbytes(8)
        first = 0xC0 | (RETRY << 4) | rng.randrange(16)
        return (
            bytes([first])
            + QUIC_VERSION_1.to_bytes(4, "big")
            + bytes([len(cid)])
            + cid
            + b"\x08"
            + rng.randbytes(8)
            + rng.randbytes(rng.randrange(0, 100))
            + rng.randbytes(16)
        )

    def _unknown_version(self) -> bytes:
        rng = self.rng
        version = rng.choice(
            [0x1A2A3A4A, 0xFF00001D, 2, 0xABCDEF01, rng.randrange(1 << 32)]
        )
        dcid = rng.randbytes(rng.choice([8, 0, 20, 21, 255]))
        body = (
            bytes([0xC0 | rng.randrange(0x40)])
            + version.to_bytes(4, "big")
            + bytes([len(dcid)])
            + dcid
            + b"\x08"
            + rng.randbytes(8)
        )
        return body + rng.randbytes(rng.choice([0, 100, 1200 - len(body), 1300]))

    def _stateless_reset_like(self) -> bytes:
        rng = self.rng
        return bytes([0x40 | rng.randrange(0x40)]) + rng.randbytes(
            rng.choice([20, 24, 40, 100])
        )

    # -- sealed kinds --------------------------------------------------------

    def _client_hello(self) -> bytes | None:
        hellos = self.corpus.client_hellos
        return self.rng.choice(hellos) if hellos else None

    def _sealed_initial(self) -> bytes | None:
        """A correctly protected Initial for a new connection (a fresh DCID)
        whose ClientHello is mutated in one field, or whose frames are."""
        rng = self.rng
        hello = self._client_hello()
        if hello is None:
            return None
        if rng.random() < 0.75:
            data = mutate_client_hello(rng, hello)
            frames = crypto_frame(0, data)
            if rng.random() < 0.15:
                # The ClientHello split in two, in the wrong order or overlapping.
                cut = rng.randrange(1, max(len(data), 2))
                frames = crypto_frame(cut, data[cut:]) + crypto_frame(
                    0, data[: cut + rng.choice([0, 0, 5])]
                )
            if rng.random() < 0.1:
                frames += any_frame(rng, None)
        else:
            frames = handshake_level_frames(rng, hello)
        dcid = rng.randbytes(rng.choice([8, 8, 8, 16, 20]))
        scid = rng.randbytes(8)
        if len(self.sealed_initials) >= 4096:
            self.sealed_initials.popitem(last=False)
        self.sealed_initials[scid] = dcid
        pad = MIN_INITIAL_SIZE if rng.random() < 0.95 else 0
        token = b"" if rng.random() < 0.95 else rng.randbytes(rng.randrange(1, 60))
        return seal_long(
            initial_crypto(dcid).send,
            packet_type=INITIAL,
            destination_cid=dcid,
            source_cid=scid,
            payload=frames,
            packet_number=rng.randrange(4),
            token=token,
            pad_to=pad,
        )

    def _sealed_handshake(self) -> bytes | None:
        rng = self.rng
        target = self.targets.handshaking(rng)
        if target is None:
            return None
        frames = handshake_level_frames(rng, None)
        self.target, self.plain = target, frames
        if rng.random() < 0.3:
            return target.seal_initial(frames)
        return target.seal_handshake(frames)

    def _sealed_1rtt(self) -> bytes | None:
        rng = self.rng
        target = self.targets.established(rng)
        if target is None:
            return None
        frames = application_frames(rng, target.streams, target.chaos)
        self.target, self.plain = target, frames
        key_phase = 1 if rng.random() < 0.01 else 0
        return target.seal_1rtt(frames, key_phase)
