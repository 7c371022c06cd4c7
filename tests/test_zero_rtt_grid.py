"""0-RTT never loses or duplicates data: raw QUIC and HTTP/3, each with
Retry never / always / under load, each with a session ticket that is
valid, expired, or used a second time. In every cell each request is
answered exactly once, and ``early_data_accepted`` says whether the early
data was taken as such (valid ticket: yes; expired or reused: no, the data
is sent again as 1-RTT)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from helpers import FIRST_FLIGHT_DATAGRAMS

import trioquic
from trioquic import h3
from trioquic.h3 import Request
from trioquic.testing import (
    LinkConditions,
    MemoryNetwork,
    client_settings,
    open_memory_server,
    server_settings,
)

SERVER = ("10.0.0.1", 443)
#: The server's ticket lifetime in these tests; "expired" waits past it.
LIFETIME = 60.0
RETRY = ["never", "always", "under-load"]
TICKETS = ["valid", "expired", "used-twice"]


def retry_settings(retry: str) -> dict[str, Any]:
    settings: dict[str, Any] = {"retry": retry, "session_ticket_lifetime": LIFETIME}
    if retry == "under-load":
        settings["retry_under_load_threshold"] = 0  # always "under load"
    return settings


def expected_uses(ticket: str) -> list[bool]:
    """``early_data_accepted`` of each connection made with the ticket."""
    return {"valid": [True], "expired": [False], "used-twice": [True, False]}[ticket]


async def age(ticket: str) -> None:
    if ticket == "expired":
        await trio.sleep(LIFETIME + 1)


# -- raw QUIC ----------------------------------------------------------------------


@pytest.mark.parametrize("ticket", TICKETS)
@pytest.mark.parametrize("retry", RETRY)
async def test_raw_quic_zero_rtt_grid(
    autojump_clock: trio.testing.MockClock, retry: str, ticket: str
) -> None:
    network = MemoryNetwork(conditions=LinkConditions(delay=0.05))
    arrived: list[bytes] = []

    async def echo(connection: trioquic.QuicConnection) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await connection.accept_stream()
                except trioquic.ConnectionClosed:
                    return
                assert isinstance(stream, trioquic.QuicStream)
                nursery.start_soon(echo_stream, stream)

    async def echo_stream(stream: trioquic.QuicStream) -> None:
        data = b""
        async for chunk in stream:
            data += chunk
        arrived.append(data)
        await stream.send_all(b"echo " + data)
        await stream.send_eof()

    async def exchange(connection: trioquic.QuicConnection, message: bytes) -> None:
        stream = await connection.open_stream()
        await stream.send_all(message)
        await stream.send_eof()
        received = b""
        async for chunk in stream:
            received += chunk
        assert received == b"echo " + message

    with trio.fail_after(300):
        async with open_memory_server(
            echo,
            network=network,
            server_settings=server_settings(**retry_settings(retry)),
        ) as server:
            async with server.connect() as first:
                await exchange(first, b"first")
                await trio.sleep(0.3)  # the ticket follows the handshake
                session_ticket = first.session_ticket
            assert session_ticket is not None
            await age(ticket)
            early = attrs.evolve(
                server.client_settings, session_ticket=session_ticket, zero_rtt=True
            )
            accepted = []
            for use, _ in enumerate(expected_uses(ticket)):
                async with server.connect(settings=early) as connection:
                    # 0-RTT offered: the connection is handed over before
                    # the handshake, and the first data leaves as early data.
                    assert connection.handshake is None
                    message = f"early {use} ".encode() * 50
                    await exchange(connection, message)
                    info = await connection.wait_handshake()
                    accepted.append(info.early_data_accepted)
            retries = server.server.statistics().retries_sent
    assert accepted == expected_uses(ticket)
    uses = len(expected_uses(ticket))
    assert arrived == [b"first"] + [f"early {u} ".encode() * 50 for u in range(uses)]
    # One Retry per Initial datagram of each connection attempt.
    attempts = 0 if retry == "never" else 1 + uses
    assert retries == attempts * FIRST_FLIGHT_DATAGRAMS


# -- HTTP/3 ------------------------------------------------------------------------


@asynccontextmanager
async def http3_server(
    network: MemoryNetwork, handler: Any, retry: str
) -> AsyncIterator[trioquic.QuicServer]:
    sock = network.socket(*SERVER)
    settings = server_settings(alpn_protocols=[], **retry_settings(retry))
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: h3.serve_http3(
                    handler,
                    SERVER[1],
                    settings=settings,
                    sockets=[sock],
                    task_status=task_status,
                )
            )
            yield server
            nursery.cancel_scope.cancel()
    finally:
        sock.close()


@asynccontextmanager
async def http3_client(
    network: MemoryNetwork, **quic: Any
) -> AsyncIterator[h3.Http3Client]:
    sock = network.socket("10.0.0.2")
    try:
        async with h3.open_http3_client(
            *SERVER, settings=client_settings(alpn_protocols=[], **quic), socket=sock
        ) as client:
            yield client
    finally:
        sock.close()


@pytest.mark.parametrize("ticket", TICKETS)
@pytest.mark.parametrize("retry", RETRY)
async def test_http3_zero_rtt_grid(
    autojump_clock: trio.testing.MockClock, retry: str, ticket: str
) -> None:
    network = MemoryNetwork(conditions=LinkConditions(delay=0.05))
    handled: list[tuple[str, bool]] = []

    async def handler(request: Request) -> None:
        handled.append((request.path, request.early_data))
        body = await request.read()
        await request.respond(200, body=b"answer " + request.path.encode() + body)

    with trio.fail_after(300):
        async with http3_server(network, handler, retry) as server:
            async with http3_client(network) as client:
                assert (await client.request("GET", "/first")).status == 200
                await trio.sleep(0.3)  # the ticket follows the handshake
                session_ticket = client.session_ticket
            assert session_ticket is not None
            await age(ticket)
            accepted = []
            for use, _ in enumerate(expected_uses(ticket)):
                async with http3_client(
                    network, session_ticket=session_ticket, zero_rtt=True
                ) as client:
                    response = await client.request("GET", f"/early/{use}")
                    assert response.status == 200
                    assert await response.read() == f"answer /early/{use}".encode()
                    info = await client.wait_handshake()
                    accepted.append(info.early_data_accepted)
            retries = server.statistics().retries_sent
    expected = expected_uses(ticket)
    assert accepted == expected
    # Each request handled once; as early data exactly when it was accepted.
    assert handled == [("/first", False)] + [
        (f"/early/{use}", early) for use, early in enumerate(expected)
    ]
    attempts = 0 if retry == "never" else 1 + len(expected)
    assert retries == attempts * FIRST_FLIGHT_DATAGRAMS
