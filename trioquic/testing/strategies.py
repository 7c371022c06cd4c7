"""Hypothesis strategies for networks that misbehave: draw the delay, loss,
duplication, corruption, reordering, queue bound, bandwidth, loss schedule and
NAT rebindings of a :class:`~trioquic.testing.MemoryNetwork`, and let
hypothesis find the network that breaks a property.

It needs `hypothesis <https://hypothesis.readthedocs.io>`_ (``pip install
hypothesis``). Every strategy shrinks towards a perfect network: each
impairment towards off (no loss, no delay, no duplication, no queue or
bandwidth limit, no rebinding), so a failure comes out as the mildest
misbehaviour that still breaks the property, printed as a line of Python
that rebuilds the network (:meth:`~trioquic.testing.MemoryNetwork.replay_code`).

A property test over a real connection, with pytest-trio (``trio_mode =
true``) and its ``autojump_clock`` fixture::

    import hypothesis
    from trioquic.testing import open_memory_server
    from trioquic.testing.strategies import link_conditions, networks

    @hypothesis.settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
    )
    @hypothesis.given(network=networks(conditions=link_conditions(loss=(0, 0.3))))
    async def test_echo(autojump_clock, network):
        async with open_memory_server(echo, network=network) as server:
            async with server.connect() as connection:
                stream = await connection.open_stream()
                await stream.send_all(b"ping")
                assert await stream.receive_some() == b"ping"

How that runs: pytest-trio runs each example in a trio run of its own
(hypothesis calls the test once per example, pytest-trio wraps each call in
``trio.run``), with the clock pytest made for the test: ``autojump_clock``
is a function-scoped fixture, so one :class:`trio.testing.MockClock` serves
every example, and its time goes on from where the previous example left it
(an example starts at a later trio time than the one before; the network
counts its time from when it starts being used, so its loss schedules and
rebindings are unaffected). That shared fixture is why the test must suppress
``HealthCheck.function_scoped_fixture``: sharing the clock is harmless, as
nothing else in it survives an example. ``deadline=None`` because the
wall-clock time of an example depends on how much virtual time it
simulates. The network is drawn before the example's trio run starts; each
example gets a new one (a network must not be shared between trio runs).

pytest-trio makes trio's scheduler deterministic under hypothesis, and the
network is deterministic for a given workload, but a QUIC connection has
randomness of its own (keys, connection IDs, hence packet contents and
timing), so a failure over a real connection may come back only some of the
times its network is replayed: hypothesis then reports it as flaky, still
printing the network. Replay it a few times (or with more examples) to see
how often it fails.

Ranges are given the same way to every strategy here: a keyword takes

* a ``(low, high)`` tuple: a value drawn from that range, shrinking towards
  the mild end (``low`` for delays and rates; ``high`` for the limits
  ``queue_limit`` and ``bandwidth``, where ``high=None`` means "up to no
  limit at all");
* a single number: always that value;
* ``None`` (or ``0`` for delays and rates): the impairment is off;
* a hypothesis strategy: values drawn from it, for anything else (such as
  ``loss=loss_schedules()``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - hypothesis is a test dependency
    raise ImportError(
        "trioquic.testing.strategies needs hypothesis: "
        "pip install 'trioquic[testing]' (or hypothesis)"
    ) from exc

from ._network import (
    Blackout,
    LinkConditions,
    LossBursts,
    LossRamp,
    MemoryNetwork,
    PeriodicLoss,
)

__all__ = ["link_conditions", "loss_schedules", "networks"]

#: A keyword's range: ``(low, high)``, one value, ``None`` (off) or a strategy.
Range: TypeAlias = tuple[float, float | None] | float | st.SearchStrategy[Any] | None

#: The queue bound of :class:`~trioquic.testing.LinkConditions` by default:
#: as good as none for a test's traffic.
_NO_QUEUE_LIMIT: int = LinkConditions().queue_limit
#: The largest bandwidth drawn when a range goes up to ``None`` (no limit).
_BANDWIDTH_CAP = 1e9
#: How finely a limit's range is divided between ``low`` and ``high``.
_STEPS = 2**16
#: The kinds of :func:`loss_schedules`, mildest first.
_SCHEDULE_KINDS = ("blackout", "bursts", "ramp", "periodic")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _describe(name: str, unit: str, example: str) -> str:
    return (
        f"{name} must be a (low, high) range of {unit} such as {example}, one "
        "value, None for off, or a hypothesis strategy"
    )


def _mild_low(
    name: str,
    value: Any,
    *,
    unit: str,
    example: str,
    upper: float,
    integer: bool = False,
    positive: bool = False,
) -> st.SearchStrategy[Any]:
    """A strategy for an impairment that is off at 0 (a delay, a rate, a
    count), shrinking towards ``low``; ``positive`` for a quantity that
    cannot be 0 (a period)."""
    if isinstance(value, st.SearchStrategy):
        return value
    if value is None and not positive:
        return st.just(0)
    if _is_number(value):
        if integer and not isinstance(value, int):
            raise TypeError(f"{name} must be a whole number, got {value!r}")
        _check_bounds(name, value, 0, upper, unit)
        if positive and value == 0:
            raise ValueError(f"{name} must be greater than 0, got {value!r}")
        return st.just(value)
    low, high = _pair(name, value, unit=unit, example=example)
    if high is None:
        raise ValueError(f"{name}'s range needs a high end, got {value!r}")
    if integer and not (isinstance(low, int) and isinstance(high, int)):
        raise TypeError(f"{name}'s range must be whole numbers, got {value!r}")
    _check_bounds(name, low, 0, upper, unit)
    _check_bounds(name, high, 0, upper, unit)
    _check_order(name, low, high)
    if positive and low == 0:
        raise ValueError(f"{name}'s range must start above 0, got {value!r}")
    if integer:
        return st.integers(int(low), int(high))
    return st.floats(float(low), float(high))


def _seconds(
    name: str, value: Any, example: str, *, positive: bool = False
) -> st.SearchStrategy[Any]:
    return _mild_low(
        name, value, unit="seconds", example=example, upper=math.inf, positive=positive
    )


def _rate(name: str, value: Any, example: str) -> st.SearchStrategy[Any]:
    return _mild_low(name, value, unit="a probability", example=example, upper=1.0)


def _pair(name: str, value: Any, *, unit: str, example: str) -> tuple[Any, Any]:
    if not (isinstance(value, tuple) and len(value) == 2):
        raise TypeError(f"{_describe(name, unit, example)}; got {value!r}")
    low, high = value
    if not _is_number(low) or not (high is None or _is_number(high)):
        raise TypeError(f"{_describe(name, unit, example)}; got {value!r}")
    return low, high


def _check_bounds(name: str, value: float, low: float, high: float, unit: str) -> None:
    if not low <= value <= high or math.isnan(value):
        raise ValueError(
            f"{name} must be {unit} between {low} and {high}, got {value!r}"
        )


def _check_order(name: str, low: float, high: float) -> None:
    if low > high:
        raise ValueError(
            f"{name}'s range must be (low, high) with low <= high, got "
            f"({low!r}, {high!r})"
        )


def _towards(low: float, high: float) -> st.SearchStrategy[float]:
    """Floats in ``[low, high]`` (``low > 0``), spread evenly on a log scale
    (a limit of 10 KB/s is as likely as one of 10 MB/s) and shrinking towards
    ``high``."""
    # Integer steps rather than a float fraction: hypothesis shrinks an
    # integer steadily towards 0 (here: ``high``), but a float towards simple
    # values such as 1.0 (here: ``low``, the harshest).
    return st.integers(0, _STEPS).map(
        lambda step: min(high, max(low, high * (low / high) ** (step / _STEPS)))
    )


def _bandwidth(value: Any) -> st.SearchStrategy[float | None]:
    name, unit, example = "bandwidth", "bytes per second", "(10_000, None)"
    if isinstance(value, st.SearchStrategy):
        return value
    if value is None:
        return st.none()
    if _is_number(value):
        if not 0 < value < math.inf:
            raise ValueError(f"bandwidth must be greater than 0, got {value!r}")
        return st.just(float(value))
    low, high = _pair(name, value, unit=unit, example=example)
    if not 0 < low < math.inf:
        raise ValueError(f"bandwidth's range must start above 0, got {value!r}")
    if high is None:
        return st.none() | _towards(float(low), max(float(low), _BANDWIDTH_CAP))
    _check_order(name, low, high)
    if high == math.inf:
        raise ValueError("for no bandwidth limit, end the range with None, not inf")
    return _towards(float(low), float(high))


def _queue_limit(value: Any) -> st.SearchStrategy[int]:
    name, unit, example = "queue_limit", "datagrams", "(4, None)"
    if isinstance(value, st.SearchStrategy):
        return value
    if value is None:
        return st.just(_NO_QUEUE_LIMIT)
    if _is_number(value):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"queue_limit must be an int of at least 1, got {value!r}")
        return st.just(value)
    low, high = _pair(name, value, unit=unit, example=example)
    if high is None:
        high = max(low, _NO_QUEUE_LIMIT)
    if not (isinstance(low, int) and isinstance(high, int)) or low < 1:
        raise ValueError(
            f"queue_limit's range must be whole numbers of at least 1, got {value!r}"
        )
    _check_order(name, low, high)
    return _towards(low, high).map(math.floor)


def link_conditions(
    *,
    delay: Range = (0.0, 0.2),
    jitter: Range = (0.0, 0.05),
    loss: Range = (0.0, 0.2),
    duplicate: Range = (0.0, 0.1),
    corrupt: Range = (0.0, 0.05),
    queue_limit: Range = (4, None),
    bandwidth: Range = (10_000.0, None),
) -> st.SearchStrategy[LinkConditions]:
    """Draw :class:`~trioquic.testing.LinkConditions`; each keyword is the
    range of that field (see the module's description: ``(low, high)``, one
    value, ``None`` for off, or a strategy).

    * ``delay`` and ``jitter`` in seconds; ``jitter`` is what reorders
      datagrams (two sent less than ``jitter`` apart may arrive swapped), so
      it is the knob for reordering: ``jitter=None`` keeps order.
    * ``loss``, ``duplicate``, ``corrupt``: probabilities. ``loss`` also
      takes a strategy of loss schedules: ``loss=loss_schedules()`` (always a
      schedule) or ``loss=st.floats(0, 0.1) | loss_schedules()`` (either).
    * ``queue_limit`` in datagrams and ``bandwidth`` in bytes per second
      are limits: their ranges shrink towards ``high``, and ``high=None``
      includes no limit (``LinkConditions``'s default queue bound of 1024,
      no bandwidth limit), which is where the defaults shrink to.

    Everything shrinks towards ``LinkConditions()``, the perfect link (for
    ranges that include off), so the smallest failing example has only the
    impairments the failure needs.
    """
    return st.builds(
        LinkConditions,
        delay=_seconds("delay", delay, "(0.0, 0.2)"),
        jitter=_seconds("jitter", jitter, "(0.0, 0.05)"),
        loss=_rate("loss", loss, "(0.0, 0.2)"),
        duplicate=_rate("duplicate", duplicate, "(0.0, 0.1)"),
        corrupt=_rate("corrupt", corrupt, "(0.0, 0.05)"),
        queue_limit=_queue_limit(queue_limit),
        bandwidth=_bandwidth(bandwidth),
    )


def loss_schedules(
    *,
    kinds: Sequence[str] = _SCHEDULE_KINDS,
    start: Range = (0.0, 5.0),
    duration: Range = (0.0, 2.0),
    rate: Range = (0.0, 1.0),
    base: Range = (0.0, 0.05),
    bursts: Range = (0, 4),
    period: Range = (0.1, 2.0),
) -> st.SearchStrategy[Blackout | LossBursts | LossRamp | PeriodicLoss]:
    """Draw a loss schedule that changes with time, as a printable value for
    :attr:`LinkConditions.loss <trioquic.testing.LinkConditions.loss>`:

    * ``"bursts"``: :class:`~trioquic.testing.LossBursts`, ``bursts``
      windows each starting within ``start`` and lasting ``duration``, losing
      at ``rate`` inside and ``base`` outside;
    * ``"blackout"``: :class:`~trioquic.testing.Blackout`, everything lost
      from ``start`` for ``duration``;
    * ``"ramp"``: :class:`~trioquic.testing.LossRamp`, from ``base`` at
      ``start`` to ``rate`` after ``duration``;
    * ``"periodic"``: :class:`~trioquic.testing.PeriodicLoss`, ``rate`` for
      ``duration`` (at most the period) of every ``period``, ``base`` for the
      rest.

    Times are seconds since the network's clock started. ``kinds`` picks
    which of them; each other keyword is a range as the module's description
    says (``bursts`` a range of counts). A schedule shrinks towards losing
    nothing (zero durations and rates, no bursts), and towards the simplest
    kind: a blackout of no duration.
    """
    if isinstance(kinds, str) or not isinstance(kinds, Sequence) or not kinds:
        raise TypeError(
            f"kinds must be a non-empty sequence of {', '.join(_SCHEDULE_KINDS)}; "
            f"got {kinds!r}"
        )
    unknown = [kind for kind in kinds if kind not in _SCHEDULE_KINDS]
    if unknown:
        raise ValueError(
            f"unknown loss schedule kinds {unknown!r}: choose among "
            f"{', '.join(_SCHEDULE_KINDS)}"
        )
    starts = _seconds("start", start, "(0.0, 5.0)")
    durations = _seconds("duration", duration, "(0.0, 2.0)")
    rates_in = _rate("rate", rate, "(0.0, 1.0)")
    bases = _rate("base", base, "(0.0, 0.05)")
    windows = st.tuples(starts, durations)
    if isinstance(bursts, st.SearchStrategy):
        burst_lists = bursts.flatmap(
            lambda count: st.lists(windows, min_size=count, max_size=count)
        )
    else:
        counts = bursts if isinstance(bursts, tuple) else (bursts or 0, bursts or 0)
        _mild_low(
            "bursts", counts, example="(0, 4)", unit="bursts", upper=1000, integer=True
        )
        burst_lists = st.lists(
            windows, min_size=int(counts[0]), max_size=int(counts[1] or 0)
        )
    periods = _seconds("period", period, "(0.1, 2.0)", positive=True)

    builders: dict[str, st.SearchStrategy[Any]] = {
        "bursts": st.builds(LossBursts, windows=burst_lists, rate=rates_in, base=bases),
        "blackout": st.builds(Blackout, start=starts, duration=durations),
        "ramp": st.builds(
            LossRamp,
            start=starts,
            duration=durations,
            start_rate=bases,
            end_rate=rates_in,
        ),
        "periodic": st.builds(
            _periodic,
            period=periods,
            duration=durations,
            rate=rates_in,
            base=bases,
            offset=starts,
        ),
    }
    return st.one_of(*(builders[kind] for kind in dict.fromkeys(kinds)))


def _periodic(
    *, period: float, duration: float, rate: float, base: float, offset: float
) -> PeriodicLoss:
    return PeriodicLoss(
        period=period,
        duration=min(duration, period),
        rate=rate,
        base=base,
        offset=offset,
    )


def networks(
    *,
    conditions: st.SearchStrategy[LinkConditions] | LinkConditions | None = None,
    links: Mapping[tuple[str, str], st.SearchStrategy[LinkConditions]] | None = None,
    seed: st.SearchStrategy[int] | int | None = None,
    rebinding: bool = False,
    rebind_hosts: Sequence[str] = ("10.0.0.2",),
    rebind_times: Range = (0.0, 5.0),
    max_rebinds: int = 3,
) -> st.SearchStrategy[MemoryNetwork]:
    """Draw a seeded :class:`~trioquic.testing.MemoryNetwork`.

    * ``conditions``: the default conditions of its links, a strategy such
      as :func:`link_conditions` (the default) or a fixed
      :class:`~trioquic.testing.LinkConditions`.
    * ``links``: conditions for single directions, ``{(source host,
      destination host): strategy}``, for an asymmetric network (the
      network's ``links`` argument): e.g. ``{("10.0.0.1", "10.0.0.2"):
      link_conditions(loss=(0.1, 0.5))}`` for a lossy way back to the client.
    * ``seed``: the network's seed, drawn from ``0..2**32-1`` by default.
    * ``rebinding=True`` adds up to ``max_rebinds`` scheduled NAT
      rebindings of the hosts in ``rebind_hosts`` (by default the client
      host of :meth:`MemoryServer.connect
      <trioquic.testing.MemoryServer.connect>`), at times drawn from
      ``rebind_times`` (seconds since the network's clock started, above 0):
      the network's ``rebinds`` argument, applied as the host next sends.

    It shrinks towards a perfect network: seed 0, ``LinkConditions()``, no
    per-link conditions, no rebinding. A drawn network prints (in
    hypothesis's report of a failing example) as its
    :meth:`~trioquic.testing.MemoryNetwork.replay_code`. Each example gets
    a new network; use it within the example's trio run.
    """
    if conditions is None:
        conditions = link_conditions()
    if isinstance(conditions, LinkConditions):
        conditions = st.just(conditions)
    if not isinstance(conditions, st.SearchStrategy):
        raise TypeError(
            "conditions must be a strategy of LinkConditions (such as "
            f"link_conditions()) or a LinkConditions, got {type(conditions).__name__}"
        )
    if seed is None:
        seed = st.integers(0, 2**32 - 1)
    elif isinstance(seed, int) and not isinstance(seed, bool):
        seed = st.just(seed)
    elif not isinstance(seed, st.SearchStrategy):
        raise TypeError(
            f"seed must be an int or a strategy of ints, got {type(seed).__name__}"
        )
    link_strategies: dict[tuple[str, str], st.SearchStrategy[LinkConditions]] = {}
    for key, strategy in (links or {}).items():
        if not (
            isinstance(key, tuple)
            and len(key) == 2
            and all(isinstance(host, str) for host in key)
        ):
            raise TypeError(
                f"links must be keyed by (source host, destination host), got {key!r}"
            )
        if isinstance(strategy, LinkConditions):
            strategy = st.just(strategy)
        if not isinstance(strategy, st.SearchStrategy):
            raise TypeError(
                f"links[{key!r}] must be a strategy of LinkConditions, got "
                f"{type(strategy).__name__}"
            )
        link_strategies[key] = strategy
    if not isinstance(rebinding, bool):
        raise TypeError(f"rebinding must be True or False, got {rebinding!r}")
    rebinds: st.SearchStrategy[list[tuple[float, str]]] = st.just([])
    if rebinding:
        rebinds = _rebinds(rebind_hosts, rebind_times, max_rebinds)
    return st.builds(
        _network,
        seed=seed,
        conditions=conditions,
        links=st.fixed_dictionaries(link_strategies),
        rebinds=rebinds,
    )


def _rebinds(
    hosts: Sequence[str], times: Range, max_rebinds: int
) -> st.SearchStrategy[list[tuple[float, str]]]:
    if (
        isinstance(hosts, str)
        or not isinstance(hosts, Sequence)
        or not hosts
        or not all(isinstance(host, str) for host in hosts)
    ):
        raise TypeError(
            f"rebind_hosts must be a non-empty sequence of host names, got {hosts!r}"
        )
    if isinstance(max_rebinds, bool) or not isinstance(max_rebinds, int):
        raise TypeError(f"max_rebinds must be an int, got {max_rebinds!r}")
    if max_rebinds < 1:
        raise ValueError(
            f"max_rebinds must be at least 1 (or pass rebinding=False), got "
            f"{max_rebinds}"
        )
    when: st.SearchStrategy[float]
    if isinstance(times, st.SearchStrategy):
        when = times
    else:
        pair = (times, times) if _is_number(times) else times
        low, high = _pair("rebind_times", pair, unit="seconds", example="(0.0, 5.0)")
        if high is None or not 0 <= low <= high < math.inf or high == 0:
            raise ValueError(
                "rebind_times must be a finite (low, high) range of seconds "
                f"with 0 <= low <= high and high > 0, got {times!r}"
            )
        when = st.floats(float(low), float(high), exclude_min=low == 0)
    return st.lists(st.tuples(when, st.sampled_from(list(hosts))), max_size=max_rebinds)


def _network(
    *,
    seed: int,
    conditions: LinkConditions,
    links: dict[tuple[str, str], LinkConditions],
    rebinds: list[tuple[float, str]],
) -> MemoryNetwork:
    return MemoryNetwork(seed=seed, conditions=conditions, links=links, rebinds=rebinds)
