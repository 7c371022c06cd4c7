"""WebTransport over HTTP/3 (trioquic.webtransport), in memory: a server
from serve_webtransport and clients from open_webtransport_session /
connect_webtransport over trioquic.testing's MemoryNetwork, under trio's
autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trioquic
from trioquic import h3, webtransport
from trioquic.h3 import Http3Settings
from trioquic.testing import MemoryNetwork, client_settings, server_settings
from trioquic.webtransport import (
    SessionClosed,
    SessionCloseInfo,
    SessionRejected,
    StreamResetError,
    StreamStoppedError,
    WebTransportSession,
)

SERVER = ("10.0.0.1", 443)
URL = "https://10.0.0.1:443/echo"
SessionHandler = Callable[[WebTransportSession], Awaitable[None]]


class Harness:
    def __init__(self, network: MemoryNetwork, serving: trio.CancelScope) -> None:
        self.network = network
        self._serving = serving
        self._clients = 0

    def stop_serving(self) -> None:
        self._serving.cancel()

    def _socket(self) -> Any:
        self._clients += 1
        return self.network.socket(f"10.0.0.{1 + self._clients}")

    @asynccontextmanager
    async def session(
        self, path: str = "/echo", **http3: Any
    ) -> AsyncIterator[WebTransportSession]:
        sock = self._socket()
        try:
            async with webtransport.open_webtransport_session(
                f"https://10.0.0.1:443{path}",
                settings=client_settings(alpn_protocols=[]),
                http3_settings=Http3Settings(**http3) if http3 else None,
                socket=sock,
            ) as session:
                yield session
        finally:
            sock.close()

    @asynccontextmanager
    async def client(self, **http3: Any) -> AsyncIterator[h3.Http3Client]:
        sock = self._socket()
        quic, settings = webtransport.webtransport_settings(
            client_settings(alpn_protocols=[]), Http3Settings(**http3)
        )
        try:
            async with h3.open_http3_client(
                *SERVER, settings=quic, http3_settings=settings, socket=sock
            ) as client:
                yield client
        finally:
            sock.close()


@asynccontextmanager
async def wt_server(
    handler: SessionHandler,
    *,
    fallback: Callable[[h3.Request], Awaitable[None]] | None = None,
    paths: tuple[str, ...] | None = None,
    **http3: Any,
) -> AsyncIterator[Harness]:
    network = MemoryNetwork()
    sock = network.socket(*SERVER)
    serving = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[object]) -> None:
        with serving:
            await webtransport.serve_webtransport(
                handler,
                SERVER[1],
                settings=server_settings(alpn_protocols=[]),
                http3_settings=Http3Settings(**http3) if http3 else None,
                paths=paths,
                fallback=fallback,
                sockets=[sock],
                task_status=task_status,
            )

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            yield Harness(network, serving)
            nursery.cancel_scope.cancel()
    finally:
        sock.close()


async def echo(session: WebTransportSession) -> None:
    """Echo every bidirectional stream on itself, every unidirectional one
    on a new unidirectional stream, every datagram; until the session ends."""

    async def echo_bidi(stream: webtransport.WebTransportStream) -> None:
        while data := await stream.receive_some():
            await stream.send_all(data)
        await stream.send_eof()

    async def echo_uni(stream: webtransport.WebTransportReceiveStream) -> None:
        out = await session.open_unidirectional_stream()
        while data := await stream.receive_some():
            await out.send_all(data)
        await out.aclose()

    async def bidi_loop() -> None:
        while True:
            nursery.start_soon(echo_bidi, await session.accept_bidirectional_stream())

    async def uni_loop() -> None:
        while True:
            nursery.start_soon(echo_uni, await session.accept_unidirectional_stream())

    async def datagrams() -> None:
        while True:
            await session.send_datagram(await session.receive_datagram())

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bidi_loop)
            nursery.start_soon(uni_loop)
            nursery.start_soon(datagrams)
    except* (SessionClosed, trioquic.ConnectionClosed):
        pass


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    parts = []
    while data := await stream.receive_some():
        parts.append(data)
    return b"".join(parts)


# -- streams and datagrams -------------------------------------------------------


async def test_echo_bidirectional_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with wt_server(echo) as harness, harness.session() as session:
            assert session.path == "/echo"
            stream = await session.open_bidirectional_stream()
            assert isinstance(stream, trio.abc.HalfCloseableStream)
            await stream.send_all(b"hello ")
            await stream.send_all(b"webtransport")
            await stream.send_eof()
            assert await read_all(stream) == b"hello webtransport"
            # A large one: several flow-control windows' worth.
            stream = await session.open_bidirectional_stream()
            payload = bytes(range(256)) * 8192  # 2 MiB

            async def send() -> None:
                await stream.send_all(payload)
                await stream.send_eof()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                assert await read_all(stream) == payload


async def test_echo_unidirectional_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with wt_server(echo) as harness, harness.session() as session:
            out = await session.open_unidirectional_stream()
            assert isinstance(out, trio.abc.SendStream)
            await out.send_all(b"one way")
            await out.aclose()
            back = await session.accept_unidirectional_stream()
            assert isinstance(back, trio.abc.ReceiveStream)
            assert await read_all(back) == b"one way"


async def test_server_opens_streams(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(session: WebTransportSession) -> None:
        stream = await session.open_bidirectional_stream()
        await stream.send_all(b"from the server")
        await stream.send_eof()
        assert await read_all(stream) == b"reply"
        out = await session.open_unidirectional_stream()
        await out.send_all(b"uni from the server")
        await out.aclose()
        await session.wait_closed()

    with trio.fail_after(30):
        async with wt_server(handler) as harness, harness.session() as session:
            stream = await session.accept_bidirectional_stream()
            assert await read_all(stream) == b"from the server"
            await stream.send_all(b"reply")
            await stream.send_eof()
            uni = await session.accept_unidirectional_stream()
            assert await read_all(uni) == b"uni from the server"


async def test_datagrams_both_ways(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(30):
        async with wt_server(echo) as harness, harness.session() as session:
            assert session.max_datagram_size > 1000
            for number in range(5):
                await session.send_datagram(b"datagram %d" % number)
                assert await session.receive_datagram() == b"datagram %d" % number
            with pytest.raises(trioquic.DatagramError):
                await session.send_datagram(b"x" * (session.max_datagram_size + 1))
