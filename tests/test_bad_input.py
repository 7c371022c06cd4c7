"""Bad input on real loopback sockets: garbage is dropped and counted, a
protocol violation closes only the violator's connection, and wrong API use
raises TypeError / ValueError saying what to do."""

from __future__ import annotations

import logging
import os
import random
import socket
from functools import partial

import pytest
import trio
import trio.testing

import trioquic
from trioquic import QuicSettings

CERT = trioquic.generate_self_signed_certificate()
SERVER = QuicSettings(
    alpn_protocols=["echo"],
    certificate=CERT.certificate_path,
    private_key=CERT.private_key_path,
    stream_receive_window=64 * 1024,
    connection_receive_window=256 * 1024,
)
CLIENT = QuicSettings(alpn_protocols=["echo"], ca_certs=CERT.certificate_path)


async def echo_handler(conn: trioquic.QuicConnection) -> None:
    async with trio.open_nursery() as nursery:
        while True:
            stream = await conn.accept_stream()
            assert isinstance(stream, trioquic.QuicStream)
            nursery.start_soon(echo_stream, stream)


async def echo_stream(stream: trioquic.QuicStream) -> None:
    while data := await stream.receive_some():
        if data.startswith(b"STALL"):
            await trio.sleep_forever()  # stop reading: grant no more credit
        await stream.send_all(data)
    await stream.send_eof()


async def round_trip(conn: trioquic.QuicConnection, payload: bytes) -> bytes:
    stream = await conn.open_stream()
    received = bytearray()

    async def send() -> None:
        await stream.send_all(payload)
        await stream.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while data := await stream.receive_some():
            received += data
    return bytes(received)


def mutations(rng: random.Random, valid: list[bytes]) -> list[bytes]:
    out = [os.urandom(rng.randrange(0, 1500)) for _ in range(200)]
    for packet in valid:
        for _ in range(20):
            mutated = bytearray(packet)
            for _ in range(rng.randrange(1, 6)):
                index = rng.randrange(len(mutated))
                mutated[index] ^= 1 << rng.randrange(8)
            out.append(bytes(mutated[: rng.randrange(1, len(mutated) + 1)]))
    # Long headers with unknown CIDs and wrong versions, short headers with
    # unknown CIDs, tiny Initials.
    out += [
        b"\xc0\x1a\x2a\x3a\x4a\x08"
        + os.urandom(8)
        + b"\x08"
        + os.urandom(8)
        + bytes(1200),
        b"\xc0\x00\x00\x00\x01\x08"
        + os.urandom(8)
        + b"\x08"
        + os.urandom(8)
        + bytes(40),
        b"\x40" + os.urandom(40),
        b"\xe0\x00\x00\x00\x01\x08" + os.urandom(8) + b"\x00" + bytes(50),
    ]
    return out


async def test_garbage_is_dropped_and_counted_while_a_connection_carries_on() -> None:
    rng = random.Random(1234)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server: trioquic.QuicServer = await nursery.start(
                partial(
                    trioquic.serve_quic,
                    echo_handler,
                    0,
                    host="127.0.0.1",
                    settings=SERVER,
                )
            )
            address = ("127.0.0.1", server.port)
            async with trioquic.open_quic_connection(
                "127.0.0.1", server.port, settings=CLIENT
            ) as conn:
                assert await round_trip(conn, b"before") == b"before"
                # Capture real datagrams of a second client to mutate.
                valid = [
                    b"\xc0\x00\x00\x00\x01\x08"
                    + os.urandom(8)
                    + b"\x08"
                    + os.urandom(8)
                    + os.urandom(1200),
                ]
                attacker = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                await attacker.bind(("127.0.0.1", 0))
                garbage = mutations(rng, valid)
                payload = os.urandom(300_000)
                result: list[bytes] = []

                async def transfer() -> None:
                    result.append(await round_trip(conn, payload))

                async with trio.open_nursery() as inner:
                    inner.start_soon(transfer)
                    for datagram in garbage:
                        if datagram:
                            await attacker.sendto(datagram, address)
                        await trio.lowlevel.checkpoint()
                assert result == [payload]
                attacker.close()
            stats = server.statistics()
            assert stats.datagrams_dropped >= len([g for g in garbage if g]) // 2
            assert (
                stats.dropped.get("malformed", 0)
                + stats.dropped.get("unknown_connection_id", 0)
                > 0
            )
            assert stats.version_negotiations_sent >= 1
            # And a new client still connects afterwards.
            async with trioquic.open_quic_connection(
                "127.0.0.1", server.port, settings=CLIENT
            ) as again:
                assert await round_trip(again, b"after") == b"after"
            nursery.cancel_scope.cancel()


@pytest.mark.aioquic_only(
    "makes the client break flow control by raising aioquic's "
    "QuicConnection._remote_max_data; qh3 keeps its limits in its native core"
)
async def test_flow_control_violation_closes_only_the_violator() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server: trioquic.QuicServer = await nursery.start(
                partial(
                    trioquic.serve_quic,
                    echo_handler,
                    0,
                    host="127.0.0.1",
                    settings=SERVER,
                )
            )
            async with (
                trioquic.open_quic_connection(
                    "127.0.0.1", server.port, settings=CLIENT
                ) as good,
                trioquic.open_quic_connection(
                    "127.0.0.1", server.port, settings=CLIENT
                ) as bad,
            ):
                # Make the bad client ignore the server's flow-control limits.
                # private: no public API makes a peer break flow control; the
                # client's aioquic state is changed to believe larger limits.
                quic = bad._io._worker.engine.quic  # type: ignore[attr-defined]
                quic._remote_max_data = 1 << 40
                quic._remote_max_stream_data_bidi_remote = 1 << 40
                stream = await bad.open_stream()
                with pytest.raises(trioquic.ConnectionClosed) as info:
                    with trio.fail_after(10):
                        await stream.send_all(b"STALL" + b"v" * 1_000_000)
                        raise await bad.wait_closed()
                reason = info.value.reason
                assert reason.by_peer
                assert reason.error_code == 0x3  # FLOW_CONTROL_ERROR
                assert reason.is_transport
                # The other connection does not notice.
                assert await round_trip(good, b"still here") == b"still here"
            nursery.cancel_scope.cancel()


async def test_api_misuse_says_what_to_do() -> None:
    with pytest.raises(TypeError, match="QuicSettings"):
        async with trioquic.open_quic_connection("127.0.0.1", 1, settings={}):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="port"):
        async with trioquic.open_quic_connection("127.0.0.1", 70000):
            pass
    with pytest.raises(ValueError, match="certificate"):
        await trioquic.serve_quic(
            echo_handler, 0, host="127.0.0.1", settings=QuicSettings()
        )
    with pytest.raises(TypeError, match="handler"):
        await trioquic.serve_quic("not a function", 0)  # type: ignore[arg-type]


async def test_stream_argument_errors() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server: trioquic.QuicServer = await nursery.start(
                partial(
                    trioquic.serve_quic,
                    echo_handler,
                    0,
                    host="127.0.0.1",
                    settings=SERVER,
                )
            )
            async with trioquic.open_quic_connection(
                "127.0.0.1", server.port, settings=CLIENT
            ) as conn:
                stream = await conn.open_stream()
                with pytest.raises(ValueError):
                    await stream.receive_some(0)
                with pytest.raises(TypeError):
                    await stream.receive_some(1.5)  # type: ignore[arg-type]
                with pytest.raises(ValueError, match="error codes"):
                    stream.reset(-1)
                with pytest.raises(ValueError, match="error codes"):
                    conn.close(2**62)
                with pytest.raises(
                    trioquic.DatagramError, match="max_datagram_frame_size"
                ):
                    await conn.send_datagram(b"x")
            nursery.cancel_scope.cancel()


def initial_with_length(*, length: int, follows: int, token: bytes = b"") -> bytes:
    """A QUIC v1 Initial whose Length field says ``length`` while ``follows``
    bytes follow it (the fuzzer's finding: Length past the datagram's end)."""
    assert len(token) < 64 and length < 2**14
    return (
        b"\xc3\x00\x00\x00\x01\x08"
        + os.urandom(8)
        + b"\x08"
        + os.urandom(8)
        + bytes([len(token)])
        + token
        + (0x4000 | length).to_bytes(2, "big")
        + os.urandom(follows)
    )


@pytest.mark.parametrize("retry", ["never", "always"])
async def test_initial_whose_length_runs_past_the_datagram_is_dropped(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    retry: str,
) -> None:
    """Dropped and counted as malformed by the router: no connection is made
    for it (aioquic could not parse it, and had no path to answer on), no
    INVALID_TOKEN answer is attempted, nothing is logged."""
    from trioquic.testing import (
        MemoryNetwork,
        client_settings,
        open_memory_server,
        server_settings,
    )

    network = MemoryNetwork()
    with trio.fail_after(30), caplog.at_level(logging.WARNING, logger="trioquic"):
        async with open_memory_server(
            echo_handler, network=network, server_settings=server_settings(retry=retry)
        ) as server:
            attacker = network.socket("10.0.0.66")
            address = server.server.addresses[0]
            await attacker.send_batch(
                [
                    (initial_with_length(length=5004, follows=1204), address),
                    (
                        initial_with_length(
                            length=5004, follows=1204, token=os.urandom(20)
                        ),
                        address,
                    ),
                ]
            )
            await trio.sleep(1)
            stats = server.server.statistics()
            assert stats.dropped.get("malformed", 0) == 2
            assert stats.connections_accepted == 0
            assert stats.invalid_tokens == 0
            # A consistent Length still makes a connection attempt.
            async with server.connect(settings=client_settings()) as conn:
                assert await round_trip(conn, b"fine") == b"fine"
    assert not caplog.records, caplog.text


def test_an_unparseable_first_datagram_ends_the_connection_quietly() -> None:
    """The engine's backstop, should the router ever let such a datagram
    through: the server connection ends, sending nothing."""
    from trioquic.lowlevel import create_endpoint_engine
    from trioquic.testing import server_settings

    endpoint = create_endpoint_engine(server_settings(), is_client=False)
    engine = endpoint.server_connection(
        original_destination_cid=os.urandom(8), retry_source_cid=None
    )
    engine.receive_datagram(
        initial_with_length(length=5004, follows=1204), ("10.0.0.66", 4433), 1.0
    )
    assert engine.close_reason is not None
    assert engine.datagrams_to_send(1.0) == []
    endpoint.close()


def _varint2(value: int) -> bytes:
    return (0x4000 | value).to_bytes(2, "big")


def _first_client_hello() -> tuple[bytes, bytes]:
    """A real ClientHello (an aioquic-engine client's, whatever this run's
    engine: one that fits one datagram) and the client's source CID."""
    from aioquic.buffer import Buffer
    from aioquic.quic.crypto import CryptoPair
    from aioquic.quic.packet import pull_quic_header

    from trioquic.lowlevel import create_endpoint_engine
    from trioquic.testing import client_settings

    endpoint = create_endpoint_engine(client_settings(engine="aioquic"), is_client=True)
    client = endpoint.client_connection("localhost")
    client.connect(("10.0.0.7", 4433), 1.0)
    datagram = client.datagrams_to_send(1.0)[0][0]
    endpoint.close()
    buf = Buffer(data=datagram)
    header = pull_quic_header(buf, host_cid_length=8)
    keys = CryptoPair()
    keys.setup_initial(header.destination_cid, is_client=False, version=1)
    _, frames, _ = keys.decrypt_packet(datagram[: header.packet_length], buf.tell(), 0)
    buf = Buffer(data=frames)
    assert buf.pull_uint_var() == 0x06 and buf.pull_uint_var() == 0  # CRYPTO
    return buf.pull_bytes(buf.pull_uint_var()), header.source_cid


def _client_hello_with(
    hello: bytes, *, session_id: bytes = b"", extension: tuple[int, bytes] | None
) -> bytes:
    """``hello`` with another legacy session ID, and one extension's data
    replaced (its length fields rewritten to match)."""
    body = hello[4:]
    at = 2 + 32
    at += 1 + body[at]  # legacy_session_id
    suites = body[at : at + 2 + int.from_bytes(body[at : at + 2], "big")]
    at += len(suites)
    compression = body[at : at + 1 + body[at]]
    at += len(compression) + 2
    extensions = b""
    while at < len(body):
        kind = int.from_bytes(body[at : at + 2], "big")
        size = int.from_bytes(body[at + 2 : at + 4], "big")
        data = body[at + 4 : at + 4 + size]
        at += 4 + size
        if extension is not None and kind == extension[0]:
            data = extension[1]
        extensions += kind.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
    body = (
        body[:34]
        + bytes([len(session_id)])
        + session_id
        + suites
        + compression
        + len(extensions).to_bytes(2, "big")
        + extensions
    )
    return b"\x01" + len(body).to_bytes(3, "big") + body


def _sealed_initial(hello: bytes, destination_cid: bytes, source_cid: bytes) -> bytes:
    from aioquic.quic.crypto import CryptoPair

    frames = b"\x06\x00" + _varint2(len(hello)) + hello
    frames += bytes(1162 - len(frames))  # PADDING to a 1200-byte datagram
    header = (
        b"\xc3\x00\x00\x00\x01\x08"
        + destination_cid
        + b"\x08"
        + source_cid
        + b"\x00"
        + _varint2(len(frames) + 4 + 16)
        + bytes(4)  # packet number 0
    )
    keys = CryptoPair()
    keys.setup_initial(destination_cid, is_client=True, version=1)
    return keys.encrypt_packet(header, frames, 0)


_ALPN, _SERVER_NAME, _KEY_SHARE = 16, 0, 51
_DECODE_ERROR = 0x100 + 50


@pytest.mark.parametrize(
    ("session_id", "extension", "error_code"),
    [
        pytest.param(b"", None, None, id="intact"),
        # A protocol name's length runs past the ALPN list.
        pytest.param(b"", (_ALPN, b"\x00\x03\xffh3"), _DECODE_ERROR, id="alpn"),
        pytest.param(
            b"", (_KEY_SHARE, b"\x00\x24\x00\x1d"), _DECODE_ERROR, id="key-share"
        ),
        pytest.param(
            b"",
            (_SERVER_NAME, b"\x00\x0c\x00\x00\x09loca\x80host"),
            _DECODE_ERROR,
            id="server-name-not-ascii",
        ),
        # RFC 9001 section 8.4: PROTOCOL_VIOLATION.
        pytest.param(bytes(32), None, 0x0A, id="legacy-session-id"),
    ],
)
def test_a_malformed_client_hello_is_refused_with_the_tls_alert(
    session_id: bytes, extension: tuple[int, bytes] | None, error_code: int | None
) -> None:
    """The server closes a handshake whose ClientHello it cannot read with
    the TLS alert decode_error as a CRYPTO_ERROR (or PROTOCOL_VIOLATION), on
    either engine alike: never INTERNAL_ERROR, whatever its TLS parser
    raises."""
    from trioquic.lowlevel import create_endpoint_engine
    from trioquic.testing import server_settings

    hello, source_cid = _first_client_hello()
    hello = _client_hello_with(hello, session_id=session_id, extension=extension)
    destination_cid = os.urandom(8)
    endpoint = create_endpoint_engine(server_settings(), is_client=False)
    engine = endpoint.server_connection(
        original_destination_cid=destination_cid, retry_source_cid=None
    )
    engine.receive_datagram(
        _sealed_initial(hello, destination_cid, source_cid), ("10.0.0.66", 4433), 1.0
    )
    engine.poll_events()
    sent = engine.datagrams_to_send(1.0)
    engine.poll_events()
    endpoint.close()
    assert sent  # the ServerHello's flight, or the close
    reason = engine.close_reason
    if error_code is None:
        assert reason is None
        return
    assert reason is not None
    assert (reason.error_code, reason.is_transport) == (error_code, True)
