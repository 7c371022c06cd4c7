"""The in-memory UDP network of trioquic.testing, on its own."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing

from trioquic.testing import (
    LinkConditions,
    MemoryNetwork,
    MemorySocket,
    open_memory_server,
)


async def receive_all(sock: MemorySocket, *, quiet: float = 5.0) -> list[bytes]:
    """Every datagram that arrives until ``quiet`` seconds pass without one."""
    got: list[bytes] = []
    while True:
        with trio.move_on_after(quiet) as scope:
            batch = await sock.receive_batch()
        if scope.cancelled_caught:
            return got
        got.extend(data for data, _ in batch)


def numbered(count: int, size: int = 20) -> list[bytes]:
    return [i.to_bytes(4, "big") * (size // 4) for i in range(count)]


async def test_delivery_after_delay_in_order(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(conditions=LinkConditions(delay=0.25))
    a = network.socket("10.0.0.1", 1000)
    b = network.socket("10.0.0.2", 2000)
    start = trio.current_time()
    await a.send_batch([(b"one", b.local_address), (b"two", b.local_address)])
    batch = await b.receive_batch()
    assert trio.current_time() - start == pytest.approx(0.25)
    assert batch == [(b"one", ("10.0.0.1", 1000)), (b"two", ("10.0.0.1", 1000))]
    stats = network.statistics()
    assert (stats.sent, stats.delivered, stats.in_transit) == (2, 2, 0)


async def test_receive_waits_for_the_earliest_arrival(
    autojump_clock: trio.testing.MockClock,
):
    network = MemoryNetwork()
    network.set_link("slow", "sink", LinkConditions(delay=2.0))
    network.set_link("fast", "sink", LinkConditions(delay=0.5))
    slow = network.socket("slow")
    fast = network.socket("fast")
    sink = network.socket("sink", 9)
    start = trio.current_time()
    await slow.send_batch([(b"slow", sink.local_address)])
    await fast.send_batch([(b"fast", sink.local_address)])
    assert [d for d, _ in await sink.receive_batch()] == [b"fast"]
    assert trio.current_time() - start == pytest.approx(0.5)
    assert [d for d, _ in await sink.receive_batch()] == [b"slow"]
    assert trio.current_time() - start == pytest.approx(2.0)


async def test_links_are_one_way(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork()
    network.set_link("a", "b", LinkConditions(loss=1.0))
    a = network.socket("a", 1)
    b = network.socket("b", 1)
    await a.send_batch([(b"x", b.local_address)] * 5)
    await b.send_batch([(b"y", a.local_address)] * 5)
    assert await receive_all(a) == [b"y"] * 5
    assert await receive_all(b) == []
    assert network.statistics().lost == 5
    assert network.link_conditions("a", "b").loss == 1.0
    assert network.link_conditions("b", "a").loss == 0.0


async def test_jitter_reorders_within_bounds(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(seed=7, conditions=LinkConditions(delay=0.1, jitter=0.05))
    a = network.socket("a")
    b = network.socket("b")
    start = trio.current_time()
    payloads = numbered(200)
    await a.send_batch([(p, b.local_address) for p in payloads])
    got: list[bytes] = []
    while len(got) < len(payloads):
        got.extend(d for d, _ in await b.receive_batch())
        assert 0.1 <= trio.current_time() - start <= 0.15 + 1e-9
    assert sorted(got) == sorted(payloads)
    assert got != payloads  # reordered


def lossy_run(seed: int, loss: float) -> list[bytes]:
    async def main() -> list[bytes]:
        network = MemoryNetwork(
            seed=seed, conditions=LinkConditions(loss=loss, delay=0.01)
        )
        a = network.socket("a")
        b = network.socket("b")
        for payload in numbered(500):
            await a.send_batch([(payload, b.local_address)])
            await trio.sleep(0.001)
        got = await receive_all(b)
        stats = network.statistics()
        assert stats.sent == 500
        assert stats.lost + stats.delivered == 500
        assert len(got) == stats.delivered
        return got

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_loss_is_reproducible_per_seed():
    first = lossy_run(1, 0.3)
    assert lossy_run(1, 0.3) == first
    assert lossy_run(2, 0.3) != first
    # about 30 % lost
    assert 300 < len(first) < 400
    assert lossy_run(1, 0.0) == numbered(500)


async def test_loss_phases(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(conditions=LinkConditions(loss=[(2.0, 1.0)]))
    a = network.socket("a")
    b = network.socket("b")
    await a.send_batch([(b"early", b.local_address)])
    await trio.sleep(1.9)
    await a.send_batch([(b"still early", b.local_address)])
    await trio.sleep(0.2)
    assert network.elapsed == pytest.approx(2.1)
    await a.send_batch([(b"late", b.local_address)])
    assert await receive_all(b) == [b"late"]
    assert network.statistics().lost == 2


async def test_loss_function_of_time(autojump_clock: trio.testing.MockClock):
    seen: list[float] = []

    def loss(elapsed: float) -> float:
        seen.append(elapsed)
        return 1.0 if elapsed < 1.0 else 0.0

    network = MemoryNetwork(conditions=LinkConditions(loss=loss))
    a = network.socket("a")
    b = network.socket("b")
    for _ in range(4):
        await a.send_batch([(b"x", b.local_address)])
        await trio.sleep(0.5)
    assert seen == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert len(await receive_all(b)) == 2


async def test_changing_conditions_mid_run(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(conditions=LinkConditions(loss=1.0))
    a = network.socket("a")
    b = network.socket("b")
    await a.send_batch([(b"lost", b.local_address)])
    network.default_conditions = LinkConditions()
    await a.send_batch([(b"kept", b.local_address)])
    assert await receive_all(b) == [b"kept"]


async def test_duplication(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(conditions=LinkConditions(duplicate=1.0, delay=0.01))
    a = network.socket("a")
    b = network.socket("b")
    await a.send_batch([(p, b.local_address) for p in numbered(10)])
    got = await receive_all(b)
    assert sorted(got) == sorted(numbered(10) * 2)
    stats = network.statistics()
    assert (stats.sent, stats.duplicated, stats.delivered) == (10, 10, 20)


async def test_partial_duplication_is_seeded(autojump_clock: trio.testing.MockClock):
    counts = []
    for _ in range(2):
        network = MemoryNetwork(seed=5, conditions=LinkConditions(duplicate=0.2))
        a = network.socket("a")
        b = network.socket("b")
        await a.send_batch([(p, b.local_address) for p in numbered(300)])
        got = await receive_all(b)
        counts.append((len(got), network.statistics().duplicated))
    assert counts[0] == counts[1]
    assert 30 < counts[0][1] < 90
    assert counts[0][0] == 300 + counts[0][1]


async def test_corruption_changes_one_byte(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(conditions=LinkConditions(corrupt=1.0))
    a = network.socket("a")
    b = network.socket("b")
    payloads = numbered(50, size=100)
    await a.send_batch([(p, b.local_address) for p in payloads])
    got = await receive_all(b)
    assert len(got) == 50
    for sent, received in zip(payloads, got, strict=True):
        assert len(received) == len(sent)
        assert sum(x != y for x, y in zip(sent, received, strict=True)) == 1
    assert network.statistics().corrupted == 50


async def test_queue_limit_drops_the_excess(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(conditions=LinkConditions(delay=1.0, queue_limit=10))
    a = network.socket("a")
    b = network.socket("b")
    await a.send_batch([(p, b.local_address) for p in numbered(25)])
    assert network.statistics().overflowed == 15
    assert await receive_all(b) == numbered(10)
    # Once the queue drained, the link carries datagrams again.
    await a.send_batch([(b"again", b.local_address)])
    assert await receive_all(b) == [b"again"]


async def test_bandwidth_spaces_arrivals(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(conditions=LinkConditions(bandwidth=1000, delay=0.5))
    a = network.socket("a")
    b = network.socket("b")
    start = trio.current_time()
    await a.send_batch([(p, b.local_address) for p in numbered(5, size=100)])
    arrivals = []
    for _ in range(5):
        for _data in await b.receive_batch():
            arrivals.append(trio.current_time() - start)
    # 100 bytes at 1000 B/s: one every 0.1 s, after the propagation delay.
    assert arrivals == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0])


async def test_bandwidth_queue_overflows(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(conditions=LinkConditions(bandwidth=1000, queue_limit=3))
    a = network.socket("a")
    b = network.socket("b")
    await a.send_batch([(p, b.local_address) for p in numbered(10, size=100)])
    assert network.statistics().overflowed == 7
    assert await receive_all(b) == numbered(3, size=100)


async def test_rebinding_changes_the_source_address(
    autojump_clock: trio.testing.MockClock,
):
    network = MemoryNetwork(conditions=LinkConditions(delay=0.1))
    client = network.socket("10.0.0.2", 5000)
    server = network.socket("10.0.0.1", 4433)
    await client.send_batch([(b"before", server.local_address)])
    [(_, source)] = await server.receive_batch()
    assert source == ("10.0.0.2", 5000)
    # A reply in transit to the old address is lost after the rebinding.
    await server.send_batch([(b"to old", source)])
    new = client.rebind()
    assert new == client.local_address
    assert new[0] == "10.0.0.2" and new[1] != 5000
    await client.send_batch([(b"after", server.local_address)])
    [(data, source)] = await server.receive_batch()
    assert (data, source) == (b"after", new)
    await server.send_batch([(b"to new", new)])
    assert await receive_all(client) == [b"to new"]
    assert network.statistics().unroutable == 1
    # The old port is free again.
    network.socket("10.0.0.2", 5000).close()


async def test_rebinding_keeping_the_old_address(
    autojump_clock: trio.testing.MockClock,
):
    network = MemoryNetwork()
    client = network.socket("c", 5000)
    server = network.socket("s", 1)
    new = network.rebind(client, 6000, keep_old_address=True)
    assert new == ("c", 6000)
    await server.send_batch([(b"old", ("c", 5000)), (b"new", ("c", 6000))])
    assert await receive_all(client) == [b"old", b"new"]
    with pytest.raises(OSError) as info:
        network.socket("c", 5000)
    assert info.value.errno == errno.EADDRINUSE


async def test_unroutable_and_address_in_use(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork()
    a = network.socket("a", 1)
    with pytest.raises(OSError) as info:
        network.socket("a", 1)
    assert info.value.errno == errno.EADDRINUSE
    await a.send_batch([(b"x", ("nowhere", 1)), (b"y", "garbage")])
    assert network.statistics().unroutable == 2
    ports = {network.socket("b").local_address[1] for _ in range(3)}
    assert len(ports) == 3
    with pytest.raises(ValueError):
        network.socket("c", 0)
    with pytest.raises(TypeError):
        network.socket("c", "80")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        a.rebind(70000)
    other = MemoryNetwork().socket("x")
    with pytest.raises(ValueError):
        network.rebind(other)


async def test_receive_batch_is_a_cancel_safe_checkpoint(
    autojump_clock: trio.testing.MockClock,
):
    network = MemoryNetwork()
    a = network.socket("a")
    b = network.socket("b")
    await a.send_batch([(b"x", b.local_address)])
    with trio.testing.assert_checkpoints():
        assert await b.receive_batch() == [(b"x", a.local_address)]
    # Cancelled while waiting: takes nothing.
    with trio.move_on_after(1):
        await b.receive_batch()
    with trio.CancelScope() as scope:
        scope.cancel()
        await a.send_batch([(b"y", b.local_address)])
        with pytest.raises(trio.Cancelled):
            await b.receive_batch()
    assert await b.receive_batch() == [(b"y", a.local_address)]


async def test_batches_are_bounded(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(conditions=LinkConditions(queue_limit=1000))
    a = network.socket("a")
    b = network.socket("b")
    await a.send_batch([(p, b.local_address) for p in numbered(100)])
    sizes = [len(await b.receive_batch()), len(await b.receive_batch())]
    assert sizes == [64, 36]


async def test_close_wakes_the_receiver(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(conditions=LinkConditions(delay=1))
    a = network.socket("a")
    b = network.socket("b")
    await a.send_batch([(b"x", b.local_address)])
    start = trio.current_time()

    async def close_soon() -> None:
        await trio.sleep(0.5)
        b.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_soon)
        with pytest.raises(trio.ClosedResourceError):
            await b.receive_batch()
    assert trio.current_time() - start == pytest.approx(0.5)
    b.close()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        await b.send_batch([(b"x", a.local_address)])
    stats = network.statistics()
    assert stats.unroutable == 1 and stats.in_transit == 0


def test_link_conditions_are_validated():
    with pytest.raises(ValueError):
        LinkConditions(loss=1.5)
    with pytest.raises(ValueError):
        LinkConditions(delay=-1)
    with pytest.raises(TypeError):
        LinkConditions(duplicate="often")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LinkConditions(queue_limit=0)
    with pytest.raises(ValueError):
        LinkConditions(bandwidth=0)
    with pytest.raises(ValueError):
        LinkConditions(loss=[(2.0, 0.1), (1.0, 0.1)])
    with pytest.raises(TypeError):
        LinkConditions(loss="lots")  # type: ignore[arg-type]
    phases = LinkConditions(loss=[(1.0, 0.5), (3.0, 0.25)])
    assert [phases.loss_at(t) for t in (0, 0.99, 1.0, 2.9, 3.0, 10)] == [
        0.5,
        0.5,
        0.25,
        0.25,
        0.0,
        0.0,
    ]
    with pytest.raises(TypeError):
        MemoryNetwork(conditions=0.5)  # type: ignore[arg-type]


async def echo_handler(connection) -> None:  # type: ignore[no-untyped-def]
    stream = await connection.accept_stream()
    async for data in stream:
        await stream.send_all(data)
    await stream.send_eof()


async def test_open_memory_server_round_trip(autojump_clock: trio.testing.MockClock):
    network = MemoryNetwork(
        seed=3, conditions=LinkConditions(delay=0.05, loss=0.1, jitter=0.01)
    )
    async with open_memory_server(echo_handler, network=network) as server:
        assert server.address == ("10.0.0.1", 4433)
        async with server.connect() as connection:
            stream = await connection.open_stream()
            await stream.send_all(b"ping")
            await stream.send_eof()
            assert await stream.receive_some() == b"ping"
            assert await stream.receive_some() == b""
            assert connection.statistics().smoothed_rtt >= 0.1
        assert server.server.statistics().connections_accepted == 1
    assert server.socket.closed
    assert network.statistics().delivered > 0


async def test_open_memory_server_lets_user_errors_through(
    autojump_clock: trio.testing.MockClock,
):
    class Oops(Exception):
        pass

    with pytest.raises(Oops):
        async with open_memory_server(echo_handler) as server, server.connect():
            raise Oops


def test_testing_namespace_is_documented() -> None:
    import ast
    import inspect
    import pathlib

    import trioquic.testing as testing

    source = pathlib.Path(testing.__file__).read_text()
    names = [
        alias.asname or alias.name
        for node in ast.parse(source).body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        # Private imports (the module's own helpers) are no part of it.
        if not (alias.asname or alias.name).startswith("_")
    ]
    assert names
    assert len(names) == len(set(names))
    assert testing.__doc__
    for name in names:
        obj = getattr(testing, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if inspect.isfunction(value) or isinstance(value, property):
                    assert inspect.getdoc(value), f"{name}.{attr} has no docstring"
