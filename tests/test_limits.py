"""Server limits under load: max_connections, max_pending_handshakes, a flood
of spoofed Initials with ``retry="under-load"``, graceful shutdown of many
connections."""

from __future__ import annotations

import gc
import random
import tracemalloc
from functools import partial

import pytest
import trio
import trio.lowlevel
import trio.testing
from helpers import FIRST_FLIGHT_DATAGRAMS, all_tasks

import trioquic
from trioquic.testing import (
    LinkConditions,
    MemoryNetwork,
    client_settings,
    open_memory_server,
    server_settings,
)

SERVER = ("10.0.0.1", 4433)


async def wait_forever(connection: trioquic.QuicConnection) -> None:
    await connection.wait_closed()


def fake_initial(rng: random.Random) -> bytes:
    """A valid-looking QUIC v1 client Initial: long header, Initial type,
    random 8..20-byte DCID and SCID, empty token, padded to 1200 bytes. Its
    payload is noise, so it can never complete a handshake (like a spoofed
    flood, whose senders never see our answers)."""
    dcid = rng.randbytes(rng.randint(8, 20))
    scid = rng.randbytes(8)
    header = (
        bytes([0xC0 | rng.randrange(4)])
        + (1).to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + b"\x00"  # token length 0
    )
    payload_length = 1200 - len(header) - 2
    return (
        header
        + (0x4000 | payload_length).to_bytes(2, "big")
        + rng.randbytes(payload_length)
    )


# -- settings -------------------------------------------------------------------


def test_limit_settings() -> None:
    settings = trioquic.QuicSettings(max_connections=5, max_pending_handshakes=3)
    assert settings.max_connections == 5
    with pytest.raises(ValueError, match="max_connections"):
        trioquic.QuicSettings(max_connections=0)
    with pytest.raises(ValueError, match="max_pending_handshakes"):
        trioquic.QuicSettings(max_pending_handshakes=0)
    with pytest.raises(ValueError, match="retry_under_load_threshold"):
        trioquic.QuicSettings(
            retry="under-load", retry_under_load_threshold=8, max_pending_handshakes=8
        )


# -- max_connections ------------------------------------------------------------


async def test_max_connections_refuses_with_connection_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(conditions=LinkConditions(delay=0.01))
    settings = server_settings(max_connections=2)
    async with open_memory_server(
        wait_forever, network=network, server_settings=settings
    ) as server:
        async with server.connect(), server.connect():
            started = trio.current_time()
            with trio.fail_after(5), pytest.raises(trioquic.ConnectionClosed) as info:
                async with server.connect():
                    pass  # pragma: no cover
            # Refused at once (one round trip), not left to a handshake timeout.
            assert trio.current_time() - started < 1
            assert info.value.reason.error_code == 0x2  # CONNECTION_REFUSED
            assert info.value.reason.by_peer
            stats = server.server.statistics()
            # One refusal per Initial datagram of the attempt.
            assert stats.refused_max_connections == FIRST_FLIGHT_DATAGRAMS
            assert stats.connections == 2
        # Room again once connections end.
        await trio.sleep(1)
        assert server.server.statistics().connections == 0
        with trio.fail_after(5):
            async with server.connect() as connection:
                assert connection.handshake is not None


async def test_a_full_server_refuses_instead_of_sending_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(conditions=LinkConditions(delay=0.01))
    settings = server_settings(max_connections=1, retry="always")
    async with (
        open_memory_server(
            wait_forever, network=network, server_settings=settings
        ) as server,
        server.connect(),
    ):
        with trio.fail_after(5), pytest.raises(trioquic.ConnectionClosed) as info:
            async with server.connect():
                pass  # pragma: no cover
        assert info.value.reason.error_code == 0x2
        stats = server.server.statistics()
        # The first client's attempt only, then one refusal per Initial
        # datagram of the second's.
        assert stats.retries_sent == FIRST_FLIGHT_DATAGRAMS
        assert stats.refused_max_connections == FIRST_FLIGHT_DATAGRAMS


async def test_max_pending_handshakes_drops_and_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    settings = server_settings(max_pending_handshakes=4, handshake_timeout=2)
    rng = random.Random(1)
    async with open_memory_server(
        wait_forever, network=network, server_settings=settings
    ) as server:
        flood = network.socket("10.9.0.1")
        await flood.send_batch([(fake_initial(rng), SERVER) for _ in range(10)])
        await trio.sleep(0.1)
        stats = server.server.statistics()
        assert stats.connections_accepted == 4
        assert stats.pending_handshakes == 4
        assert stats.refused_max_pending_handshakes == 6
        # The fake handshakes time out and free their slots.
        await trio.sleep(3)
        stats = server.server.statistics()
        assert stats.pending_handshakes == 0
        assert stats.connections == 0
        assert len(server.server.connections) == 0
        flood.close()


# -- a flood of spoofed Initials ---------------------------------------------------


FLOOD = 10_000
MAX_PENDING = 32
RETRY_THRESHOLD = 8


async def test_initial_flood_stays_bounded_and_a_real_client_connects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """10,000 valid-looking Initials from 10,000 source ports, as a spoofed
    flood would send them: with ``retry="under-load"``, once
    ``RETRY_THRESHOLD`` handshakes are pending the rest are answered with a
    stateless Retry that the flood never follows; live connections, workers
    and routing-table entries stay under the limits, memory stays flat, and a
    real client (which does follow the Retry) connects in the middle of it."""
    network = MemoryNetwork(conditions=LinkConditions(delay=0.005))
    settings = server_settings(
        retry="under-load",
        retry_under_load_threshold=RETRY_THRESHOLD,
        max_pending_handshakes=MAX_PENDING,
        max_connections=64,
        handshake_timeout=5,
    )
    rng = random.Random(7)
    packets = [fake_initial(rng) for _ in range(FLOOD)]
    peak_workers = 0
    peak_table = 0
    peak_pending = 0

    async def echo(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        assert isinstance(stream, trioquic.QuicStream)
        await stream.send_all(await stream.receive_some())
        await stream.send_eof()
        await connection.wait_closed()

    gc.collect()
    tracemalloc.start()
    try:
        with trio.fail_after(120):
            async with open_memory_server(
                echo, network=network, server_settings=settings
            ) as server:
                quic_server = server.server
                flood = network.socket("10.9.0.1")
                baseline = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                legit_done = trio.Event()

                async def legit_client() -> None:
                    await trio.sleep(0.05)  # in the thick of the flood
                    async with server.connect(host="10.0.0.2") as connection:
                        stream = await connection.open_stream()
                        await stream.send_all(b"still here")
                        await stream.send_eof()
                        assert await stream.receive_some() == b"still here"
                    legit_done.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(legit_client)
                    for i in range(0, FLOOD, 100):
                        # One source port per Initial: the socket moves to a
                        # new port after each one, so our Retries to the old
                        # ones go nowhere, as with spoofed addresses.
                        for data in packets[i : i + 100]:
                            await flood.send_batch([(data, SERVER)])
                            flood.rebind()
                        await trio.sleep(0.001)
                        peak_workers = max(peak_workers, quic_server.connection_count)
                        peak_pending = max(
                            peak_pending, quic_server.statistics().pending_handshakes
                        )
                        peak_table = max(
                            peak_table, quic_server.statistics().connection_ids
                        )
                _, peak = tracemalloc.get_traced_memory()
                assert legit_done.is_set()
                stats = quic_server.statistics()
                flood.close()
    finally:
        tracemalloc.stop()

    assert stats.datagrams_received >= FLOOD
    # Only the first RETRY_THRESHOLD fake Initials became (doomed) connections
    # (+1 for the real client); the rest got a stateless Retry.
    assert stats.connections_accepted <= RETRY_THRESHOLD + 1
    assert stats.retries_sent >= FLOOD - RETRY_THRESHOLD - 1
    assert peak_pending <= RETRY_THRESHOLD + 1 <= MAX_PENDING
    assert peak_workers <= RETRY_THRESHOLD + 1
    # Each connection holds a few CIDs (the client's first DCID, the ones it
    # issued), never one per flooded Initial.
    assert peak_table <= 8 * (RETRY_THRESHOLD + 1)
    growth = peak - baseline
    # 10,000 accepted connections would take hundreds of megabytes; the
    # bounded server stays within a few (the nine engines, token minting,
    # per-batch buffers).
    assert growth < 16 * 1024 * 1024, growth


async def test_initial_flood_over_loopback() -> None:
    """The same over real UDP sockets: 10,000 Initials from 1,000 source
    ports while a real client connects; the server stays within its limits."""
    import socket as stdlib_socket

    settings = server_settings(
        retry="under-load",
        retry_under_load_threshold=RETRY_THRESHOLD,
        max_pending_handshakes=MAX_PENDING,
        handshake_timeout=5,
    )
    rng = random.Random(11)
    packets = [fake_initial(rng) for _ in range(FLOOD)]
    peak_workers = 0

    async def echo(connection: trioquic.QuicConnection) -> None:
        stream = await connection.accept_stream()
        assert isinstance(stream, trioquic.QuicStream)
        await stream.send_all(await stream.receive_some())
        await stream.send_eof()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    trioquic.serve_quic, echo, 0, host="127.0.0.1", settings=settings
                )
            )
            address = ("127.0.0.1", server.port)
            flooding = trio.Event()

            async def flood() -> None:
                nonlocal peak_workers
                for i in range(0, len(packets), 10):
                    with stdlib_socket.socket(
                        stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM
                    ) as sock:
                        for data in packets[i : i + 10]:
                            sock.sendto(data, address)
                    # Let the server's router and the client run.
                    await trio.lowlevel.checkpoint()
                    peak_workers = max(peak_workers, server.connection_count)
                    if i >= FLOOD // 10:
                        flooding.set()

            async def legit() -> None:
                await flooding.wait()  # in the thick of the flood
                async with trioquic.open_quic_connection(
                    *address, settings=client_settings()
                ) as connection:
                    stream = await connection.open_stream()
                    await stream.send_all(b"loopback")
                    await stream.send_eof()
                    assert await stream.receive_some() == b"loopback"

            async with trio.open_nursery() as inner:
                inner.start_soon(flood)
                inner.start_soon(legit)
            stats = server.statistics()
            nursery.cancel_scope.cancel()
    assert stats.connections_accepted <= RETRY_THRESHOLD + 1
    assert (
        stats.retries_sent >= stats.datagrams_received - 2 * (RETRY_THRESHOLD + 1) - 20
    )
    assert stats.retries_sent > 1000
    assert peak_workers <= RETRY_THRESHOLD + 1


# -- graceful shutdown under load ------------------------------------------------


async def test_cancelling_a_server_with_100_connections_closes_every_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(conditions=LinkConditions(delay=0.01))
    s_settings = server_settings(close_grace_period=1.0)
    c_settings = client_settings()
    tasks_before = all_tasks()
    count = 100
    closed: list[trioquic.ConnectionClosed] = []
    connected = 0
    all_connected = trio.Event()
    server_sock = network.socket(*SERVER)

    async def client(task_status: trio.TaskStatus[None]) -> None:
        nonlocal connected
        sock = network.socket("10.0.1.1")
        try:
            async with trioquic.open_quic_connection(
                *SERVER, settings=c_settings, socket=sock
            ) as connection:
                connected += 1
                if connected == count:
                    all_connected.set()
                task_status.started()
                closed.append(await connection.wait_closed())
        finally:
            sock.close()

    with trio.fail_after(60):
        async with trio.open_nursery() as clients:
            async with trio.open_nursery() as server_nursery:
                quic_server = await server_nursery.start(
                    partial(
                        trioquic.serve_quic,
                        wait_forever,
                        SERVER[1],
                        settings=s_settings,
                        sockets=[server_sock],
                    )
                )
                for _ in range(count):
                    await clients.start(client)
                await all_connected.wait()
                await trio.sleep(0.1)
                assert quic_server.connection_count == count
                cancelled_at = trio.current_time()
                server_nursery.cancel_scope.cancel()
            server_done = trio.current_time()
            # The server's nursery exited within the grace period.
            assert server_done - cancelled_at <= s_settings.close_grace_period
        clients_done = trio.current_time()
    server_sock.close()
    assert len(closed) == count
    for error in closed:
        assert error.reason.by_peer
        assert error.reason.error_code == 0
    # Every client learned of the close from the peer, within the grace period
    # (plus one network delay), not by idle timeout.
    assert clients_done - cancelled_at <= s_settings.close_grace_period + 0.1
    assert all_tasks() == tasks_before
