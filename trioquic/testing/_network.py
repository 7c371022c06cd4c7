"""An in-memory UDP network driven by trio's clock.

Each :class:`MemorySocket` keeps a heap of the datagrams on their way to it,
ordered by arrival time. Nothing runs in the background: ``send_batch``
decides each datagram's fate (lost, duplicated, corrupted, dropped by a full
queue) and its arrival time at once, and ``receive_batch`` sleeps until the
earliest arrival. So the network owns no tasks, and under
``trio.testing.MockClock(autojump_threshold=0)`` a test with seconds of
simulated delay runs in milliseconds.
"""

from __future__ import annotations

import bisect
import errno
import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import attrs
import trio

from .._udp import RECEIVE_BATCH, Address, Datagram

#: How a loss rate is given: a constant, a function of the time since the
#: network was created (seconds, trio time), or phases ``(until, rate)``.
LossSchedule: TypeAlias = (
    float | Callable[[float], float] | Sequence[tuple[float, float]]
)

#: The first port handed out when :meth:`MemoryNetwork.socket` is not given one.
EPHEMERAL_PORT_START = 49152


def _check_rate(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return float(value)


def _rate(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    _check_rate(f"LinkConditions.{attribute.name}", value)


def _seconds(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"LinkConditions.{attribute.name} must be a number of seconds, "
            f"got {type(value).__name__}"
        )
    if not 0.0 <= value < math.inf:
        raise ValueError(
            f"LinkConditions.{attribute.name} must be finite and at least 0, "
            f"got {value!r}"
        )


def _optional_positive(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"LinkConditions.{attribute.name} must be a number or None, "
            f"got {type(value).__name__}"
        )
    if not value > 0:
        raise ValueError(
            f"LinkConditions.{attribute.name} must be greater than 0, got {value!r}"
        )


def _queue_limit(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"LinkConditions.queue_limit must be an int, got {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(f"LinkConditions.queue_limit must be at least 1, got {value}")


def _loss(value: Any) -> LossSchedule:
    if callable(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _check_rate("LinkConditions.loss", value)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(
            "LinkConditions.loss must be a rate, a function of time, or a "
            f"sequence of (until, rate) phases; got {type(value).__name__}"
        )
    phases: list[tuple[float, float]] = []
    previous = -math.inf
    for phase in value:
        until, rate = phase
        if isinstance(until, bool) or not isinstance(until, int | float):
            raise TypeError(f"a loss phase ends at a number of seconds, got {until!r}")
        if until <= previous:
            raise ValueError("loss phases must be in increasing order of end time")
        previous = until
        phases.append((float(until), _check_rate("a loss phase's rate", rate)))
    return tuple(phases)


def _finite(name: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not (0.0 < value < math.inf if positive else 0.0 <= value < math.inf):
        bound = "greater than 0" if positive else "at least 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return float(value)


def _field_seconds(
    *, positive: bool = False
) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        _finite(f"{type(instance).__name__}.{attribute.name}", value, positive=positive)

    return check


def _field_rate(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    _check_rate(f"{type(instance).__name__}.{attribute.name}", value)


def _windows(value: Any) -> tuple[tuple[float, float], ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(
            "LossBursts.windows must be a sequence of (start, duration) pairs, "
            f"got {type(value).__name__}"
        )
    windows = []
    for window in value:
        if not (isinstance(window, tuple | list) and len(window) == 2):
            raise TypeError(
                "a loss burst is a (start, duration) pair of seconds, such as "
                f"(1.0, 0.5); got {window!r}"
            )
        start, duration = window
        windows.append(
            (
                _finite("a loss burst's start", start),
                _finite("a loss burst's duration", duration),
            )
        )
    return tuple(sorted(windows))


class _LossFunction:
    """A loss schedule that is a function of time and prints as the Python
    expression that rebuilds it (so :meth:`MemoryNetwork.replay_code` can
    print it)."""

    __slots__ = ()

    def __call__(self, elapsed: float) -> float:
        raise NotImplementedError


@attrs.frozen(kw_only=True)
class Blackout(_LossFunction):
    """A loss schedule that loses everything for ``duration`` seconds from
    ``start`` (seconds since the network's clock started), and nothing
    otherwise: a link that goes down and comes back. Pass it as
    :attr:`LinkConditions.loss`::

        LinkConditions(loss=Blackout(start=1.0, duration=3.0))
    """

    #: When the link goes down.
    start: float = attrs.field(validator=_field_seconds())
    #: How long it stays down.
    duration: float = attrs.field(validator=_field_seconds())

    def __call__(self, elapsed: float) -> float:
        """The loss rate ``elapsed`` seconds after the network started."""
        return 1.0 if self.start <= elapsed < self.start + self.duration else 0.0


@attrs.frozen(kw_only=True)
class LossBursts(_LossFunction):
    """A loss schedule with bursts of loss: ``rate`` within each window
    ``(start, duration)`` (seconds since the network's clock started),
    ``base`` outside them::

        LinkConditions(loss=LossBursts(windows=[(0.5, 0.2), (2.0, 0.1)], rate=0.8))
    """

    #: The bursts, ``(start, duration)`` pairs of seconds (kept sorted).
    windows: tuple[tuple[float, float], ...] = attrs.field(converter=_windows)
    #: The loss rate within a burst.
    rate: float = attrs.field(default=1.0, validator=_field_rate)
    #: The loss rate outside the bursts.
    base: float = attrs.field(default=0.0, validator=_field_rate)

    def __call__(self, elapsed: float) -> float:
        """The loss rate ``elapsed`` seconds after the network started."""
        for start, duration in self.windows:
            if start <= elapsed < start + duration:
                return self.rate
        return self.base


@attrs.frozen(kw_only=True)
class LossRamp(_LossFunction):
    """A loss schedule that changes linearly from ``start_rate`` at
    ``start`` to ``end_rate`` at ``start + duration`` (seconds since the
    network's clock started), keeping ``start_rate`` before and ``end_rate``
    after: a link that degrades (or recovers)::

        LinkConditions(loss=LossRamp(start=1.0, duration=4.0, end_rate=0.5))
    """

    #: When the rate starts to change.
    start: float = attrs.field(default=0.0, validator=_field_seconds())
    #: How long it takes to reach ``end_rate`` (0: a step).
    duration: float = attrs.field(default=0.0, validator=_field_seconds())
    #: The rate until ``start``.
    start_rate: float = attrs.field(default=0.0, validator=_field_rate)
    #: The rate from ``start + duration`` on.
    end_rate: float = attrs.field(default=0.0, validator=_field_rate)

    def __call__(self, elapsed: float) -> float:
        """The loss rate ``elapsed`` seconds after the network started."""
        if elapsed < self.start:
            return self.start_rate
        if elapsed >= self.start + self.duration:
            return self.end_rate
        fraction = (elapsed - self.start) / self.duration
        rate = self.start_rate + (self.end_rate - self.start_rate) * fraction
        return min(1.0, max(0.0, rate))


@attrs.frozen(kw_only=True)
class PeriodicLoss(_LossFunction):
    """A loss schedule that repeats every ``period`` seconds: ``rate`` for
    the first ``duration`` seconds of each period (counted from ``offset``
    seconds after the network's clock started), ``base`` for the rest, like
    interference that comes and goes::

        LinkConditions(loss=PeriodicLoss(period=1.0, duration=0.1, rate=1.0))
    """

    #: The length of a cycle.
    period: float = attrs.field(validator=_field_seconds(positive=True))
    #: How long the loss lasts in each cycle (at most ``period``).
    duration: float = attrs.field(validator=_field_seconds())
    #: The loss rate during that part of a cycle.
    rate: float = attrs.field(default=1.0, validator=_field_rate)
    #: The loss rate for the rest of the cycle.
    base: float = attrs.field(default=0.0, validator=_field_rate)
    #: When the first cycle starts (the rate is ``base`` before).
    offset: float = attrs.field(default=0.0, validator=_field_seconds())

    def __attrs_post_init__(self) -> None:
        if self.duration > self.period:
            raise ValueError(
                f"PeriodicLoss.duration ({self.duration!r}) must be at most its "
                f"period ({self.period!r})"
            )

    def __call__(self, elapsed: float) -> float:
        """The loss rate ``elapsed`` seconds after the network started."""
        if elapsed < self.offset:
            return self.base
        return (
            self.rate
            if (elapsed - self.offset) % self.period < self.duration
            else self.base
        )


@attrs.frozen(kw_only=True)
class LinkConditions:
    """How one direction of a link treats the datagrams that cross it.

    Every random choice comes from the link's own :class:`random.Random`,
    seeded from the network's seed and the two host names, so a run is
    reproducible for a given seed and workload.

    Each datagram sent, in this order:

    1. is lost with probability :attr:`loss` (counted as ``lost``);
    2. is otherwise delivered, plus a second copy with probability
       :attr:`duplicate` (``duplicated``);
    3. each copy has one random byte changed with probability :attr:`corrupt`
       (``corrupted``);
    4. each copy is dropped if :attr:`queue_limit` datagrams are already in
       transit on the link (``overflowed``);
    5. each copy waits for the link to be free when :attr:`bandwidth` is set,
       then arrives after :attr:`delay` plus a random extra delay of up to
       :attr:`jitter`: datagrams sent less than ``jitter`` apart may arrive
       out of order.
    """

    #: One-way propagation delay, in seconds.
    delay: float = attrs.field(default=0.0, validator=_seconds)
    #: Extra delay drawn uniformly from ``[0, jitter]`` for each datagram, in
    #: seconds; it reorders datagrams.
    jitter: float = attrs.field(default=0.0, validator=_seconds)
    #: Probability that a datagram is lost: a constant; a function of the
    #: seconds since the network was created returning the rate in force; or
    #: phases ``[(until, rate), ...]`` in increasing order of ``until`` (a
    #: phase's rate applies until that many seconds after the network was
    #: created; after the last phase, nothing is lost). For example
    #: ``loss=[(2.0, 0.3)]`` loses 30 % for the first two seconds, then none.
    loss: LossSchedule = attrs.field(default=0.0, converter=_loss)
    #: Probability that a datagram is delivered twice.
    duplicate: float = attrs.field(default=0.0, validator=_rate)
    #: Probability that a datagram has one byte changed in transit.
    corrupt: float = attrs.field(default=0.0, validator=_rate)
    #: At most this many datagrams are in transit on the link (waiting for
    #: bandwidth or propagating); the next ones are dropped, like a router's
    #: full buffer.
    queue_limit: int = attrs.field(default=1024, validator=_queue_limit)
    #: Bytes per second the link carries, or ``None`` for no limit. Datagrams
    #: wait their turn (and count against :attr:`queue_limit`) while the link
    #: is busy.
    bandwidth: float | None = attrs.field(default=None, validator=_optional_positive)

    def loss_at(self, elapsed: float) -> float:
        """The loss rate in force ``elapsed`` seconds after the network started."""
        loss = self.loss
        if isinstance(loss, float):
            return loss
        if callable(loss):
            return _check_rate("the loss function's result", loss(elapsed))
        phases: Sequence[tuple[float, float]] = loss
        index = bisect.bisect_right([until for until, _ in phases], elapsed)
        if index >= len(phases):
            return 0.0
        return phases[index][1]


@attrs.frozen
class NetworkStatistics:
    """Datagram counters of a :class:`MemoryNetwork` (see
    :meth:`MemoryNetwork.statistics`)."""

    #: Datagrams handed to ``send_batch``.
    sent: int
    #: Datagrams returned by ``receive_batch`` (duplicates included).
    delivered: int
    #: Datagrams lost at random (:attr:`LinkConditions.loss`).
    lost: int
    #: Extra copies made (:attr:`LinkConditions.duplicate`).
    duplicated: int
    #: Copies with a byte changed (:attr:`LinkConditions.corrupt`).
    corrupted: int
    #: Copies dropped because the link's queue was full
    #: (:attr:`LinkConditions.queue_limit`).
    overflowed: int
    #: Datagrams for an address where no socket is bound (never bound,
    #: closed, or moved away by :meth:`MemoryNetwork.rebind`).
    unroutable: int
    #: Datagrams in transit now (sent, not yet received or dropped).
    in_transit: int


@attrs.frozen
class LinkStatistics:
    """Counters of one direction between two hosts (see
    :meth:`MemoryNetwork.link_statistics`): what a test of byte budgets
    (such as QUIC's anti-amplification limit) needs."""

    #: Datagrams sent to a bound address on the link (before loss).
    sent: int = 0
    #: Their UDP payload bytes.
    sent_bytes: int = 0
    #: Datagrams the destination took with ``receive_batch`` (duplicates
    #: included).
    delivered: int = 0
    #: Their UDP payload bytes.
    delivered_bytes: int = 0


class _Link:
    """The mutable state of one direction between two hosts."""

    __slots__ = (
        "busy_until",
        "conditions",
        "delivered",
        "delivered_bytes",
        "in_transit",
        "rng",
        "sent",
        "sent_bytes",
    )

    def __init__(self, conditions: LinkConditions, rng: random.Random) -> None:
        self.conditions = conditions
        self.rng = rng
        self.busy_until = -math.inf
        self.sent = 0
        self.sent_bytes = 0
        self.delivered = 0
        self.delivered_bytes = 0
        #: Arrival times of the datagrams in transit (a heap).
        self.in_transit: list[float] = []

    def occupancy(self, now: float) -> int:
        heap = self.in_transit
        while heap and heap[0] <= now:
            heapq.heappop(heap)
        return len(heap)


class MemoryNetwork:
    """A simulated UDP network inside one trio run.

    Hosts are names (``"10.0.0.1"``, ``"client"``: any string); addresses are
    ``(host, port)`` tuples. Make sockets with :meth:`socket` and give them
    to trioquic instead of real UDP sockets::

        network = MemoryNetwork(seed=1, conditions=LinkConditions(delay=0.02))
        server_socket = network.socket("10.0.0.1", 4433)
        await nursery.start(
            partial(trioquic.serve_quic, handler, 4433, settings=server_settings,
                    sockets=[server_socket])
        )
        async with trioquic.open_quic_connection(
            "10.0.0.1", 4433, settings=client_settings,
            socket=network.socket("10.0.0.2"),
        ) as connection:
            ...

    Every direction between two hosts is a link with its own
    :class:`LinkConditions` (``conditions`` by default; change them with
    :meth:`set_link` or :meth:`set_path`, at any time) and its own random
    generator seeded from ``seed``. Arrival times are trio times, so
    ``trio.testing.MockClock`` drives the network; with
    ``autojump_threshold=0`` a lossy, slow network is simulated as fast as the
    CPU goes.

    ``links`` sets per-direction conditions at once, as :meth:`set_link`
    would: ``links={("10.0.0.2", "10.0.0.1"): LinkConditions(loss=0.1)}``.

    ``rebinds`` schedules NAT rebindings: ``rebinds=[(2.0, "10.0.0.2")]``
    means the NAT in front of host ``10.0.0.2`` changes its mapping 2 seconds
    after the network's clock started, so the first datagram each socket of
    that host (bound before then) sends at or after that time goes out from a
    new port, as :meth:`rebind` does (datagrams still on their way to the old
    port are dropped). A rebinding is applied when the socket next sends, like
    a real NAT that makes a new mapping for the next outgoing datagram: no
    task runs, and the same workload sees the same rebinding. Name client
    hosts only: a server whose port moves is unreachable.

    The network starts no tasks: datagrams wait in their destination socket
    until its ``receive_batch`` takes them. It must be used within a single
    trio run; its clock (for loss schedules and rebindings) starts when it is
    created inside the run, or at the first send otherwise.

    :meth:`replay_code` prints a line of Python that rebuilds the network
    (seed, conditions, links, rebindings), to reproduce a failure.
    """

    def __init__(
        self,
        *,
        seed: int | str = 0,
        conditions: LinkConditions | None = None,
        links: Mapping[tuple[str, str], LinkConditions] | None = None,
        rebinds: Iterable[tuple[float, str]] = (),
    ) -> None:
        if conditions is None:
            conditions = LinkConditions()
        if not isinstance(conditions, LinkConditions):
            raise TypeError(
                f"conditions must be a LinkConditions, got {type(conditions).__name__}"
            )
        self.seed = seed
        self._default = conditions
        self._overrides: dict[tuple[str, str], LinkConditions] = {}
        self._rebinds = _check_rebinds(rebinds)
        #: Per host, the times of its rebinding events, in increasing order.
        self._rebind_times: dict[str, list[float]] = {}
        for when, host in self._rebinds:
            self._rebind_times.setdefault(host, []).append(when)
        self._links: dict[tuple[str, str], _Link] = {}
        self._sockets: dict[tuple[str, int], MemorySocket] = {}
        self._next_port: dict[str, int] = {}
        self._sequence = itertools.count()
        try:
            self._epoch: float | None = trio.current_time()
        except RuntimeError:
            self._epoch = None
        self._sent = 0
        self._delivered = 0
        self._lost = 0
        self._duplicated = 0
        self._corrupted = 0
        self._overflowed = 0
        self._unroutable = 0
        self._in_transit = 0
        if links is not None:
            if not isinstance(links, Mapping):
                raise TypeError(
                    "links must be a mapping {(source, destination): "
                    f"LinkConditions}}, got {type(links).__name__}"
                )
            for key, link_conditions in links.items():
                if not (isinstance(key, tuple) and len(key) == 2):
                    raise TypeError(
                        "links must be keyed by (source host, destination host) "
                        f"pairs, got {key!r}"
                    )
                self.set_link(key[0], key[1], link_conditions)

    # -- configuration --------------------------------------------------------

    @property
    def default_conditions(self) -> LinkConditions:
        """The conditions of every link not configured with :meth:`set_link`."""
        return self._default

    @default_conditions.setter
    def default_conditions(self, conditions: LinkConditions) -> None:
        if not isinstance(conditions, LinkConditions):
            raise TypeError(
                f"conditions must be a LinkConditions, got {type(conditions).__name__}"
            )
        self._default = conditions
        for key, link in self._links.items():
            if key not in self._overrides:
                link.conditions = conditions

    def set_link(
        self, source: str, destination: str, conditions: LinkConditions
    ) -> None:
        """Set the conditions of datagrams going from host ``source`` to host
        ``destination`` (one direction). Takes effect for the next datagram
        sent; the ones in transit keep their fate."""
        if not isinstance(conditions, LinkConditions):
            raise TypeError(
                f"conditions must be a LinkConditions, got {type(conditions).__name__}"
            )
        key = (_host(source), _host(destination))
        self._overrides[key] = conditions
        link = self._links.get(key)
        if link is not None:
            link.conditions = conditions

    def set_path(self, host_a: str, host_b: str, conditions: LinkConditions) -> None:
        """Set the conditions of both directions between two hosts."""
        self.set_link(host_a, host_b, conditions)
        self.set_link(host_b, host_a, conditions)

    def link_conditions(self, source: str, destination: str) -> LinkConditions:
        """The conditions in force from host ``source`` to host ``destination``."""
        return self._overrides.get((source, destination), self._default)

    @property
    def rebinds(self) -> tuple[tuple[float, str], ...]:
        """The scheduled NAT rebindings, ``(seconds, host)`` in increasing
        order of time (see the class's ``rebinds`` argument)."""
        return self._rebinds

    def replay_code(self) -> str:
        """One line of Python that rebuilds this network: its seed, its
        default conditions, the conditions set per link and its scheduled
        rebindings, for example::

            MemoryNetwork(seed=7, conditions=LinkConditions(delay=0.05, loss=0.1))

        It evaluates with the names of ``from trioquic.testing import *`` in
        scope, and the network it makes treats the same workload (the same
        datagrams sent at the same trio times, relative to the network's
        clock) the same way: the same datagrams lost, duplicated, corrupted
        and delivered at the same times. Print it when a test fails to
        reproduce the failure with a fixed network. (The network is
        deterministic; a QUIC connection over it is not quite: its keys and
        connection IDs are random, so a failure may take a few runs to come
        back.)

        It describes the configuration in force now: conditions changed with
        :meth:`set_link` or :attr:`default_conditions` in the middle of a run
        appear with their latest value (the test that changed them replays
        that change itself), and so do :meth:`rebind` calls (they are part of
        the workload). A loss schedule given as an arbitrary function cannot
        be printed: it appears as ``<loss function module.name>``, which does
        not evaluate, followed by a comment saying to pass that function in
        its place. The loss schedules of this module (:class:`Blackout`,
        :class:`LossBursts`, :class:`LossRamp`, :class:`PeriodicLoss`) print
        as themselves.
        """
        unprintable: list[str] = []
        arguments = [f"seed={self.seed!r}"]
        if self._default != LinkConditions():
            arguments.append(
                f"conditions={_conditions_code(self._default, unprintable)}"
            )
        if self._overrides:
            links = ", ".join(
                f"{key!r}: {_conditions_code(conditions, unprintable)}"
                for key, conditions in self._overrides.items()
            )
            arguments.append(f"links={{{links}}}")
        if self._rebinds:
            arguments.append(f"rebinds={list(self._rebinds)!r}")
        code = f"MemoryNetwork({', '.join(arguments)})"
        if unprintable:
            names = ", ".join(dict.fromkeys(unprintable))
            code += (
                f"  # replace {names} with the same loss function: a function "
                "cannot be printed"
            )
        return code

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis (and IPython) print a drawn network as its replay code.
        printer.text(self.replay_code())

    @property
    def elapsed(self) -> float:
        """Seconds (trio time) since the network's clock started: the time
        loss schedules are given in."""
        now = trio.current_time()
        if self._epoch is None:
            self._epoch = now
        return now - self._epoch

    # -- sockets ----------------------------------------------------------------

    def socket(self, host: str = "10.0.0.2", port: int | None = None) -> MemorySocket:
        """Bind a new socket to ``(host, port)``; ``port=None`` picks a free
        one. Raises :exc:`OSError` (``EADDRINUSE``) if the address is taken."""
        host = _host(host)
        port = self._free_port(host) if port is None else _check_port(port)
        address = (host, port)
        if address in self._sockets:
            raise OSError(errno.EADDRINUSE, f"address {address!r} is already in use")
        sock = MemorySocket(self, address)
        times = self._rebind_times.get(host)
        if times:
            # Rebindings scheduled before the socket existed do not move it.
            bound = 0.0 if self._epoch is None else trio.current_time() - self._epoch
            sock._rebinds_seen = bisect.bisect_right(times, bound)
        self._sockets[address] = sock
        return sock

    def rebind(
        self,
        sock: MemorySocket,
        port: int | None = None,
        *,
        keep_old_address: bool = False,
    ) -> Address:
        """Move ``sock`` to a new port on its host, like a NAT that changes
        its mapping: from now on its datagrams come from the new address, and
        datagrams must be sent there to reach it. Returns the new address.

        Datagrams still in transit to the old address are dropped (counted as
        ``unroutable``) unless ``keep_old_address`` is true, in which case the
        socket keeps receiving on both addresses.
        """
        if sock._network is not self:
            raise ValueError("that socket belongs to another network")
        if sock.closed:
            raise trio.ClosedResourceError("that socket is closed")
        host = sock.local_address[0]
        port = self._free_port(host) if port is None else _check_port(port)
        new_address = (host, port)
        if new_address in self._sockets:
            raise OSError(
                errno.EADDRINUSE, f"address {new_address!r} is already in use"
            )
        if not keep_old_address:
            for address in sock._addresses:
                if self._sockets.get(address) is sock:
                    del self._sockets[address]
            sock._addresses.clear()
        self._sockets[new_address] = sock
        sock._addresses.append(new_address)
        sock._address = new_address
        return new_address

    def statistics(self) -> NetworkStatistics:
        """A snapshot of the network's datagram counters."""
        return NetworkStatistics(
            sent=self._sent,
            delivered=self._delivered,
            lost=self._lost,
            duplicated=self._duplicated,
            corrupted=self._corrupted,
            overflowed=self._overflowed,
            unroutable=self._unroutable,
            in_transit=self._in_transit,
        )

    def link_statistics(self, source: str, destination: str) -> LinkStatistics:
        """Datagrams and bytes sent from host ``source`` to host
        ``destination`` and delivered there (one direction; zeros if nothing
        was ever sent on it)."""
        link = self._links.get((_host(source), _host(destination)))
        if link is None:
            return LinkStatistics()
        return LinkStatistics(
            sent=link.sent,
            sent_bytes=link.sent_bytes,
            delivered=link.delivered,
            delivered_bytes=link.delivered_bytes,
        )

    # -- internals --------------------------------------------------------------

    def _free_port(self, host: str) -> int:
        port = self._next_port.get(host, EPHEMERAL_PORT_START)
        for _ in range(65536):
            if port > 65535:
                port = EPHEMERAL_PORT_START
            if (host, port) not in self._sockets:
                self._next_port[host] = port + 1
                return port
            port += 1
        raise OSError(errno.EADDRNOTAVAIL, f"no free port left on {host!r}")

    def _link(self, source: str, destination: str) -> _Link:
        key = (source, destination)
        link = self._links.get(key)
        if link is None:
            rng = random.Random(f"{self.seed!r}/{source}/{destination}")
            link = _Link(self._overrides.get(key, self._default), rng)
            self._links[key] = link
        return link

    def _transmit(self, sender: MemorySocket, data: bytes, destination: Any) -> None:
        now = trio.current_time()
        if self._epoch is None:
            self._epoch = now
        self._sent += 1
        try:
            dst_host, dst_port = destination[0], destination[1]
            key = (dst_host, dst_port)
            target = self._sockets.get(key)
        except (TypeError, IndexError):
            target = None
        if target is None:
            self._unroutable += 1
            return
        times = self._rebind_times.get(sender._address[0])
        if times:
            due = bisect.bisect_right(times, now - self._epoch)
            if due > sender._rebinds_seen:
                sender._rebinds_seen = due
                self.rebind(sender)
        source = sender._address
        link = self._link(source[0], dst_host)
        link.sent += 1
        link.sent_bytes += len(data)
        conditions = link.conditions
        rng = link.rng
        loss = conditions.loss_at(now - self._epoch)
        if loss and rng.random() < loss:
            self._lost += 1
            return
        copies = 1
        if conditions.duplicate and rng.random() < conditions.duplicate:
            copies = 2
            self._duplicated += 1
        for _ in range(copies):
            payload = data
            if conditions.corrupt and payload and rng.random() < conditions.corrupt:
                damaged = bytearray(payload)
                damaged[rng.randrange(len(damaged))] ^= rng.randrange(1, 256)
                payload = bytes(damaged)
                self._corrupted += 1
            if link.occupancy(now) >= conditions.queue_limit:
                self._overflowed += 1
                continue
            departure = now
            if conditions.bandwidth is not None:
                start = max(now, link.busy_until)
                link.busy_until = start + len(payload) / conditions.bandwidth
                departure = link.busy_until
            arrival = departure + conditions.delay
            if conditions.jitter:
                arrival += rng.uniform(0.0, conditions.jitter)
            heapq.heappush(link.in_transit, arrival)
            self._in_transit += 1
            target._enqueue(arrival, next(self._sequence), payload, source, key)

    def _forget(self, sock: MemorySocket) -> None:
        for address in sock._addresses:
            if self._sockets.get(address) is sock:
                del self._sockets[address]

    def __repr__(self) -> str:
        return (
            f"<trioquic.testing.MemoryNetwork seed={self.seed!r} "
            f"sockets={len(self._sockets)}>"
        )


def _check_rebinds(
    rebinds: Iterable[tuple[float, str]],
) -> tuple[tuple[float, str], ...]:
    if isinstance(rebinds, str | bytes) or not isinstance(rebinds, Iterable):
        raise TypeError(
            "rebinds must be a list of (seconds, host) pairs, "
            f"got {type(rebinds).__name__}"
        )
    events: list[tuple[float, str]] = []
    for event in rebinds:
        if not (isinstance(event, tuple | list) and len(event) == 2):
            raise TypeError(
                f"a rebinding is a (seconds, host) pair, such as (2.0, '10.0.0.2'); "
                f"got {event!r}"
            )
        when, host = event
        if isinstance(when, bool) or not isinstance(when, int | float):
            raise TypeError(f"a rebinding's time must be a number, got {when!r}")
        if not 0.0 < when < math.inf:
            raise ValueError(
                "a rebinding's time must be a finite number of seconds greater "
                f"than 0 (since the network's clock started), got {when!r}"
            )
        events.append((float(when), _host(host)))
    events.sort(key=lambda event: event[0])
    return tuple(events)


def _conditions_code(conditions: LinkConditions, unprintable: list[str]) -> str:
    """``LinkConditions(...)`` with the fields that differ from the defaults;
    a loss function that cannot be printed is named in ``unprintable``."""
    fields = []
    for field in attrs.fields(LinkConditions):
        value = getattr(conditions, field.name)
        if value == field.default:
            continue
        if field.name == "loss" and callable(value):
            if isinstance(value, _LossFunction):
                text = repr(value)
            else:
                name = getattr(value, "__qualname__", None) or type(value).__qualname__
                module = getattr(value, "__module__", None)
                text = (
                    f"<loss function {module}.{name}>"
                    if module
                    else f"<loss function {name}>"
                )
                unprintable.append(text)
        else:
            text = repr(value)
        fields.append(f"{field.name}={text}")
    return f"LinkConditions({', '.join(fields)})"


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int or None, got {type(port).__name__}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1..65535, got {port}")
    return port


def _host(host: str) -> str:
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, got {type(host).__name__}")
    return host


class MemorySocket:
    """A datagram socket of a :class:`MemoryNetwork` (make one with
    :meth:`MemoryNetwork.socket`).

    It implements the datagram-socket interface trioquic's endpoints use, so
    it can be passed as ``sockets=[...]`` to :func:`trioquic.serve_quic` or
    ``socket=`` to :func:`trioquic.open_quic_connection`; it can also be used
    directly. Like UDP, sending never blocks and never fails for lack of a
    receiver: what cannot be delivered is dropped and counted.
    """

    def __init__(self, network: MemoryNetwork, address: tuple[str, int]) -> None:
        self._network = network
        self._address = address
        self._addresses: list[tuple[str, int]] = [address]
        # (arrival, sequence, payload, source, destination)
        self._queue: list[tuple[float, int, bytes, Address, tuple[str, int]]] = []
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        #: How many of its host's scheduled rebindings have moved it.
        self._rebinds_seen = 0

    @property
    def network(self) -> MemoryNetwork:
        """The network this socket is bound on."""
        return self._network

    @property
    def local_address(self) -> tuple[str, int]:
        """The ``(host, port)`` this socket sends from (it changes when the
        socket is rebound)."""
        return self._address

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def pending(self) -> int:
        """Datagrams on their way to this socket (arrived or not)."""
        return len(self._queue)

    def rebind(
        self, port: int | None = None, *, keep_old_address: bool = False
    ) -> Address:
        """Same as ``network.rebind(self, port, ...)``: see
        :meth:`MemoryNetwork.rebind`."""
        return self._network.rebind(self, port, keep_old_address=keep_old_address)

    async def receive_batch(self) -> list[Datagram]:
        """Wait until at least one datagram has arrived, then return those
        that have (at most 64), oldest first, as ``(data, source_address)``
        pairs. A checkpoint; cancel-safe (a cancelled call takes nothing).

        Raises :exc:`trio.ClosedResourceError` once the socket is closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        queue = self._queue
        network = self._network
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this socket was closed")
            now = trio.current_time()
            batch: list[Datagram] = []
            while queue and queue[0][0] <= now and len(batch) < RECEIVE_BATCH:
                _, _, payload, source, destination = heapq.heappop(queue)
                network._in_transit -= 1
                if destination not in self._addresses:
                    network._unroutable += 1  # sent to an address we left
                    continue
                batch.append((payload, source))
                link = network._links.get((source[0], destination[0]))
                if link is not None:
                    link.delivered += 1
                    link.delivered_bytes += len(payload)
            if batch:
                network._delivered += len(batch)
                await trio.lowlevel.cancel_shielded_checkpoint()
                return batch
            deadline = queue[0][0] if queue else math.inf
            with trio.move_on_at(deadline):
                await self._lot.park()

    async def send_batch(self, datagrams: Sequence[Datagram]) -> None:
        """Send each ``(data, address)``. Never blocks, like a UDP socket with
        room in its buffer (the link's queue drops instead); not a checkpoint.

        Raises :exc:`trio.ClosedResourceError` once the socket is closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("this socket was closed")
        for data, address in datagrams:
            self._network._transmit(self, bytes(data), address)

    def close(self) -> None:
        """Unbind the socket and drop what is on its way to it. Idempotent;
        a task waiting in :meth:`receive_batch` gets
        :exc:`trio.ClosedResourceError`."""
        if self._closed:
            return
        self._closed = True
        network = self._network
        network._forget(self)
        network._in_transit -= len(self._queue)
        network._unroutable += len(self._queue)
        self._queue.clear()
        self._lot.unpark_all()

    # -- called by the network ------------------------------------------------

    def _enqueue(
        self,
        arrival: float,
        sequence: int,
        payload: bytes,
        source: Address,
        destination: tuple[str, int],
    ) -> None:
        heapq.heappush(self._queue, (arrival, sequence, payload, source, destination))
        self._lot.unpark_all()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<trioquic.testing.MemorySocket {self._address!r}{state}>"
