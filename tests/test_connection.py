"""Connections over the memory network: datagrams, closing, timeouts,
shutdown, task hygiene, lossy networks, NAT rebinding."""

from __future__ import annotations

import functools
import hashlib
import os
import random
from collections.abc import Sequence
from typing import Any

import attrs
import hypothesis
import pytest
import trio
import trio.testing
from helpers import (
    FIRST_FLIGHT_DATAGRAMS,
    RecordingSocket,
    all_tasks,
    bidirectional_pair,
    connected_pair,
    short_header,
)
from hypothesis import strategies as st

import trioquic
from trioquic.testing import (
    TEST_SERVER_NAME,
    LinkConditions,
    MemoryNetwork,
    client_settings,
    open_memory_server,
    server_settings,
)

SERVER = ("10.0.0.1", 4433)


async def wait_forever(connection: trioquic.QuicConnection) -> None:
    await connection.wait_closed()


# -- datagrams -----------------------------------------------------------------


async def test_datagrams_both_ways(autojump_clock: trio.testing.MockClock):
    with trio.fail_after(30):
        async with connected_pair(max_datagram_frame_size=65536) as pair:
            limit = pair.client.max_datagram_size
            assert 1000 < limit < 1350
            assert pair.server.max_datagram_size > 1000
            await pair.client.send_datagram(b"ping")
            assert await pair.server.receive_datagram() == b"ping"
            await pair.server.send_datagram(bytearray(b"pong"))
            assert await pair.client.receive_datagram() == b"pong"
            big = b"d" * limit
            await pair.client.send_datagram(memoryview(big))
            assert await pair.server.receive_datagram() == big
            with pytest.raises(trioquic.DatagramError):
                await pair.client.send_datagram(b"d" * (limit + 1))


async def test_datagrams_need_both_sides(autojump_clock: trio.testing.MockClock):
    with trio.fail_after(30):
        # Only the client accepts datagrams: the server may send, the client
        # may not.
        async with (
            open_memory_server(
                wait_forever_and_send_datagram,
                server_settings=server_settings(),
                client_settings=client_settings(max_datagram_frame_size=2000),
            ) as server,
            server.connect() as connection,
        ):
            assert connection.max_datagram_size == 0
            with pytest.raises(trioquic.DatagramError):
                await connection.send_datagram(b"x")
            assert await connection.receive_datagram() == b"from server"
        # Neither side: both refuse.
        async with connected_pair() as pair:
            for side in (pair.client, pair.server):
                assert side.max_datagram_size == 0
                with pytest.raises(trioquic.DatagramError):
                    await side.send_datagram(b"x")


async def wait_forever_and_send_datagram(connection: trioquic.QuicConnection) -> None:
    assert connection.max_datagram_size > 0
    await connection.send_datagram(b"from server")
    await connection.wait_closed()


async def test_datagrams_are_unreliable_but_bounded(
    autojump_clock: trio.testing.MockClock,
):
    network = MemoryNetwork(seed=4, conditions=LinkConditions(loss=0.2))
    with trio.fail_after(30):
        async with connected_pair(
            network=network, max_datagram_frame_size=65536, datagram_queue_size=16
        ) as pair:
            for i in range(200):
                await pair.client.send_datagram(i.to_bytes(2, "big"))
                await trio.sleep(0.01)
            await trio.sleep(1)
            received = []
            while True:
                with trio.move_on_after(0.5) as scope:
                    received.append(await pair.server.receive_datagram())
                if scope.cancelled_caught:
                    break
    # Some were lost, at most the queue's size remain queued, and what
    # arrived is what was sent.
    assert 0 < len(received) <= 16
    assert all(0 <= int.from_bytes(d, "big") < 200 for d in received)


# -- closing -------------------------------------------------------------------


async def test_close_with_application_error(autojump_clock: trio.testing.MockClock):
    with trio.fail_after(30):
        async with connected_pair() as pair:
            start = trio.current_time()
            await pair.client.aclose(0x77, "goodbye")
            error = await pair.server.wait_closed()
            assert trio.current_time() - start < 1
            assert isinstance(error, trioquic.ConnectionClosed)
            assert not isinstance(error, trioquic.IdleTimeout)
            reason = error.reason
            assert isinstance(reason, trioquic.CloseReason)
            assert reason.error_code == 0x77
            assert reason.reason == "goodbye"
            assert reason.by_peer is True
            assert reason.is_transport is False
            assert pair.server.close_reason == reason
            assert pair.server.is_closed
            # Our own side knows it closed it.
            local = pair.client.close_reason
            assert local is not None
            assert local.by_peer is False
            assert local.error_code == 0x77
            with pytest.raises(trioquic.ConnectionClosed) as info:
                await pair.server.accept_stream()
            assert info.value.reason == reason
            # aclose is idempotent.
            await pair.client.aclose()


async def test_server_handler_close_reaches_client(
    autojump_clock: trio.testing.MockClock,
):
    async def handler(connection: trioquic.QuicConnection) -> None:
        await connection.aclose(3, "not today")

    with trio.fail_after(30):
        async with (
            open_memory_server(handler) as server,
            server.connect() as connection,
        ):
            error = await connection.wait_closed()
    assert error.reason.error_code == 3
    assert error.reason.reason == "not today"
    assert error.reason.by_peer


async def test_idle_timeout(autojump_clock: trio.testing.MockClock):
    with trio.fail_after(60):
        async with connected_pair(idle_timeout=5) as pair:
            start = trio.current_time()
            client_error = await pair.client.wait_closed()
            server_error = await pair.server.wait_closed()
            elapsed = trio.current_time() - start
            assert isinstance(client_error, trioquic.IdleTimeout)
            assert isinstance(server_error, trioquic.IdleTimeout)
            assert client_error.reason.by_peer is False
            assert 4 <= elapsed <= 6
            with pytest.raises(trioquic.IdleTimeout):
                await pair.client.open_stream()


async def test_idle_timeout_when_the_network_goes_dark(
    autojump_clock: trio.testing.MockClock,
):
    network = MemoryNetwork()
    with trio.fail_after(60):
        async with connected_pair(network=network, idle_timeout=3) as pair:
            a, b = await bidirectional_pair(pair)
            network.default_conditions = LinkConditions(loss=1.0)
            start = trio.current_time()
            with pytest.raises(trioquic.IdleTimeout):
                for _ in range(1000):
                    await a.send_all(b"x" * 10_000)
            with pytest.raises(trioquic.IdleTimeout):
                await b.receive_some()
            assert trio.current_time() - start < 10


async def test_handshake_timeout_without_server(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork()
    settings = client_settings(handshake_timeout=4)
    start = trio.current_time()
    with trio.fail_after(60), pytest.raises(trioquic.HandshakeTimeout) as info:
        async with trioquic.open_quic_connection(
            *SERVER, settings=settings, socket=network.socket()
        ):
            pytest.fail("connected to nothing")  # pragma: no cover
    assert type(info.value) is trioquic.HandshakeTimeout
    assert 4 <= trio.current_time() - start < 6
    assert info.value.reason.by_peer is False
    assert network.statistics().unroutable > 1  # the client retransmitted


async def test_handshake_timeout_with_a_black_hole_server(
    autojump_clock: trio.testing.MockClock,
):
    network = MemoryNetwork()
    network.set_link("10.0.0.1", "10.0.0.2", LinkConditions(loss=1.0))
    with trio.fail_after(60):
        async with open_memory_server(wait_forever, network=network) as server:
            start = trio.current_time()
            with pytest.raises(trioquic.HandshakeTimeout):
                async with server.connect(
                    settings=client_settings(handshake_timeout=3)
                ):
                    pytest.fail("handshake cannot complete")  # pragma: no cover
            assert 3 <= trio.current_time() - start < 5
            # The server heard the client and lost every answer.
            assert server.server.statistics().connections_accepted == 1
            assert network.statistics().lost > 0


async def test_leaving_the_client_block_closes_promptly(
    autojump_clock: trio.testing.MockClock,
):
    seen: list[tuple[float, trioquic.ConnectionClosed]] = []

    async def handler(connection: trioquic.QuicConnection) -> None:
        try:
            await connection.accept_stream()
        except trioquic.ConnectionClosed as exc:
            seen.append((trio.current_time(), exc))
            raise

    network = MemoryNetwork(conditions=LinkConditions(delay=0.05))
    with trio.fail_after(60):
        async with open_memory_server(handler, network=network) as server:
            async with server.connect():
                await trio.sleep(1)
                left = trio.current_time()
            # The client's block is over; wait for the server to notice.
            for _ in range(100):
                if seen:
                    break
                await trio.sleep(0.1)
    assert seen
    when, error = seen[0]
    assert when - left < 1  # idle timeout is 30 s
    assert error.reason.by_peer
    assert error.reason.error_code == 0
    assert not isinstance(error, trioquic.IdleTimeout)


async def test_cancelling_the_server_closes_its_connections(
    autojump_clock: trio.testing.MockClock,
):
    network = MemoryNetwork(conditions=LinkConditions(delay=0.02))
    settings = server_settings(close_grace_period=0.5)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server_scope = trio.CancelScope()

            async def run_server(task_status: trio.TaskStatus[None]) -> None:
                with server_scope:
                    await trioquic.serve_quic(
                        wait_forever,
                        SERVER[1],
                        settings=settings,
                        sockets=[network.socket(*SERVER)],
                        task_status=task_status,
                    )

            await nursery.start(run_server)
            async with trioquic.open_quic_connection(
                *SERVER, settings=client_settings(), socket=network.socket()
            ) as connection:
                stream = await connection.open_stream()
                await stream.send_all(b"hello")
                start = trio.current_time()
                server_scope.cancel()
                error = await connection.wait_closed()
                assert trio.current_time() - start <= 0.5
                assert error.reason.by_peer
                assert not isinstance(error, trioquic.IdleTimeout)
                with pytest.raises(trioquic.ConnectionClosed):
                    await stream.receive_some()


async def test_user_exception_comes_out_unwrapped(
    autojump_clock: trio.testing.MockClock,
):
    class Oops(Exception):
        pass

    with trio.fail_after(30):
        async with open_memory_server(wait_forever) as server:
            with pytest.raises(Oops):
                async with server.connect() as connection:
                    stream = await connection.open_stream()
                    await stream.send_all(b"x")
                    raise Oops
            # Also when the connection was already closed by the peer.
            with pytest.raises(Oops):
                async with server.connect() as connection:
                    await connection.aclose(1)
                    raise Oops


async def test_cancellation_inside_the_client_block(
    autojump_clock: trio.testing.MockClock,
):
    with trio.fail_after(30):
        async with open_memory_server(wait_forever) as server:
            with trio.move_on_after(1) as scope:
                async with server.connect() as connection:
                    await connection.accept_stream()
            assert scope.cancelled_caught


async def test_no_task_outlives_the_endpoints(autojump_clock: trio.testing.MockClock):
    before = all_tasks()
    network = MemoryNetwork(seed=2, conditions=LinkConditions(delay=0.01, loss=0.05))

    async def handler(connection: trioquic.QuicConnection) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                stream = await connection.accept_stream()
                nursery.start_soon(echo, stream)

    async def echo(stream: trioquic.QuicStream) -> None:
        async for data in stream:
            await stream.send_all(data)
        await stream.send_eof()

    with trio.fail_after(60):
        async with open_memory_server(handler, network=network) as server:
            for _ in range(3):
                async with server.connect() as connection:
                    for _ in range(2):
                        stream = await connection.open_stream()
                        await stream.send_all(b"data" * 1000)
                        await stream.send_eof()
                        got = b""
                        async for chunk in stream:
                            got += chunk
                        assert got == b"data" * 1000
                    # A connection that is left open with streams in use.
                    await connection.open_stream()
                    during = all_tasks()
                    assert len(during) > len(before)
    assert all_tasks() == before


async def test_no_task_outlives_a_failed_handshake(
    autojump_clock: trio.testing.MockClock,
):
    before = all_tasks()
    network = MemoryNetwork()
    with trio.fail_after(60), pytest.raises(trioquic.HandshakeTimeout):
        async with trioquic.open_quic_connection(
            *SERVER,
            settings=client_settings(handshake_timeout=1),
            socket=network.socket(),
        ):
            pass  # pragma: no cover
    assert all_tasks() == before


async def test_statistics(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(conditions=LinkConditions(delay=0.05))
    with trio.fail_after(60):
        async with connected_pair(network=network) as pair:
            a, b = await bidirectional_pair(pair)
            await a.send_all(b"s" * 100_000)
            got = 0
            while got < 100_000:
                got += len(await b.receive_some())
            await trio.sleep(1)
            stats = pair.client.statistics()
            server_stats = pair.server.statistics()
            router = pair.memory_server.server.statistics()
    assert isinstance(stats, trioquic.ConnectionStatistics)
    assert stats.smoothed_rtt == pytest.approx(0.1, rel=0.2)
    assert stats.min_rtt == pytest.approx(0.1, rel=0.05)
    assert stats.bytes_sent > 100_000
    assert stats.datagrams_sent >= 100_000 // 1350
    assert server_stats.bytes_received == stats.bytes_sent
    assert server_stats.datagrams_received == stats.datagrams_sent
    assert stats.bytes_received == server_stats.bytes_sent
    assert stats.bytes_in_flight == 0  # all acknowledged after a second
    assert stats.congestion_window > 0
    assert stats.datagrams_dropped == 0
    assert router.connections_accepted == 1
    assert router.datagrams_dropped == 0
    assert router.datagrams_received == router.datagrams_delivered
    assert router.datagrams_received == server_stats.datagrams_received


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def transfer_both_ways(pair_settings: dict[str, object], network: MemoryNetwork):
    size = 1024 * 1024
    up = random.Random(1).randbytes(size)
    down = random.Random(2).randbytes(size)
    results: dict[str, bytes] = {}
    async with connected_pair(network=network, **pair_settings) as pair:
        a, b = await bidirectional_pair(pair)

        async def send(stream: trioquic.QuicStream, data: bytes) -> None:
            for i in range(0, len(data), 50_000):
                await stream.send_all(data[i : i + 50_000])
            await stream.send_eof()

        async def receive(name: str, stream: trioquic.QuicStream) -> None:
            got = bytearray()
            async for chunk in stream:
                got += chunk
            results[name] = bytes(got)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, a, up)
            nursery.start_soon(send, b, down)
            nursery.start_soon(receive, "up", b)
            nursery.start_soon(receive, "down", a)
    assert digest(results["up"]) == digest(up)
    assert digest(results["down"]) == digest(down)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_lossy_network_delivers_intact(
    autojump_clock: trio.testing.MockClock, seed: int
):
    network = MemoryNetwork(
        seed=seed,
        conditions=LinkConditions(
            delay=0.02,
            jitter=0.01,
            loss=0.1,
            duplicate=0.05,
            corrupt=0.02,
            bandwidth=2_000_000,
            queue_limit=200,
        ),
    )
    with trio.fail_after(600):
        await transfer_both_ways({"idle_timeout": 60}, network)
    stats = network.statistics()
    assert stats.lost > 50
    assert stats.duplicated > 10
    assert stats.corrupted > 5


async def test_loss_burst_at_the_start(autojump_clock: trio.testing.MockClock):
    # 30 % loss during the first two seconds (the handshake), then none.
    network = MemoryNetwork(
        seed=9, conditions=LinkConditions(delay=0.03, loss=[(2.0, 0.3)])
    )
    with trio.fail_after(600):
        await transfer_both_ways({}, network)
    assert network.statistics().lost > 0


async def test_nat_rebinding_mid_transfer(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(conditions=LinkConditions(delay=0.01))
    client_socket = network.socket("10.0.0.2", 40000)
    size = 2 * 1024 * 1024
    data = random.Random(3).randbytes(size)
    with trio.fail_after(120):
        async with connected_pair(network=network, client_socket=client_socket) as pair:
            assert pair.server.peer_address == ("10.0.0.2", 40000)
            a, b = await bidirectional_pair(pair)
            received = bytearray()
            echoed = bytearray()

            async def send() -> None:
                for i in range(0, size, 16_384):
                    await a.send_all(data[i : i + 16_384])
                await a.send_eof()

            third = trio.Event()
            two_thirds = trio.Event()

            async def receive() -> None:
                async for chunk in b:
                    received.extend(chunk)
                    if len(received) >= size // 3:
                        third.set()
                    if len(received) >= 2 * size // 3:
                        two_thirds.set()
                    await b.send_all(chunk)
                await b.send_eof()

            async def receive_echo() -> None:
                async for chunk in a:
                    echoed.extend(chunk)

            async def rebind_midway() -> None:
                await third.wait()
                new = client_socket.rebind()
                assert new != ("10.0.0.2", 40000)
                await two_thirds.wait()
                assert pair.server.peer_address == new
                client_socket.rebind(50000)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                nursery.start_soon(receive)
                nursery.start_soon(receive_echo)
                nursery.start_soon(rebind_midway)
            assert bytes(received) == data
            assert bytes(echoed) == data
            # The server follows the client to its new address.
            assert pair.server.peer_address == ("10.0.0.2", 50000)
            assert not pair.client.is_closed
            assert not pair.server.is_closed
    assert network.statistics().unroutable > 0  # replies to the old address


async def test_settings_reach_both_ends(autojump_clock: trio.testing.MockClock):
    # A sanity check of the helpers: evolved settings are honoured.
    settings = attrs.evolve(client_settings(), idle_timeout=2)
    with trio.fail_after(30):
        async with (
            open_memory_server(wait_forever) as server,
            server.connect(settings=settings) as connection,
        ):
            start = trio.current_time()
            await connection.wait_closed()
            assert trio.current_time() - start == pytest.approx(2, abs=1)


async def test_handler_return_delivers_what_it_wrote(
    autojump_clock: trio.testing.MockClock,
):
    # The handler returns right after send_eof: its last bytes are not yet
    # acknowledged, and closing must not throw them away. 2 % loss while the
    # data flows (it ends at about 1.6 s), none after 1.2 s: a lost
    # CONNECTION_CLOSE to a client with nothing left to send rightly ends in
    # the client's idle timeout (RFC 9000 section 10.2), not what this tests.
    size = 1_000_000
    network = MemoryNetwork(
        seed=1, conditions=LinkConditions(delay=0.01, loss=[(1.2, 0.02)])
    )

    async def handler(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        assert isinstance(stream, trioquic.QuicStream)
        assert await stream.receive_some() == b"go"
        await stream.send_all(b"r" * size)
        await stream.send_eof()

    with trio.fail_after(60):
        async with (
            open_memory_server(handler, network=network) as server,
            server.connect() as connection,
        ):
            stream = await connection.open_stream()
            await stream.send_all(b"go")
            got = 0
            async for chunk in stream:
                got += len(chunk)
            assert got == size
            error = await connection.wait_closed()
            assert error.reason.by_peer and error.reason.error_code == 0


async def test_leaving_the_client_block_delivers_what_was_written(
    autojump_clock: trio.testing.MockClock,
):
    size = 1_000_000
    received: list[int] = []
    network = MemoryNetwork(seed=2, conditions=LinkConditions(delay=0.01, loss=0.02))

    async def handler(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        got = 0
        async for chunk in stream:
            got += len(chunk)
        received.append(got)

    with trio.fail_after(60):
        async with open_memory_server(handler, network=network) as server:
            async with server.connect() as connection:
                stream = await connection.open_stream()
                await stream.send_all(b"w" * size)
                await stream.send_eof()
            for _ in range(100):
                if received:
                    break
                await trio.sleep(0.1)
    assert received == [size]


class StuckTimerEngine:
    """A QuicEngine (``trioquic.lowlevel.QuicEngine``) whose timer stays due
    while ``stuck`` is set, as the real engine's loss timer can when a
    rounding error leaves it a hair short of the loss threshold; everything
    else is the wrapped engine's."""

    def __init__(self, engine: trioquic.lowlevel.QuicEngine) -> None:
        self._engine = engine
        self.stuck: float | None = None
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def get_timer(self) -> float | None:
        timer = self._engine.get_timer()
        if self.stuck is None:
            return timer
        return self.stuck if timer is None else min(timer, self.stuck)

    def handle_timer(self, now: float) -> None:
        if self.stuck is not None:
            self.calls += 1
            if self.calls > 100_000:
                raise RuntimeError("the worker spins on a due timer")
        self._engine.handle_timer(now)


class CollectStreamData(trioquic.ApplicationOverQuic):
    """Keeps the stream data it reads; ``ended`` is set on a FIN."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.ended = trio.Event()

    def attach(self, io: trioquic.ConnectionIO) -> None:
        self.io = io

    def process_reads(
        self, io: trioquic.ConnectionIO, events: Sequence[trioquic.QuicEvent]
    ) -> None:
        for event in events:
            if isinstance(event, trioquic.StreamDataReceived):
                self.received += event.data
                if event.end_stream:
                    self.ended.set()


async def test_a_timer_that_stays_due_does_not_spin(
    autojump_clock: trio.testing.MockClock,
):
    # Under a mock clock, a timer that stays due after being handled stops
    # time unless the worker waits before retrying. The client is assembled
    # from trioquic.lowlevel's building blocks around an engine whose timer
    # stays due on demand.
    from trioquic import lowlevel

    async def echo(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        assert isinstance(stream, trioquic.QuicStream)
        async for data in stream:
            await stream.send_all(data)
        await stream.send_eof()
        await connection.wait_closed()

    with trio.fail_after(30):
        async with (
            open_memory_server(echo) as server,
            trio.open_nursery() as nursery,
        ):
            settings = server.client_settings
            endpoint = lowlevel.create_endpoint_engine(settings, is_client=True)
            engine = StuckTimerEngine(endpoint.client_connection(TEST_SERVER_NAME))
            sock = server.network.socket("10.0.0.2")
            table = lowlevel.RoutingTable[lowlevel.IoWorker](
                cid_length=settings.connection_id_length, accept_new=False
            )
            router = lowlevel.InboundPacketRouter(
                sock, table, lowlevel.RouterCounters(), endpoint
            )
            app = CollectStreamData()
            worker = lowlevel.IoWorker(
                engine=engine,
                application=app,
                socket=sock,
                table=table,
                settings=settings,
            )
            nursery.start_soon(router.run)

            async def run_worker() -> None:
                async with trio.open_nursery() as connection_nursery:
                    await worker.run(connection_nursery)

            engine.connect(server.address, trio.current_time())
            nursery.start_soon(run_worker)
            app.io.wake()
            await app.io.wait_handshake()

            engine.stuck = trio.current_time()
            app.io.wake()
            await trio.sleep(1)
            engine.stuck = None
            # About one retry per millisecond, and the connection still works.
            assert 100 <= engine.calls <= 1100
            stream_id = app.io.open_stream()
            assert stream_id is not None
            app.io.send_stream_data(stream_id, b"fine", end_stream=True)
            await app.ended.wait()
            assert app.received == b"fine"
            app.io.close()
            await app.io.wait_closed()
            nursery.cancel_scope.cancel()
    endpoint.close()
    sock.close()


async def test_handler_failure_closes_only_its_connection(
    autojump_clock: trio.testing.MockClock,
):
    calls = 0

    async def handler(connection: trioquic.QuicConnection) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("bug in the handler")
        stream = await connection.accept_stream()
        await stream.send_all(await stream.receive_some())
        await stream.send_eof()

    with trio.fail_after(30):
        async with open_memory_server(handler) as server:
            async with server.connect() as first:
                error = await first.wait_closed()
            assert error.reason.by_peer
            assert error.reason.is_transport
            assert error.reason.error_code == 0x1  # INTERNAL_ERROR
            async with server.connect() as second:
                stream = await second.open_stream()
                await stream.send_all(b"still serving")
                assert await stream.receive_some() == b"still serving"


async def test_failed_handshake_raises_connection_closed(
    autojump_clock: trio.testing.MockClock,
):
    with trio.fail_after(30):
        async with open_memory_server(wait_forever) as server:
            with pytest.raises(trioquic.ConnectionClosed) as alpn:
                async with server.connect(
                    settings=client_settings(alpn_protocols=["other"])
                ):
                    pytest.fail("no common ALPN")  # pragma: no cover
            assert alpn.value.reason.by_peer
            assert alpn.value.reason.is_transport
            assert (
                alpn.value.reason.error_code == 0x100 + 120
            )  # no_application_protocol
            with pytest.raises(trioquic.ConnectionClosed) as untrusted:
                async with server.connect(settings=client_settings(ca_certs=None)):
                    pytest.fail("certificate not trusted")  # pragma: no cover
            assert not untrusted.value.reason.by_peer
            assert not isinstance(untrusted.value, trioquic.HandshakeTimeout)


async def test_many_clients_on_a_lossy_network(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(
        seed=11, conditions=LinkConditions(delay=0.02, jitter=0.01, loss=0.05)
    )

    async def handler(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        assert isinstance(stream, trioquic.QuicStream)
        data = b""
        async for chunk in stream:
            data += chunk
        await stream.send_all(hashlib.sha256(data).digest())
        await stream.send_eof()

    results: dict[int, bool] = {}
    with trio.fail_after(120):
        async with open_memory_server(handler, network=network) as server:

            async def client(i: int) -> None:
                payload = random.Random(i).randbytes(50_000 + i)
                async with server.connect(host=f"10.0.1.{i}") as connection:
                    stream = await connection.open_stream()
                    await stream.send_all(payload)
                    await stream.send_eof()
                    answer = b""
                    async for chunk in stream:
                        answer += chunk
                    results[i] = answer == hashlib.sha256(payload).digest()

            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(client, i)
            assert server.server.statistics().connections_accepted == 20
    assert results == dict.fromkeys(range(20), True)


@hypothesis.settings(
    # Raise with TRIOQUIC_PROPERTY_EXAMPLES=1000 for a long local run; at least
    # TRIOQUIC_PROPERTY_MIN_EXAMPLES (nox -s fuzz).
    max_examples=max(
        int(os.environ.get("TRIOQUIC_PROPERTY_EXAMPLES", "25")),
        int(os.environ.get("TRIOQUIC_PROPERTY_MIN_EXAMPLES") or 0),
    ),
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
@hypothesis.given(
    seed=st.integers(0, 2**32),
    delay=st.floats(0.0, 0.1),
    jitter=st.floats(0.0, 0.05),
    loss=st.floats(0.0, 0.2),
    duplicate=st.floats(0.0, 0.1),
    corrupt=st.floats(0.0, 0.05),
    sizes=st.lists(st.integers(0, 200_000), min_size=1, max_size=4),
)
def test_property_every_byte_arrives_or_an_error_is_reported(
    seed: int,
    delay: float,
    jitter: float,
    loss: float,
    duplicate: float,
    corrupt: float,
    sizes: list[int],
) -> None:
    """Whatever the network does, each stream's bytes arrive intact and in
    order (or the connection reports an error); nothing hangs; no task leaks."""
    network_conditions = LinkConditions(
        delay=delay, jitter=jitter, loss=loss, duplicate=duplicate, corrupt=corrupt
    )

    async def main() -> None:
        before = all_tasks()
        network = MemoryNetwork(seed=seed, conditions=network_conditions)
        echoed: dict[int, bytes] = {}
        with trio.fail_after(300):
            try:
                async with connected_pair(network=network, idle_timeout=60) as pair:

                    async def echo_all() -> None:
                        async with trio.open_nursery() as nursery:
                            for _ in sizes:
                                stream = await pair.server.accept_stream()
                                assert isinstance(stream, trioquic.QuicStream)
                                nursery.start_soon(echo, stream)

                    async def echo(stream: trioquic.QuicStream) -> None:
                        async for chunk in stream:
                            await stream.send_all(chunk)
                        await stream.send_eof()

                    async def client(i: int, size: int) -> None:
                        stream = await pair.client.open_stream()
                        payload = random.Random(seed + i).randbytes(size)

                        async def send() -> None:
                            await stream.send_all(payload)
                            await stream.send_eof()

                        got = bytearray()
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(send)
                            async for chunk in stream:
                                got += chunk
                        assert bytes(got) == payload
                        echoed[i] = bytes(got)

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(echo_all)
                        for i, size in enumerate(sizes):
                            nursery.start_soon(client, i, size)
            except* trioquic.ConnectionClosed:
                pass  # reported, not hung: acceptable for a hostile network
        if len(echoed) != len(sizes):
            # Only a connection error may explain missing streams.
            assert network.statistics().lost > 0
        assert all_tasks() == before

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_a_lost_connection_close_is_repeated_while_closing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 9000 section 10.2.1: the closing endpoint answers the peer's packets
    with CONNECTION_CLOSE again, so a lost close costs no idle timeout."""
    network = MemoryNetwork(seed=5, conditions=LinkConditions(delay=0.01))
    noticed: list[tuple[float, trioquic.CloseReason]] = []
    server_side_ended = trio.Event()

    async def chatty(connection: trioquic.QuicConnection) -> None:
        stream = await connection.open_unidirectional_stream()
        try:
            while True:
                await stream.send_all(b"tick")
                await trio.sleep(0.005)
        finally:
            # Ends by ConnectionClosed or by the cancellation of the
            # connection's nursery, whichever reaches the handler first.
            reason = connection.close_reason
            assert reason is not None
            noticed.append((trio.current_time(), reason))
            server_side_ended.set()

    async with open_memory_server(chatty, network=network) as server:
        async with server.connect(host="10.0.0.2") as connection:
            stream = await connection.accept_stream()
            assert await stream.receive_some() != b""
            # Lose everything the client sends for the next 15 ms: its first
            # CONNECTION_CLOSE among it.
            until = network.elapsed + 0.015
            network.set_link(
                "10.0.0.2",
                "10.0.0.1",
                LinkConditions(delay=0.01, loss=[(until, 1.0)]),
            )
            left_at = trio.current_time()
        with trio.fail_after(5):
            await server_side_ended.wait()
    when, reason = noticed[0]
    assert reason.by_peer and reason.error_code == 0
    # Far sooner than the 30 s idle timeout.
    assert when - left_at < 1.0
    assert network.statistics().lost >= 1


async def test_router_follows_connection_id_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The router follows the connection IDs the server issues and retires:
    a client that moves to a fresh ID (rebind) keeps its connection, again
    and again, and nothing it sends is dropped for an unknown ID; a retired
    ID is no longer routed, nor any ID once the connection ended."""
    network = MemoryNetwork(conditions=LinkConditions(delay=0.01))
    client_socket = RecordingSocket(network.socket("10.0.0.2"))
    probe = network.socket("10.0.0.7")

    async def echo(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        assert isinstance(stream, trioquic.QuicStream)
        async for data in stream:
            await stream.send_all(data)
        await connection.wait_closed()

    def unknown_cid_drops() -> int:
        return server.server.statistics().dropped.get("unknown_connection_id", 0)

    async def probe_with(cids: list[bytes]) -> tuple[int, int]:
        """Send a short-header datagram for each of ``cids``: how many the
        router dropped for an unknown ID, and how many it delivered."""
        before = server.server.statistics()
        await probe.send_batch(
            [(short_header(cid, 100), server.address) for cid in cids]
        )
        await trio.sleep(0.1)
        after = server.server.statistics()
        return (
            after.dropped.get("unknown_connection_id", 0)
            - before.dropped.get("unknown_connection_id", 0),
            after.datagrams_delivered - before.datagrams_delivered,
        )

    with trio.fail_after(60):
        async with open_memory_server(echo, network=network) as server:
            async with server.connect(socket=client_socket) as client:  # type: ignore[arg-type]
                stream = await client.open_stream()
                await stream.send_all(b"first")
                assert await stream.receive_some() == b"first"
                (server_side,) = server.server.connections
                used = [client_socket.short_header_dcids()[-1][0]]
                for _ in range(3):
                    # The client receives the NEW_CONNECTION_ID frames.
                    await trio.sleep(0.5)
                    new_address = await client.rebind()
                    await stream.send_all(b"after the switch")
                    assert await stream.receive_some() == b"after the switch"
                    # From the new address, only a fresh connection ID.
                    after_switch = {
                        cid
                        for cid, source in client_socket.short_header_dcids()
                        if source == new_address
                    }
                    assert after_switch and after_switch.isdisjoint(used)
                    (new,) = after_switch
                    used.append(new)
                # RETIRE_CONNECTION_ID frames arrive and are acknowledged.
                await trio.sleep(1)
                assert unknown_cid_drops() == 0
                # The retired IDs are no longer routed; the one in use is.
                assert await probe_with(used[:-1]) == (len(used) - 1, 0)
                assert await probe_with(used[-1:]) == (0, 1)
                await stream.send_all(b"still fine")
                assert await stream.receive_some() == b"still fine"
            await server_side.wait_closed()
            assert server.server.connection_count == 0
            # Once the connection ended, none of its IDs is routed any more.
            assert await probe_with(used) == (len(used), 0)
    probe.close()


async def test_session_resumption_and_zero_rtt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A ticket from one connection resumes the next; with zero_rtt the first
    data leaves before the handshake completes and the server takes it."""
    network = MemoryNetwork(conditions=LinkConditions(delay=0.05))
    arrived: list[tuple[bytes, bool]] = []

    async def echo_once(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        assert isinstance(stream, trioquic.QuicStream)
        data = await stream.receive_some()
        handshake = connection.handshake
        assert handshake is not None
        arrived.append((data, handshake.early_data_accepted))
        await stream.send_all(data)
        await stream.send_eof()

    async with open_memory_server(echo_once, network=network) as server:
        async with server.connect() as first:
            assert first.handshake is not None
            assert not first.handshake.session_resumed
            stream = await first.open_stream()
            await stream.send_all(b"one")
            assert await stream.receive_some() == b"one"
            ticket = first.session_ticket
        assert ticket is not None

        resumed = attrs.evolve(server.client_settings, session_ticket=ticket)
        async with server.connect(settings=resumed) as second:
            info = await second.wait_handshake()
            assert info.session_resumed
            # Opened after the handshake (no zero_rtt): nothing was early.
            assert second.handshake is info
            stream = await second.open_stream()
            await stream.send_all(b"two")
            assert await stream.receive_some() == b"two"
            ticket = second.session_ticket or ticket

        early = attrs.evolve(
            server.client_settings, session_ticket=ticket, zero_rtt=True
        )
        started = trio.current_time()
        async with server.connect(settings=early) as third:
            # Handed over before the handshake: the data rides in 0-RTT.
            assert third.handshake is None
            stream = await third.open_stream()
            await stream.send_all(b"three")
            assert await stream.receive_some() == b"three"
            # One round trip (100 ms) instead of two: no handshake wait.
            assert trio.current_time() - started < 0.15
            info = await third.wait_handshake()
            assert info.session_resumed and info.early_data_accepted
    assert arrived[-1] == (b"three", True)


async def test_zero_rtt_stream_behind_retry_is_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that validates every address with Retry: the stream data the
    client sent as 0-RTT before the Retry is sent again and answered once."""
    network = MemoryNetwork(conditions=LinkConditions(delay=0.05))
    arrived: list[bytes] = []

    async def echo_once(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        assert isinstance(stream, trioquic.QuicStream)
        data = b""
        async for chunk in stream:
            data += chunk
        arrived.append(data)
        await stream.send_all(data)
        await stream.send_eof()

    with trio.fail_after(30):
        async with open_memory_server(
            echo_once, network=network, server_settings=server_settings(retry="always")
        ) as server:
            async with server.connect() as first:
                stream = await first.open_stream()
                await stream.send_all(b"one")
                await stream.send_eof()
                assert await stream.receive_some() == b"one"
                await trio.sleep(0.3)  # the ticket follows the handshake
                ticket = first.session_ticket
            assert ticket is not None
            early = attrs.evolve(
                server.client_settings, session_ticket=ticket, zero_rtt=True
            )
            async with server.connect(settings=early) as second:
                assert second.handshake is None  # 0-RTT: before the handshake
                stream = await second.open_stream()
                await stream.send_all(b"two" * 100)
                await stream.send_eof()
                received = b""
                async for chunk in stream:
                    received += chunk
                assert received == b"two" * 100
                info = await second.wait_handshake()
                assert info.early_data_accepted
            # One Retry per Initial datagram of each of the two attempts.
            assert server.server.statistics().retries_sent == 2 * FIRST_FLIGHT_DATAGRAMS
    assert arrived == [b"one", b"two" * 100]


async def test_a_ticket_is_single_use_for_zero_rtt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server forgets a ticket once used, so 0-RTT data sent with it
    again (a replay) is refused; the connection falls back to a full
    handshake and the data still arrives, in 1-RTT."""

    async def echo(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        assert isinstance(stream, trioquic.QuicStream)
        await stream.send_all(await stream.receive_some())
        await stream.send_eof()

    async with open_memory_server(echo) as server:
        async with server.connect() as first:
            stream = await first.open_stream()
            await stream.send_all(b"x")
            await stream.receive_some()
            ticket = first.session_ticket
        assert ticket is not None
        early = attrs.evolve(
            server.client_settings, session_ticket=ticket, zero_rtt=True
        )
        for expect_early in (True, False):
            async with server.connect(settings=early) as conn:
                stream = await conn.open_stream()
                await stream.send_all(b"again")
                assert await stream.receive_some() == b"again"
                info = await conn.wait_handshake()
                assert info.early_data_accepted is expect_early


def test_malformed_session_ticket_is_a_clear_error() -> None:
    from trioquic.lowlevel import create_endpoint_engine

    with pytest.raises(ValueError, match="session ticket"):
        create_endpoint_engine(
            client_settings(session_ticket=b"not a ticket"), is_client=True
        )


@pytest.mark.parametrize("policy", ["always", "under-load"])
async def test_retry_validates_the_address_first(
    autojump_clock: trio.testing.MockClock, policy: str
) -> None:
    network = MemoryNetwork(conditions=LinkConditions(delay=0.05))
    settings = server_settings(retry=policy, retry_under_load_threshold=0)

    async def echo(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        assert isinstance(stream, trioquic.QuicStream)
        await stream.send_all(await stream.receive_some())
        await stream.send_eof()

    async with open_memory_server(
        echo, network=network, server_settings=settings
    ) as server:
        started = trio.current_time()
        async with server.connect() as connection:
            # Retry costs one more round trip: 2 RTT (0.2 s) to connect.
            assert trio.current_time() - started >= 0.19
            stream = await connection.open_stream()
            await stream.send_all(b"validated")
            assert await stream.receive_some() == b"validated"
        stats = server.server.statistics()
        assert stats.retries_sent == FIRST_FLIGHT_DATAGRAMS  # one attempt
        assert stats.connections_accepted == 1


async def test_a_bad_retry_token_is_refused_with_invalid_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 9000 section 8.1.3: an Initial whose token does not validate (here:
    from another address) is closed with INVALID_TOKEN, not left to time out."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection as AioquicConnection

    network = MemoryNetwork()
    settings = server_settings(retry="always")
    async with open_memory_server(
        wait_forever, network=network, server_settings=settings
    ) as server:
        sock = network.socket("10.0.0.2")
        client = AioquicConnection(
            configuration=QuicConfiguration(is_client=True, alpn_protocols=["x"])
        )
        client.connect(server.address, now=trio.current_time())
        for data, _ in client.datagrams_to_send(now=trio.current_time()):
            await sock.send_batch([(data, server.address)])
        (retry, _), *_ = await sock.receive_batch()
        # The Retry's token is bound to 10.0.0.2: replay it from elsewhere.
        thief = network.socket("10.0.0.3")
        client.receive_datagram(retry, server.address, now=trio.current_time())
        for data, _ in client.datagrams_to_send(now=trio.current_time()):
            await thief.send_batch([(data, server.address)])
        with trio.fail_after(5):
            replies = await thief.receive_batch()
        for data, _addr in replies:
            client.receive_datagram(data, server.address, now=trio.current_time())
        event = client.next_event()
        while event is not None and type(event).__name__ != "ConnectionTerminated":
            event = client.next_event()
        # aioquic surfaces the peer's close once its draining period ends.
        client.handle_timer(now=trio.current_time() + 10)
        while event is None or type(event).__name__ != "ConnectionTerminated":
            event = client.next_event()
            assert event is not None
        assert event.error_code == 0xB  # INVALID_TOKEN
        assert server.server.statistics().invalid_tokens == 1
        assert server.server.statistics().connections_accepted == 0
        sock.close()
        thief.close()


async def test_datagrams_held_for_an_idle_application_are_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While should_act() is false the worker holds events back; QUIC
    datagrams (not flow-controlled) are shed beyond datagram_queue_size."""
    apps: list[Sleepy] = []

    class Sleepy(trioquic.ApplicationOverQuic):
        def __init__(self) -> None:
            self.acting = False
            self.batches: list[list[trioquic.QuicEvent]] = []

        def attach(self, io: trioquic.ConnectionIO) -> None:
            self.io = io

        def should_act(self) -> bool:
            return self.acting

        def process_reads(
            self, io: trioquic.ConnectionIO, events: Sequence[trioquic.QuicEvent]
        ) -> None:
            self.batches.append(list(events))

    def factory() -> trioquic.ApplicationOverQuic:
        app = Sleepy()
        apps.append(app)
        return app

    network = MemoryNetwork()
    sock = network.socket(*SERVER)
    settings = server_settings(max_datagram_frame_size=1200, datagram_queue_size=8)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                trioquic.serve_application,
                factory,
                SERVER[1],
                settings=settings,
                sockets=[sock],
            )
        )
        async with trioquic.open_quic_connection(
            *SERVER,
            settings=client_settings(max_datagram_frame_size=1200),
            socket=network.socket("10.0.0.2"),
        ) as connection:
            for i in range(200):
                await connection.send_datagram(bytes([i % 256]) * 100)
                await trio.sleep(0.001)
            await trio.sleep(0.5)
            (app,) = apps
            assert app.batches == []
            assert app.io.statistics().quic_datagrams_receive_dropped >= 150
            # Once it acts, the application gets what was held: bounded, and
            # the newest datagrams.
            app.acting = True
            app.io.wake()
            await trio.sleep(0.1)
            held = app.batches[0]
            assert 0 < len(held) <= 2 * 8
            assert held[-1] == trioquic.DatagramReceived(bytes([199]) * 100)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("rebind_at", [0.13, 0.2, 0.24])
async def test_nat_rebinding_before_the_handshake_is_confirmed(
    autojump_clock: trio.testing.MockClock, rebind_at: float
) -> None:
    """The client's address changes after its handshake completed but before
    HANDSHAKE_DONE reached it (RTT 125 ms: between 0.125 s and 0.25 s). The
    client probes with 1-RTT packets too, so the server follows it instead
    of the connection dying at its idle timeout."""
    network = MemoryNetwork(seed=1, conditions=LinkConditions(delay=0.0625))
    client_socket = network.socket("10.0.0.2", 40000)

    async def echo(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        assert isinstance(stream, trioquic.QuicStream)
        await stream.send_all(await stream.receive_some())
        await stream.send_eof()

    async with (
        open_memory_server(echo, network=network) as server,
        trio.open_nursery() as nursery,
    ):

        async def rebind() -> None:
            await trio.sleep(rebind_at)
            client_socket.rebind()

        nursery.start_soon(rebind)
        started = trio.current_time()
        async with server.connect(socket=client_socket) as connection:
            stream = await connection.open_stream()
            await stream.send_all(b"hi")
            await stream.send_eof()
            assert await stream.receive_some() == b"hi"
        assert trio.current_time() - started < 2.0  # not the 30 s idle timeout


async def test_an_application_that_cannot_attach_leaves_nothing_behind(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """attach() raising is the application's bug: the error is logged, the
    attempt is not a connection (no routing entry, no handshake slot), and
    the server keeps serving."""
    failures = [True, True]

    class Fragile(trioquic.ApplicationOverQuic):
        def attach(self, io: trioquic.ConnectionIO) -> None:
            if failures:
                failures.pop()
                raise RuntimeError("cannot attach")

    network = MemoryNetwork()
    sock = network.socket(*SERVER)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                trioquic.serve_application,
                Fragile,
                SERVER[1],
                settings=server_settings(),
                sockets=[sock],
            )
        )
        with trio.fail_after(30):
            async with trioquic.open_quic_connection(
                *SERVER, settings=client_settings(), socket=network.socket("10.0.0.2")
            ) as connection:
                # The first two Initials failed to attach; a retransmission
                # of the client's Initial made the connection.
                assert connection.handshake is not None
                assert server.connection_count == 1
        await trio.sleep(5)
        stats = server.statistics()
        assert server.connection_count == 0
        assert stats.connection_ids == 0
        assert stats.pending_handshakes == 0
        nursery.cancel_scope.cancel()
    assert caplog.text.count("could not be attached") == 2
