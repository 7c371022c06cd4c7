"""A lossy, delaying UDP hop on loopback, for the loss-recovery benchmark and
the soak: clients send to the hop's port, the hop forwards to the server, and
the server's answers come back the same way.

Each datagram, in each direction, is held for ``--delay`` seconds (a fixed
one-way delay, so each direction stays in order) and dropped with probability
``--loss`` while the loss window is open: from the first datagram the hop
sees for ``--loss-seconds`` seconds (``inf``: for ever). Drops come from a
``random.Random(--seed)``, so a run is reproducible as far as the peers'
timing allows. The hop queues at most ``--queue`` datagrams per direction
(tail drop beyond that, counted apart from random loss), like a link's buffer.

One server, any number of clients: the hop keeps one upstream socket per
client address (so the server sees each client as its own address, and a
client that rebinds arrives from a new one), up to ``--max-clients``
(oldest first out).

Plain ``selectors`` and no event-loop library, so that the hop costs as little
CPU as possible and belongs to neither peer under test. It runs until
SIGTERM/SIGINT or ``--lifetime`` seconds, then prints one line
``HOP {json}`` with its counters. Run it::

    python benchmarks/_lossy_hop.py --target-port 4433 --delay 0.005 \\
        --loss 0.3 --loss-seconds 2

It prints ``HOP-READY <port>`` once it listens.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import selectors
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

HOST = "127.0.0.1"
READY_TAG = "HOP-READY "
TAG = "HOP "
#: Largest datagram read (more than any QUIC datagram on loopback).
MAX_DATAGRAM = 65535


@dataclass
class Direction:
    """Counters of one direction (``up``: client to server)."""

    received: int = 0
    forwarded: int = 0
    lost: int = 0
    queue_drops: int = 0
    bytes_forwarded: int = 0


@dataclass
class Counters:
    up: Direction = field(default_factory=Direction)
    down: Direction = field(default_factory=Direction)
    clients: int = 0
    #: Seconds from the first datagram to the last one forwarded.
    active_seconds: float = 0.0
    #: CPU seconds the hop used (its own cost, which the peers share a
    #: machine with).
    cpu_seconds: float = 0.0
    #: The first ``trace`` datagrams: (seconds since the first, direction,
    #: size, first byte, dropped), to see a handshake under loss.
    trace: list[tuple[float, str, int, int, bool]] = field(default_factory=list)


class LossyHop:
    """The hop itself (see the module docstring). ``run()`` loops until
    ``stop()`` or ``deadline`` (a ``time.monotonic()`` value)."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        port: int = 0,
        delay: float = 0.005,
        loss: float = 0.0,
        loss_seconds: float = math.inf,
        seed: int = 0,
        queue: int = 4096,
        max_clients: int = 256,
        trace: int = 0,
    ) -> None:
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss must be a probability in [0, 1], got {loss!r}")
        if delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay!r}")
        self.target = target
        self.delay = delay
        self.loss = loss
        self.loss_seconds = loss_seconds
        self.queue_limit = queue
        self.trace_limit = trace
        self.max_clients = max_clients
        self.random = random.Random(seed)
        self.counters = Counters()
        self.selector = selectors.DefaultSelector()
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind((HOST, port))
        self.front.setblocking(False)
        self.port: int = self.front.getsockname()[1]
        self.selector.register(self.front, selectors.EVENT_READ, None)
        # client address -> its upstream socket (insertion order: oldest first)
        self.upstream: collections.OrderedDict[tuple[str, int], socket.socket] = (
            collections.OrderedDict()
        )
        # (due, socket, data, destination) per direction, in order of due time
        self.pending: dict[str, collections.deque[Any]] = {
            "up": collections.deque(),
            "down": collections.deque(),
        }
        self.first: float | None = None
        self.last: float = 0.0
        self.running = True

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        for sock in [self.front, *self.upstream.values()]:
            self.selector.unregister(sock)
            sock.close()
        self.upstream.clear()
        self.selector.close()

    def _upstream_for(self, client: tuple[str, int]) -> socket.socket:
        sock = self.upstream.get(client)
        if sock is not None:
            return sock
        if len(self.upstream) >= self.max_clients:
            _, oldest = self.upstream.popitem(last=False)
            self.selector.unregister(oldest)
            oldest.close()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, client)
        self.upstream[client] = sock
        self.counters.clients += 1
        return sock

    def _admit(self, direction: str, now: float, data: bytes) -> bool:
        """Count a datagram in and decide whether it goes on."""
        counts: Direction = getattr(self.counters, direction)
        counts.received += 1
        if self.first is None:
            self.first = now
        admitted = True
        if (
            self.loss
            and now - self.first < self.loss_seconds
            and self.random.random() < self.loss
        ):
            counts.lost += 1
            admitted = False
        elif len(self.pending[direction]) >= self.queue_limit:
            counts.queue_drops += 1
            admitted = False
        trace = self.counters.trace
        if len(trace) < self.trace_limit:
            trace.append(
                (
                    round(now - self.first, 4),
                    direction,
                    len(data),
                    data[0],
                    not admitted,
                )
            )
        return admitted

    def _read(self, sock: socket.socket, client: tuple[str, int] | None) -> None:
        now = time.monotonic()
        for _ in range(64):  # bounded, so the other direction gets its turn
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error report from a closed peer port
                continue
            if client is None:  # from a client
                if self._admit("up", now, data):
                    out = self._upstream_for(addr)
                    self.pending["up"].append(
                        (now + self.delay, out, data, self.target)
                    )
            elif self._admit("down", now, data):
                self.pending["down"].append(
                    (now + self.delay, self.front, data, client)
                )

    def _send_due(self, now: float) -> float:
        """Send what is due; the time the next datagram falls due (or inf)."""
        due_next = math.inf
        for direction, queue in self.pending.items():
            counts: Direction = getattr(self.counters, direction)
            while queue and queue[0][0] <= now:
                _, sock, data, destination = queue.popleft()
                try:
                    sock.sendto(data, destination)
                except OSError:  # a full socket buffer or a closed socket
                    counts.queue_drops += 1
                    continue
                counts.forwarded += 1
                counts.bytes_forwarded += len(data)
                self.last = now
            if queue:
                due_next = min(due_next, queue[0][0])
        return due_next

    def run(self, deadline: float = math.inf) -> Counters:
        cpu = time.process_time()
        while self.running:
            now = time.monotonic()
            if now >= deadline:
                break
            due = self._send_due(now)
            timeout = min(due, deadline) - now
            # Wake a little early rather than late: the delay is the floor.
            events = self.selector.select(max(0.0, min(timeout, 0.5)))
            for key, _ in events:
                self._read(key.fileobj, key.data)  # type: ignore[arg-type]
        if self.first is not None:
            self.counters.active_seconds = max(0.0, self.last - self.first)
        self.counters.cpu_seconds += time.process_time() - cpu
        return self.counters

    def serve(self, lifetime: float) -> Counters:
        """Run as a process of its own: print ``HOP-READY <port>``, run until
        SIGTERM/SIGINT or ``lifetime`` seconds, close, return the counters."""

        def on_signal(signum: int, frame: object) -> None:
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        print(f"{READY_TAG}{self.port}", flush=True)
        try:
            return self.run(time.monotonic() + lifetime)
        finally:
            self.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--delay", type=float, default=0.005, help="seconds, each way")
    parser.add_argument("--loss", type=float, default=0.0, help="probability, each way")
    parser.add_argument(
        "--loss-seconds",
        type=float,
        default=math.inf,
        help="seconds the loss lasts from the first datagram (default: for ever)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queue", type=int, default=4096)
    parser.add_argument(
        "--trace", type=int, default=0, help="record the first N datagrams"
    )
    parser.add_argument("--lifetime", type=float, default=600.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hop = LossyHop(
        (HOST, args.target_port),
        port=args.port,
        delay=args.delay,
        loss=args.loss,
        loss_seconds=args.loss_seconds,
        seed=args.seed,
        queue=args.queue,
        trace=args.trace,
    )
    counters = hop.serve(args.lifetime)
    print(TAG + json.dumps(asdict(counters)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
