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
from helpers import RECEIVE_BOUNDS, receive_windows
from hypothesis import given
from hypothesis import strategies as st

import trioquic
from trioquic import h3, webtransport
from trioquic.h3 import Http3Settings
from trioquic.testing import (
    LinkConditions,
    MemoryNetwork,
    client_settings,
    server_settings,
)
from trioquic.webtransport import (
    SessionClosed,
    SessionCloseInfo,
    SessionRejected,
    StreamResetError,
    StreamStoppedError,
    WebTransportSession,
)

SERVER = ("10.0.0.1", 443)
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
    network: MemoryNetwork | None = None,
    quic: dict[str, Any] | None = None,
    **http3: Any,
) -> AsyncIterator[Harness]:
    if network is None:
        network = MemoryNetwork()
    sock = network.socket(*SERVER)
    serving = trio.CancelScope()
    quic = quic or {}

    async def serve(task_status: trio.TaskStatus[object]) -> None:
        with serving:
            await webtransport.serve_webtransport(
                handler,
                SERVER[1],
                settings=server_settings(alpn_protocols=[], **quic),
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


async def test_stream_reset_and_stop_sending_carry_webtransport_codes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[Any] = []

    async def handler(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream()
        try:
            await read_all(stream)
        except StreamResetError as exc:
            seen.append(("reset", exc.error_code, exc.http3_error_code))
        # Ask the client to stop sending on the next one.
        second = await session.accept_bidirectional_stream()
        start = b""
        while len(start) < 10:
            start += await second.receive_some()
        assert start.startswith(b"first part")
        second.stop_sending(0xDEAD)
        await session.wait_closed()

    with trio.fail_after(30):
        async with wt_server(handler) as harness, harness.session() as session:
            stream = await session.open_bidirectional_stream()
            await stream.send_all(b"some")
            # Sent first (a reset drops what was not sent yet: the server would
            # never learn which session the stream was for).
            await trio.sleep(1)
            stream.reset(1234)
            with pytest.raises(trio.ClosedResourceError):
                await stream.send_all(b"more")
            second = await session.open_bidirectional_stream()
            await second.send_all(b"first part")
            with pytest.raises(StreamStoppedError) as stopped:
                for _ in range(100):
                    await second.send_all(b"x" * 1000)
                    await trio.sleep(0.01)
            assert stopped.value.error_code == 0xDEAD
            assert seen == [
                ("reset", 1234, webtransport.webtransport_code_to_http3(1234))
            ]


@pytest.mark.parametrize("server_closes", [False, True])
async def test_close_with_code_and_reason(
    autojump_clock: trio.testing.MockClock, server_closes: bool
) -> None:
    seen: list[SessionCloseInfo] = []
    done = trio.Event()

    async def handler(session: WebTransportSession) -> None:
        if server_closes:
            stream = await session.accept_bidirectional_stream()
            assert await stream.receive_some() == b"ping"
            session.close(99, "server says bye")
        seen.append(await session.wait_closed())
        done.set()

    with trio.fail_after(30):
        async with wt_server(handler) as harness, harness.session() as session:
            stream = await session.open_bidirectional_stream()
            await stream.send_all(b"ping")
            if server_closes:
                # A reader in the middle of the stream learns of it.
                with pytest.raises((SessionClosed, StreamResetError)) as raised:
                    await stream.receive_some()
                if isinstance(raised.value, StreamResetError):
                    assert raised.value.http3_error_code == webtransport.WT_SESSION_GONE
                info = await session.wait_closed()
                assert info == SessionCloseInfo(99, "server says bye", by_peer=True)
                with pytest.raises(SessionClosed) as closed:
                    await session.open_bidirectional_stream()
                assert closed.value.info == info
                with pytest.raises(SessionClosed):
                    await session.receive_datagram()
            else:
                session.close(3, "client says bye ✓")
                assert session.close_info == SessionCloseInfo(
                    3, "client says bye ✓", by_peer=False
                )
                with pytest.raises(SessionClosed):
                    await stream.send_all(b"after close")
        # The server saw it too (its session ended when the client's did).
        with trio.fail_after(5):
            await done.wait()
    if server_closes:
        assert seen == [SessionCloseInfo(99, "server says bye", by_peer=False)]
    else:
        assert seen == [SessionCloseInfo(3, "client says bye ✓", by_peer=True)]


async def test_close_arguments_are_checked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with wt_server(echo) as harness, harness.session() as session:
            with pytest.raises(ValueError, match="32-bit"):
                session.close(2**32)
            with pytest.raises(ValueError, match="1024"):
                session.close(0, "x" * 1025)
            with pytest.raises(TypeError, match="reason"):
                session.close(0, b"bytes")  # type: ignore[arg-type]
            assert not session.is_closed


@pytest.mark.parametrize("bound", RECEIVE_BOUNDS)
async def test_backpressure_slow_reader_bounds_the_writer(
    autojump_clock: trio.testing.MockClock, bound: str
) -> None:
    """The server does not read: the client's writer stops with at most the
    receive window in flight plus its own send buffer; the server holds at
    most its buffer plus one window. Then everything arrives intact."""
    accepted: list[webtransport.WebTransportStream] = []
    go = trio.Event()
    received: list[bytes] = []
    read = trio.Event()
    payload = bytes(range(256)) * 16384  # 4 MiB
    quic = client_settings()
    window = quic.stream_receive_window

    async def handler(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream()
        accepted.append(stream)
        await go.wait()
        received.append(await read_all(stream))
        read.set()
        await session.wait_closed()

    with trio.fail_after(60):
        async with (
            wt_server(handler, quic=receive_windows(bound, window)) as harness,
            harness.session() as session,
        ):
            stream = await session.open_bidirectional_stream()
            sent = trio.Event()

            async def write() -> None:
                await stream.send_all(payload)
                await stream.send_eof()
                sent.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                await trio.sleep(5)
                assert not sent.is_set()
                server_state = accepted[0]._state
                buffer_size = Http3Settings().body_buffer_size
                assert server_state.buffered <= buffer_size + window
                client_io = session._driver.io
                held = client_io.send_buffered(stream.stream_id)
                assert held <= quic.stream_send_buffer + 64 * 1024
                go.set()
            assert sent.is_set()
            with trio.fail_after(10):
                await read.wait()
            assert received == [payload]


async def test_session_limit_per_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with (
            wt_server(echo, webtransport_max_sessions=1) as harness,
            harness.client() as client,
        ):
            async with webtransport.connect_webtransport(client, "/a") as first:
                with pytest.raises(SessionRejected) as rejected:
                    async with webtransport.connect_webtransport(client, "/b"):
                        pass
                assert rejected.value.status == 429
                # The first session is untouched.
                stream = await first.open_bidirectional_stream()
                await stream.send_all(b"still here")
                await stream.send_eof()
                assert await read_all(stream) == b"still here"
            # Once it is closed, another may open.
            async with webtransport.connect_webtransport(client, "/c") as third:
                await third.send_datagram(b"hi")
                assert await third.receive_datagram() == b"hi"


async def test_stream_limit_per_session(autojump_clock: trio.testing.MockClock) -> None:
    """Streams beyond webtransport_max_streams are refused with
    WT_BUFFERED_STREAM_REJECTED; the ones within carry on."""

    async def handler(session: WebTransportSession) -> None:
        await session.wait_closed()  # accepts nothing: streams pile up

    with trio.fail_after(30):
        async with (
            wt_server(handler, webtransport_max_streams=2) as harness,
            harness.session() as session,
        ):
            streams = [await session.open_bidirectional_stream() for _ in range(3)]
            for stream in streams:
                await stream.send_all(b"data")
            with pytest.raises(StreamResetError) as refused:
                await streams[2].receive_some()
            assert (
                refused.value.http3_error_code
                == webtransport.WT_BUFFERED_STREAM_REJECTED
            )
            assert refused.value.error_code is None
            # The first two are not refused: nothing arrives on them, no error.
            with trio.move_on_after(1) as waited:
                await streams[0].receive_some()
            assert waited.cancelled_caught


async def test_paths_and_rejection(autojump_clock: trio.testing.MockClock) -> None:
    async def fallback(request: h3.Request) -> None:
        await request.respond(200, [("content-type", "text/plain")], b"a page")

    with trio.fail_after(30):
        async with wt_server(echo, paths=("/echo",), fallback=fallback) as harness:
            with pytest.raises(SessionRejected) as rejected:
                async with harness.session("/elsewhere"):
                    pass
            assert rejected.value.status == 404
            async with harness.client() as client:
                response = await client.request("GET", "/")
                assert (response.status, await response.read()) == (200, b"a page")
            async with harness.session("/echo") as session:
                await session.send_datagram(b"ok")
                assert await session.receive_datagram() == b"ok"


async def test_server_without_webtransport(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A plain HTTP/3 server: the client is told it does not speak
    WebTransport; accept() on a server without it says what to set."""
    errors: list[BaseException] = []

    async def handler(request: h3.Request) -> None:
        try:
            await webtransport.accept(request)
        except (RuntimeError, ValueError) as exc:
            errors.append(exc)
            await request.respond(400)

    network = MemoryNetwork()
    sock = network.socket(*SERVER)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: h3.serve_http3(
                    handler,
                    SERVER[1],
                    settings=server_settings(alpn_protocols=[]),
                    http3_settings=Http3Settings(enable_connect_protocol=True),
                    sockets=[sock],
                    task_status=task_status,
                )
            )
            harness = Harness(network, trio.CancelScope())
            with pytest.raises(SessionRejected, match="does not enable WebTransport"):
                async with harness.session():
                    pass
            async with harness.client() as client:
                response = await client.request("GET", "/")
                assert response.status == 400
            assert isinstance(errors[0], ValueError)
            assert "not a WebTransport request" in str(errors[0])
            nursery.cancel_scope.cancel()


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="enable_connect_protocol"):
        Http3Settings(enable_webtransport=True)
    with pytest.raises(ValueError, match="webtransport_max_sessions"):
        Http3Settings(webtransport_max_sessions=0)
    with pytest.raises(TypeError):
        Http3Settings(webtransport_max_streams="10")  # type: ignore[arg-type]
    quic, http3 = webtransport.webtransport_settings(None, None)
    assert quic.max_datagram_frame_size == 65536
    assert http3.enable_webtransport and http3.enable_datagrams


@given(st.integers(0, 2**32 - 1))
def test_error_codes_round_trip(code: int) -> None:
    http3_code = webtransport.webtransport_code_to_http3(code)
    assert (http3_code - 0x21) % 0x1F != 0  # never a reserved (GREASE) code
    assert webtransport.http3_code_to_webtransport(http3_code) == code
    # Codes are monotonic: the next WebTransport code maps higher.
    if code < 2**32 - 1:
        assert webtransport.webtransport_code_to_http3(code + 1) > http3_code


def test_error_code_mapping() -> None:
    to_h3 = webtransport.webtransport_code_to_http3
    to_wt = webtransport.http3_code_to_webtransport
    assert to_h3(0) == 0x52E4A40FA8DB
    assert to_h3(2**32 - 1) == 0x52E5AC983162
    for code in (0, 1, 0x1D, 0x1E, 0x1F, 5, 1000, 2**31, 2**32 - 1):
        h3_code = to_h3(code)
        assert (h3_code - 0x21) % 0x1F != 0  # never a reserved code
        assert to_wt(h3_code) == code
    assert to_wt(0x100) is None
    assert to_wt(0x52E4A40FA8DB + 0x1E) is None  # the first reserved code
    with pytest.raises(ValueError, match="32-bit"):
        to_h3(-1)


# -- bad input ------------------------------------------------------------------------


async def test_stream_for_unknown_session_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stream naming a session that does not exist is refused with
    WT_BUFFERED_STREAM_REJECTED (both kinds); the real session carries on."""
    with trio.fail_after(30):
        async with wt_server(echo) as harness, harness.session() as session:
            driver = session._driver
            real = session.session_id
            bogus = real + 400
            sid = driver.engine.open_webtransport_stream(bogus, False)
            assert sid is not None
            hub = session._hub
            # Read the server's answer through a stream object of our own.
            from trioquic.webtransport._stream import _StreamState

            state = _StreamState(
                hub, session, sid, can_send=True, can_receive=True, incoming=False
            )
            hub.streams[sid] = state
            session.streams.add(state)
            driver.track_stream(sid)
            stream = webtransport.WebTransportStream(state)
            await stream.send_all(b"for nobody")
            with pytest.raises(StreamResetError) as refused:
                await stream.receive_some()
            assert (
                refused.value.http3_error_code
                == webtransport.WT_BUFFERED_STREAM_REJECTED
            )
            with pytest.raises(StreamStoppedError) as stopped:
                for _ in range(50):
                    await stream.send_all(b"more")
                    await trio.sleep(0.01)
            assert (
                stopped.value.http3_error_code
                == webtransport.WT_BUFFERED_STREAM_REJECTED
            )
            # The session is fine.
            echo_stream = await session.open_bidirectional_stream()
            await echo_stream.send_all(b"still fine")
            await echo_stream.send_eof()
            assert await read_all(echo_stream) == b"still fine"
            assert real in hub.sessions


async def test_malformed_capsule_ends_only_its_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A CLOSE_WEBTRANSPORT_SESSION capsule too short to hold a code: the
    server resets that session's CONNECT stream with H3_GENERAL_PROTOCOL_ERROR;
    another session on the same connection carries on."""
    seen: list[SessionCloseInfo] = []

    async def handler(session: WebTransportSession) -> None:
        if session.path == "/bad":
            seen.append(await session.wait_closed())
        else:
            await echo(session)

    with trio.fail_after(30):
        async with wt_server(handler) as harness, harness.client() as client:
            async with (
                webtransport.connect_webtransport(client, "/good") as good,
                webtransport.connect_webtransport(client, "/bad") as bad,
            ):
                await bad._driver.send_data(
                    bad._exchange,
                    h3.encode_capsule(
                        h3.CapsuleType.CLOSE_WEBTRANSPORT_SESSION, b"\x01"
                    ),
                    False,
                )
                info = await bad.wait_closed()
                assert not info.clean
                assert "0x101" in info.reason or "GENERAL_PROTOCOL" in info.reason
                await good.send_datagram(b"good")
                assert await good.receive_datagram() == b"good"
            assert len(seen) == 1
            assert not seen[0].clean
            assert "CLOSE_WEBTRANSPORT_SESSION" in seen[0].reason


async def test_datagram_for_unknown_session_is_dropped_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hubs: list[Any] = []

    async def handler(session: WebTransportSession) -> None:
        hubs.append(session._hub)
        await echo(session)

    with trio.fail_after(30):
        async with wt_server(handler) as harness, harness.session() as session:
            from trioquic._varint import encode_varint

            io = session._driver.io
            for _ in range(3):
                io.send_datagram(encode_varint((session.session_id + 400) // 4) + b"?")
            await session.send_datagram(b"known")
            assert await session.receive_datagram() == b"known"
            assert hubs[0].datagrams_unknown_session == 3


async def test_datagram_queue_is_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sessions: list[WebTransportSession] = []

    async def handler(session: WebTransportSession) -> None:
        sessions.append(session)
        await session.wait_closed()

    with trio.fail_after(30):
        async with (
            wt_server(handler, webtransport_datagram_queue=4) as harness,
            harness.session() as session,
        ):
            for number in range(10):
                await session.send_datagram(b"%d" % number)
            await trio.sleep(1)
            server = sessions[0]
            assert server.datagrams_dropped == 6
            assert [await server.receive_datagram() for _ in range(4)] == [
                b"6",
                b"7",
                b"8",
                b"9",
            ]


async def test_server_shutdown_drains_sessions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Stopping the server sends DRAIN_WEBTRANSPORT_SESSION: the client sees
    ``draining``; a handler that closes on it ends its session cleanly."""

    async def handler(session: WebTransportSession) -> None:
        await session.wait_draining()
        session.close(1001, "going away")
        await session.wait_closed()

    with trio.fail_after(30):
        async with wt_server(handler) as harness, harness.session() as session:
            assert not session.draining
            harness.stop_serving()
            await session.wait_draining()
            info = await session.wait_closed()
            assert info == SessionCloseInfo(1001, "going away", by_peer=True)


@pytest.mark.aioquic_only(
    "qh3 2.1's core stops acknowledging when both ends are limited by their "
    "congestion windows (poll_transmit returns early with an ACK queued behind "
    "reserved stream frames), so a two-way bulk exchange over a lossy link "
    "stalls until a probe timeout; see docs/engines.rst"
)
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_streams_over_a_lossy_network(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    """Loss, jitter (reordering) and duplicates: every stream of both kinds
    arrives intact and in order, concurrently."""
    network = MemoryNetwork(
        seed=seed,
        conditions=LinkConditions(delay=0.02, jitter=0.01, loss=0.05, duplicate=0.02),
    )
    payloads = {i: bytes([i]) * (20_000 + 997 * i) for i in range(6)}
    results: dict[tuple[str, int], bytes] = {}
    with trio.fail_after(300):
        async with (
            wt_server(echo, network=network) as harness,
            harness.session() as session,
        ):

            async def bidi(number: int) -> None:
                stream = await session.open_bidirectional_stream()

                async def send() -> None:
                    await stream.send_all(payloads[number])
                    await stream.send_eof()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send)
                    results["bidi", number] = await read_all(stream)

            async def uni(number: int) -> None:
                out = await session.open_unidirectional_stream()
                await out.send_all(payloads[number])
                await out.aclose()

            async with trio.open_nursery() as nursery:
                for number in payloads:
                    nursery.start_soon(bidi, number)
                    nursery.start_soon(uni, number)
                for _ in payloads:
                    back = await session.accept_unidirectional_stream()
                    data = await read_all(back)
                    results["uni", data[0]] = data
    for number, payload in payloads.items():
        assert results["bidi", number] == payload
        assert results["uni", number] == payload


async def test_opening_waits_for_the_peers_stream_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server allows 3 bidirectional streams at once (the CONNECT stream
    is one): the client's later streams wait for earlier ones to end."""
    with trio.fail_after(60):
        async with (
            wt_server(echo, max_concurrent_requests=3) as harness,
            harness.session() as session,
        ):
            for number in range(8):
                stream = await session.open_bidirectional_stream()
                await stream.send_all(b"stream %d" % number)
                await stream.send_eof()
                assert await read_all(stream) == b"stream %d" % number
            assert stream.stream_id >= 4 * 8


async def test_finished_streams_leave_no_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once both sides of a stream are over, neither endpoint keeps anything
    of it (the hub's, the driver's credit records, the engine's)."""
    sessions: list[WebTransportSession] = []

    async def handler(session: WebTransportSession) -> None:
        sessions.append(session)
        await echo(session)

    with trio.fail_after(60):
        async with wt_server(handler) as harness, harness.session() as session:
            for number in range(20):
                stream = await session.open_bidirectional_stream()
                await stream.send_all(b"%d" % number)
                await stream.send_eof()
                assert await read_all(stream) == b"%d" % number
                out = await session.open_unidirectional_stream()
                await out.send_all(b"u%d" % number)
                await out.aclose()
                back = await session.accept_unidirectional_stream()
                assert await read_all(back) == b"u%d" % number
            await trio.sleep(1)
            for side in (session, sessions[0]):
                driver = side._driver
                assert side._hub.streams == {}
                assert side.streams == set()
                assert side.incoming_streams == 0
                leftover = [sid for sid in driver._raw if sid != side.session_id]
                assert leftover == []
                engine = driver.engine
                assert engine._wt_streams == {}  # type: ignore[attr-defined]
