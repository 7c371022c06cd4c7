"""The qh3 engine's HTTP/3 (trioquic/_qh3/_h3.py) on bytes: the SETTINGS we
send, GOAWAY and CANCEL_PUSH, control-stream parsing, the HTTP/3 error code
of every kind of malformed input, the send side's refusals, and the qh3
internals it relies on (pinned by source hash)."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import textwrap
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("qh3")

from qh3._hazmat import QpackDecoder, QpackEncoder, encode_uint_var
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection

from trioquic import StreamDataReceived, StreamStateError, h3
from trioquic._engine import (
    DataReceived,
    GoawayReceived,
    H3ConnectionError,
    H3DatagramReceived,
    H3Event,
    HeadersReceived,
    PushCancelled,
    RequestStopSending,
    RequestStreamReset,
)
from trioquic._events import (
    DatagramReceived,
    QuicEvent,
    StopSendingReceived,
    StreamResetReceived,
)
from trioquic._qh3._h3 import H3_PINS, Qh3H3Engine, literal_field_section
from trioquic.testing import development_certificate

Code = h3.H3ErrorCode
#: QPACK's error codes (RFC 9204 section 6).
QPACK_DECOMPRESSION_FAILED = 0x200
QPACK_ENCODER_STREAM_ERROR = 0x201
QPACK_DECODER_STREAM_ERROR = 0x202
REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"example.com"),
    (b":path", b"/"),
]
#: The peers' first unidirectional streams: the control streams.
CLIENT_CONTROL, SERVER_CONTROL = 2, 3


def _quic(is_client: bool) -> QuicConnection:
    config = QuicConfiguration(is_client=is_client, alpn_protocols=["h3"])
    if is_client:
        return QuicConnection(configuration=config)
    certificate = development_certificate()
    config.load_cert_chain(
        str(certificate.certificate_path), str(certificate.private_key_path)
    )
    return QuicConnection(
        configuration=config, original_destination_connection_id=bytes(8)
    )


def _engine(*, is_client: bool, **kwargs: object) -> Qh3H3Engine:
    options: dict[str, object] = {
        "max_field_section_size": 1234,
        "enable_connect_protocol": True,
        "enable_datagrams": False,
    }
    options.update(kwargs)
    engine = Qh3H3Engine(_quic(is_client), **options)  # type: ignore[arg-type]
    engine.start()
    return engine


def _written(engine: Qh3H3Engine) -> list[tuple[int, bytes, bool]]:
    """What the engine wrote (before the handshake, qh3 keeps the writes)."""
    return list(engine.h3._quic._pre_handshake_writes)


def _deliver(source: Qh3H3Engine, target: Qh3H3Engine, start: int = 0) -> list[H3Event]:
    writes = _written(source)[start:]
    return target.handle([StreamDataReceived(s, d, f) for s, d, f in writes])


def _pair(**client_options: object) -> tuple[Qh3H3Engine, Qh3H3Engine]:
    """A client and a server that have read each other's SETTINGS."""
    client = _engine(is_client=True, **client_options)
    server = _engine(is_client=False)
    assert _deliver(client, server) == []
    assert _deliver(server, client) == []
    return client, server


def _headers_frame(headers: list[tuple[bytes, bytes]], stream_id: int = 0) -> bytes:
    """A HEADERS frame encoded with the static table only (any fields, even
    ones HTTP/3 forbids)."""
    _, block = QpackEncoder().encode(stream_id, headers)
    return _frame(0x1, block)


def _frame(frame_type: int, payload: bytes) -> bytes:
    return encode_uint_var(frame_type) + encode_uint_var(len(payload)) + payload


def _error(engine: Qh3H3Engine, events: list[QuicEvent]) -> int:
    with pytest.raises(H3ConnectionError) as info:
        engine.handle(events)
    # Done: later input is ignored (the driver closes the connection).
    assert engine.handle(events) == []
    return info.value.error_code


SETTINGS = _frame(0x4, b"")


# -- what we send ---------------------------------------------------------------


def test_settings_we_send() -> None:
    sent = _engine(is_client=False).h3.sent_settings
    assert sent is not None
    assert sent[0x6] == 1234  # SETTINGS_MAX_FIELD_SECTION_SIZE
    assert sent[0x8] == 1  # SETTINGS_ENABLE_CONNECT_PROTOCOL
    assert 0x33 not in sent  # no H3_DATAGRAM
    assert 0x2B603742 not in sent  # no WebTransport
    engine = _engine(
        is_client=False, enable_connect_protocol=False, enable_datagrams=True
    )
    sent = engine.h3.sent_settings
    assert sent is not None
    assert 0x8 not in sent
    assert sent[0x33] == 1
    engine = Qh3H3Engine(
        _quic(False),
        max_field_section_size=100,
        enable_connect_protocol=False,
        enable_datagrams=False,
    )
    engine.enable_webtransport()
    engine.start()
    sent = engine.h3.sent_settings
    assert sent is not None
    assert sent[0x8] == sent[0x33] == sent[0x2B603742] == 1
    with pytest.raises(RuntimeError):
        engine.enable_webtransport()


def test_peer_settings_are_read() -> None:
    client = _engine(is_client=True)
    server = _engine(is_client=False, enable_datagrams=True)
    assert not client.peer_settings_received
    assert client.peer_max_field_section_size() is None
    # qh3 refuses H3_DATAGRAM from a peer without QUIC datagrams; this
    # unconnected client has none, so the server's SETTINGS are checked as
    # the aioquic engine checks them: H3_SETTINGS_ERROR.
    with pytest.raises(H3ConnectionError) as info:
        _deliver(server, client)
    assert info.value.error_code == Code.SETTINGS_ERROR
    client, server = _pair()
    assert client.peer_settings_received and server.peer_settings_received
    assert client.peer_max_field_section_size() == 1234
    assert client.peer_enabled_connect_protocol()
    assert not client.peer_enabled_datagrams()
    assert not client.peer_enabled_webtransport()


def _control_frames(engine: Qh3H3Engine) -> list[int]:
    control = engine.h3._local_control_stream_id
    data = b"".join(d for s, d, _ in _written(engine) if s == control)
    assert data[0] == 0x00
    types, pos = [], 1
    while pos < len(data):
        types.append(data[pos])
        pos += 2 + data[pos + 1]
    return types


def test_client_allows_pushes_only_when_asked() -> None:
    assert 0x0D not in _control_frames(_engine(is_client=True))
    assert _control_frames(_engine(is_client=True, max_push_id=2))[:2] == [0x04, 0x0D]


def test_goaway_round_trip_and_id_errors() -> None:
    client, server = _pair()
    mark = len(_written(server))
    server.send_goaway(8)
    server.send_goaway(12)  # may only go down: ignored
    assert server.goaway_sent == 8
    server.send_goaway(4)
    assert _deliver(server, client, mark) == [GoawayReceived(8), GoawayReceived(4)]
    # A GOAWAY whose ID increases is an error (RFC 9114 section 5.2).
    frame = _frame(0x7, b"\x08")
    assert _error(client, [StreamDataReceived(SERVER_CONTROL, frame, False)]) == (
        Code.ID_ERROR
    )


def test_client_checks_goaway_carries_a_request_stream() -> None:
    client, _ = _pair()
    frame = _frame(0x7, b"\x05")
    event = StreamDataReceived(SERVER_CONTROL, frame, False)
    assert _error(client, [event]) == Code.ID_ERROR
    # a server reads any ID (push IDs, from a client)
    _, server = _pair()
    assert server.handle([StreamDataReceived(CLIENT_CONTROL, frame, False)]) == [
        GoawayReceived(5)
    ]


def test_cancel_push_both_ways() -> None:
    client, server = _pair(max_push_id=2)
    mark = len(_written(client))
    client.cancel_push(1)
    # the server never promised a push: any ID is unknown to it
    with pytest.raises(H3ConnectionError) as info:
        _deliver(client, server, mark)
    assert info.value.error_code == Code.ID_ERROR
    cancel = StreamDataReceived(SERVER_CONTROL, _frame(0x3, b"\x02"), False)
    assert client.handle([cancel]) == [PushCancelled(2)]
    beyond = StreamDataReceived(SERVER_CONTROL, _frame(0x3, b"\x03"), False)
    assert _error(client, [beyond]) == Code.ID_ERROR


def test_control_frames_in_pieces_and_unknown_frames_are_not_buffered() -> None:
    _, server = _pair()
    # a large unknown frame, then GOAWAY, one byte at a time for the headers
    big = encode_uint_var(0x21) + encode_uint_var(1_000_000)
    data = big + b"\x00" * 1_000_000 + _frame(0x7, b"\x04")
    events: list[H3Event] = []
    step = 65_536
    for i in range(0, len(big), 1):
        events += server.handle(
            [StreamDataReceived(CLIENT_CONTROL, data[i : i + 1], False)]
        )
    for i in range(len(big), len(data), step):
        events += server.handle(
            [StreamDataReceived(CLIENT_CONTROL, data[i : i + step], False)]
        )
        assert len(server.h3._tq_control) < 16
    assert events == [GoawayReceived(4)]


# -- malformed input: every connection error code ----------------------------------

MALFORMED_CONTROL = {
    "first frame not SETTINGS": (b"\x00" + _frame(0x7, b"\x00"), Code.MISSING_SETTINGS),
    "unknown frame before SETTINGS": (
        b"\x00" + _frame(0x21, b"") + SETTINGS,
        Code.MISSING_SETTINGS,
    ),
    "SETTINGS twice": (b"\x00" + SETTINGS + SETTINGS, Code.FRAME_UNEXPECTED),
    "DATA": (b"\x00" + SETTINGS + _frame(0x0, b"x"), Code.FRAME_UNEXPECTED),
    "HEADERS": (b"\x00" + SETTINGS + _frame(0x1, b"x"), Code.FRAME_UNEXPECTED),
    "PUSH_PROMISE": (b"\x00" + SETTINGS + _frame(0x5, b"x"), Code.FRAME_UNEXPECTED),
    "HTTP/2 PRIORITY": (b"\x00" + SETTINGS + _frame(0x2, b""), Code.FRAME_UNEXPECTED),
    "HTTP/2 PING": (b"\x00" + SETTINGS + _frame(0x6, b""), Code.FRAME_UNEXPECTED),
    "HTTP/2 WINDOW_UPDATE": (
        b"\x00" + SETTINGS + _frame(0x8, b""),
        Code.FRAME_UNEXPECTED,
    ),
    "HTTP/2 CONTINUATION": (
        b"\x00" + SETTINGS + _frame(0x9, b""),
        Code.FRAME_UNEXPECTED,
    ),
    "reserved setting": (b"\x00" + _frame(0x4, b"\x02\x00"), Code.SETTINGS_ERROR),
    "duplicate setting": (
        b"\x00" + _frame(0x4, b"\x06\x01\x06\x02"),
        Code.SETTINGS_ERROR,
    ),
    "extended CONNECT setting of 2": (
        b"\x00" + _frame(0x4, b"\x08\x02"),
        Code.SETTINGS_ERROR,
    ),
    "truncated setting": (b"\x00" + _frame(0x4, b"\x06"), Code.FRAME_ERROR),
    "SETTINGS too large": (
        b"\x00\x04" + encode_uint_var(1 << 20),
        Code.EXCESSIVE_LOAD,
    ),
    "GOAWAY with trailing data": (
        b"\x00" + SETTINGS + _frame(0x7, b"\x00\x00"),
        Code.FRAME_ERROR,
    ),
    "empty GOAWAY": (b"\x00" + SETTINGS + _frame(0x7, b""), Code.FRAME_ERROR),
    "GOAWAY too long": (b"\x00" + SETTINGS + b"\x07\x09", Code.FRAME_ERROR),
    "MAX_PUSH_ID cut short": (
        b"\x00" + SETTINGS + _frame(0xD, b"\x40"),
        Code.FRAME_ERROR,
    ),
    "MAX_PUSH_ID reduced": (
        b"\x00" + SETTINGS + _frame(0xD, b"\x05") + _frame(0xD, b"\x04"),
        Code.ID_ERROR,
    ),
    "CANCEL_PUSH to a server": (
        b"\x00" + SETTINGS + _frame(0x3, b"\x00"),
        Code.ID_ERROR,
    ),
    "control stream closed": (b"\x00" + SETTINGS, Code.CLOSED_CRITICAL_STREAM),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_CONTROL))
def test_malformed_client_control_stream(name: str) -> None:
    data, code = MALFORMED_CONTROL[name]
    server = _engine(is_client=False)
    fin = name == "control stream closed"
    # in one piece, and byte by byte (the error comes as early as it can)
    assert _error(server, [StreamDataReceived(CLIENT_CONTROL, data, fin)]) == code
    server = _engine(is_client=False)
    pieces = [
        StreamDataReceived(CLIENT_CONTROL, data[i : i + 1], fin and i == len(data) - 1)
        for i in range(len(data))
    ]
    assert _error(server, pieces) == code


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (_frame(0xD, b"\x04"), Code.FRAME_UNEXPECTED),  # MAX_PUSH_ID from a server
        (_frame(0x7, b"\x02"), Code.ID_ERROR),  # GOAWAY: not a request stream
    ],
)
def test_malformed_server_control_stream(data: bytes, code: int) -> None:
    client = _engine(is_client=True)
    event = StreamDataReceived(SERVER_CONTROL, b"\x00" + SETTINGS + data, False)
    assert _error(client, [event]) == code


def test_unidirectional_stream_errors() -> None:
    client, server = _pair()
    # a second control stream
    second = StreamDataReceived(6 + 8, b"\x00" + SETTINGS, False)
    assert _error(server, [second]) == Code.STREAM_CREATION_ERROR
    # a push stream from a client
    _, server = _pair()
    assert _error(server, [StreamDataReceived(14, b"\x01\x00", False)]) == (
        Code.STREAM_CREATION_ERROR
    )
    # a push stream beyond our MAX_PUSH_ID (none sent: no push at all)
    assert _error(client, [StreamDataReceived(15, b"\x01\x00", False)]) == Code.ID_ERROR
    client, _ = _pair(max_push_id=2)
    assert _error(client, [StreamDataReceived(15, b"\x01\x03", False)]) == Code.ID_ERROR


@pytest.mark.parametrize("is_client", [True, False])
def test_critical_streams_cannot_close(is_client: bool) -> None:
    # The peer's QPACK encoder stream is its second unidirectional stream.
    encoder = 6 if not is_client else 7
    control = CLIENT_CONTROL if not is_client else SERVER_CONTROL

    def fresh() -> Qh3H3Engine:
        client, server = _pair()
        return client if is_client else server

    assert _error(fresh(), [StreamDataReceived(encoder, b"", True)]) == (
        Code.CLOSED_CRITICAL_STREAM
    )
    assert _error(fresh(), [StreamResetReceived(control, 0)]) == (
        Code.CLOSED_CRITICAL_STREAM
    )
    engine = fresh()
    ours = engine.h3._local_control_stream_id
    assert ours is not None
    assert _error(engine, [StopSendingReceived(ours, 0)]) == Code.CLOSED_CRITICAL_STREAM


def test_qpack_stream_errors() -> None:
    _, server = _pair()
    # Set Dynamic Table Capacity far beyond the 64 KiB we allow.
    event = StreamDataReceived(6, b"\x3f\xe1\xff\xff\x0f", False)
    assert _error(server, [event]) == QPACK_ENCODER_STREAM_ERROR
    _, server = _pair()
    # Section Acknowledgment for a stream with no section outstanding.
    event = StreamDataReceived(10, b"\x81", False)
    assert _error(server, [event]) == QPACK_DECODER_STREAM_ERROR


def _request_stream_error(data: bytes, *, fin: bool = True) -> int:
    _, server = _pair()
    return _error(server, [StreamDataReceived(0, data, fin)])


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (_frame(0x0, b"body"), Code.FRAME_UNEXPECTED),  # DATA before HEADERS
        (_frame(0x4, b""), Code.FRAME_UNEXPECTED),  # SETTINGS
        (_frame(0x7, b"\x00"), Code.FRAME_UNEXPECTED),  # GOAWAY
        (_frame(0x3, b"\x00"), Code.FRAME_UNEXPECTED),  # CANCEL_PUSH
        (_frame(0xD, b"\x00"), Code.FRAME_UNEXPECTED),  # MAX_PUSH_ID
        (_frame(0x5, b"\x00\x00\x00"), Code.FRAME_UNEXPECTED),  # PUSH_PROMISE
        (_frame(0x6, b""), Code.FRAME_UNEXPECTED),  # HTTP/2 PING
        (_frame(0x9, b""), Code.FRAME_UNEXPECTED),  # HTTP/2 CONTINUATION
        (_frame(0x1, b""), QPACK_DECOMPRESSION_FAILED),  # empty HEADERS
        (_frame(0x1, b"\xff\xff\xff"), QPACK_DECOMPRESSION_FAILED),
        (_headers_frame(REQUEST)[:-2], Code.FRAME_ERROR),  # truncated by FIN
        (b"\x01", Code.FRAME_ERROR),  # a frame header cut by FIN
        (_headers_frame(REQUEST) + b"\x00\x05ab", Code.FRAME_ERROR),  # DATA cut
        (_headers_frame(REQUEST[1:]), Code.MESSAGE_ERROR),  # no :method
        (_headers_frame([*REQUEST, (b"X-Upper", b"1")]), Code.MESSAGE_ERROR),
        (_headers_frame([*REQUEST, (b"a b", b"1")]), Code.MESSAGE_ERROR),
        (_headers_frame([*REQUEST, (b"a:b", b"1")]), Code.MESSAGE_ERROR),
        (_headers_frame([*REQUEST, (b"x", b"a\nb")]), Code.MESSAGE_ERROR),
        (_headers_frame([*REQUEST, (b"x", b" a")]), Code.MESSAGE_ERROR),
        # an LF and a NUL in one value read like a second, valid field
        (_headers_frame([*REQUEST, (b"x", b"a\nb\x00c")]), Code.MESSAGE_ERROR),
        (_headers_frame([*REQUEST, (b"x\nb", b"\x00c")]), Code.MESSAGE_ERROR),
        (_headers_frame([*REQUEST, (b":path", b"/")]), Code.MESSAGE_ERROR),
        (_headers_frame([*REQUEST[:3], (b"x", b"1"), REQUEST[3]]), Code.MESSAGE_ERROR),
        (_headers_frame([*REQUEST, (b":status", b"200")]), Code.MESSAGE_ERROR),
        (_headers_frame([*REQUEST[:3], (b":path", b"")]), Code.MESSAGE_ERROR),
        (_headers_frame([*REQUEST, (b"connection", b"close")]), Code.MESSAGE_ERROR),
        (_headers_frame([*REQUEST, (b"te", b"gzip")]), Code.MESSAGE_ERROR),
        (_headers_frame([*REQUEST, (b"content-length", b"x")]), Code.MESSAGE_ERROR),
        (_headers_frame([*REQUEST, (b"content-length", b"-1")]), Code.MESSAGE_ERROR),
        (
            _headers_frame([*REQUEST, (b"content-length", b"5")]) + _frame(0, b"abc"),
            Code.MESSAGE_ERROR,
        ),
        (
            _headers_frame([*REQUEST, (b"content-length", b"2")]) + _frame(0, b"abc"),
            Code.MESSAGE_ERROR,
        ),
        (
            _headers_frame([*REQUEST, (b"content-length", b"1")])
            + _headers_frame([(b"x", b"y")]),
            Code.MESSAGE_ERROR,
        ),
        (  # trailers with a pseudo-header
            _headers_frame(REQUEST) + _headers_frame([(b":path", b"/")]),
            Code.MESSAGE_ERROR,
        ),
        (  # HEADERS after trailers
            _headers_frame(REQUEST)
            + _headers_frame([(b"x", b"y")])
            + _headers_frame([(b"x", b"y")]),
            Code.FRAME_UNEXPECTED,
        ),
    ],
)
def test_malformed_request_stream(data: bytes, code: int) -> None:
    assert _request_stream_error(data) == code


def test_huge_header_frame_is_refused_from_its_header() -> None:
    # Far beyond what the decoder takes for our limit: refused at once.
    header = b"\x01" + encode_uint_var(1 << 30)
    assert _request_stream_error(header, fin=False) == Code.EXCESSIVE_LOAD


def test_requests_and_bodies() -> None:
    _, server = _pair()
    frame = _headers_frame([*REQUEST, (b"content-length", b"5"), (b"te", b"trailers")])
    events = server.handle([StreamDataReceived(0, frame + _frame(0, b"ab"), False)])
    assert events[0] == HeadersReceived(
        0, [*REQUEST, (b"content-length", b"5"), (b"te", b"trailers")], False
    )
    assert [e.data for e in events[1:] if isinstance(e, DataReceived)] == [b"ab"]
    # the rest of the DATA frame in pieces, then trailers and FIN
    events = server.handle(
        [
            StreamDataReceived(0, b"\x00\x03c", False),
            StreamDataReceived(0, b"de", False),
            StreamDataReceived(0, _headers_frame([(b"x-t", b"1")]), True),
        ]
    )
    data = [e for e in events if isinstance(e, DataReceived)]
    assert b"".join(e.data for e in data) == b"cde"
    assert events[-1] == HeadersReceived(0, [(b"x-t", b"1")], True)
    assert server.buffered(0) == 0


def test_partial_frames_are_buffered_and_abandoned() -> None:
    _, server = _pair()
    frame = _headers_frame(REQUEST)
    assert server.handle([StreamDataReceived(0, frame[:-3], False)]) == []
    # held: the frame's payload so far (its header is parsed)
    assert server.buffered(0) == len(frame) - 3 - 2
    server.abandon(0)
    assert server.buffered(0) == 0


def test_request_ended_before_its_headers_gives_no_event() -> None:
    _, server = _pair()
    assert server.handle([StreamDataReceived(0, b"", True)]) == []
    assert server.handle([StreamDataReceived(4, _frame(0x21, b"grease"), True)]) == []


def test_resets_and_stops_of_request_streams() -> None:
    _, server = _pair()
    events = server.handle(
        [
            StreamDataReceived(0, _headers_frame(REQUEST), False),
            StreamResetReceived(0, 0x10C),
            StopSendingReceived(4, 0x10C),
            StreamResetReceived(14, 0),  # some unidirectional stream: no event
        ]
    )
    assert events[1:] == [RequestStreamReset(0, 0x10C), RequestStopSending(4, 0x10C)]


def test_datagrams() -> None:
    _, server = _pair()
    assert server.handle([DatagramReceived(b"\x01hi")]) == [
        H3DatagramReceived(4, b"hi")
    ]
    assert server.handle([DatagramReceived(b"\x40\x02x")]) == [
        H3DatagramReceived(8, b"x")
    ]
    assert _error(server, [DatagramReceived(b"\x40")]) == Code.DATAGRAM_ERROR


# -- responses, on a client -----------------------------------------------------


def _response(client: Qh3H3Engine, data: bytes, fin: bool = True) -> list[H3Event]:
    return client.handle([StreamDataReceived(0, data, fin)])


def _sent_request(
    client: Qh3H3Engine, headers: list[tuple[bytes, bytes]] = REQUEST
) -> None:
    client.send_headers(0, headers, True)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (_headers_frame([(b":status", b"101")]), Code.MESSAGE_ERROR),
        (_headers_frame([(b":status", b"20")]), Code.MESSAGE_ERROR),
        (_headers_frame([(b":status", b"2000")]), Code.MESSAGE_ERROR),
        (_headers_frame([(b":status", b"abc")]), Code.MESSAGE_ERROR),
        (_headers_frame([(b"x", b"y")]), Code.MESSAGE_ERROR),  # no :status
        (
            _headers_frame([(b":status", b"200"), (b"te", b"trailers")]),
            Code.MESSAGE_ERROR,
        ),
        (_headers_frame([(b":status", b"103")]), Code.MESSAGE_ERROR),  # interim + FIN
        (  # interim, then the stream ends
            _headers_frame([(b":status", b"103")]) + _frame(0x21, b""),
            Code.MESSAGE_ERROR,
        ),
        (
            _headers_frame([(b":status", b"200"), (b"content-length", b"3")]),
            Code.MESSAGE_ERROR,
        ),
        (_frame(0x5, b"\x00") + _headers_frame(REQUEST)[2:], Code.ID_ERROR),  # push
        (_frame(0x5, b""), Code.FRAME_ERROR),  # PUSH_PROMISE without its ID
    ],
)
def test_malformed_response(data: bytes, code: int) -> None:
    client, _ = _pair()
    _sent_request(client)
    with pytest.raises(H3ConnectionError) as info:
        _response(client, data)
    assert info.value.error_code == code


def test_responses() -> None:
    client, _ = _pair()
    _sent_request(client)
    interim = _headers_frame([(b":status", b"103"), (b"link", b"</a>")])
    final = _headers_frame([(b":status", b"200"), (b"content-length", b"2")])
    events = _response(client, interim + final + _frame(0, b"ok"))
    assert events[0] == HeadersReceived(
        0, [(b":status", b"103"), (b"link", b"</a>")], False
    )
    assert events[1] == HeadersReceived(
        0, [(b":status", b"200"), (b"content-length", b"2")], False
    )
    assert events[2] == DataReceived(0, b"ok", True)
    # a stream that ends without a response: an empty end, as aioquic's
    client, _ = _pair()
    _sent_request(client)
    assert _response(client, _frame(0x21, b"")) == [DataReceived(0, b"", True)]


def test_response_to_head_has_the_get_content_length_and_no_body() -> None:
    client, _ = _pair()
    _sent_request(client, [(b":method", b"HEAD"), *REQUEST[1:]])
    frame = _headers_frame([(b":status", b"200"), (b"content-length", b"1000")])
    assert _response(client, frame) == [
        HeadersReceived(0, [(b":status", b"200"), (b"content-length", b"1000")], True)
    ]


# -- the send side ----------------------------------------------------------------


def test_send_side_refusals_are_stream_state_errors() -> None:
    client, server = _pair()
    with pytest.raises(StreamStateError):
        server.send_data(0, b"x", False)  # DATA before HEADERS
    with pytest.raises(StreamStateError):
        server.send_headers(0, [(b":status", b"103")], True)  # interim + FIN
    server.send_headers(0, [(b":status", b"103")], False)
    server.send_headers(0, [(b":status", b"200")], False)
    server.send_data(0, b"body", False)
    server.send_headers(0, [(b"x-trailer", b"1")], True)
    with pytest.raises(StreamStateError):
        server.send_headers(0, [(b"x-more", b"1")], False)
    with pytest.raises(StreamStateError):
        server.send_data(0, b"x", True)
    _sent_request(client)
    with pytest.raises(StreamStateError):
        client.send_data(0, b"x", False)  # after FIN


def test_fields_too_large_for_ls_qpack_are_sent_as_literals() -> None:
    client = _engine(is_client=True)
    server = _engine(is_client=False, max_field_section_size=100_000)
    _deliver(client, server)
    _deliver(server, client)
    mark = len(_written(client))
    big = [*REQUEST, (b"x-big", b"z" * 50_000), (b"x-" + b"n" * 5000, b"")]
    client.send_headers(0, big, False)
    # The encoder still works afterwards (ls-qpack's is unusable after
    # failing once), also for a field just under its limit.
    many = [(b"x-%d" % i, b"v" * 3000) for i in range(20)]
    client.send_headers(0, [(b"x-t", b"q" * 4080), *many], True)
    events = _deliver(client, server, mark)
    assert events == [
        HeadersReceived(0, big, False),
        HeadersReceived(0, [(b"x-t", b"q" * 4080), *many], True),
    ]


@pytest.mark.parametrize("size", [0, 6, 7, 126, 127, 128, 255, 16_383, 16_384])
def test_literal_field_section_round_trip(size: int) -> None:
    headers = [(b"n" * (size % 50 + 1), b"v" * size), (b"x" * size or b"x", b"")]
    decoder = QpackDecoder(0, 0)
    _, decoded = decoder.feed_header(0, literal_field_section(headers))
    assert decoded == headers


def test_not_started_is_a_stream_state_error() -> None:
    engine = Qh3H3Engine(
        _quic(True),
        max_field_section_size=1,
        enable_connect_protocol=False,
        enable_datagrams=False,
    )
    assert engine.buffered(0) == 0
    assert not engine.peer_settings_received
    with pytest.raises(StreamStateError):
        engine.send_goaway(0)


# -- nothing of qh3's escapes ------------------------------------------------------


def _only_ours(engine: Qh3H3Engine, events: list[QuicEvent]) -> None:
    try:
        engine.handle(events)
    except H3ConnectionError as exc:
        assert 0x100 <= exc.error_code <= 0x202 or exc.error_code == 0x33


chunks = st.lists(st.binary(max_size=40), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    stream_id=st.sampled_from([0, 2, 6, 10, 14, 18]), pieces=chunks, fin=st.booleans()
)
def test_no_qh3_exception_escapes_a_server(
    stream_id: int, pieces: list[bytes], fin: bool
) -> None:
    _, server = _pair()
    events: list[QuicEvent] = [
        StreamDataReceived(stream_id, p, fin and i == len(pieces) - 1)
        for i, p in enumerate(pieces)
    ]
    _only_ours(server, events)


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from([b"", _headers_frame([(b":status", b"200")]), b"\x01\x00"]),
    stream_id=st.sampled_from([0, 3, 7, 11, 15]),
    pieces=chunks,
    fin=st.booleans(),
)
def test_no_qh3_exception_escapes_a_client(
    prefix: bytes, stream_id: int, pieces: list[bytes], fin: bool
) -> None:
    client, _ = _pair(max_push_id=4)
    _sent_request(client)
    pieces = [prefix + pieces[0], *pieces[1:]]
    events: list[QuicEvent] = [
        StreamDataReceived(stream_id, p, fin and i == len(pieces) - 1)
        for i, p in enumerate(pieces)
    ]
    _only_ours(client, events)


# -- the qh3 internals it relies on ------------------------------------------------


def _source_hash(qualified: str) -> str:
    module_name, _, path = qualified.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in path.split("."):
        obj = getattr(obj, part)
    source = textwrap.dedent(inspect.getsource(obj))  # type: ignore[arg-type]
    return hashlib.sha256(source.encode()).hexdigest()[:16]


@pytest.mark.parametrize("qualified", sorted(H3_PINS))
def test_pinned_qh3_methods_are_unchanged(qualified: str) -> None:
    """A qh3 release that changes one of these must be read against our
    override or use before its hash is updated in ``H3_PINS``."""
    assert _source_hash(qualified) == H3_PINS[qualified][0], qualified


def test_only_the_qh3_package_imports_qh3() -> None:
    import ast
    import pathlib

    import trioquic

    root = pathlib.Path(trioquic.__file__).parent
    check: Callable[[str], bool] = lambda name: name == "qh3" or name.startswith("qh3.")  # noqa: E731
    for path in root.rglob("*.py"):
        if "_qh3" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not check(node.module), path
            if isinstance(node, ast.Import):
                assert not any(check(alias.name) for alias in node.names), path
