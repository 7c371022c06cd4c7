"""Client connection migration: ``QuicConnection.rebind()`` mid-transfer, on
the memory network and on loopback UDP sockets."""

from __future__ import annotations

import random
from functools import partial

import pytest
import trio
import trio.lowlevel
import trio.testing
from helpers import RecordingSocket, bidirectional_pair, connected_pair

import trioquic
from trioquic.testing import (
    LinkConditions,
    MemoryNetwork,
    client_settings,
    server_settings,
)

SIZE = 1024 * 1024


async def _echo_transfer(
    client: trioquic.QuicConnection, rebind_at: float, rebinds: list[object]
) -> bytes:
    """Send SIZE bytes on a stream the peer echoes; once ``rebind_at`` of
    them are back, rebind the client. Returns what came back."""
    data = random.Random(5).randbytes(SIZE)
    stream = await client.open_stream()
    echoed = bytearray()
    rebound = trio.Event()

    async def send() -> None:
        for i in range(0, SIZE, 16_384):
            await stream.send_all(data[i : i + 16_384])
        await stream.send_eof()

    async def receive() -> None:
        async for chunk in stream:
            echoed.extend(chunk)
            if len(echoed) >= rebind_at * SIZE and not rebound.is_set():
                rebound.set()

    async def rebind() -> None:
        await rebound.wait()
        before = client.local_address
        new = await client.rebind()
        assert new != before
        assert client.local_address == new
        rebinds.append(new)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(receive)
        nursery.start_soon(rebind)
    assert bytes(echoed) == data
    return bytes(echoed)


async def _echo_handler(connection: trioquic.QuicConnection) -> None:
    stream = await connection.accept_stream()
    assert isinstance(stream, trioquic.QuicStream)
    async for chunk in stream:
        await stream.send_all(chunk)
    await stream.send_eof()
    await connection.wait_closed()


async def test_client_rebind_on_the_memory_network(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(conditions=LinkConditions(delay=0.01))
    client_socket = network.socket("10.0.0.2", 40000)
    with trio.fail_after(60):
        async with connected_pair(network=network, client_socket=client_socket) as pair:
            assert pair.server.peer_address == ("10.0.0.2", 40000)
            stream = await pair.client.open_stream()
            await stream.send_all(b"!")
            accepted = await pair.server.accept_stream()
            assert isinstance(accepted, trioquic.QuicStream)
            assert await accepted.receive_some(1) == b"!"
            data = random.Random(9).randbytes(SIZE)
            received = bytearray()
            halfway = trio.Event()

            async def send() -> None:
                for i in range(0, SIZE, 16_384):
                    await stream.send_all(data[i : i + 16_384])
                await stream.send_eof()

            async def receive() -> None:
                async for chunk in accepted:
                    received.extend(chunk)
                    if len(received) >= SIZE // 2:
                        halfway.set()

            async def rebind() -> None:
                await halfway.wait()
                new = await pair.client.rebind()
                assert new != ("10.0.0.2", 40000)
                assert pair.client.local_address == new

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                nursery.start_soon(receive)
                nursery.start_soon(rebind)
            assert bytes(received) == data
            # The server validated the new path and follows it.
            assert pair.server.peer_address == pair.client.local_address
            # Still usable both ways after the move.
            reply = await pair.server.open_stream()
            await reply.send_all(b"after")
            await reply.send_eof()
            incoming = await pair.client.accept_stream()
            assert isinstance(incoming, trioquic.QuicStream)
            assert await incoming.receive_some() == b"after"


async def test_rebind_uses_a_fresh_connection_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 9000 section 9.5: the new path must not be linkable to the old one
    by connection ID."""
    network = MemoryNetwork(conditions=LinkConditions(delay=0.01))
    client_socket = RecordingSocket(network.socket("10.0.0.2", 40000))
    with trio.fail_after(30):
        async with connected_pair(network=network, client_socket=client_socket) as pair:
            stream = await pair.client.open_stream()
            await stream.send_all(b"!")
            await pair.server.accept_stream()
            old_address = pair.client.local_address
            new_address = await pair.client.rebind()
            await stream.send_all(b"more")
            await trio.sleep(0.5)
            assert pair.server.peer_address == pair.client.local_address
    sent = client_socket.short_header_dcids()
    before = {cid for cid, source in sent if source == old_address}
    after = {cid for cid, source in sent if source == new_address}
    assert before and after
    assert before.isdisjoint(after)


async def test_rebind_errors(autojump_clock: trio.testing.MockClock) -> None:
    class FixedSocket:
        """A caller-owned datagram socket that cannot move."""

        def __init__(self, inner: trioquic.DatagramSocket) -> None:
            self._inner = inner

        @property
        def local_address(self) -> object:
            return self._inner.local_address

        async def receive_batch(self) -> list[tuple[bytes, object]]:
            return await self._inner.receive_batch()

        async def send_batch(self, datagrams: object) -> None:
            await self._inner.send_batch(datagrams)  # type: ignore[arg-type]

        def close(self) -> None:
            self._inner.close()

    network = MemoryNetwork()
    fixed = FixedSocket(network.socket("10.0.0.2"))
    with trio.fail_after(30):
        async with connected_pair(network=network, client_socket=fixed) as pair:
            with pytest.raises(RuntimeError, match="server connection cannot"):
                await pair.server.rebind()
            with pytest.raises(RuntimeError, match="no rebind"):
                await pair.client.rebind()
            await pair.client.aclose()
            with pytest.raises(trioquic.ConnectionClosed):
                await pair.client.rebind()


def _port_is_free(port: int) -> bool:
    """Whether a UDP socket can bind ``port`` (nothing holds it any more)."""
    import socket as stdlib_socket

    with stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


async def test_client_rebind_over_loopback() -> None:
    """A real UDP socket: rebind() opens a new one, moves the router to it,
    drains and closes the old one."""
    settings = server_settings()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    trioquic.serve_quic,
                    _echo_handler,
                    0,
                    host="127.0.0.1",
                    settings=settings,
                )
            )
            rebinds: list[object] = []
            async with trioquic.open_quic_connection(
                "127.0.0.1", server.port, settings=client_settings()
            ) as client:
                first = client.local_address
                await _echo_transfer(client, 0.3, rebinds)
                assert rebinds and rebinds[0] != first
                assert client.local_address == rebinds[0]
                # After the drain, the old socket is closed: its port is free.
                with trio.fail_after(5):
                    while not _port_is_free(first[1]):
                        await trio.lowlevel.checkpoint()
                (server_side,) = server.connections
                assert server_side.peer_address[1] == rebinds[0][1]  # type: ignore[index]
            nursery.cancel_scope.cancel()


async def test_three_rebinds_in_one_transfer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each rebind moves to the peer's next connection ID, which the peer
    issued in place of the one retired before it: every ID issued must be
    routed (the client's router drops datagrams for IDs it does not know)."""
    network = MemoryNetwork(conditions=LinkConditions(delay=0.01))
    client_socket = network.socket("10.0.0.2", 40000)
    with trio.fail_after(120):
        async with connected_pair(network=network, client_socket=client_socket) as pair:
            stream = await pair.client.open_stream()
            data = random.Random(3).randbytes(SIZE)
            received = bytearray()
            addresses = [pair.client.local_address]
            crossed = [trio.Event() for _ in range(3)]

            async def send() -> None:
                for i in range(0, SIZE, 16_384):
                    await stream.send_all(data[i : i + 16_384])
                await stream.send_eof()

            async def receive() -> None:
                accepted = await pair.server.accept_stream()
                assert isinstance(accepted, trioquic.QuicStream)
                async for chunk in accepted:
                    received.extend(chunk)
                    for n, event in enumerate(crossed, 1):
                        if len(received) >= n * SIZE // 4:
                            event.set()

            async def rebind() -> None:
                for event in crossed:
                    await event.wait()
                    addresses.append(await pair.client.rebind())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                nursery.start_soon(receive)
                nursery.start_soon(rebind)
            assert bytes(received) == data
            assert len(set(addresses)) == 4
            assert pair.server.peer_address == pair.client.local_address
            dropped = pair.client.statistics().datagrams_dropped
            assert dropped == 0


@pytest.mark.aioquic_only(
    "qh3 2.1's core keeps at most four network paths per connection and never "
    "frees one: a qh3 server drops every datagram from a client's fifth address "
    "(docs/engines.rst)"
)
async def test_six_rebinds_keep_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every rebind moves the client to a new address; the server follows
    each one, and data flows both ways after every move."""
    network = MemoryNetwork(conditions=LinkConditions(delay=0.01))
    client_socket = network.socket("10.0.0.2", 40000)
    with trio.fail_after(60):
        async with connected_pair(network=network, client_socket=client_socket) as pair:
            stream, accepted = await bidirectional_pair(pair)
            for n in range(6):
                address = await pair.client.rebind()
                message = b"after rebind %d" % n
                await stream.send_all(message)
                with trio.fail_after(5):
                    assert await accepted.receive_some(len(message)) == message
                    await accepted.send_all(message)
                    assert await stream.receive_some(len(message)) == message
                assert pair.client.local_address == address
            assert pair.server.peer_address == pair.client.local_address
