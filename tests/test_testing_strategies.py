"""trioquic.testing's network descriptions for property tests: loss schedules
as printable values, ``MemoryNetwork.replay_code()``, scheduled NAT
rebindings, and the hypothesis strategies of ``trioquic.testing.strategies``."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import trioquic.testing
from trioquic.testing import (
    Blackout,
    LinkConditions,
    LossBursts,
    LossRamp,
    MemoryNetwork,
    PeriodicLoss,
)

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
