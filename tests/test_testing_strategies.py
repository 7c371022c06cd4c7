"""trioquic.testing's network descriptions for property tests: loss schedules
as printable values, ``MemoryNetwork.replay_code()``, scheduled NAT
rebindings, and the hypothesis strategies of ``trioquic.testing.strategies``."""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

import attrs
import hypothesis
import pytest
import trio
import trio.testing
from hypothesis import strategies as st

import trioquic
import trioquic.testing
from trioquic.testing import (
    Blackout,
    LinkConditions,
    LossBursts,
    LossRamp,
    MemoryNetwork,
    PeriodicLoss,
    open_memory_server,
)
from trioquic.testing.strategies import link_conditions, loss_schedules, networks

#: What ``replay_code()`` promises to evaluate with.
NAMES: dict[str, Any] = {}
exec("from trioquic.testing import *", NAMES)


def replay(network: MemoryNetwork) -> MemoryNetwork:
    rebuilt = eval(network.replay_code(), dict(NAMES))
    assert isinstance(rebuilt, MemoryNetwork)
    return rebuilt


def workload(network: MemoryNetwork) -> list[tuple[Any, ...]]:
    """Send a fixed pattern of datagrams both ways between two clients and a
    server over 6 virtual seconds; return what arrived where and when, plus
    the counters and the addresses the clients ended on."""

    async def main() -> list[tuple[Any, ...]]:
        start = trio.current_time()
        server = network.socket("10.0.0.1", 4433)
        clients = [network.socket("10.0.0.2"), network.socket("10.0.0.3")]
        # One log per socket: trio runs tasks woken at the same time in a
        # random order, but each socket's arrivals are in a fixed order.
        logs: dict[str, list[tuple[Any, ...]]] = {}

        async def receive(sock: trioquic.testing.MemorySocket) -> None:
            log = logs.setdefault(sock.local_address[0], [])
            while True:
                for data, source in await sock.receive_batch():
                    log.append((trio.current_time() - start, data, source))
                    if sock is server:
                        await server.send_batch([(b"re:" + data, source)])

        async with trio.open_nursery() as nursery:
            for sock in [server, *clients]:
                nursery.start_soon(receive, sock)
            for step in range(120):
                for index, client in enumerate(clients):
                    payload = b"%d/%d" % (index, step) * (1 + step % 7)
                    await client.send_batch([(payload, ("10.0.0.1", 4433))])
                await trio.sleep(0.05)
            await trio.sleep(2)
            nursery.cancel_scope.cancel()
        return [
            *sorted(logs.items()),
            ("statistics", network.statistics()),
            ("clients", [client.local_address for client in clients]),
        ]

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_replay_code_of_a_default_network() -> None:
    assert MemoryNetwork().replay_code() == "MemoryNetwork(seed=0)"
    assert MemoryNetwork(seed="a").replay_code() == "MemoryNetwork(seed='a')"


def test_replay_code_names_only_what_differs_from_the_defaults() -> None:
    network = MemoryNetwork(seed=3, conditions=LinkConditions(delay=0.05, loss=0.1))
    assert network.replay_code() == (
        "MemoryNetwork(seed=3, conditions=LinkConditions(delay=0.05, loss=0.1))"
    )


def test_replayed_network_behaves_the_same() -> None:
    network = MemoryNetwork(
        seed=11,
        conditions=LinkConditions(
            delay=0.03, jitter=0.02, loss=0.1, duplicate=0.05, corrupt=0.02
        ),
        rebinds=[(2.5, "10.0.0.3"), (1.0, "10.0.0.2")],
    )
    network.set_link(
        "10.0.0.2",
        "10.0.0.1",
        LinkConditions(
            delay=0.01,
            loss=LossBursts(windows=[(0.5, 0.3), (4.0, 0.5)], rate=0.9, base=0.05),
            queue_limit=3,
            bandwidth=200.0,
        ),
    )
    # 10.0.0.3 -> 10.0.0.1 keeps the default conditions.
    network.set_link(
        "10.0.0.1",
        "10.0.0.3",
        LinkConditions(
            delay=0.02, loss=PeriodicLoss(period=0.7, duration=0.2, rate=0.6)
        ),
    )
    network.set_link(
        "10.0.0.1", "10.0.0.2", LinkConditions(delay=0.1, loss=[(1.5, 0.5)])
    )
    code = network.replay_code()
    assert "\n" not in code and "#" not in code
    original = workload(network)
    assert original == workload(replay(network))
    # The workload saw every kind of event, so the comparison means something.
    statistics = original[-2][1]
    assert statistics.lost and statistics.duplicated and statistics.corrupted
    assert statistics.overflowed and statistics.unroutable
    clients = original[-1][1]
    assert clients[0][1] != trioquic.testing.EPHEMERAL_PORT_START
    # A different seed is a different run.
    other = eval(code.replace("seed=11", "seed=12"), dict(NAMES))
    assert workload(other) != original


@pytest.mark.parametrize(
    "loss",
    [
        Blackout(start=1.0, duration=0.5),
        LossBursts(windows=[(0.2, 0.1)]),
        LossRamp(start=0.5, duration=2.0, start_rate=0.1, end_rate=0.7),
        PeriodicLoss(period=0.5, duration=0.1, rate=0.8, base=0.1, offset=0.25),
        ((1.0, 0.2), (2.0, 0.9)),
    ],
)
def test_loss_schedules_print_as_themselves(loss: Any) -> None:
    network = MemoryNetwork(conditions=LinkConditions(loss=loss))
    rebuilt = replay(network)
    assert rebuilt.default_conditions == network.default_conditions
    assert workload(rebuilt) == workload(network)


def test_replay_code_says_a_loss_function_must_be_supplied() -> None:
    def flaky(elapsed: float) -> float:
        return 0.5 if elapsed < 1 else 0.0

    network = MemoryNetwork(seed=2)
    network.set_link("a", "b", LinkConditions(loss=flaky))
    code = network.replay_code()
    name = f"<loss function {__name__}.{flaky.__qualname__}>"
    assert code.startswith(
        f"MemoryNetwork(seed=2, links={{('a', 'b'): LinkConditions(loss={name})}})"
    )
    assert code.endswith(
        f"  # replace {name} with the same loss function: a function cannot be printed"
    )
    with pytest.raises(SyntaxError):
        eval(code, dict(NAMES))
    # With the function put back, it is the same network.
    rebuilt = eval(
        code.split("  #")[0].replace(name, "flaky"), {**NAMES, "flaky": flaky}
    )
    assert rebuilt.link_conditions("a", "b").loss is flaky


def test_links_argument_is_set_link() -> None:
    slow = LinkConditions(delay=1.0)
    network = MemoryNetwork(links={("a", "b"): slow})
    assert network.link_conditions("a", "b") == slow
    assert network.link_conditions("b", "a") == LinkConditions()
    assert replay(network).link_conditions("a", "b") == slow
    with pytest.raises(TypeError, match=r"\(source host, destination host\)"):
        MemoryNetwork(links={"a": slow})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="must be a LinkConditions"):
        MemoryNetwork(links={("a", "b"): 0.5})  # type: ignore[dict-item]


def test_a_scheduled_rebinding_moves_the_socket_when_it_next_sends() -> None:
    network = MemoryNetwork(rebinds=[(1.0, "client")])
    seen: list[tuple[float, Any]] = []

    async def main() -> None:
        server = network.socket("server", 1)
        client = network.socket("client")
        first = client.local_address
        for _ in range(3):
            await client.send_batch([(b"x", ("server", 1))])
            (_, source), *_ = await server.receive_batch()
            seen.append((trio.current_time(), source))
            await trio.sleep(0.8)
        assert seen[0][1] == seen[1][1] == first  # sent at 0 and 0.8
        assert seen[2][1] != first  # sent at 1.6: rebound
        assert client.local_address == seen[2][1]
        # A socket bound after the rebinding time is not moved by it.
        late = network.socket("client")
        address = late.local_address
        await late.send_batch([(b"y", ("server", 1))])
        assert late.local_address == address
        # Nor is a server on another host.
        assert server.local_address == ("server", 1)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert network.rebinds == ((1.0, "client"),)
    assert "rebinds=[(1.0, 'client')]" in network.replay_code()


@pytest.mark.parametrize(
    ("rebinds", "error", "message"),
    [
        ([(0, "a")], ValueError, "greater than 0"),
        ([(float("inf"), "a")], ValueError, "finite"),
        ([("1", "a")], TypeError, "must be a number"),
        ([(1.0, 2)], TypeError, "host must be a str"),
        ([1.0], TypeError, r"\(seconds, host\) pair"),
        ("a", TypeError, "list of"),
    ],
)
def test_bad_rebinds_say_what_to_pass(rebinds: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        MemoryNetwork(rebinds=rebinds)


def test_loss_schedules_rates() -> None:
    blackout = Blackout(start=1.0, duration=2.0)
    assert [blackout(t) for t in (0.5, 1.0, 2.9, 3.0)] == [0.0, 1.0, 1.0, 0.0]
    bursts = LossBursts(windows=[(3.0, 1.0), (1.0, 0.5)], rate=0.5, base=0.1)
    assert bursts.windows == ((1.0, 0.5), (3.0, 1.0))
    assert [bursts(t) for t in (0.0, 1.2, 2.0, 3.5)] == [0.1, 0.5, 0.1, 0.5]
    ramp = LossRamp(start=1.0, duration=2.0, start_rate=0.2, end_rate=0.6)
    assert [ramp(t) for t in (0.0, 1.0, 2.0, 3.0, 9.0)] == pytest.approx(
        [0.2, 0.2, 0.4, 0.6, 0.6]
    )
    assert LossRamp(start=1.0, end_rate=1.0)(1.0) == 1.0  # a step
    periodic = PeriodicLoss(period=1.0, duration=0.25, rate=0.9, offset=0.5)
    assert [periodic(t) for t in (0.1, 0.6, 0.8, 1.6, 1.8)] == [
        0.0,
        0.9,
        0.0,
        0.9,
        0.0,
    ]
    with pytest.raises(ValueError, match="at most its period"):
        PeriodicLoss(period=1.0, duration=2.0)
    with pytest.raises(ValueError, match=r"Blackout\.start must be finite"):
        Blackout(start=-1.0, duration=1.0)
    with pytest.raises(ValueError, match=r"LossBursts\.rate must be between 0 and 1"):
        LossBursts(windows=[], rate=2.0)
    with pytest.raises(TypeError, match=r"\(start, duration\) pair"):
        LossBursts(windows=[1.0])


# -- strategies ----------------------------------------------------------------


def minimal(strategy: st.SearchStrategy[Any], condition: Any = lambda _: True) -> Any:
    return hypothesis.find(
        strategy,
        condition,
        # Without the explain phase, which reruns the example many times.
        settings=hypothesis.settings(
            database=None,
            max_examples=2000,
            phases=[hypothesis.Phase.generate, hypothesis.Phase.shrink],
        ),
        random=__import__("random").Random(0),
    )


PERFECT = LinkConditions()


def test_the_minimal_network_is_perfect() -> None:
    assert minimal(link_conditions()) == PERFECT
    assert minimal(networks()).replay_code() == "MemoryNetwork(seed=0)"
    assert minimal(networks(rebinding=True)).replay_code() == "MemoryNetwork(seed=0)"
    assert minimal(networks(links={("a", "b"): link_conditions()})).replay_code() == (
        "MemoryNetwork(seed=0, links={('a', 'b'): LinkConditions()})"
    )


@pytest.mark.parametrize(
    ("field", "impaired"),
    [
        ("delay", lambda c: c.delay > 0),
        ("jitter", lambda c: c.jitter > 0),
        ("loss", lambda c: c.loss > 0),
        ("duplicate", lambda c: c.duplicate > 0),
        ("corrupt", lambda c: c.corrupt > 0),
        ("queue_limit", lambda c: c.queue_limit < PERFECT.queue_limit),
        ("bandwidth", lambda c: c.bandwidth is not None),
    ],
)
def test_one_impairment_shrinks_alone(field: str, impaired: Any) -> None:
    conditions = minimal(link_conditions(), impaired)
    assert attrs.evolve(conditions, **{field: getattr(PERFECT, field)}) == PERFECT
    # ... and to its mildest value: the loosest limit, a small rate.
    if field == "queue_limit":
        assert conditions.queue_limit == PERFECT.queue_limit - 1
    elif field == "bandwidth":
        assert conditions.bandwidth > 0.99e9
    else:
        assert getattr(conditions, field) <= 0.125


def test_a_failure_shrinks_to_the_impairments_it_needs() -> None:
    conditions = minimal(link_conditions(), lambda c: c.loss > 0.1 and c.delay > 0.05)
    assert attrs.evolve(conditions, loss=0.0, delay=0.0) == PERFECT
    network = minimal(networks(rebinding=True), lambda n: len(n.rebinds) >= 2)
    assert network.default_conditions == PERFECT
    assert network.seed == 0
    assert len(network.rebinds) == 2


def test_loss_schedules_shrink_to_losing_nothing() -> None:
    nothing = minimal(loss_schedules())
    assert all(nothing(t / 10) == 0.0 for t in range(100))
    # The mildest schedule that loses something at 1 s loses nothing else.
    schedule = minimal(loss_schedules(), lambda s: s(1.0) > 0)
    assert schedule(1.0) > 0
    for kind, cls in [
        ("bursts", LossBursts),
        ("ramp", LossRamp),
        ("periodic", PeriodicLoss),
    ]:
        assert isinstance(minimal(loss_schedules(kinds=[kind])), cls)
    conditions = minimal(link_conditions(loss=st.just(0.0) | loss_schedules()))
    assert conditions == PERFECT
    burst = minimal(loss_schedules(kinds=["bursts"], bursts=(1, 3)))
    assert len(burst.windows) == 1


@hypothesis.settings(max_examples=30, deadline=None, database=None)
@hypothesis.given(
    conditions=link_conditions(
        delay=0.01,
        jitter=None,
        loss=loss_schedules(rate=(0.5, 1.0)),
        duplicate=(0.0, 0.5),
        corrupt=0,
        queue_limit=(2, 8),
        bandwidth=(1_000.0, 5_000.0),
    )
)
def test_ranges_are_kept(conditions: LinkConditions) -> None:
    assert conditions.delay == 0.01
    assert conditions.jitter == 0.0
    assert conditions.corrupt == 0.0
    assert callable(conditions.loss)
    assert 0.0 <= conditions.duplicate <= 0.5
    assert 2 <= conditions.queue_limit <= 8
    assert conditions.bandwidth is not None
    assert 1_000.0 <= conditions.bandwidth <= 5_000.0


@hypothesis.settings(max_examples=30, deadline=None, database=None)
@hypothesis.given(
    network=networks(
        conditions=LinkConditions(delay=0.1),
        seed=st.integers(5, 9),
        rebinding=True,
        rebind_hosts=["x", "y"],
        rebind_times=(1.0, 2.0),
        max_rebinds=2,
    )
)
def test_drawn_networks_keep_their_ranges(network: MemoryNetwork) -> None:
    assert network.default_conditions == LinkConditions(delay=0.1)
    assert 5 <= network.seed <= 9
    assert len(network.rebinds) <= 2
    assert all(1.0 <= t <= 2.0 and host in "xy" for t, host in network.rebinds)
    # A drawn network replays as itself.
    assert replay(network).replay_code() == network.replay_code()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: link_conditions(delay=(0.2, 0.1)), ValueError, "low <= high"),
        (lambda: link_conditions(loss=(0.0, 2.0)), ValueError, "between 0 and 1"),
        (lambda: link_conditions(loss="high"), TypeError, r"\(low, high\) range"),
        (lambda: link_conditions(jitter=(0, None)), ValueError, "needs a high end"),
        (lambda: link_conditions(queue_limit=0), ValueError, "at least 1"),
        (lambda: link_conditions(queue_limit=(2.5, 8)), ValueError, "whole numbers"),
        (lambda: link_conditions(bandwidth=(0, None)), ValueError, "above 0"),
        (lambda: link_conditions(bandwidth=(1, float("inf"))), ValueError, "None"),
        (lambda: loss_schedules(kinds=["storm"]), ValueError, "choose among"),
        (lambda: loss_schedules(kinds="blackout"), TypeError, "sequence"),
        (lambda: loss_schedules(period=(0, 1)), ValueError, "above 0"),
        (lambda: networks(conditions=0.1), TypeError, "link_conditions()"),
        (lambda: networks(seed="x"), TypeError, "seed must be an int"),
        (lambda: networks(rebinding=1), TypeError, "True or False"),
        (lambda: networks(rebinding=True, max_rebinds=0), ValueError, "at least 1"),
        (lambda: networks(rebinding=True, rebind_times=(0, 0)), ValueError, "high > 0"),
        (lambda: networks(rebinding=True, rebind_hosts="h"), TypeError, "sequence"),
        (lambda: networks(links={"a": link_conditions()}), TypeError, "keyed by"),
    ],
)
def test_bad_arguments_say_what_to_pass(call: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call()


def test_a_failing_example_prints_the_replay_code() -> None:
    @hypothesis.settings(
        max_examples=50,
        database=None,
        deadline=None,
        derandomize=True,
        phases=[hypothesis.Phase.generate, hypothesis.Phase.shrink],
    )
    @hypothesis.given(network=networks(rebinding=True))
    def needs_a_lossless_network(network: MemoryNetwork) -> None:
        assert not network.default_conditions.loss

    with pytest.raises(AssertionError) as caught:
        needs_a_lossless_network()
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "network=MemoryNetwork(seed=0, conditions=LinkConditions(loss=" in notes
    # The shrunk example has nothing but the loss.
    code = re.search(r"network=(MemoryNetwork\(.*\))", notes)
    assert code is not None
    network = eval(code.group(1), dict(NAMES))
    assert attrs.evolve(network.default_conditions, loss=0.0) == PERFECT
    assert network.rebinds == ()


# -- @given on pytest-trio tests with autojump_clock ---------------------------


async def echo(connection: trioquic.QuicConnection) -> None:
    stream = await connection.accept_stream()
    assert isinstance(stream, trioquic.QuicStream)
    async for data in stream:
        await stream.send_all(data)
    await stream.send_eof()
    # Returning would close the connection before the client has it all.
    await connection.wait_closed()


#: pytest-trio runs each example in a trio run of its own, all with the one
#: MockClock the autojump_clock fixture made for the test: hence the
#: suppressed health check. The clock's time carries on from example to
#: example; the network's schedules count from its own start.
examples_seen: list[tuple[trio.testing.MockClock, float, float]] = []


@hypothesis.settings(
    max_examples=max(8, int(os.environ.get("TRIOQUIC_PROPERTY_MIN_EXAMPLES") or 0)),
    deadline=None,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(
    network=networks(
        conditions=link_conditions(delay=(0.0, 0.1), loss=(0.0, 0.1), corrupt=None)
    )
)
async def test_echo_over_drawn_networks(
    autojump_clock: trio.testing.MockClock, network: MemoryNetwork
) -> None:
    start = trio.current_time()
    message = b"ping " * 2000
    received = b""
    with trio.fail_after(120):
        async with (
            open_memory_server(echo, network=network) as server,
            server.connect() as connection,
        ):
            stream = await connection.open_stream()
            await stream.send_all(message)
            await stream.send_eof()
            async for data in stream:
                received += data
    assert received == message
    assert network.statistics().sent > 0
    examples_seen.append((autojump_clock, start, trio.current_time()))
    # Each example is a new trio run on the same clock, whose time carries on.
    assert all(clock is autojump_clock for clock, _, _ in examples_seen)
    for (_, _, end), (_, next_start, _) in itertools.pairwise(examples_seen):
        assert next_start >= end
