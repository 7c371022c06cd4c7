"""QUIC streams over the memory network: trio's stream conformance checks,
integrity, resets, backpressure."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from helpers import (
    RECEIVE_BOUNDS,
    Pair,
    bidirectional_pair,
    connected_pair,
    current_engine,
    receive_windows,
    unidirectional_pair,
)

import trioquic
from trioquic.testing import LinkConditions, MemoryNetwork

# Small windows so that a sender clogs quickly (see clogged makers below):
# the connection's too, the hard bound on every engine (on qh3, the stream
# window is not one).
WINDOW = 1200
CLOGGED = {
    "stream_receive_window": WINDOW,
    "connection_receive_window": WINDOW,
    "stream_send_buffer": WINDOW,
}


async def clog(
    stream: trioquic.QuicStream | trioquic.QuicSendStream, *, sent: int
) -> None:
    """Fill the peer's receive window (WINDOW bytes, ``sent`` of which were
    already sent) and then our send buffer (WINDOW): ``send_all`` and
    ``wait_send_all_might_not_block`` now block until the peer reads."""
    await stream.send_all(b"c" * (2 * WINDOW - sent))


@pytest.mark.xfail(
    current_engine() == "qh3",
    reason=(
        "on qh3 a stalled stream is granted between three quarters of the "
        "window and the whole of it (qh3's core grants credit as events are "
        "taken, in event-sized steps; the credit gate keeps the upper bound, "
        "not the lower one), so clog() may fill the send buffer before the "
        "peer's window is full and block; docs/engines.rst"
    ),
    strict=False,
)
async def test_bidirectional_conformance(autojump_clock: trio.testing.MockClock):
    with trio.fail_after(300):
        async with connected_pair() as pair, connected_pair(**CLOGGED) as clogged:

            async def maker() -> tuple[trioquic.QuicStream, trioquic.QuicStream]:
                return await bidirectional_pair(pair)

            async def clogged_maker() -> tuple[
                trioquic.QuicStream, trioquic.QuicStream
            ]:
                a, b = await bidirectional_pair(clogged)
                await clog(a, sent=1)
                await clog(b, sent=0)
                return a, b

            await trio.testing.check_half_closeable_stream(maker, clogged_maker)


@pytest.mark.xfail(
    current_engine() == "qh3",
    reason=(
        "on qh3 a stalled stream is granted between three quarters of the "
        "window and the whole of it (qh3's core grants credit as events are "
        "taken, in event-sized steps; the credit gate keeps the upper bound, "
        "not the lower one), so clog() may fill the send buffer before the "
        "peer's window is full and block; docs/engines.rst"
    ),
    strict=False,
)
async def test_bidirectional_conformance_server_opened(
    autojump_clock: trio.testing.MockClock,
):
    with trio.fail_after(300):
        async with connected_pair() as pair, connected_pair(**CLOGGED) as clogged:

            async def maker() -> tuple[trioquic.QuicStream, trioquic.QuicStream]:
                return await bidirectional_pair(pair, from_server=True)

            async def clogged_maker() -> tuple[
                trioquic.QuicStream, trioquic.QuicStream
            ]:
                a, b = await bidirectional_pair(clogged, from_server=True)
                await clog(a, sent=1)
                await clog(b, sent=0)
                return a, b

            await trio.testing.check_half_closeable_stream(maker, clogged_maker)


async def check_unidirectional(pair: Pair, clogged: Pair, from_server: bool) -> None:
    async def maker() -> tuple[trioquic.QuicSendStream, trioquic.QuicReceiveStream]:
        return await unidirectional_pair(pair, from_server=from_server)

    async def clogged_maker() -> tuple[
        trioquic.QuicSendStream, trioquic.QuicReceiveStream
    ]:
        a, b = await unidirectional_pair(clogged, from_server=from_server)
        await clog(a, sent=1)
        return a, b

    await trio.testing.check_one_way_stream(maker, clogged_maker)


async def test_unidirectional_conformance(autojump_clock: trio.testing.MockClock):
    with trio.fail_after(300):
        async with connected_pair() as pair, connected_pair(**CLOGGED) as clogged:
            await check_unidirectional(pair, clogged, from_server=False)
            await check_unidirectional(pair, clogged, from_server=True)


def pattern(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def send_in_chunks(
    stream: trioquic.QuicStream | trioquic.QuicSendStream, data: bytes, seed: int
) -> None:
    rng = random.Random(seed)
    view = memoryview(data)
    while view:
        size = rng.randint(1, 70_000)
        await stream.send_all(view[:size])
        view = view[size:]
    await stream.send_eof() if isinstance(stream, trioquic.QuicStream) else (
        await stream.aclose()
    )


async def receive_everything(
    stream: trioquic.QuicStream | trioquic.QuicReceiveStream,
) -> bytes:
    got = bytearray()
    async for chunk in stream:
        got += chunk
    return bytes(got)


async def test_multi_megabyte_transfer_both_ways(
    autojump_clock: trio.testing.MockClock,
):
    up = pattern(3 * 1024 * 1024 + 17, 1)
    down = pattern(2 * 1024 * 1024 + 5, 2)
    results: dict[str, bytes] = {}
    with trio.fail_after(120):
        async with connected_pair() as pair:
            a, b = await bidirectional_pair(pair)

            async def collect(name: str, stream: trioquic.QuicStream) -> None:
                results[name] = await receive_everything(stream)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_in_chunks, a, up, 3)
                nursery.start_soon(send_in_chunks, b, down, 4)
                nursery.start_soon(collect, "up", b)
                nursery.start_soon(collect, "down", a)
            stats = pair.client.statistics()
    assert results["up"] == up
    assert results["down"] == down
    assert stats.bytes_sent > len(up)
    assert stats.bytes_received > len(down)


async def test_peer_reset_raises_stream_reset(autojump_clock: trio.testing.MockClock):
    with trio.fail_after(30):
        async with connected_pair() as pair:
            a, b = await bidirectional_pair(pair)
            await a.send_all(b"partial")
            a.reset(0x1234)
            with pytest.raises(trioquic.StreamReset) as info:
                while True:
                    # The data sent before the reset may or may not be seen.
                    assert await b.receive_some() in (b"partial", b"par", b"")
            assert info.value.error_code == 0x1234
            assert info.value.stream_id == a.stream_id
            assert isinstance(info.value, trio.BrokenResourceError)
            # It stays reset.
            with pytest.raises(trioquic.StreamReset):
                await b.receive_some()
            # Our send side is closed; the other direction still works.
            with pytest.raises(trio.ClosedResourceError):
                await a.send_all(b"more")
            await b.send_all(b"back")
            assert await a.receive_some() == b"back"


async def test_reset_of_unidirectional_stream(autojump_clock: trio.testing.MockClock):
    with trio.fail_after(30):
        async with connected_pair() as pair:
            send, receive = await unidirectional_pair(pair, from_server=True)
            send.reset(7)
            with pytest.raises(trioquic.StreamReset) as info:
                await receive.receive_some()
            assert info.value.error_code == 7


async def test_stop_sending_stops_the_peer(autojump_clock: trio.testing.MockClock):
    with trio.fail_after(30):
        async with connected_pair() as pair:
            a, b = await bidirectional_pair(pair)
            b.stop_sending(0x42)
            with pytest.raises(trioquic.StreamStopped) as info:
                for _ in range(10_000):
                    await a.send_all(b"x" * 1000)
            assert info.value.error_code == 0x42
            assert info.value.stream_id == a.stream_id
            with pytest.raises(trioquic.StreamStopped):
                await a.send_all(b"x")
            with pytest.raises(trio.ClosedResourceError):
                await b.receive_some()
            # The other direction is unaffected.
            await b.send_all(b"still here")
            await b.send_eof()
            assert await receive_everything(a) == b"still here"


async def test_stop_sending_unidirectional(autojump_clock: trio.testing.MockClock):
    with trio.fail_after(30):
        async with connected_pair() as pair:
            send, receive = await unidirectional_pair(pair)
            receive.stop_sending(9)
            with pytest.raises(trioquic.StreamStopped) as info:
                for _ in range(10_000):
                    await send.send_all(b"y" * 1000)
            assert info.value.error_code == 9


@pytest.mark.parametrize("bound", RECEIVE_BOUNDS)
@pytest.mark.parametrize("from_server", [False, True])
async def test_backpressure_bounds_the_sender(
    autojump_clock: trio.testing.MockClock, from_server: bool, bound: str
):
    send_buffer = 64 * 1024
    window = 128 * 1024
    chunk = 4096
    with trio.fail_after(120):
        async with connected_pair(
            stream_send_buffer=send_buffer, **receive_windows(bound, window)
        ) as pair:
            a, b = await bidirectional_pair(pair, from_server=from_server)
            receiver_conn = pair.client if from_server else pair.server
            accepted = 0

            def sender_buffered() -> int:
                return a.statistics().send_buffered

            def receiver_buffered() -> int:
                return b.statistics().receive_buffered

            async def sender() -> None:
                nonlocal accepted
                for _ in range(10_000):
                    await a.send_all(b"z" * chunk)
                    accepted += chunk

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                # Plenty of time for everything that can move to move.
                await trio.sleep(10)
                sender_held = sender_buffered()
                receiver_held = receiver_buffered()
                blocked_at = accepted
                await trio.sleep(10)
                assert accepted == blocked_at  # send_all is blocked
                assert 0 < sender_held <= send_buffer
                assert 0 < receiver_held <= window
                # What send_all accepted is in one of the two buffers.
                assert blocked_at <= send_buffer + window + chunk
                assert blocked_at >= window
                # Reading releases the sender.
                got = 0
                while got < 2 * (send_buffer + window):
                    got += len(await b.receive_some(50_000))
                    assert receiver_buffered() <= window
                    assert sender_buffered() <= send_buffer
                assert accepted > blocked_at
                nursery.cancel_scope.cancel()
            assert receiver_conn.statistics().bytes_received > 2 * window


async def test_many_concurrent_streams(autojump_clock: trio.testing.MockClock):
    count = 300  # more than max_concurrent_streams: opening waits for credit
    with trio.fail_after(120):
        async with connected_pair(max_concurrent_streams=50) as pair:

            async def echo_server() -> None:
                async with trio.open_nursery() as nursery:
                    for _ in range(count):
                        stream = await pair.server.accept_stream()
                        assert isinstance(stream, trioquic.QuicStream)
                        nursery.start_soon(echo, stream)

            async def echo(stream: trioquic.QuicStream) -> None:
                data = await receive_everything(stream)
                await stream.send_all(data[::-1])
                await stream.send_eof()

            results: dict[int, bytes] = {}

            async def client(i: int) -> None:
                stream = await pair.client.open_stream()
                payload = pattern(1000 + i * 37, i)
                await stream.send_all(payload)
                await stream.send_eof()
                results[i] = await receive_everything(stream)
                assert results[i] == payload[::-1]

            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo_server)
                for i in range(count):
                    nursery.start_soon(client, i)
    assert len(results) == count


async def test_unidirectional_both_directions(autojump_clock: trio.testing.MockClock):
    up = pattern(300_000, 5)
    down = pattern(200_000, 6)
    with trio.fail_after(60):
        async with connected_pair() as pair:
            to_server = await pair.client.open_unidirectional_stream()
            to_client = await pair.server.open_unidirectional_stream()
            results: dict[str, bytes] = {}

            async def accept_and_read(
                name: str, connection: trioquic.QuicConnection
            ) -> None:
                stream = await connection.accept_stream()
                assert isinstance(stream, trioquic.QuicReceiveStream)
                assert not isinstance(stream, trio.abc.SendStream)
                results[name] = await receive_everything(stream)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_in_chunks, to_server, up, 1)
                nursery.start_soon(send_in_chunks, to_client, down, 2)
                nursery.start_soon(accept_and_read, "up", pair.server)
                nursery.start_soon(accept_and_read, "down", pair.client)
    assert results == {"up": up, "down": down}


async def test_accept_stream_returns_the_right_types(
    autojump_clock: trio.testing.MockClock,
):
    with trio.fail_after(30):
        async with connected_pair() as pair:
            bidi = await pair.client.open_stream()
            uni = await pair.client.open_unidirectional_stream()
            assert isinstance(bidi, trioquic.QuicStream)
            assert isinstance(bidi, trio.abc.HalfCloseableStream)
            assert isinstance(uni, trioquic.QuicSendStream)
            assert not isinstance(uni, trio.abc.ReceiveStream)
            await uni.send_all(b"u")
            await bidi.send_all(b"b")
            seen = {}
            for _ in range(2):
                stream = await pair.server.accept_stream()
                seen[stream.stream_id] = stream
            assert isinstance(seen[bidi.stream_id], trioquic.QuicStream)
            assert isinstance(seen[uni.stream_id], trioquic.QuicReceiveStream)
            assert bidi.stream_id % 4 == 0  # client-initiated bidirectional
            assert uni.stream_id % 4 == 2  # client-initiated unidirectional
            server_bidi = await pair.server.open_stream()
            assert server_bidi.stream_id % 4 == 1
            await server_bidi.send_all(b"s")
            accepted = await pair.client.accept_stream()
            assert isinstance(accepted, trioquic.QuicStream)
            assert accepted.stream_id == server_bidi.stream_id
            assert await accepted.receive_some() == b"s"


async def test_streams_fail_cleanly_when_the_connection_closes(
    autojump_clock: trio.testing.MockClock,
):
    with trio.fail_after(30):
        async with connected_pair() as pair:
            a, b = await bidirectional_pair(pair)

            async def close_soon() -> None:
                await trio.sleep(1)
                await pair.server.aclose(5, "bye")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_soon)
                with pytest.raises(trioquic.ConnectionClosed) as info:
                    await a.receive_some()
            assert info.value.reason.error_code == 5
            with pytest.raises(trioquic.ConnectionClosed):
                await a.send_all(b"x")
            with pytest.raises(trioquic.ConnectionClosed):
                await pair.client.open_stream()
            with pytest.raises(trioquic.ConnectionClosed):
                await pair.client.accept_stream()
            with pytest.raises(trioquic.ConnectionClosed):
                await b.receive_some()


async def test_stop_sending_as_the_first_frame_of_a_stream(
    autojump_clock: trio.testing.MockClock,
):
    # The peer hears of the stream from STOP_SENDING (ahead of any data): its
    # send side is stopped, and says so with StreamStopped, not an engine error.
    with trio.fail_after(30):
        async with connected_pair() as pair:
            stream = await pair.client.open_stream()
            stream.stop_sending(4)
            await stream.send_all(b"y")
            accepted = await pair.server.accept_stream()
            assert isinstance(accepted, trioquic.QuicStream)
            assert await accepted.receive_some() == b"y"
            with pytest.raises(trioquic.StreamStopped) as info:
                await accepted.send_all(b"z")
            assert info.value.error_code == 4


@pytest.mark.aioquic_only(
    "reads aioquic's per-stream records (QuicConnection._streams) and the "
    "aioquic engine's credit ledger"
)
async def test_finished_streams_are_forgotten(autojump_clock: trio.testing.MockClock):
    # Memory per connection stays bounded however many streams it carried,
    # whichever way they ended.
    with trio.fail_after(120):
        async with connected_pair() as pair:

            async def serve_streams() -> None:
                async with trio.open_nursery() as nursery:
                    while True:
                        stream = await pair.server.accept_stream()
                        nursery.start_soon(serve_one, stream)

            async def serve_one(stream: trioquic.QuicStream) -> None:
                # Deliberately no aclose(): ending both directions is enough.
                try:
                    data = await receive_everything(stream)
                except trioquic.StreamReset:
                    return
                await stream.send_all(data)
                await stream.send_eof()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve_streams)
                for i in range(300):
                    stream = await pair.client.open_stream()
                    await stream.send_all(b"x" * 100)
                    if i % 3 == 0:
                        stream.reset(3)
                        stream.stop_sending(4)
                    else:
                        await stream.send_eof()
                        assert await receive_everything(stream) == b"x" * 100
                await trio.sleep(5)
                for side in (pair.client, pair.server):
                    # private (these four reads): no public API shows the
                    # per-stream records a connection keeps (trioquic's,
                    # aioquic's, the credit ledger), the memory bounded here.
                    engine = side._io._worker.engine
                    assert side._app.streams == {}
                    assert len(engine.quic._streams) == 0
                    assert len(engine.quic.tq_consumed) <= 100
                    assert not engine.has_unacknowledged_stream_data()
                nursery.cancel_scope.cancel()


async def test_refused_streams_beyond_the_accept_backlog(
    autojump_clock: trio.testing.MockClock,
):
    backlog = 5
    with trio.fail_after(30):
        async with connected_pair(stream_accept_backlog=backlog) as pair:
            streams = []
            for _ in range(backlog + 3):
                stream = await pair.client.open_stream()
                await stream.send_all(b"hello")
                streams.append(stream)
            await trio.sleep(1)
            # The ones beyond the backlog were refused both ways.
            for stream in streams[backlog:]:
                with pytest.raises(trioquic.StreamReset) as reset:
                    await stream.receive_some()
                assert reset.value.error_code == 0
                with pytest.raises(trioquic.StreamStopped):
                    await stream.send_all(b"more")
            # The others wait to be accepted, in order, and work.
            for stream in streams[:backlog]:
                accepted = await pair.server.accept_stream()
                assert accepted.stream_id == stream.stream_id
                assert await accepted.receive_some() == b"hello"
                assert isinstance(accepted, trioquic.QuicStream)
                await accepted.send_all(b"ok")
                assert await stream.receive_some() == b"ok"


async def test_blocked_sender_fails_when_the_connection_closes(
    autojump_clock: trio.testing.MockClock,
):
    with trio.fail_after(30):
        async with connected_pair(
            stream_send_buffer=4096, stream_receive_window=4096
        ) as pair:
            a, _ = await bidirectional_pair(pair)

            async def close_soon() -> None:
                await trio.sleep(2)
                await pair.server.aclose(9, "enough")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_soon)
                with pytest.raises(trioquic.ConnectionClosed) as info:
                    for _ in range(1000):
                        await a.send_all(b"b" * 4096)
            assert info.value.reason.error_code == 9
            with pytest.raises(trioquic.ConnectionClosed):
                await a.wait_send_all_might_not_block()


async def test_bidirectional_conformance_on_a_lossy_network(
    autojump_clock: trio.testing.MockClock,
):
    def network(seed: int) -> MemoryNetwork:
        return MemoryNetwork(
            seed=seed,
            conditions=LinkConditions(
                delay=0.02, jitter=0.01, loss=0.05, duplicate=0.02, corrupt=0.01
            ),
        )

    with trio.fail_after(600):
        async with (
            connected_pair(network=network(1), idle_timeout=100) as pair,
            connected_pair(network=network(2), idle_timeout=100, **CLOGGED) as clogged,
        ):

            async def maker() -> tuple[trioquic.QuicStream, trioquic.QuicStream]:
                return await bidirectional_pair(pair)

            async def clogged_maker() -> tuple[
                trioquic.QuicStream, trioquic.QuicStream
            ]:
                a, b = await bidirectional_pair(clogged)
                await clog(a, sent=1)
                await clog(b, sent=0)
                return a, b

            await trio.testing.check_half_closeable_stream(maker, clogged_maker)
