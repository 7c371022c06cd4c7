"""The aioquic engine's HTTP/3 (trioquic/_aioquic/_h3.py) on bytes: GOAWAY
parsing, the SETTINGS we send, event conversion, errors translated."""

from __future__ import annotations

import pytest
from aioquic._buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from trioquic import StreamDataReceived, h3
from trioquic._aioquic._h3 import AioquicH3Engine as H3Engine
from trioquic._aioquic._h3 import _ControlParser
from trioquic._engine import GoawayReceived, PushCancelled
from trioquic._engine import H3ConnectionError as ConnectionError_
from trioquic.testing import development_certificate


def _engine(*, is_client: bool, **kwargs: object) -> H3Engine:
    config = QuicConfiguration(is_client=is_client, alpn_protocols=["h3"])
    if not is_client:
        certificate = development_certificate()
        config.load_cert_chain(
            str(certificate.certificate_path), str(certificate.private_key_path)
        )
    quic = QuicConnection(
        configuration=config,
        original_destination_connection_id=None if is_client else bytes(8),
    )
    options: dict[str, object] = {
        "max_field_section_size": 1234,
        "enable_connect_protocol": True,
        "enable_datagrams": False,
    }
    options.update(kwargs)
    engine = H3Engine(quic, **options)  # type: ignore[arg-type]
    engine.start()
    return engine


def test_settings_we_send() -> None:
    engine = _engine(is_client=False)
    sent = engine.h3.sent_settings
    assert sent is not None
    assert sent[0x6] == 1234  # SETTINGS_MAX_FIELD_SECTION_SIZE
    assert sent[0x8] == 1  # SETTINGS_ENABLE_CONNECT_PROTOCOL
    assert 0x33 not in sent  # no H3_DATAGRAM
    engine = _engine(
        is_client=False, enable_connect_protocol=False, enable_datagrams=True
    )
    sent = engine.h3.sent_settings
    assert sent is not None
    assert 0x8 not in sent
    assert sent[0x33] == 1


def test_control_parser_finds_goaway_in_pieces() -> None:
    parser = _ControlParser()
    # stream type 0 (control), SETTINGS (4) with 2 bytes, an unknown frame
    # (0x21) of 3 bytes, GOAWAY (7) with ID 8.
    data = b"\x00" + b"\x04\x02\x06\x10" + b"\x21\x03abc" + b"\x07\x01\x08"
    found: list[int] = []
    for i in range(len(data)):
        found += parser.feed(data[i : i + 1])
    assert found == [(0x07, 8)]
    assert parser.feed(b"\x07\x01\x04") == [(0x07, 4)]


def test_control_parser_ignores_other_streams() -> None:
    parser = _ControlParser()
    assert parser.feed(b"\x02\x07\x01\x08") == []  # a QPACK encoder stream
    assert parser.done


def test_control_parser_rejects_bad_goaway() -> None:
    with pytest.raises(ConnectionError_) as info:
        _ControlParser().feed(b"\x00\x07\x02\x08\x00")
    assert info.value.error_code == h3.H3ErrorCode.FRAME_ERROR


def test_goaway_round_trip_and_id_errors() -> None:
    server = _engine(is_client=False)
    client = _engine(is_client=True)
    server.send_goaway(8)
    server.send_goaway(12)  # may only go down: ignored
    assert server.goaway_sent == 8
    control = server.h3._local_control_stream_id
    assert control is not None
    payload = _sent_on(server, control)
    # Feed the client with the server's control stream (a peer uni stream).
    events = client.handle([StreamDataReceived(control, payload, False)])
    assert GoawayReceived(8) in events
    # A GOAWAY whose ID increases is an error (RFC 9114 section 5.2).
    with pytest.raises(ConnectionError_) as info:
        client.handle([StreamDataReceived(control, b"\x07\x01\x0c", False)])
    assert info.value.error_code == h3.H3ErrorCode.ID_ERROR


def _sent_on(engine: H3Engine, stream_id: int) -> bytes:
    stream = engine.h3._quic._streams[stream_id]
    sender = stream.sender
    return bytes(sender._buffer)


def test_protocol_errors_are_reported_not_closed_behind_our_back() -> None:
    server = _engine(is_client=False)
    with pytest.raises(ConnectionError_) as info:
        server.handle([StreamDataReceived(0, b"\x00\x03abc", False)])
    assert info.value.error_code == h3.H3ErrorCode.FRAME_UNEXPECTED
    # The seam left the QUIC connection alone: the driver closes it.
    assert server.h3._quic._close_event is None


def test_only_the_h3_seam_imports_aioquic() -> None:
    import ast
    import pathlib

    package = pathlib.Path(h3.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "_engine.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("aioquic"), path
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("aioquic"), path


def _control_stream_frames(engine: H3Engine) -> list[int]:
    """The frame types the engine wrote on its control stream (read from
    aioquic's send buffer: the engine's own output, before encryption)."""
    h3c = engine.h3
    control = h3c._local_control_stream_id
    assert control is not None
    data = bytes(h3c._quic._streams[control].sender._buffer)
    assert data[0] == 0x00  # the control stream's type
    types = []
    buf = Buffer(data=data[1:])
    while not buf.eof():
        frame_type = buf.pull_uint_var()
        buf.pull_bytes(buf.pull_uint_var())
        types.append(frame_type)
    return types


def test_client_allows_no_push() -> None:
    """No MAX_PUSH_ID: a server cannot push to a trioquic client."""
    frames = _control_stream_frames(_engine(is_client=True))
    assert frames[0] == 0x04  # SETTINGS
    assert 0x0D not in frames  # MAX_PUSH_ID


def test_client_allows_pushes_only_when_asked() -> None:
    """With max_push_id, MAX_PUSH_ID follows SETTINGS on the control stream."""
    engine = _engine(is_client=True, max_push_id=2)
    frames = _control_stream_frames(engine)
    assert frames[:2] == [0x04, 0x0D]  # SETTINGS, MAX_PUSH_ID
    control = engine.h3._local_control_stream_id
    assert control is not None
    assert _sent_on(engine, control).endswith(b"\x0d\x01\x02")  # MAX_PUSH_ID(2)


def test_control_parser_reports_cancel_push() -> None:
    parser = _ControlParser()
    assert parser.feed(b"\x00\x04\x00") == []
    assert parser.feed(b"\x03\x01\x00") == [(0x03, 0)]


@pytest.mark.parametrize(
    ("is_client", "max_push_id", "push_id", "allowed"),
    [
        (False, None, 0, False),  # a server never promises a push
        (True, None, 0, False),  # a client that allows none
        (True, 2, 2, True),
        (True, 2, 3, False),  # beyond MAX_PUSH_ID
    ],
)
def test_cancel_push_for_a_push_never_allowed_is_an_id_error(
    is_client: bool, max_push_id: int | None, push_id: int, allowed: bool
) -> None:
    engine = _engine(is_client=is_client, max_push_id=max_push_id)
    peer_control = 3 if is_client else 2  # the peer's first unidirectional stream
    data = b"\x00\x04\x00" + b"\x03\x01" + bytes([push_id])
    if allowed:
        events = engine.handle([StreamDataReceived(peer_control, data, False)])
        assert PushCancelled(push_id) in events
        return
    with pytest.raises(ConnectionError_) as info:
        engine.handle([StreamDataReceived(peer_control, data, False)])
    assert info.value.error_code == h3.H3ErrorCode.ID_ERROR
