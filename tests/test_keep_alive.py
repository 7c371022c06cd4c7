"""QuicSettings.keep_alive_interval: PINGs keep an otherwise idle connection
open past the idle timeout (RFC 9000 section 10.1.2); without it, the
connection ends at the idle timeout."""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

import trioquic
from trioquic.testing import MemoryNetwork, client_settings, server_settings

SERVER = ("10.0.0.1", 4433)


async def echo(connection: trioquic.QuicConnection) -> None:
    async with trio.open_nursery() as nursery:
        while True:
            stream = await connection.accept_stream()
            assert isinstance(stream, trioquic.QuicStream)

            async def answer(stream: trioquic.QuicStream = stream) -> None:
                async for data in stream:
                    await stream.send_all(data)
                await stream.send_eof()

            nursery.start_soon(answer)


async def _serve(network: MemoryNetwork, nursery: trio.Nursery) -> trioquic.QuicServer:
    server: trioquic.QuicServer = await nursery.start(
        functools.partial(
            trioquic.serve_quic,
            echo,
            SERVER[1],
            settings=server_settings(idle_timeout=5.0),
            sockets=[network.socket(*SERVER)],
        )
    )
    return server


async def _round_trip(connection: trioquic.QuicConnection, data: bytes) -> bytes:
    stream = await connection.open_stream()
    await stream.send_all(data)
    await stream.send_eof()
    received = b""
    async for chunk in stream:
        received += chunk
    return received


async def test_keep_alive_keeps_an_idle_connection_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=7)
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            server = await _serve(network, nursery)
            settings = client_settings(idle_timeout=5.0, keep_alive_interval=2.0)
            async with trioquic.open_quic_connection(
                *SERVER, settings=settings, socket=network.socket("10.0.0.2")
            ) as connection:
                assert await _round_trip(connection, b"before") == b"before"
                sent = connection.statistics().datagrams_sent
                await trio.sleep(120)  # 24 idle timeouts
                assert not connection.is_closed
                assert server.connection_count == 1
                # About one PING (and its ACK) per interval, no more.
                pings = connection.statistics().datagrams_sent - sent
                assert 120 / 2.0 * 0.8 <= pings <= 120 / 2.0 * 1.5
                assert await _round_trip(connection, b"after") == b"after"
            nursery.cancel_scope.cancel()


async def test_without_keep_alive_an_idle_connection_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=7)
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await _serve(network, nursery)
            async with trioquic.open_quic_connection(
                *SERVER,
                settings=client_settings(idle_timeout=5.0),
                socket=network.socket("10.0.0.2"),
            ) as connection:
                start = trio.current_time()
                error = await connection.wait_closed()
                assert isinstance(error, trioquic.IdleTimeout)
                assert error.reason.cause is trioquic.CloseCause.IDLE_TIMEOUT
                assert trio.current_time() - start < 6.0
            nursery.cancel_scope.cancel()


async def test_keep_alive_survives_a_lost_ping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Half the idle timeout leaves room for one lost PING: the PING is
    retransmitted (it is ack-eliciting) before the peer gives up."""
    network = MemoryNetwork(seed=11)
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await _serve(network, nursery)
            settings = client_settings(idle_timeout=5.0, keep_alive_interval=2.5)
            async with trioquic.open_quic_connection(
                *SERVER, settings=settings, socket=network.socket("10.0.0.2")
            ) as connection:
                network.set_link(
                    "10.0.0.2", SERVER[0], trioquic.testing.LinkConditions(loss=0.3)
                )
                await trio.sleep(60)
                assert not connection.is_closed
                network.set_link(
                    "10.0.0.2", SERVER[0], trioquic.testing.LinkConditions()
                )
                assert await _round_trip(connection, b"x" * 5000) == b"x" * 5000
            nursery.cancel_scope.cancel()


def test_keep_alive_must_be_shorter_than_the_idle_timeout() -> None:
    with pytest.raises(ValueError, match="shorter than idle_timeout"):
        trioquic.QuicSettings(idle_timeout=10, keep_alive_interval=10)
    with pytest.raises(ValueError, match="greater than 0"):
        trioquic.QuicSettings(keep_alive_interval=0)
    with pytest.raises(TypeError):
        trioquic.QuicSettings(keep_alive_interval="5")  # type: ignore[arg-type]
    assert trioquic.QuicSettings().keep_alive_interval is None
