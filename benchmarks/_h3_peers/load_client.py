"""The Python load client of the request benchmark: aioquic's asyncio layer
and its ``H3Connection`` (or qh3's), ``--connections`` connections with
``--concurrency`` requests in flight on each, every request timed.
``--library qh3`` runs the same client on qh3's asyncio layer and
``H3Connection`` (qh3 keeps aioquic's API; it is CUBIC only).

Each connection runs ``--concurrency`` workers; a worker sends
``GET <path>`` (headers with FIN), waits for the whole response, checks the
status and the body size, and sends the next one. After ``--warmup``
seconds, completions are counted for ``--duration`` seconds: requests/s is
that count over the window, and p50/p99 are over the latencies (request sent
to last body byte) of the requests that completed in it. A request not
answered within ``--request-timeout`` seconds is counted as lost and
abandoned (its stream is left open), and the worker goes on.

Prints one line, ``H3-LOAD {json}``, and exits. Run it::

    python benchmarks/_h3_peers/load_client.py --port 4433 --cert C \
        --connections 1 --concurrency 50 --duration 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import HOST, LIBRARIES, pin_to, quic_configuration

TAG = "H3-LOAD "


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Tally:
    window_start: float = 0.0
    window_end: float = 0.0
    latencies: list[float] = field(default_factory=list)
    completed: int = 0
    bad: int = 0
    lost: int = 0


def make_protocol(library: str = "aioquic") -> type:
    """The client's protocol class on ``library``'s asyncio layer (aioquic, or
    qh3, which keeps aioquic's API)."""
    QuicConnectionProtocol = importlib.import_module(
        f"{library}.asyncio"
    ).QuicConnectionProtocol
    H3Connection = importlib.import_module(f"{library}.h3.connection").H3Connection
    h3_events = importlib.import_module(f"{library}.h3.events")
    DataReceived, HeadersReceived = h3_events.DataReceived, h3_events.HeadersReceived
    quic_events = importlib.import_module(f"{library}.quic.events")
    ConnectionTerminated = quic_events.ConnectionTerminated
    QuicEvent = quic_events.QuicEvent

    class Http3LoadProtocol(QuicConnectionProtocol):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._http = H3Connection(self._quic)
            # stream id -> [future, status, body bytes]
            self._pending: dict[int, list[Any]] = {}

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, ConnectionTerminated):
                for entry in self._pending.values():
                    if not entry[0].done():
                        entry[0].set_exception(ConnectionError(event.reason_phrase))
                self._pending.clear()
            for http_event in self._http.handle_event(event):
                if not isinstance(http_event, HeadersReceived | DataReceived):
                    continue
                entry = self._pending.get(http_event.stream_id)
                if entry is None:
                    continue
                if isinstance(http_event, HeadersReceived):
                    for name, value in http_event.headers:
                        if name == b":status":
                            entry[1] = value
                else:
                    entry[2] += len(http_event.data)
                if http_event.stream_ended:
                    del self._pending[http_event.stream_id]
                    if not entry[0].done():
                        entry[0].set_result((entry[1], entry[2]))

        async def get(self, authority: bytes, path: bytes) -> tuple[bytes, int]:
            stream_id = self._quic.get_next_available_stream_id()
            self._http.send_headers(
                stream_id,
                [
                    (b":method", b"GET"),
                    (b":scheme", b"https"),
                    (b":authority", authority),
                    (b":path", path),
                    (b"user-agent", b"trioquic-bench"),
                ],
                end_stream=True,
            )
            future: asyncio.Future[tuple[bytes, int]] = (
                asyncio.get_running_loop().create_future()
            )
            self._pending[stream_id] = [future, b"", 0]
            self.transmit()
            try:
                return await future
            finally:
                # A request given up on is abandoned, not cancelled: answering
                # STOP_SENDING is where some servers fail (hypercorn's trio
                # worker exited on it), and the benchmark must go on.
                self._pending.pop(stream_id, None)

    return Http3LoadProtocol


async def run(args: argparse.Namespace) -> None:
    connect = importlib.import_module(f"{args.library}.asyncio").connect
    config = quic_configuration(
        args.library, is_client=True, congestion_control=args.cc
    )
    config.load_verify_locations(args.cert)
    authority = f"{HOST}:{args.port}".encode()
    path = args.path.encode()
    protocol_class = make_protocol(args.library)
    tally = Tally()
    stop = asyncio.Event()

    async def worker(protocol: Any) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                async with asyncio.timeout(args.request_timeout):
                    status, size = await protocol.get(authority, path)
            except TimeoutError:
                tally.lost += 1
                continue
            except ConnectionError:
                tally.bad += 1
                return
            finished = time.perf_counter()
            if status != b"200" or size != args.expect_size:
                tally.bad += 1
            elif tally.window_start <= started and finished <= tally.window_end:
                tally.completed += 1
                tally.latencies.append(finished - started)

    stack = contextlib.AsyncExitStack()
    try:
        protocols = [
            await stack.enter_async_context(
                connect(
                    HOST,
                    args.port,
                    configuration=config,
                    create_protocol=protocol_class,
                )
            )
            for _ in range(args.connections)
        ]
        now = time.perf_counter()
        tally.window_start = now + args.warmup
        tally.window_end = tally.window_start + args.duration
        tasks = [
            asyncio.ensure_future(worker(protocol))
            for protocol in protocols
            for _ in range(args.concurrency)
        ]
        try:
            await asyncio.sleep(args.warmup)
            cpu0 = cpu_seconds()
            await asyncio.sleep(args.duration)
            cpu1 = cpu_seconds()
            stop.set()
            # Let requests in flight finish briefly; they are not counted.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.request_timeout):
                    await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        ordered = sorted(tally.latencies)
        result = {
            "completed": tally.completed,
            "seconds": args.duration,
            "requests_per_s": tally.completed / args.duration,
            "p50_ms": percentile(ordered, 0.50) * 1000 if ordered else None,
            "p99_ms": percentile(ordered, 0.99) * 1000 if ordered else None,
            "mean_ms": statistics.fmean(ordered) * 1000 if ordered else None,
            "lost": tally.lost,
            "bad": tally.bad,
            "client_cpu_share": (cpu1 - cpu0) / args.duration,
        }
        # Report before closing: the closes are not part of the measurement.
        print(TAG + json.dumps(result), flush=True)
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await stack.aclose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--request-timeout", type=float, default=2.0)
    parser.add_argument("--path", default="/bytes/1024")
    parser.add_argument("--expect-size", type=int, default=1024)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--cc", choices=("reno", "cubic"), default="reno")
    parser.add_argument("--library", choices=LIBRARIES, default="aioquic")
    args = parser.parse_args(argv)
    if min(args.connections, args.concurrency) < 1 or args.duration <= 0:
        parser.error("--connections and --concurrency >= 1, --duration > 0")
    return args


def main() -> int:
    args = parse_args()
    pin_to(args.cpu)
    limit = args.warmup + args.duration + 2 * args.request_timeout + 20

    async def bounded() -> None:
        async with asyncio.timeout(limit):
            await run(args)

    asyncio.run(bounded())
    return 0


if __name__ == "__main__":
    sys.exit(main())
