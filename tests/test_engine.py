"""The aioquic engine (``trioquic._aioquic``) on its own: receive credit on
consumption, bounded queues, memory release, the pacer, connection IDs.

These tests drive two engines against each other in memory, without sockets
or tasks, through the engine interface, so they show the state machine's
behaviour exactly. (What aioquic internals the engine uses is pinned in
test_aioquic_pins.py.)
"""

from __future__ import annotations

import pytest
from aioquic.quic.connection import QuicConnection as AioquicConnection

from trioquic import (
    CloseCause,
    QuicSettings,
    StreamDataReceived,
    StreamStateError,
    generate_self_signed_certificate,
)
from trioquic._aioquic import AioquicEndpoint

CERT = generate_self_signed_certificate()
CLIENT_ADDR = ("10.0.0.2", 5555)
SERVER_ADDR = ("10.0.0.1", 4433)


class Pair:
    """A client and a server engine joined by a perfect in-memory link."""

    def __init__(self, **overrides: object) -> None:
        # (engine: the same settings whatever TRIOQUIC_ENGINE says)
        common = dict(alpn_protocols=["test"], engine="aioquic", **overrides)
        server_settings = QuicSettings(
            certificate=CERT.certificate_path,
            private_key=CERT.private_key_path,
            **common,  # type: ignore[arg-type]
        )
        client_settings = QuicSettings(ca_certs=CERT.certificate_path, **common)  # type: ignore[arg-type]
        self.now = 0.0
        self.client = AioquicEndpoint(
            client_settings, is_client=True
        ).client_connection("localhost")
        self.client.connect(SERVER_ADDR, self.now)
        first = self.client.datagrams_to_send(self.now)
        dcid = self.client.quic._peer_cid.cid
        self.server = AioquicEndpoint(
            server_settings, is_client=False
        ).server_connection(original_destination_cid=dcid, retry_source_cid=None)
        for data, _ in first:
            self.server.receive_datagram(data, CLIENT_ADDR, self.now)
        self.client_events: list[object] = []
        self.server_events: list[object] = []
        self.pump()

    def pump(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            self.now += 0.001
            moved = False
            for data, _ in self.server.datagrams_to_send(self.now):
                self.client.receive_datagram(data, SERVER_ADDR, self.now)
                moved = True
            for data, _ in self.client.datagrams_to_send(self.now):
                self.server.receive_datagram(data, CLIENT_ADDR, self.now)
                moved = True
            self.client_events += self.client.poll_events()
            self.server_events += self.server.poll_events()
            if not moved:
                break

    def received(self) -> int:
        return sum(
            len(e.data) for e in self.client_events if isinstance(e, StreamDataReceived)
        )


def test_handshake_completes_and_reports_alpn() -> None:
    pair = Pair()
    assert pair.client.handshake is not None
    assert pair.client.handshake.alpn_protocol == "test"
    assert pair.server.handshake is not None


def test_a_reader_that_does_not_consume_bounds_what_the_peer_sends() -> None:
    window = 64 * 1024
    pair = Pair(stream_receive_window=window, connection_receive_window=4 * window)
    pair.server.send_stream_data(1, b"x" * (1024 * 1024), end_stream=True)
    pair.pump(500)
    # Without consumption the sender stops at the stream window.
    assert pair.received() == window
    assert pair.server.send_buffered(1) == 1024 * 1024 - window
    # Consuming grants credit and the transfer goes on, window by window.
    pair.client.consume(1, window)
    pair.pump(500)
    assert pair.received() == 2 * window


def test_connection_window_bounds_all_streams_together() -> None:
    window = 64 * 1024
    pair = Pair(stream_receive_window=window, connection_receive_window=window * 2)
    for stream_id in (1, 5, 9, 13):
        pair.server.send_stream_data(stream_id, b"y" * window, end_stream=False)
    pair.pump(500)
    assert pair.received() == 2 * window


def test_consuming_everything_lets_a_large_transfer_finish() -> None:
    window = 32 * 1024
    pair = Pair(stream_receive_window=window, connection_receive_window=window * 4)
    total = 1024 * 1024
    pair.server.send_stream_data(1, b"z" * total, end_stream=True)
    consumed = 0
    for _ in range(2000):
        pair.pump(5)
        arrived = pair.received()
        if arrived > consumed:
            pair.client.consume(1, arrived - consumed)
            consumed = arrived
        if consumed == total:
            break
    assert consumed == total


def test_statistics_count_traffic() -> None:
    pair = Pair()
    stats = pair.client.statistics()
    assert stats.datagrams_sent > 0 and stats.datagrams_received > 0
    assert stats.bytes_sent > 1200
    assert stats.smoothed_rtt > 0
    assert stats.congestion_window > 0


def test_peer_close_is_reported_as_by_peer() -> None:
    pair = Pair()
    pair.server.close(0x42, "bye")
    pair.pump()
    reason = pair.client.close_reason
    assert reason is not None
    assert reason.cause is CloseCause.CLOSED_BY_PEER and reason.by_peer
    assert reason.error_code == 0x42 and reason.reason == "bye"
    assert not reason.is_transport
    local = pair.server.close_reason
    assert local is not None and local.cause is CloseCause.CLOSED_LOCALLY
    assert not local.by_peer


def test_idle_timeout_is_recorded_as_its_cause() -> None:
    pair = Pair(idle_timeout=5.0)
    timer = pair.client.get_timer()
    while timer is not None and pair.client.close_reason is None:
        pair.client.handle_timer(timer)
        pair.client.poll_events()
        pair.client.datagrams_to_send(timer)
        timer = pair.client.get_timer()
    reason = pair.client.close_reason
    assert reason is not None and reason.cause is CloseCause.IDLE_TIMEOUT
    assert reason.reason == "idle timeout" and not reason.by_peer


def test_misuse_raises_stream_state_error_not_aioquic_s() -> None:
    pair = Pair()
    # The client's stream 3 would be the server's unidirectional stream...
    pair.server.send_stream_data(3, b"x", end_stream=False)
    pair.pump()
    with pytest.raises(StreamStateError, match="cannot send on stream 3"):
        pair.client.send_stream_data(3, b"back", end_stream=False)
    pair.client.send_stream_data(0, b"done", end_stream=True)
    with pytest.raises(StreamStateError):
        pair.client.send_stream_data(0, b"after FIN", end_stream=False)


def test_datagram_queue_is_bounded() -> None:
    pair = Pair(max_datagram_frame_size=1200, datagram_queue_size=4)
    assert pair.client.max_datagram_size() > 1000
    for i in range(10):
        pair.client.send_datagram(bytes([i]) * 10)
    assert pair.client.statistics().quic_datagrams_send_dropped == 6


def test_handshake_memory_is_released_once_confirmed() -> None:
    from aioquic import tls

    pair = Pair()
    pair.pump(50)
    for engine in (pair.client, pair.server):
        quic = engine.quic
        assert quic._handshake_confirmed
        for epoch in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE):
            assert quic._crypto_buffers[epoch].capacity <= 64
        # The 1-RTT buffer shrinks too (the server's NewSessionTicket went
        # out with the handshake's end).
        assert quic._crypto_buffers[tls.Epoch.ONE_RTT].capacity == 1024
    # The connection still works (session tickets after the release are
    # tested end to end in test_connection.py).
    pair.server.send_stream_data(1, b"after", end_stream=True)
    pair.pump()
    assert pair.received() == 5


def test_pacer_allows_bursts_of_two_milliseconds() -> None:
    """aioquic's pacer bursts at most 16 packets, which an event loop's
    1 ms timers cannot keep up with; the engine's pacer holds 2 ms of the
    pacing rate (a regression test: it was once defined but not installed)."""
    pair = Pair()
    pacer = pair.server.quic._loss._pacer
    pacer.update_rate(congestion_window=120_000, smoothed_rtt=0.0016)
    assert pacer.packet_time is not None
    assert pacer.bucket_max == pytest.approx(0.002)
    assert pacer.bucket_max / pacer.packet_time > 16
    # A slow path keeps aioquic's own, larger bound: a quarter of the
    # window at the pacing rate (5,000 bytes at 100,000 bytes/s).
    pacer.update_rate(congestion_window=20_000, smoothed_rtt=0.2)
    assert pacer.bucket_max == pytest.approx(0.05)


@pytest.mark.parametrize("limit", [2, 4])
def test_connection_ids_in_use_follow_the_setting(limit: int) -> None:
    pair = Pair(active_connection_id_limit=limit)
    pair.pump(50)
    for engine, peer in ((pair.server, pair.client), (pair.client, pair.server)):
        # Announced to the peer, and the bound on what each side issues.
        assert peer.quic._remote_active_connection_id_limit == limit
        assert len(engine.quic._host_cids) == limit
        # The reset tokens of issued IDs are derived from the key.
        for host_cid in engine.quic._host_cids[1:]:
            assert host_cid.stateless_reset_token == engine.quic.tq_reset_key.token(
                host_cid.cid
            )


def test_frame_handlers_are_shared_and_behave_as_aioquic_s() -> None:
    from aioquic.quic.connection import QuicConnectionError

    first, second = Pair(), Pair()
    table = first.server.quic._QuicConnection__frame_handlers  # type: ignore[attr-defined]
    other = second.server.quic._QuicConnection__frame_handlers  # type: ignore[attr-defined]
    assert table._table is other._table
    handler, epochs = table[0x01]  # PING: allowed in every packet space
    assert handler.__self__ is first.server.quic
    assert len(epochs) == 4
    with pytest.raises(KeyError):
        table[0x1F_FFFF]
    # The connection still works through the shared table, and an unknown
    # frame type is still a FRAME_ENCODING_ERROR.
    first.server.send_stream_data(1, b"still works", end_stream=True)
    first.pump()
    assert first.received() == len(b"still works")
    with pytest.raises(QuicConnectionError):
        first.server.quic._payload_received(
            _one_rtt_context(first.server.quic), b"\x1f"
        )


def _one_rtt_context(quic: AioquicConnection) -> object:
    from aioquic import tls
    from aioquic.quic.connection import QuicReceiveContext

    return QuicReceiveContext(
        epoch=tls.Epoch.ONE_RTT,
        host_cid=quic.host_cid,
        network_path=quic._network_paths[0],
        quic_logger_frames=None,
        time=0.0,
        version=quic._version,
    )


@pytest.mark.parametrize("retry_validated", [False, True])
def test_a_client_validated_by_retry_is_exempt_from_the_3x_limit(
    retry_validated: bool,
) -> None:
    """RFC 9000 section 8.1: before the client's address is validated, the
    server sends at most three times what it received. A valid Retry token
    validates it (section 8.1.2), so the server's whole first flight (here,
    with a large certificate chain, well over 3 x 1200 bytes) leaves at once."""
    big = generate_self_signed_certificate(
        names=[f"host-{i}.example.net" for i in range(250)]
    )
    server_settings = QuicSettings(
        alpn_protocols=["test"],
        engine="aioquic",
        certificate=big.certificate_path,
        private_key=big.private_key_path,
    )
    client_settings = QuicSettings(
        alpn_protocols=["test"], engine="aioquic", verify_peer=False
    )
    client = AioquicEndpoint(client_settings, is_client=True).client_connection(
        "localhost"
    )
    client.connect(SERVER_ADDR, 0.0)
    first = client.datagrams_to_send(0.0)
    received = sum(len(data) for data, _ in first)
    server = AioquicEndpoint(server_settings, is_client=False).server_connection(
        original_destination_cid=client.quic._peer_cid.cid,
        retry_source_cid=b"R" * 8 if retry_validated else None,
    )
    for data, _ in first:
        server.receive_datagram(data, CLIENT_ADDR, 0.0)
    sent = sum(len(data) for data, _ in server.datagrams_to_send(0.0))
    if retry_validated:
        assert sent > 3 * received
        assert server.amplification_budget() is None
    else:
        assert sent <= 3 * received
