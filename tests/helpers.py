"""Shared helpers for tests over trioquic.testing's memory network."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import trio

import trioquic
from trioquic.testing import (
    MemoryNetwork,
    MemoryServer,
    client_settings,
    open_memory_server,
    server_settings,
)


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
        server_side = await receive.receive()
        yield Pair(client, server_side, server)


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
