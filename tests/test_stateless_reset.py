"""Stateless reset (RFC 9000 section 10.3): tokens, the router's decision on
bytes, sending (size, rate limit, no loops) and detection end to end over the
memory network, where a server that lost its state resets its clients."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os

import pytest
import trio
import trio.testing
from helpers import short_header

import trioquic
from trioquic import CloseCause, DropReason

# The pure helpers under test (sizes, detection, rate limit): no public module
# exports them, being the router's and the engine's internals.
from trioquic._stateless_reset import (
    MAX_STATELESS_RESET_SIZE,
    MIN_STATELESS_RESET_SIZE,
    TokenBucket,
    encode_stateless_reset,
    is_stateless_reset,
    stateless_reset_size,
)
from trioquic.lowlevel import (
    Deliver,
    Drop,
    QuicEngine,
    RoutingTable,
    SendStatelessReset,
    StatelessResetKey,
    create_endpoint_engine,
)
from trioquic.testing import (
    TEST_SERVER_NAME,
    LinkConditions,
    MemoryNetwork,
    MemorySocket,
    client_settings,
    server_settings,
)

KEY = b"k" * 32
SERVER_HOST = "10.0.0.1"
CLIENT_HOST = "10.0.0.2"
PORT = 4433


def reset_table(**kwargs: object) -> RoutingTable[str]:
    return RoutingTable(cid_length=8, accept_new=True, stateless_reset=True, **kwargs)  # type: ignore[arg-type]


# -- tokens, sizes, packets (pure) ----------------------------------------------


def test_token_is_hmac_sha256_of_the_connection_id() -> None:
    key = StatelessResetKey(KEY)
    cid = bytes(range(8))
    expected = hmac.new(KEY, cid, hashlib.sha256).digest()[:16]
    assert key.token(cid) == expected
    assert StatelessResetKey(KEY).token(cid) == expected  # static: survives restarts
    assert key.token(b"\x00" * 8) != expected
    assert StatelessResetKey(b"x" * 32).token(cid) != expected
    # Without a key, each endpoint makes its own random one.
    assert StatelessResetKey().token(cid) != StatelessResetKey().token(cid)
    assert "k" not in repr(key)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        StatelessResetKey(b"short")


def test_reset_is_always_smaller_than_its_trigger() -> None:
    for trigger in range(0, 2000):
        size = stateless_reset_size(trigger)
        if trigger <= MIN_STATELESS_RESET_SIZE + 1:
            # Too small to be anything but a reset: never answered.
            assert size is None, trigger
            continue
        assert size is not None
        assert MIN_STATELESS_RESET_SIZE <= size < trigger
        assert size <= MAX_STATELESS_RESET_SIZE
        if trigger <= 43:  # RFC 9000 section 10.3: one byte shorter
            assert size == trigger - 1


def test_encoded_reset_looks_like_a_short_header_and_ends_with_the_token() -> None:
    token = StatelessResetKey(KEY).token(b"C" * 8)
    packets = [encode_stateless_reset(token, size) for size in (21, 30, 43)]
    for packet, size in zip(packets, (21, 30, 43), strict=True):
        assert len(packet) == size
        assert packet[0] & 0xC0 == 0x40  # short header form, fixed bit set
        assert packet.endswith(token)
    assert encode_stateless_reset(token, 43) != encode_stateless_reset(token, 43)
    with pytest.raises(ValueError):
        encode_stateless_reset(token, 20)
    with pytest.raises(ValueError):
        encode_stateless_reset(token[:15], 43)


def test_reset_detection_on_bytes() -> None:
    token = StatelessResetKey(KEY).token(b"C" * 8)
    other = StatelessResetKey(KEY).token(b"D" * 8)
    reset = encode_stateless_reset(token, 30)
    assert is_stateless_reset(reset, [other, token])
    assert not is_stateless_reset(reset, [other])
    assert not is_stateless_reset(reset, [])
    assert not is_stateless_reset(reset[:20], [token[-4:]])  # too short
    assert not is_stateless_reset(bytes([0xC0]) + reset[1:], [token])  # long header


def test_token_bucket() -> None:
    bucket = TokenBucket(10)
    assert [bucket.take(0.0) for _ in range(12)].count(True) == 10
    assert not bucket.take(0.05)
    assert bucket.take(0.1)  # refilled one
    assert not bucket.take(0.1)
    assert [bucket.take(100.0) for _ in range(20)].count(True) == 10  # capped
    never = TokenBucket(0)
    assert not any(never.take(t) for t in (0.0, 1.0, 1000.0))


# -- routing decisions (pure) ---------------------------------------------------


def test_unknown_short_header_gets_a_reset_decision() -> None:
    table = reset_table()
    table.add(b"A" * 8, "conn-a")
    assert table.route(short_header(b"A" * 8, 100)) == Deliver("conn-a")
    assert table.route(short_header(b"B" * 8, 100)) == SendStatelessReset(
        destination_cid=b"B" * 8, size=MAX_STATELESS_RESET_SIZE
    )
    assert table.route(short_header(b"B" * 8, 30)) == SendStatelessReset(
        destination_cid=b"B" * 8, size=29
    )


def test_tiny_datagrams_are_never_answered() -> None:
    table = reset_table()
    for size in range(10, MIN_STATELESS_RESET_SIZE + 2):
        assert table.route(short_header(b"B" * 8, size)) == Drop(
            DropReason.UNKNOWN_CONNECTION_ID
        )
    assert isinstance(
        table.route(short_header(b"B" * 8, MIN_STATELESS_RESET_SIZE + 2)),
        SendStatelessReset,
    )


def test_only_short_headers_and_only_when_enabled() -> None:
    # A Handshake packet for an unknown connection is not reset.
    handshake = bytes([0xE0]) + (1).to_bytes(4, "big") + b"\x08" + b"D" * 8
    handshake += b"\x08" + b"S" * 8 + b"\x00" * 100
    assert not isinstance(reset_table().route(handshake), SendStatelessReset)
    # Off by default (and on clients, which accept nothing).
    for table in (
        RoutingTable[str](cid_length=8, accept_new=True),
        RoutingTable[str](cid_length=8, accept_new=False),
    ):
        assert table.route(short_header(b"B" * 8, 100)) == Drop(
            DropReason.UNKNOWN_CONNECTION_ID
        )


def test_a_peers_reset_goes_to_the_connection_whose_token_it_carries() -> None:
    """A reset's destination connection ID is random: the router finds its
    connection by the token at its end, and the engine confirms."""
    table = RoutingTable[str](cid_length=8, accept_new=False)
    token = StatelessResetKey().token(b"P" * 8)
    table.add(b"A" * 8, "conn-a")
    table.add_reset_token(token, "conn-a")
    reset = encode_stateless_reset(token, 40)
    assert table.route(reset) == Deliver("conn-a")
    # A server checks tokens before answering with a reset of its own.
    server = reset_table()
    server.add_reset_token(token, "conn-b")
    assert server.route(reset) == Deliver("conn-b")
    table.remove_reset_token(token, "someone-else")
    assert table.route(reset) == Deliver("conn-a")
    # The connection ends: its worker takes its IDs and tokens out.
    table.remove(b"A" * 8, "conn-a")
    assert table.route(reset) == Deliver("conn-a")  # still by the token
    table.remove_reset_token(token, "conn-a")
    assert table.route(reset) == Drop(DropReason.UNKNOWN_CONNECTION_ID)


def test_two_endpoints_cannot_reset_each_other_forever() -> None:
    """Each reset is smaller than its trigger, so an exchange of resets
    between two endpoints that both know nothing ends quickly."""
    tables = [reset_table(), reset_table()]
    keys = [StatelessResetKey(), StatelessResetKey()]
    data = short_header(b"X" * 8, 1500)
    sizes = [len(data)]
    side = 0
    for _ in range(100):
        decision = tables[side].route(data)
        if not isinstance(decision, SendStatelessReset):
            assert decision == Drop(DropReason.UNKNOWN_CONNECTION_ID)
            break
        data = encode_stateless_reset(
            keys[side].token(decision.destination_cid), decision.size
        )
        sizes.append(len(data))
        side = 1 - side
    else:  # pragma: no cover
        pytest.fail("the resets never stopped")
    assert sizes == sorted(sizes, reverse=True)
    assert len(set(sizes)) == len(sizes)
    assert sizes[-1] >= MIN_STATELESS_RESET_SIZE
    assert len(sizes) <= MAX_STATELESS_RESET_SIZE - MIN_STATELESS_RESET_SIZE + 2


# -- over the memory network ----------------------------------------------------


async def echo(connection: trioquic.QuicConnection) -> None:
    stream = await connection.accept_stream()
    assert isinstance(stream, trioquic.QuicStream)
    async for data in stream:
        await stream.send_all(data)


class ServerTask:
    """A server that can be stopped on its own (a crash, with a link that
    loses what it still sends), and whose address is then free again."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    async def run(
        self,
        network: MemoryNetwork,
        settings: trioquic.QuicSettings,
        handler: object = None,
        *,
        task_status: trio.TaskStatus[trioquic.QuicServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with self.scope:
                sock = network.socket(SERVER_HOST, PORT)
                try:
                    await trioquic.serve_quic(
                        handler or echo,  # type: ignore[arg-type]
                        PORT,
                        settings=settings,
                        sockets=[sock],
                        task_status=task_status,
                    )
                finally:
                    sock.close()
        finally:
            self.done.set()

    async def crash(self, network: MemoryNetwork) -> None:
        """Stop without the client hearing anything (as if the process died)."""
        network.set_link(SERVER_HOST, CLIENT_HOST, LinkConditions(loss=1.0))
        self.scope.cancel()
        await self.done.wait()
        network.set_link(SERVER_HOST, CLIENT_HOST, network.default_conditions)


async def restart_scenario(
    new_key: bytes | None, *, client_idle_timeout: float
) -> tuple[BaseException, float, trioquic.RouterStatistics]:
    """Connect, crash the server, start a new one on the same address with
    ``new_key``, write: what the client gets, how long it took, and the new
    server's statistics."""
    network = MemoryNetwork(conditions=LinkConditions(delay=0.01))
    first, second = ServerTask(), ServerTask()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                first.run, network, server_settings(stateless_reset_key=KEY)
            )
        )
        async with trioquic.open_quic_connection(
            SERVER_HOST,
            PORT,
            settings=client_settings(idle_timeout=client_idle_timeout),
            socket=network.socket(CLIENT_HOST),
        ) as connection:
            stream = await connection.open_stream()
            await stream.send_all(b"hello")
            assert await stream.receive_some() == b"hello"
            await first.crash(network)
            server = await nursery.start(
                functools.partial(
                    second.run, network, server_settings(stateless_reset_key=new_key)
                )
            )
            start = trio.current_time()
            await stream.send_all(b"are you there?")
            with pytest.raises(trioquic.ConnectionClosed) as info:
                await stream.receive_some()
            elapsed = trio.current_time() - start
            assert await connection.wait_closed() is info.value
        nursery.cancel_scope.cancel()
    return info.value, elapsed, server.statistics()


async def test_a_restarted_server_with_the_same_key_resets_its_old_clients(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        error, elapsed, stats = await restart_scenario(KEY, client_idle_timeout=30)
    assert type(error) is trioquic.StatelessReset
    assert isinstance(error, trioquic.ConnectionClosed)
    assert error.reason.reason == "stateless reset"
    assert error.reason.by_peer is True
    assert "stateless reset" in str(error)
    # One round trip (2 x 10 ms), far before the 30 s idle timeout.
    assert elapsed < 0.1
    assert stats.stateless_resets_sent >= 1
    assert stats.dropped["unknown_connection_id"] >= stats.stateless_resets_sent


async def test_a_reset_with_another_key_is_not_believed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        error, elapsed, stats = await restart_scenario(
            b"another key entirely", client_idle_timeout=3
        )
    assert type(error) is trioquic.IdleTimeout
    assert elapsed >= 2.5
    assert stats.stateless_resets_sent >= 1  # sent, and rightly ignored


class EnginePair:
    """A client and a server engine (``trioquic.lowlevel``) joined by a
    perfect in-memory link, driven by hand."""

    CLIENT_ADDR = ("10.0.0.2", 40000)
    SERVER_ADDR = (SERVER_HOST, PORT)

    def __init__(
        self, server: trioquic.QuicSettings, client: trioquic.QuicSettings
    ) -> None:
        self.now = 0.0
        self.client: QuicEngine = create_endpoint_engine(
            client, is_client=True
        ).client_connection(TEST_SERVER_NAME)
        self.client.connect(self.SERVER_ADDR, self.now)
        first = self.client.datagrams_to_send(self.now)
        # The client's first destination ID, from its Initial's long header.
        initial = first[0][0]
        dcid = initial[6 : 6 + initial[5]]
        self.server: QuicEngine = create_endpoint_engine(
            server, is_client=False
        ).server_connection(original_destination_cid=dcid, retry_source_cid=None)
        #: The destination ID of every short-header packet the client sent.
        self.client_dcids: list[bytes] = []
        for data, _ in first:
            self.server.receive_datagram(data, self.CLIENT_ADDR, self.now)
        self.pump()

    def pump(self, rounds: int = 50) -> None:
        length = server_settings().connection_id_length
        for _ in range(rounds):
            self.now += 0.001
            moved = False
            for data, _ in self.server.datagrams_to_send(self.now):
                self.client.receive_datagram(data, self.SERVER_ADDR, self.now)
                moved = True
            for data, _ in self.client.datagrams_to_send(self.now):
                if data[0] & 0xC0 == 0x40:
                    self.client_dcids.append(data[1 : 1 + length])
                self.server.receive_datagram(data, self.CLIENT_ADDR, self.now)
                moved = True
            self.client.poll_events()
            self.server.poll_events()
            if not moved:
                break

    def client_dcid_in_use(self) -> bytes:
        """Make the client send a 1-RTT packet; the destination ID it uses."""
        stream_id = self.client.open_stream(False)
        assert stream_id is not None
        self.client.send_stream_data(stream_id, b"x", True)
        self.pump()
        return self.client_dcids[-1]


@pytest.mark.aioquic_only(
    "on qh3 only the first connection ID's token is derived from our key; "
    "those of NEW_CONNECTION_ID frames come from qh3's native core"
)
def test_tokens_the_server_announces_are_derived_from_its_key() -> None:
    """The client's reset token for each server connection ID it uses is the
    HMAC of that ID under the server's key: the first (its transport
    parameter), then those of NEW_CONNECTION_ID frames."""
    key = StatelessResetKey(KEY)
    pair = EnginePair(
        server_settings(stateless_reset_key=KEY, active_connection_id_limit=4),
        client_settings(active_connection_id_limit=4),
    )
    assert pair.client.handshake is not None
    used: list[bytes] = []
    for _ in range(6):
        cid = pair.client_dcid_in_use()
        assert cid not in used  # a fresh ID each time
        used.append(cid)
        assert pair.client.peer_reset_tokens() == (key.token(cid),)
        # Move to the next spare ID the server issued.
        pair.client.change_connection_id()
        pair.pump()


async def exchange(
    sock: MemorySocket, datagrams: list[bytes], wait: float = 0.5
) -> list[bytes]:
    """Send ``datagrams`` to the server, return what comes back within ``wait``."""
    await sock.send_batch([(d, (SERVER_HOST, PORT)) for d in datagrams])
    replies: list[bytes] = []
    with trio.move_on_after(wait):
        while True:
            replies.extend(data for data, _ in await sock.receive_batch())
    return replies


async def with_server(
    settings: trioquic.QuicSettings,
    body: object,
) -> trioquic.RouterStatistics:
    network = MemoryNetwork()
    task = ServerTask()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(task.run, network, settings))
        await body(network.socket("10.0.0.9"))  # type: ignore[operator]
        nursery.cancel_scope.cancel()
    stats: trioquic.RouterStatistics = server.statistics()
    return stats


async def test_reset_sizes_tokens_and_tiny_datagrams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    key = StatelessResetKey(KEY)

    async def body(sock: MemorySocket) -> None:
        for size in (23, 30, 43, 44, 100, 1200):
            cid = os.urandom(8)
            (reply,) = await exchange(sock, [short_header(cid, size)])
            assert len(reply) == min(size - 1, MAX_STATELESS_RESET_SIZE)
            assert len(reply) < size
            assert reply[0] & 0xC0 == 0x40
            assert reply.endswith(key.token(cid))
        # Datagrams too small to be anything but a reset get no answer.
        tiny = [short_header(os.urandom(8), size) for size in range(10, 23)]
        assert await exchange(sock, tiny) == []

    with trio.fail_after(30):
        stats = await with_server(server_settings(stateless_reset_key=KEY), body)
    assert stats.stateless_resets_sent == 6
    assert stats.dropped["unknown_connection_id"] == 6 + 13


async def test_resets_are_rate_limited(autojump_clock: trio.testing.MockClock) -> None:
    async def body(sock: MemorySocket) -> None:
        flood = [short_header(os.urandom(8), 200) for _ in range(100)]
        assert len(await exchange(sock, flood, wait=0.05)) == 5
        assert len(await exchange(sock, flood, wait=0.05)) == 0
        await trio.sleep(1.0)  # the bucket refills: 5 per second
        assert len(await exchange(sock, flood, wait=0.05)) == 5
        await trio.sleep(0.2)
        assert len(await exchange(sock, flood, wait=0.05)) == 1

    with trio.fail_after(30):
        stats = await with_server(server_settings(stateless_reset_rate=5), body)
    assert stats.stateless_resets_sent == 11


async def test_resets_can_be_turned_off(autojump_clock: trio.testing.MockClock) -> None:
    async def body(sock: MemorySocket) -> None:
        flood = [short_header(os.urandom(8), 200) for _ in range(10)]
        assert await exchange(sock, flood) == []

    with trio.fail_after(30):
        stats = await with_server(server_settings(stateless_reset_rate=0), body)
    assert stats.stateless_resets_sent == 0
    assert stats.dropped["unknown_connection_id"] == 10


async def test_no_reset_loop_between_two_servers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(conditions=LinkConditions(delay=0.01))
    hosts = [SERVER_HOST, "10.0.0.3"]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            servers = []
            sockets = []
            for host in hosts:
                sock = network.socket(host, PORT)
                sockets.append(sock)
                servers.append(
                    await nursery.start(
                        functools.partial(
                            trioquic.serve_quic,
                            echo,
                            PORT,
                            settings=server_settings(),
                            sockets=[sock],
                        )
                    )
                )
            # A packet of a connection neither knows, as if from the other.
            trigger = short_header(b"Z" * 8, 1200)
            await sockets[0].send_batch([(trigger, (hosts[1], PORT))])
            await trio.sleep(5)
            stats = network.statistics()
            assert stats.in_transit == 0
            sent = [s.statistics().stateless_resets_sent for s in servers]
            nursery.cancel_scope.cancel()
    assert sent[0] >= 1 and sent[1] >= 1
    # Each reset is at least one byte smaller than the last: 1200 -> 43 -> 42 ...
    assert sum(sent) <= MAX_STATELESS_RESET_SIZE - MIN_STATELESS_RESET_SIZE


# -- settings ------------------------------------------------------------------


def test_settings_validation() -> None:
    assert trioquic.QuicSettings().stateless_reset_key is None
    assert trioquic.QuicSettings().stateless_reset_rate > 0
    settings = trioquic.QuicSettings(stateless_reset_key=KEY)
    assert repr(KEY)[2:10] not in repr(settings)  # a secret: not in the repr
    with pytest.raises(ValueError, match="stateless_reset_key"):
        trioquic.QuicSettings(stateless_reset_key=b"too short")
    with pytest.raises(TypeError, match="stateless_reset_key"):
        trioquic.QuicSettings(stateless_reset_key="k" * 32)  # type: ignore[arg-type]
    assert trioquic.QuicSettings(stateless_reset_rate=0).stateless_reset_rate == 0
    with pytest.raises(ValueError, match="stateless_reset_rate"):
        trioquic.QuicSettings(stateless_reset_rate=-1)
    with pytest.raises(ValueError, match="stateless_reset_rate"):
        trioquic.QuicSettings(stateless_reset_rate=float("inf"))
    with pytest.raises(TypeError, match="stateless_reset_rate"):
        trioquic.QuicSettings(stateless_reset_rate="10")  # type: ignore[arg-type]


# -- detection in the engine ----------------------------------------------------


def test_engine_detects_a_reset_only_with_a_token_in_use() -> None:
    pair = EnginePair(server_settings(), client_settings())
    client = pair.client
    server_addr = pair.SERVER_ADDR
    (token,) = client.peer_reset_tokens()  # the server's transport parameter
    # Wrong token, or a long header: not a reset; the connection carries on.
    client.receive_datagram(encode_stateless_reset(os.urandom(16), 40), server_addr, 1)
    client.receive_datagram(bytes([0xC0]) + os.urandom(23) + token, server_addr, 1)
    client.poll_events()
    assert client.close_reason is None
    assert client.get_timer() is not None  # the idle timer, at least
    # The real thing: the connection ends at once, sending nothing.
    client.receive_datagram(encode_stateless_reset(token, 40), server_addr, 1)
    assert client.close_reason is not None
    assert client.close_reason.cause is CloseCause.STATELESS_RESET
    assert client.close_reason.reason == "stateless reset"
    assert client.close_reason.by_peer
    assert client.get_timer() is None  # no closing or draining period
    client.poll_events()
    assert client.datagrams_to_send(2) == []
    assert client.close_reason.reason == "stateless reset"
