"""The qh3 engine (``trioquic._qh3``) on its own: receive credit on
consumption, bounded queues, the stateless reset token, close causes, the
packets the router sends, session tickets, and what it refuses.

As test_engine.py does for the aioquic engine, these tests drive two engines
against each other in memory, without sockets or tasks, through the engine
interface. (What qh3 internals the engine uses is pinned in
test_qh3_pins.py.)
"""

from __future__ import annotations

import gc
import json
import pathlib
import sys
import weakref
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("qh3", reason="qh3 is not installed (pip install 'trioquic[qh3]')")

from qh3._hazmat import Buffer
from qh3.quic.packet import (
    pull_quic_transport_parameters,
    push_quic_transport_parameters,
)

from trioquic import (
    CloseCause,
    DatagramReceived,
    QuicSettings,
    StreamDataReceived,
    StreamResetReceived,
    StreamStateError,
    generate_self_signed_certificate,
)
from trioquic._engine import EngineNotInstalled, create_endpoint_engine
from trioquic._qh3 import Qh3Endpoint
from trioquic._qh3._connection import Qh3Connection, Qh3TlsBridge
from trioquic._qh3._engine import Qh3Engine
from trioquic._qh3._tickets import decode_session_ticket, encode_session_ticket
from trioquic._routing import initial_token, is_initial, parse_long_header
from trioquic._stateless_reset import StatelessResetKey, encode_stateless_reset

CERT = generate_self_signed_certificate()
CLIENT_ADDR = ("10.0.0.2", 5555)
SERVER_ADDR = ("10.0.0.1", 4433)
CONNECTION_REFUSED = 0x2
INVALID_TOKEN = 0xB
TRANSPORT_PARAMETER_ERROR = 0x8


def _settings(*, server: bool, **overrides: object) -> QuicSettings:
    fields: dict[str, object] = {"engine": "qh3", "alpn_protocols": ["test"]}
    if server:
        fields.update(
            certificate=CERT.certificate_path, private_key=CERT.private_key_path
        )
    else:
        fields.update(ca_certs=CERT.certificate_path)
    fields.update(overrides)
    return QuicSettings(**fields)  # type: ignore[arg-type]


def _first_flight(client: Qh3Engine, now: float) -> list[bytes]:
    client.connect(SERVER_ADDR, now)
    return [data for data, _ in client.datagrams_to_send(now)]


class Pair:
    """A qh3 client and server engine joined by a perfect in-memory link."""

    def __init__(
        self,
        server_endpoint: Qh3Endpoint | None = None,
        *,
        client_settings: QuicSettings | None = None,
        client_endpoint: Qh3Endpoint | None = None,
        **overrides: object,
    ) -> None:
        self.server_endpoint = server_endpoint or Qh3Endpoint(
            _settings(server=True, **overrides), is_client=False
        )
        self.client_endpoint = client_endpoint or Qh3Endpoint(
            client_settings or _settings(server=False, **overrides), is_client=True
        )
        self.now = 0.0
        self.client = self.client_endpoint.client_connection("localhost")
        first = _first_flight(self.client, self.now)
        header = parse_long_header(first[0])
        assert header is not None
        self.server = self.server_endpoint.server_connection(
            original_destination_cid=header.destination_cid, retry_source_cid=None
        )
        for data in first:
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

    def run(self, seconds: float, *, delay: float = 0.0) -> None:
        """Exchange datagrams for ``seconds`` over a link with a one-way
        ``delay``, handling both engines' timers when due."""
        end = self.now + seconds
        flight: list[tuple[float, Qh3Engine, bytes, tuple[str, int]]] = []
        while True:
            for sender, receiver, source in (
                (self.server, self.client, SERVER_ADDR),
                (self.client, self.server, CLIENT_ADDR),
            ):
                for data, _ in sender.datagrams_to_send(self.now):
                    flight.append((self.now + delay, receiver, data, source))
            self.client_events += self.client.poll_events()
            self.server_events += self.server.poll_events()
            due = [t for t in (self.client.get_timer(), self.server.get_timer()) if t]
            due += [arrival for arrival, *_ in flight]
            if not due or min(due) > end:
                self.now = end
                return
            self.now = max(self.now, min(due))
            for item in [item for item in flight if item[0] <= self.now]:
                flight.remove(item)
                item[1].receive_datagram(item[2], item[3], self.now)
            for engine in (self.client, self.server):
                timer = engine.get_timer()
                if timer is not None and timer <= self.now:
                    engine.handle_timer(self.now)

    def received(self) -> int:
        return sum(
            len(e.data) for e in self.client_events if isinstance(e, StreamDataReceived)
        )


def test_handshake_completes_and_reports_alpn() -> None:
    pair = Pair()
    assert pair.client.handshake is not None
    assert pair.client.handshake.alpn_protocol == "test"
    assert pair.server.handshake is not None
    assert pair.client.handshake_complete and pair.server.handshake_complete


# -- receive credit on consumption ----------------------------------------------------


#: A frame's worth of slack on the bounds below (the gate closes after the
#: frame that crosses it).
SLACK = 1500


def _sent(engine: Qh3Engine, total: int, *stream_ids: int) -> int:
    """Bytes of ``total`` per stream that left ``engine`` on ``stream_ids``."""
    return sum(total - engine.send_buffered(sid) for sid in stream_ids)


def test_a_reader_that_does_not_consume_bounds_what_the_peer_sends() -> None:
    """Without reads the peer stops within the connection window (what the
    application was handed plus what qh3's core holds; on qh3 the stream
    window alone is not a hard bound, see ``_qh3._connection``); consuming
    grants credit and the transfer goes on."""
    window = 64 * 1024
    total = 1024 * 1024
    pair = Pair(stream_receive_window=window, connection_receive_window=window)
    pair.server.send_stream_data(1, b"x" * total, end_stream=True)
    pair.pump(500)
    handed = pair.received()
    assert handed >= window // 2
    assert _sent(pair.server, total, 1) <= window + SLACK
    # More pumping changes nothing: the peer is out of credit.
    pair.pump(500)
    assert pair.received() == handed
    # Consuming grants credit, and the bound moves by what was consumed.
    pair.client.consume(1, handed)
    pair.pump(500)
    assert pair.received() > handed
    assert _sent(pair.server, total, 1) <= window + handed + SLACK


def test_a_stalled_stream_holds_at_most_the_connection_window() -> None:
    """A stream left unread takes more than its own window from the peer
    (the core grants credit as the gate takes its events), but never more
    than the connection window."""
    window = 32 * 1024
    pair = Pair(stream_receive_window=window, connection_receive_window=4 * window)
    total = 16 * window
    pair.server.send_stream_data(1, b"s" * total, end_stream=False)
    pair.pump(500)
    assert window < pair.received() <= 4 * window
    assert _sent(pair.server, total, 1) <= 4 * window + SLACK


def test_connection_window_bounds_all_streams_together() -> None:
    window = 64 * 1024
    pair = Pair(stream_receive_window=window, connection_receive_window=2 * window)
    streams = (1, 5, 9, 13)
    for stream_id in streams:
        pair.server.send_stream_data(stream_id, b"y" * window, end_stream=False)
    pair.pump(500)
    assert pair.received() >= window
    assert _sent(pair.server, window, *streams) <= 2 * window + SLACK


def test_one_unread_stream_does_not_stall_the_others() -> None:
    """A stream whose reader is slow (here, one that never reads) does not
    hold up the connection's other streams (an HTTP/3 connection's control
    and QPACK streams among them) while the connection window has room, as
    on the aioquic engine."""
    window = 32 * 1024
    pair = Pair(stream_receive_window=window, connection_receive_window=8 * window)
    pair.server.send_stream_data(1, b"a" * (4 * window), end_stream=False)
    pair.pump(500)
    assert pair.received() > window  # past its own window: the gate is open
    pair.server.send_stream_data(5, b"b" * 1000, end_stream=True)
    pair.pump(500)
    assert _data(pair.client_events, 5) == b"b" * 1000


def test_consuming_everything_lets_a_large_transfer_finish() -> None:
    window = 32 * 1024
    pair = Pair(stream_receive_window=window, connection_receive_window=4 * window)
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
    ends = [
        e
        for e in pair.client_events
        if isinstance(e, StreamDataReceived) and e.end_stream
    ]
    assert len(ends) == 1


def test_forgetting_a_stream_releases_its_hold_on_the_connection() -> None:
    """Bytes of a stream the application drops unread stop counting against
    the connection's window (what still arrives on it is consumed on
    arrival, as the runtime does): other streams' data flows again."""
    window = 32 * 1024
    pair = Pair(stream_receive_window=window, connection_receive_window=window)
    pair.server.send_stream_data(1, b"a" * (window // 4), end_stream=False)
    pair.server.send_stream_data(5, b"a" * (window // 4), end_stream=False)
    pair.pump(500)
    held = pair.received()
    pair.server.send_stream_data(9, b"b" * (2 * window), end_stream=True)
    pair.pump(500)
    assert _data(pair.client_events, 9) != b"b" * (2 * window)
    pair.client.forget_stream(1)
    pair.client.forget_stream(5)
    seen = len(pair.client_events)
    for _ in range(200):
        pair.pump(5)
        for event in pair.client_events[seen:]:
            if isinstance(event, StreamDataReceived):
                pair.client.consume(event.stream_id, len(event.data))
        seen = len(pair.client_events)
    assert held > 0
    assert _data(pair.client_events, 9) == b"b" * (2 * window)


def _data(events: list[object], stream_id: int) -> bytes:
    return b"".join(
        e.data
        for e in events
        if isinstance(e, StreamDataReceived) and e.stream_id == stream_id
    )


def _read_like_the_runtime(pair: Pair, rounds: int, *, reading: set[int]) -> None:
    """Pump, doing with the client's events what trioquic's raw streams do:
    consume the data of the streams in ``reading`` as it arrives, leave the
    others' unread; on a peer's reset, drop the bytes held unread and give
    their credit back (``credit_unread`` up to ``received_final_size``,
    see ``_stream.py``)."""
    seen = len(pair.client_events)
    for _ in range(rounds):
        pair.pump(5)
        for event in pair.client_events[seen:]:
            if isinstance(event, StreamDataReceived) and event.stream_id in reading:
                pair.client.consume(event.stream_id, len(event.data))
            elif isinstance(event, StreamResetReceived):
                final = pair.client.received_final_size(event.stream_id)
                if final is not None:
                    pair.client.credit_unread(event.stream_id, final)
        seen = len(pair.client_events)


def test_a_peer_s_reset_gives_back_the_credit_of_unread_bytes() -> None:
    """Streams the peer resets with unread bytes must not keep holding the
    connection's window: four of them here would hold it all, then another
    stream's data, read as it arrives, must still flow (as on the aioquic
    engine)."""
    window = 32 * 1024
    pair = Pair(stream_receive_window=window, connection_receive_window=window)
    for stream_id in (1, 5, 9, 13):
        pair.server.send_stream_data(stream_id, b"r" * (window // 4), end_stream=False)
        _read_like_the_runtime(pair, 20, reading=set())
        pair.server.reset_stream(stream_id, 7)
        _read_like_the_runtime(pair, 20, reading=set())
    pair.server.send_stream_data(17, b"n" * window, end_stream=True)
    _read_like_the_runtime(pair, 100, reading={17})
    assert _data(pair.client_events, 17) == b"n" * window


def _pump_until(pair: Pair, found: Callable[[object], bool]) -> None:
    """Pump one round at a time until the client takes an event ``found``
    accepts (the application handles the events of each take)."""
    for _ in range(50):
        seen = len(pair.client_events)
        pair.pump(1)
        if any(found(event) for event in pair.client_events[seen:]):
            return
    raise AssertionError("the event never came")


def test_received_final_size_counts_delivered_bytes_until_the_core_finishes() -> None:
    """The size received per stream: what arrived so far, the final size
    once the FIN arrived, what arrived before a reset; None for a stream
    never heard of, and once the core has finished with the stream (one
    take after the event that said so, so the application sees it)."""
    pair = Pair()
    first, second = pair.server.open_stream(True), pair.server.open_stream(True)
    assert first is not None and second is not None
    assert pair.client.received_final_size(first) is None
    pair.server.send_stream_data(first, b"p" * 3000, end_stream=False)
    _read_like_the_runtime(pair, 5, reading={first})
    assert pair.client.received_final_size(first) == 3000
    pair.server.send_stream_data(first, b"q" * 500, end_stream=True)
    pair.server.send_stream_data(second, b"r" * 700, end_stream=False)
    _pump_until(pair, lambda e: isinstance(e, StreamDataReceived) and e.end_stream)
    assert pair.client.received_final_size(first) == 3500
    pair.server.reset_stream(second, 9)
    _pump_until(pair, lambda e: isinstance(e, StreamResetReceived))
    assert pair.client.received_final_size(second) == 700
    pair.pump(50)
    pair.client.poll_events()
    assert pair.client.received_final_size(first) is None
    assert pair.client.received_final_size(second) is None


def test_a_late_retransmission_on_a_finished_stream_is_not_delivered_again() -> None:
    """qh3's core drops frames of a stream it finished (as aioquic does), so
    a request ID forgotten once its received size is None (h3/_server.py's
    finished requests) cannot come back as a new request: here the client
    repeats its request (the server's acknowledgement is late), and the
    repetition arrives after the server answered and finished the stream."""
    pair = Pair()
    sid = pair.client.open_stream(False)
    assert sid is not None
    pair.client.send_stream_data(sid, b"GET", end_stream=True)
    for data, _ in pair.client.datagrams_to_send(pair.now):
        pair.server.receive_datagram(data, CLIENT_ADDR, pair.now)
    pair.server_events += pair.server.poll_events()
    pair.server.send_stream_data(sid, b"200", end_stream=True)
    answer = pair.server.datagrams_to_send(pair.now)  # held back
    timer = pair.client.get_timer()
    assert timer is not None
    pair.now = timer
    pair.client.handle_timer(pair.now)
    late = pair.client.datagrams_to_send(pair.now)  # the repeated request
    assert late
    for data, _ in answer:
        pair.client.receive_datagram(data, SERVER_ADDR, pair.now)
    pair.pump(20)
    assert _data(pair.client_events, sid) == b"200"
    assert pair.server.received_final_size(sid) is None  # the core finished it
    for data, _ in late:
        pair.server.receive_datagram(data, CLIENT_ADDR, pair.now)
    pair.pump(20)
    requests = [
        e.data
        for e in pair.server_events
        if isinstance(e, StreamDataReceived) and e.stream_id == sid
    ]
    assert requests == [b"GET"]
    assert pair.server.close_reason is None


def test_acknowledged_stream_data_is_not_unacknowledged() -> None:
    """What a graceful close waits for: stream data not yet acknowledged;
    not the ACK-only packets qh3's core keeps among its outstanding ones
    (the peer acknowledges them only with its next ack-eliciting packet)."""
    pair = Pair()
    control = pair.server.open_stream(True)
    assert control is not None
    pair.server.send_stream_data(control, b"settings", end_stream=False)
    assert pair.server.has_unacknowledged_stream_data()
    pair.server.datagrams_to_send(pair.now)  # in flight
    assert pair.server.has_unacknowledged_stream_data()
    pair.run(1.0, delay=0.01)
    assert _data(pair.client_events, control) == b"settings"
    assert pair.client.quic._core is not None
    assert pair.client.quic._core.outstanding_application_packets  # its ACKs
    assert not pair.client.has_unacknowledged_stream_data()
    assert not pair.server.has_unacknowledged_stream_data()


def test_probe_timeout_follows_rfc_9002_from_the_rtt_samples() -> None:
    """Twice the initial RTT before a sample; then the smoothed RTT, four
    RTT variations (half the first sample) and the peer's max_ack_delay
    (25 ms); as samples agree, the variation decays and so does the PTO."""
    fresh = Qh3Endpoint(_settings(server=False), is_client=True)
    assert fresh.client_connection("localhost").probe_timeout() == pytest.approx(0.2)
    slow = Pair()
    slow.run(0.5, delay=0.05)
    for _ in range(30):
        slow.client.send_ping()
        slow.run(0.3, delay=0.05)
    rtt = slow.client.statistics().smoothed_rtt
    assert rtt == pytest.approx(0.1, abs=0.01)
    # Steady samples: nearly no variation left (the first sample's PTO was
    # three RTTs plus the ACK delay).
    assert rtt + 0.025 < slow.client.probe_timeout() < rtt + 0.025 + 0.02


# -- qlog and key log -----------------------------------------------------------------


def _logged_pair(tmp_path: pathlib.Path, **logging: str) -> Pair:
    """A pair whose endpoints log (``logging``: setting -> file or folder
    name under tmp_path, per side), with one request exchanged."""

    def settings(server: bool) -> QuicSettings:
        side = "server" if server else "client"
        paths = {name: tmp_path / f"{side}{suffix}" for name, suffix in logging.items()}
        return _settings(server=server, **paths)

    server = Qh3Endpoint(settings(server=True), is_client=False)
    pair = Pair(server, client_settings=settings(server=False))
    sid = pair.client.open_stream(False)
    assert sid is not None
    pair.client.send_stream_data(sid, b"ping", end_stream=True)
    pair.pump(20)
    return pair


def test_qlog_traces_are_written_per_connection(tmp_path: pathlib.Path) -> None:
    pair = _logged_pair(tmp_path, qlog_dir="-qlog")
    pair.client.end_logging()
    pair.server.end_logging()
    for side in ("client", "server"):
        (trace_file,) = (tmp_path / f"{side}-qlog").glob("*.qlog")
        (trace,) = json.loads(trace_file.read_text())["traces"]
        names = {event["name"] for event in trace["events"]}
        assert {"transport:packet_sent", "transport:packet_received"} <= names
        assert "security:key_updated" in names


def test_the_key_log_has_both_sides_secrets(tmp_path: pathlib.Path) -> None:
    """The NSS key log (what Wireshark reads): the client and the server
    log the same handshake and application secrets."""
    pair = _logged_pair(tmp_path, keylog_file=".keys")
    pair.client_endpoint.close()
    pair.server_endpoint.close()
    client = (tmp_path / "client.keys").read_text().splitlines()
    server = (tmp_path / "server.keys").read_text().splitlines()
    labels = {line.split()[0] for line in client}
    assert labels == {
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "SERVER_TRAFFIC_SECRET_0",
    }
    assert sorted(client) == sorted(server)


# -- bounded queues -------------------------------------------------------------------


def test_datagram_queue_is_bounded() -> None:
    pair = Pair(max_datagram_frame_size=1200, datagram_queue_size=4)
    assert pair.client.max_datagram_size() > 1000
    for i in range(10):
        pair.client.send_datagram(bytes([i]) * 10)
    assert pair.client.statistics().quic_datagrams_send_dropped == 6
    pair.pump()
    arrived = [e.data for e in pair.server_events if isinstance(e, DatagramReceived)]
    assert arrived == [bytes([i]) * 10 for i in range(4)]
    # Flushed, the queue takes datagrams again.
    pair.client.send_datagram(b"later")
    pair.pump()
    assert pair.client.statistics().quic_datagrams_send_dropped == 6
    assert DatagramReceived(b"later") in pair.server_events


def test_datagrams_are_refused_when_not_negotiated() -> None:
    pair = Pair()
    assert pair.client.max_datagram_size() == 0


# -- stateless resets -----------------------------------------------------------------


def test_the_first_connection_id_s_reset_token_comes_from_our_key() -> None:
    key = b"k" * 32
    pair = Pair(stateless_reset_key=key)
    expected = StatelessResetKey(key).token(pair.server.host_cid)
    assert pair.client.peer_reset_tokens() == (expected,)
    assert (
        pair.server_endpoint.stateless_reset_key.token(pair.server.host_cid) == expected
    )


def test_a_reset_with_that_token_ends_the_client_as_a_stateless_reset() -> None:
    key = b"r" * 32
    pair = Pair(stateless_reset_key=key)
    token = StatelessResetKey(key).token(pair.server.host_cid)
    pair.now += 0.01
    pair.client.receive_datagram(
        encode_stateless_reset(token, 60), SERVER_ADDR, pair.now
    )
    pair.client.poll_events()
    reason = pair.client.close_reason
    assert reason is not None and reason.cause is CloseCause.STATELESS_RESET
    assert pair.client.datagrams_to_send(pair.now) == []
    assert pair.client.get_timer() is None


# -- close causes ---------------------------------------------------------------------


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


def test_a_transport_close_names_its_kind() -> None:
    pair = Pair()
    pair.client.close(0x1, "internal", transport=True)
    pair.pump()
    reason = pair.server.close_reason
    assert reason is not None and reason.cause is CloseCause.CLOSED_BY_PEER
    assert reason.is_transport and reason.error_code == 0x1


def test_close_with_a_cause_keeps_it() -> None:
    pair = Pair()
    pair.client.close(0, "handshake took too long", cause=CloseCause.HANDSHAKE_TIMEOUT)
    reason = pair.client.close_reason
    assert reason is not None and reason.cause is CloseCause.HANDSHAKE_TIMEOUT
    # A second close changes nothing.
    pair.client.close(0x9, "again")
    assert pair.client.close_reason is reason


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


def test_misuse_raises_stream_state_error_not_qh3_s() -> None:
    pair = Pair()
    pair.server.send_stream_data(3, b"x", end_stream=False)
    pair.pump()
    with pytest.raises(StreamStateError, match="cannot send on stream 3"):
        pair.client.send_stream_data(3, b"back", end_stream=False)
    pair.client.send_stream_data(0, b"done", end_stream=True)
    with pytest.raises(StreamStateError):
        pair.client.send_stream_data(0, b"after FIN", end_stream=False)


# -- packets the router sends ---------------------------------------------------------


def _client_and_first_flight(**overrides: object) -> tuple[Qh3Engine, bytes]:
    client = Qh3Endpoint(
        _settings(server=False, **overrides), is_client=True
    ).client_connection("localhost")
    return client, _first_flight(client, 0.0)[0]


def test_a_retry_is_valid_quic_the_client_follows_and_the_server_accepts() -> None:
    """The client checks the Retry's integrity tag (RFC 9001 section 5.8):
    it answers with an Initial to the new connection ID carrying the token,
    and the server that sent the Retry completes the handshake."""
    server_endpoint = Qh3Endpoint(_settings(server=True), is_client=False)
    client, first = _client_and_first_flight()
    header = parse_long_header(first)
    assert header is not None
    retry_cid = b"R" * 8
    retry = server_endpoint.retry_packet(
        version=header.version,
        destination_cid=header.source_cid,
        source_cid=retry_cid,
        original_destination_cid=header.destination_cid,
        token=b"address-token",
    )
    retry_header = parse_long_header(retry)
    assert retry_header is not None and retry_header.first_byte & 0x30 == 0x30
    client.receive_datagram(retry, SERVER_ADDR, 0.01)
    second = [data for data, _ in client.datagrams_to_send(0.01)]
    again = parse_long_header(second[0])
    assert again is not None and again.destination_cid == retry_cid
    assert is_initial(again.first_byte, again.version)
    assert initial_token(second[0], again) == b"address-token"

    server = server_endpoint.server_connection(
        original_destination_cid=header.destination_cid, retry_source_cid=retry_cid
    )
    now = 0.01
    for data in second:
        server.receive_datagram(data, CLIENT_ADDR, now)
    for _ in range(20):
        now += 0.001
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, SERVER_ADDR, now)
        for data, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, CLIENT_ADDR, now)
        client.poll_events()
        server.poll_events()
    assert client.handshake is not None and client.close_reason is None
    assert server.handshake is not None


def test_a_retry_with_a_bad_tag_is_ignored() -> None:
    server_endpoint = Qh3Endpoint(_settings(server=True), is_client=False)
    client, first = _client_and_first_flight()
    header = parse_long_header(first)
    assert header is not None
    retry = server_endpoint.retry_packet(
        version=header.version,
        destination_cid=header.source_cid,
        source_cid=b"R" * 8,
        original_destination_cid=b"not the one",
        token=b"t",
    )
    client.receive_datagram(retry, SERVER_ADDR, 0.01)
    resent = [data for data, _ in client.datagrams_to_send(0.01)]
    for data in resent:
        again = parse_long_header(data)
        assert again is not None and again.destination_cid == header.destination_cid
    assert client.close_reason is None


def test_a_refusal_is_an_initial_the_client_reads_as_connection_refused() -> None:
    server_endpoint = Qh3Endpoint(_settings(server=True), is_client=False)
    client, first = _client_and_first_flight()
    header = parse_long_header(first)
    assert header is not None
    packets = server_endpoint.refusal_packets(
        version=header.version,
        destination_cid=header.destination_cid,
        source_cid=header.source_cid,
    )
    assert len(packets) == 1
    refusal = parse_long_header(packets[0])
    assert refusal is not None and is_initial(refusal.first_byte, refusal.version)
    assert refusal.destination_cid == header.source_cid
    assert len(packets[0]) < len(first)
    client.receive_datagram(packets[0], SERVER_ADDR, 0.01)
    client.poll_events()
    reason = client.close_reason
    assert reason is not None and reason.cause is CloseCause.CLOSED_BY_PEER
    assert reason.error_code == CONNECTION_REFUSED and reason.is_transport


def test_a_refusal_for_an_unknown_version_is_nothing() -> None:
    server_endpoint = Qh3Endpoint(_settings(server=True), is_client=False)
    assert (
        server_endpoint.refusal_packets(
            version=0x0A0A0A0A, destination_cid=b"d" * 8, source_cid=b"s" * 8
        )
        == []
    )


@pytest.mark.parametrize("alpn", ["test", "unoffered"])
def test_an_invalid_token_close_reaches_the_client_as_invalid_token(alpn: str) -> None:
    """INVALID_TOKEN whatever the ClientHello says (it is not read: a
    protocol the server does not offer is no reason to answer otherwise)."""
    server_endpoint = Qh3Endpoint(_settings(server=True), is_client=False)
    client, first = _client_and_first_flight(alpn_protocols=[alpn])
    packets = server_endpoint.invalid_token_packets(first, CLIENT_ADDR, 0.0)
    assert packets
    for data in packets:
        client.receive_datagram(data, SERVER_ADDR, 0.01)
    client.poll_events()
    reason = client.close_reason
    assert reason is not None and reason.cause is CloseCause.CLOSED_BY_PEER
    assert reason.error_code == INVALID_TOKEN


@pytest.mark.parametrize("data", [b"", b"\xc0\x00\x00\x00\x01\x08", b"\x40" * 1200])
def test_invalid_token_packets_answer_nothing_to_garbage(data: bytes) -> None:
    server_endpoint = Qh3Endpoint(_settings(server=True), is_client=False)
    assert server_endpoint.invalid_token_packets(data, CLIENT_ADDR, 0.0) == []


# -- the client's connection IDs ----------------------------------------------------


class EmptyCidEndpoint(Qh3Endpoint):
    """A client whose own connection ID is empty, as Chromium's is."""

    def __init__(self) -> None:
        super().__init__(_settings(server=False), is_client=True)
        self._base.connection_id_length = 0

    def client_connection(self, server_name: str) -> Qh3Engine:
        engine = super().client_connection(server_name)
        # (qh3's client draws its first destination ID at its own ID's length)
        engine.quic._original_destination_connection_id = b"D" * 8
        return engine


def test_an_empty_client_source_cid_is_the_initial_source_connection_id() -> None:
    """A client whose own connection ID is empty announces an empty
    initial_source_connection_id; the server matches it against the
    Initial's empty source ID (RFC 9000 section 7.3) and answers its
    flight instead of refusing the parameters (TRANSPORT_PARAMETER_ERROR)."""
    client = EmptyCidEndpoint().client_connection("localhost")
    first = _first_flight(client, 0.0)
    header = parse_long_header(first[0])
    assert header is not None and header.source_cid == b""
    server = Qh3Endpoint(_settings(server=True), is_client=False).server_connection(
        original_destination_cid=header.destination_cid, retry_source_cid=None
    )
    for data in first:
        server.receive_datagram(data, CLIENT_ADDR, 0.0)
    server.poll_events()
    assert server.close_reason is None
    assert server.datagrams_to_send(0.001)
    assert server.quic._tls is not None
    assert server.quic._tls.remote_initial_source_connection_id == b""


class MisnamingEndpoint(Qh3Endpoint):
    """A client announcing an initial_source_connection_id that is not the
    source ID of its Initial packets."""

    def client_connection(self, server_name: str) -> Qh3Engine:
        engine = super().client_connection(server_name)
        quic = engine.quic
        create_tls = quic._create_tls

        def misnamed_tls(remote_source_cid: bytes | None) -> object:
            own, quic.host_cid = quic.host_cid, b"\x01" * 8
            try:
                return create_tls(remote_source_cid)
            finally:
                quic.host_cid = own

        quic._create_tls = misnamed_tls  # type: ignore[method-assign,assignment]
        return engine


def test_a_transport_parameter_error_reaches_the_client() -> None:
    """The server refuses the mismatch with TRANSPORT_PARAMETER_ERROR in a
    packet the client can read (an Initial): the client learns why instead
    of waiting for its idle timeout."""
    pair = Pair(
        client_endpoint=MisnamingEndpoint(_settings(server=False), is_client=True)
    )
    assert pair.server.handshake is None and pair.client.handshake is None
    reason = pair.client.close_reason
    assert reason is not None and reason.cause is CloseCause.CLOSED_BY_PEER
    assert reason.error_code == TRANSPORT_PARAMETER_ERROR and reason.is_transport
    assert "initial_source_connection_id" in reason.reason


# -- session tickets ------------------------------------------------------------------


def test_tickets_round_trip_and_resume() -> None:
    server_endpoint = Qh3Endpoint(_settings(server=True), is_client=False)
    first = Pair(server_endpoint)
    first.pump()
    ticket = first.client.session_ticket
    assert ticket is not None
    decoded = decode_session_ticket(ticket)
    assert encode_session_ticket(decoded) == ticket
    second = Pair(
        server_endpoint,
        client_settings=_settings(server=False, session_ticket=ticket),
    )
    assert second.client.handshake is not None
    assert second.client.handshake.session_resumed
    # Each ticket resumes once.
    third = Pair(
        server_endpoint,
        client_settings=_settings(server=False, session_ticket=ticket),
    )
    assert third.client.handshake is not None
    assert not third.client.handshake.session_resumed


@pytest.mark.parametrize(
    "data", [b"", b"{}", b'{"version": 2}', b"not json", b'{"version": 1}']
)
def test_a_malformed_ticket_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="session ticket"):
        decode_session_ticket(data)


# -- what the engine refuses, and its absence -----------------------------------------


def test_create_endpoint_engine_selects_qh3() -> None:
    endpoint = create_endpoint_engine(_settings(server=False), is_client=True)
    assert isinstance(endpoint, Qh3Endpoint)
    endpoint.close()


def test_reno_is_refused() -> None:
    settings = QuicSettings(engine="aioquic", congestion_control="reno")
    with pytest.raises(ValueError, match="CUBIC only"):
        Qh3Endpoint(settings, is_client=True)


def test_an_aioquic_configuration_is_refused() -> None:
    from aioquic.quic.configuration import QuicConfiguration

    settings = QuicSettings(
        engine="aioquic",
        congestion_control="cubic",
        quic_configuration=QuicConfiguration(is_client=True),
    )
    with pytest.raises(ValueError, match="cannot be used with engine='qh3'"):
        Qh3Endpoint(settings, is_client=True)


def test_a_certificate_in_memory_is_refused_with_the_reason() -> None:
    settings = QuicSettings(
        engine="qh3",
        certificate=CERT.certificate_path.read_bytes(),
        private_key=CERT.private_key_path.read_bytes(),
    )
    with pytest.raises(ValueError, match="PEM file"):
        Qh3Endpoint(settings, is_client=False)


def test_a_missing_qh3_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """With qh3 not importable, selecting it raises EngineNotInstalled (an
    ImportError) whose message names the extra to install."""
    for name in list(sys.modules):
        if name == "qh3" or name.startswith(("qh3.", "trioquic._qh3")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "qh3", None)
    with pytest.raises(
        EngineNotInstalled, match=r"pip install 'trioquic\[qh3\]'"
    ) as info:
        create_endpoint_engine(_settings(server=False), is_client=True)
    assert isinstance(info.value, ImportError)
    assert info.value.__cause__ is None and info.value.__suppress_context__


# -- 0-RTT: a FIN written alone after the data left as early data ----------------------


def _early_exchange(
    server_endpoint: Qh3Endpoint, ticket: bytes
) -> tuple[Qh3Engine, list[object]]:
    """A 0-RTT client writes 400 bytes, flushes them as early data, then
    writes the FIN alone (as the runtime does when its worker flushes
    between ``send_all`` and ``send_eof``); returns the client and what the
    server received once the handshake is done."""
    client = Qh3Endpoint(
        _settings(server=False, session_ticket=ticket, zero_rtt=True), is_client=True
    ).client_connection("localhost")
    now = 1.0
    flight = _first_flight(client, now)
    assert client.early_data_ready()
    stream_id = client.open_stream(False)
    assert stream_id is not None
    client.send_stream_data(stream_id, b"x" * 400, False)
    flight += [data for data, _ in client.datagrams_to_send(now)]
    client.send_stream_data(stream_id, b"", True)
    flight += [data for data, _ in client.datagrams_to_send(now)]
    header = parse_long_header(flight[0])
    assert header is not None
    server = server_endpoint.server_connection(
        original_destination_cid=header.destination_cid, retry_source_cid=None
    )
    for data in flight:
        server.receive_datagram(data, CLIENT_ADDR, now)
    events: list[object] = []
    for _ in range(50):
        now += 0.001
        moved = False
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, SERVER_ADDR, now)
            moved = True
        for data, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, CLIENT_ADDR, now)
            moved = True
        client.poll_events()
        events += server.poll_events()
        if not moved:
            break
    return client, events


@pytest.mark.parametrize("accepted", [True, False])
def test_a_fin_written_after_the_early_data_left_reaches_the_server(
    accepted: bool,
) -> None:
    server_endpoint = Qh3Endpoint(_settings(server=True), is_client=False)
    first = Pair(server_endpoint)
    first.pump()
    ticket = first.client.session_ticket
    assert ticket is not None
    if not accepted:
        # Each ticket resumes once: its second use is refused 0-RTT.
        _early_exchange(server_endpoint, ticket)
    client, events = _early_exchange(server_endpoint, ticket)
    assert client.handshake is not None
    assert client.handshake.early_data_accepted is accepted
    assert _data(events, 0) == b"x" * 400
    assert any(
        isinstance(e, StreamDataReceived) and e.stream_id == 0 and e.end_stream
        for e in events
    )
    assert not client.has_unacknowledged_stream_data()


# -- a FIN written alone while the stream's data is in flight --------------------------


def _fin_after_data(pair: Pair, *, lose_data: bool) -> tuple[int, int]:
    """The server writes 33 bytes on a stream and flushes them (lost when
    ``lose_data``), then writes the FIN alone, flushes and loses that flush;
    6000 bytes on another stream follow, whose acknowledgements make the core
    declare the lost packets lost. Returns both stream IDs."""
    stream_id, other = pair.server.open_stream(False), pair.server.open_stream(False)
    assert stream_id is not None and other is not None
    pair.server.send_stream_data(stream_id, b"d" * 33, end_stream=False)
    for data, _ in pair.server.datagrams_to_send(pair.now):
        if not lose_data:
            pair.client.receive_datagram(data, SERVER_ADDR, pair.now)
    pair.server.send_stream_data(stream_id, b"", end_stream=True)
    pair.server.datagrams_to_send(pair.now)  # lost
    pair.server.send_stream_data(other, b"o" * 6000, end_stream=True)
    return stream_id, other


@pytest.mark.parametrize("lose_data", [True, False])
def test_a_fin_written_alone_survives_the_loss_of_the_stream_s_data(
    lose_data: bool,
) -> None:
    """qh3's core loses a FIN that left in a STREAM frame of its own when
    that packet and the packets of the data before it are declared lost
    together: the data is sent again without the FIN and the peer's side of
    the stream never ends (the connection idles out). The engine holds such
    a FIN until the packets in flight are acknowledged or the data is queued
    again, so it leaves with the data, or after it."""
    pair = Pair()
    stream_id, other = _fin_after_data(pair, lose_data=lose_data)
    assert pair.server.has_unacknowledged_stream_data()
    pair.run(5.0, delay=0.01)
    assert _data(pair.client_events, stream_id) == b"d" * 33
    assert _data(pair.client_events, other) == b"o" * 6000
    ended = {
        e.stream_id
        for e in pair.client_events
        if isinstance(e, StreamDataReceived) and e.end_stream
    }
    assert ended == {stream_id, other}
    assert not pair.server.has_unacknowledged_stream_data()


def test_a_fin_written_alone_with_nothing_in_flight_leaves_at_once() -> None:
    """Only an ACK-only packet outstanding (the peer acknowledges it with
    its next ack-eliciting packet, which may never come): nothing to wait
    for (a stream without data, ended at once, hung on this)."""
    pair = Pair()
    stream_id = pair.server.open_stream(False)
    assert stream_id is not None
    pair.server.send_stream_data(stream_id, b"d" * 33, end_stream=False)
    pair.run(1.0, delay=0.01)  # acknowledged, and the client's ACK too
    core = pair.client.quic._core
    assert core is not None
    assert core.outstanding_application_packets and not core.bytes_in_flight
    own = pair.client.open_stream(False)
    assert own is not None
    pair.client.send_stream_data(own, b"", end_stream=True)
    assert not pair.client._fins_in_flight
    assert pair.client.datagrams_to_send(pair.now)
    pair.run(1.0, delay=0.01)
    assert any(
        isinstance(e, StreamDataReceived) and e.stream_id == own and e.end_stream
        for e in pair.server_events
    )


def test_a_fin_held_for_the_packets_in_flight_is_dropped_by_a_reset() -> None:
    pair = Pair()
    stream_id = pair.server.open_stream(False)
    assert stream_id is not None
    pair.server.send_stream_data(stream_id, b"d" * 33, end_stream=False)
    pair.server.datagrams_to_send(pair.now)
    pair.server.send_stream_data(stream_id, b"", end_stream=True)
    assert stream_id in pair.server._fins_in_flight
    pair.server.reset_stream(stream_id, 5)
    pair.run(5.0, delay=0.01)
    assert not pair.server._fins_in_flight
    assert any(
        isinstance(e, StreamResetReceived) and e.stream_id == stream_id
        for e in pair.client_events
    )


# -- what an idle server connection keeps ------------------------------------------

#: TLS alert unexpected_message as a QUIC CRYPTO_ERROR; a TLS KeyUpdate
#: message (update_not_requested), which QUIC forbids.
UNEXPECTED_MESSAGE = 0x10A
KEY_UPDATE_MESSAGE = bytes([24, 0, 0, 1, 0])


@pytest.fixture
def released_tls(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[list[weakref.ref[object]]]:
    """Weak references to each TLS bridge and context a server lets go,
    with the cyclic collector off: they must go by reference counting."""
    refs: list[weakref.ref[object]] = []
    release = Qh3Connection.tq_release_tls

    def recording(self: Qh3Connection) -> None:
        bridge = self._tls
        if bridge is not None and self._handshake_complete:
            refs.extend((weakref.ref(bridge), weakref.ref(bridge.tls)))
        release(self)

    monkeypatch.setattr(Qh3Connection, "tq_release_tls", recording)
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield refs
    finally:
        if enabled:
            gc.enable()


def _echo(pair: Pair, sender: Qh3Engine, data: bytes) -> bytes:
    """``data`` on a new stream from ``sender``, as its peer received it."""
    stream_id = sender.open_stream(False)
    assert stream_id is not None
    sender.send_stream_data(stream_id, data, end_stream=True)
    pair.pump()
    events = pair.server_events if sender is pair.client else pair.client_events
    return _data(events, stream_id)


def test_a_server_lets_its_tls_context_go_once_the_handshake_is_complete(
    released_tls: list[weakref.ref[object]],
) -> None:
    pair = Pair()
    assert pair.server.handshake is not None
    assert pair.server.quic._tls is None and pair.server.quic.tls is None
    assert len(released_tls) == 2  # the bridge and its context, once
    assert all(ref() is None for ref in released_tls)
    # qh3's client announces no max_ack_delay (the default, 25 ms), and a
    # client no stateless reset token.
    assert pair.server.quic.tq_peer_max_ack_delay is None
    assert pair.server._peer_max_ack_delay() == pytest.approx(0.025)
    assert pair.server.peer_reset_tokens() == ()
    # A client keeps its own: a server may send tickets at any time.
    assert pair.client.quic._tls is not None
    # The connection works on, through key updates (the keys live in the
    # core; qh3's client does not start one, its server does).
    assert _echo(pair, pair.client, b"request") == b"request"
    assert _echo(pair, pair.server, b"response") == b"response"
    core = pair.server.quic._core
    assert core is not None
    for phase in (1, 0):
        core.request_key_update()
        assert core.send_key_phase == phase
        assert _echo(pair, pair.server, b"new keys") == b"new keys"
        assert _echo(pair, pair.client, b"new keys") == b"new keys"
        pair.run(0.2, delay=0.01)
    assert pair.client.close_reason is None and pair.server.close_reason is None


def test_the_client_s_max_ack_delay_outlives_the_tls_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serialize = Qh3TlsBridge.serialize_transport_parameters

    def with_max_ack_delay(self: Qh3TlsBridge) -> bytes:
        parameters = pull_quic_transport_parameters(Buffer(data=serialize(self)))
        if self.configuration.is_client:
            parameters.max_ack_delay = 40
        buf = Buffer(capacity=4096)
        push_quic_transport_parameters(buf, parameters)
        return bytes(buf.data)

    monkeypatch.setattr(
        Qh3TlsBridge, "serialize_transport_parameters", with_max_ack_delay
    )
    pair = Pair()
    assert pair.server.quic._tls is None
    assert pair.server._peer_max_ack_delay() == pytest.approx(0.040)
    pair.run(0.5, delay=0.05)  # RTT samples
    stats = pair.server.statistics()
    assert pair.server.probe_timeout() >= stats.smoothed_rtt + 0.040


def test_a_ticket_from_a_server_without_its_tls_context_resumes(
    released_tls: list[weakref.ref[object]],
) -> None:
    server_endpoint = Qh3Endpoint(_settings(server=True), is_client=False)
    first = Pair(server_endpoint)
    ticket = first.client.session_ticket
    assert ticket is not None and first.server.quic._tls is None
    resumed = Pair(
        server_endpoint,
        client_settings=_settings(server=False, session_ticket=ticket),
    )
    assert resumed.client.handshake is not None
    assert resumed.client.handshake.session_resumed
    assert resumed.server.quic._tls is None
    assert _echo(resumed, resumed.client, b"resumed") == b"resumed"
    # The resumed connection's server issued a ticket too, which resumes.
    again = resumed.client.session_ticket
    assert again is not None and again != ticket
    third = Pair(
        server_endpoint,
        client_settings=_settings(server=False, session_ticket=again),
    )
    assert third.client.handshake is not None
    assert third.client.handshake.session_resumed
    assert len(released_tls) == 6
    assert all(ref() is None for ref in released_tls)


def test_a_tls_message_after_the_handshake_is_refused_as_the_context_would() -> None:
    """A client has no TLS message to send after its Finished (QUIC forbids
    KeyUpdate): one arriving at a server whose TLS context is gone ends the
    connection with unexpected_message, as qh3's context answers."""
    pair = Pair()
    assert pair.server.quic._tls is None
    core = pair.client.quic._core
    assert core is not None
    core.send_crypto(3, 0, KEY_UPDATE_MESSAGE)  # 1-RTT CRYPTO data
    pair.pump()
    assert pair.server.close_reason is not None
    assert pair.server.close_reason.error_code == UNEXPECTED_MESSAGE
    assert pair.client.close_reason is not None
    assert pair.client.close_reason.error_code == UNEXPECTED_MESSAGE
    assert pair.client.close_reason.cause is CloseCause.CLOSED_BY_PEER


# -- a FIN written alone while the stream's data is sent again -------------------------


def _flush(engine: Qh3Engine, now: float) -> list[bytes]:
    return [data for data, _ in engine.datagrams_to_send(now)]


def _deliver_and_acknowledge(pair: Pair, datagrams: list[bytes]) -> None:
    """The client gets ``datagrams`` and the server the client's
    acknowledgement (sent when its ACK delay runs out, if not at once)."""
    for data in datagrams:
        pair.client.receive_datagram(data, SERVER_ADDR, pair.now)
    acknowledgements = _flush(pair.client, pair.now)
    if not acknowledgements:
        timer = pair.client.get_timer()
        assert timer is not None
        pair.now = max(pair.now, timer)
        pair.client.handle_timer(pair.now)
        acknowledgements = _flush(pair.client, pair.now)
    assert acknowledgements
    for data in acknowledgements:
        pair.server.receive_datagram(data, CLIENT_ADDR, pair.now)


def test_a_fin_written_alone_waits_for_its_data_sent_again() -> None:
    """Reordering (or duplication, which makes acknowledgements arrive out of
    order) has the core declare lost a packet that was only late, and send
    its data again. A FIN written alone before that waits for the data's new
    packet too, not only for the packets in flight when it was written: left
    alone while the data was in flight again, it was lost with that packet
    and never sent again (tests/test_connection.py's every-byte property
    under duplication: one stream's echo never ended)."""
    pair = Pair()
    pair.run(0.5, delay=0.001)
    stream_id, other = pair.server.open_stream(False), pair.server.open_stream(False)
    assert stream_id is not None and other is not None
    pair.server.send_stream_data(stream_id, b"d" * 33, end_stream=False)
    _flush(pair.server, pair.now)  # late: declared lost, never arrives
    pair.server.send_stream_data(other, b"x" * 1000, end_stream=False)
    late = _flush(pair.server, pair.now)  # late: arrives after the next two
    pair.server.send_stream_data(stream_id, b"", end_stream=True)
    assert stream_id in pair.server._fins_in_flight
    ahead: list[bytes] = []
    for _ in range(2):
        pair.server.send_stream_data(other, b"y" * 1000, end_stream=False)
        ahead += _flush(pair.server, pair.now)
    _deliver_and_acknowledge(pair, ahead)  # the data's packet is declared lost
    assert _flush(pair.server, pair.now)  # the data again (lost below)
    _deliver_and_acknowledge(pair, late)
    # Every packet in flight when the FIN was written is acknowledged or
    # lost, but the data is in flight again: the FIN still waits.
    assert not _flush(pair.server, pair.now)
    assert stream_id in pair.server._fins_in_flight
    after: list[bytes] = []
    for _ in range(3):
        pair.server.send_stream_data(other, b"z" * 1000, end_stream=False)
        after += _flush(pair.server, pair.now)
    _deliver_and_acknowledge(pair, after)  # the data's second packet is lost
    pair.server.send_stream_data(other, b"", end_stream=True)
    pair.run(5.0, delay=0.01)
    assert _data(pair.client_events, stream_id) == b"d" * 33
    ended = {
        e.stream_id
        for e in pair.client_events
        if isinstance(e, StreamDataReceived) and e.end_stream
    }
    assert ended == {stream_id, other}
    assert not pair.server.has_unacknowledged_stream_data()
