"""Shared helpers for tests over trioquic.testing's memory network."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import trioquic
from trioquic.lowlevel import create_endpoint_engine
from trioquic.testing import (
    TEST_SERVER_NAME,
    MemoryNetwork,
    MemoryServer,
    client_settings,
    open_memory_server,
    server_settings,
)

#: Which window bounds a receiver's unread bytes in a test of receive
#: credit. "stream": the stream window alone (the connection's is left at its
#: default), a hard bound on the aioquic engine only; qh3's core has one event
#: queue for every stream and no per-stream credit, so there the connection
#: window is the hard bound. "connection": both windows the same, a bound
#: every engine keeps.
RECEIVE_BOUNDS = [
    pytest.param(
        "stream",
        marks=pytest.mark.aioquic_only(
            "the per-stream receive window is a hard bound on aioquic only; "
            "on qh3 the connection window is (docs/engines.rst)"
        ),
    ),
    "connection",
]


def receive_windows(bound: str, window: int) -> dict[str, int]:
    """The settings that bound a receiver's unread bytes by ``window``, as
    ``bound`` (one of :data:`RECEIVE_BOUNDS`) says."""
    if bound == "stream":
        return {"stream_receive_window": window}
    assert bound == "connection", bound
    return {"stream_receive_window": window, "connection_receive_window": window}


def stream_unread_bound(stream_window: int, connection_window: int) -> int:
    """The most unread bytes one stream may hold on this run's engine: its
    stream window on aioquic; on qh3, where the stream window is not a hard
    bound, the connection window (see :data:`RECEIVE_BOUNDS`)."""
    return stream_window if current_engine() == "aioquic" else connection_window


class Pair:
    """A client connection and the server's side of it."""

    def __init__(
        self,
        client: trioquic.QuicConnection,
        server: trioquic.QuicConnection,
        memory_server: MemoryServer,
    ) -> None:
        self.client = client
        self.server = server
        self.memory_server = memory_server

    @property
    def network(self) -> MemoryNetwork:
        return self.memory_server.network


@asynccontextmanager
async def connected_pair(
    *,
    network: MemoryNetwork | None = None,
    client_socket: Any = None,
    **settings: Any,
) -> AsyncIterator[Pair]:
    """A connection over a memory network whose server side stays open (its
    handler waits for the connection to end) for the ``async with``.
    ``settings`` apply to both sides."""
    send, receive = trio.open_memory_channel[trioquic.QuicConnection](1)

    async def handler(connection: trioquic.QuicConnection) -> None:
        await send.send(connection)
        await connection.wait_closed()

    async with (
        open_memory_server(
            handler,
            network=network,
            server_settings=server_settings(**settings),
            client_settings=client_settings(**settings),
        ) as server,
        server.connect(socket=client_socket) as client,
    ):
        # The client's handshake can complete while the server's never does
        # (the client's Finished lost again and again: the server's handshake
        # timeout then closes the connection): wait for whichever comes first,
        # and report the close as the client sees it rather than hang.
        server_side: list[trioquic.QuicConnection] = []
        async with trio.open_nursery() as nursery:

            async def server_accepted() -> None:
                server_side.append(await receive.receive())
                nursery.cancel_scope.cancel()

            async def client_closed() -> None:
                await client.wait_closed()
                nursery.cancel_scope.cancel()

            nursery.start_soon(server_accepted)
            nursery.start_soon(client_closed)
        if not server_side:
            raise await client.wait_closed()
        yield Pair(client, server_side[0], server)


async def bidirectional_pair(
    pair: Pair, *, from_server: bool = False
) -> tuple[trioquic.QuicStream, trioquic.QuicStream]:
    """Open a bidirectional stream and have the peer accept it (the peer
    learns of a stream with its first byte, which is read here)."""
    opener, acceptor = (
        (pair.server, pair.client) if from_server else (pair.client, pair.server)
    )
    stream = await opener.open_stream()
    await stream.send_all(b"!")
    accepted = await acceptor.accept_stream()
    assert isinstance(accepted, trioquic.QuicStream)
    assert accepted.stream_id == stream.stream_id
    assert await accepted.receive_some(1) == b"!"
    return stream, accepted


async def unidirectional_pair(
    pair: Pair, *, from_server: bool = False
) -> tuple[trioquic.QuicSendStream, trioquic.QuicReceiveStream]:
    opener, acceptor = (
        (pair.server, pair.client) if from_server else (pair.client, pair.server)
    )
    stream = await opener.open_unidirectional_stream()
    await stream.send_all(b"!")
    accepted = await acceptor.accept_stream()
    assert isinstance(accepted, trioquic.QuicReceiveStream)
    assert accepted.stream_id == stream.stream_id
    assert await accepted.receive_some(1) == b"!"
    return stream, accepted


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task of the current run, system tasks included."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    top = root
    while top.parent_nursery is not None:
        top = top.parent_nursery.parent_task
    found: set[trio.lowlevel.Task] = set()

    def walk(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                yield child
                yield from walk(child)

    found.add(top)
    found.update(walk(top))
    return found


class RecordingSocket:
    """A datagram socket (any ``trioquic.lowlevel.DatagramSocket``) that keeps
    a copy of every datagram it sends, with the local address it left from,
    and passes ``rebind()`` through: what a packet capture on the client's
    side of the network shows, with public API only."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        #: ``(data, local_address, destination)`` of every datagram sent.
        self.sent: list[tuple[bytes, Any, Any]] = []

    @property
    def local_address(self) -> Any:
        return self.inner.local_address

    async def receive_batch(self) -> list[tuple[bytes, Any]]:
        return await self.inner.receive_batch()  # type: ignore[no-any-return]

    async def send_batch(self, datagrams: Any) -> None:
        source = self.inner.local_address
        for data, destination in datagrams:
            self.sent.append((bytes(data), source, destination))
        await self.inner.send_batch(datagrams)

    def rebind(self) -> Any:
        return self.inner.rebind()

    def close(self) -> None:
        self.inner.close()

    def short_header_dcids(self, cid_length: int = 8) -> list[tuple[bytes, Any]]:
        """The destination connection ID of every short-header (1-RTT) packet
        sent, with the local address it left from, in order."""
        return [
            (data[1 : 1 + cid_length], source)
            for data, source, _ in self.sent
            if len(data) > cid_length and data[0] & 0xC0 == 0x40
        ]


def short_header(dcid: bytes, size: int) -> bytes:
    """A short-header (1-RTT) datagram of ``size`` bytes for ``dcid``, with a
    random, undecryptable rest."""
    return (
        bytes([0x40 | (os.urandom(1)[0] & 0x3F)])
        + dcid
        + os.urandom(size - 1 - len(dcid))
    )


def current_engine() -> str:
    """The QUIC engine this run's tests use: QuicSettings' default (the
    TRIOQUIC_ENGINE environment variable, else ``"aioquic"``)."""
    return trioquic.QuicSettings().engine


def _first_flight_datagrams() -> int:
    """How many datagrams carry a fresh client's first flight (its
    ClientHello) on this run's engine: 1 on aioquic; 2 on qh3, whose
    ClientHello carries a post-quantum key share too large for one. The
    stateless router answers each of them (a Retry, a refusal), so the tests
    that count those packets count this many per connection attempt."""
    endpoint = create_endpoint_engine(client_settings(), is_client=True)
    try:
        client = endpoint.client_connection(TEST_SERVER_NAME)
        client.connect(("10.0.0.1", 443), 0.0)
        return len(client.datagrams_to_send(0.0))
    finally:
        endpoint.close()


#: Datagrams in a fresh client's first flight on this run's engine (each an
#: Initial the server's router answers on its own).
FIRST_FLIGHT_DATAGRAMS = _first_flight_datagrams()
