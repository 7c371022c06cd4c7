"""A bounded soak: one trioquic HTTP/3 server, a lossy delaying UDP hop in front
of it, and a load of mixed HTTP/3 work through the hop for ``--duration``
seconds (10 minutes by default; ``nox -s soak``).

Three processes, all on 127.0.0.1:

* the **server** (``serve_http3``): ``GET /small``, ``POST /echo`` (the body
  back), ``GET /bytes/N`` (N bytes of a fixed pseudo-random pattern, streamed)
  and an extended CONNECT endpoint (``:protocol`` ``soak-echo``) that echoes
  HTTP datagrams (RFC 9297). Every few seconds it prints one report line
  (``SOAK-SERVER {json}``): its RSS, the number of trio tasks in the process,
  live connections, requests handled, and log records of WARNING or above.
* the **hop** (``benchmarks/_lossy_hop.py``'s ``LossyHop``): ``--delay``
  seconds each way and ``--loss`` random loss both ways for the whole run.
  It keeps one upstream socket per client address, so a client that rebinds
  reaches the server from a new address.
* the **load** (this process, trio), five workloads at once:

  - ``mixed``: long-lived connections, several tasks each, sending small
    ``GET /small`` and ``POST /echo`` requests (pauses of at most 50 ms);
  - ``bulk``: a long-lived connection downloading 2 to 8 MB at a time, every
    byte checked against the pattern;
  - ``datagrams``: extended CONNECT sessions, each sending numbered HTTP
    datagrams and counting the echoes (datagrams are unreliable: their loss
    is reported and bounded, not counted as lost requests);
  - ``churn``: a connection per 1 to 3 requests (sometimes a download
    abandoned after its first piece), opened and closed over and over;
  - ``rebind``: a long-lived connection that moves to a new local port every
    few seconds (``rebind()``) while its requests and downloads carry on.

Every operation (connect, request, download, session, rebind) ends ``ok``,
with an error (its exception type is counted), or ``timeout`` (no answer
within ``--request-timeout`` seconds: the defect a soak looks for). When the
duration is up, the workloads start nothing new, finish what is in flight and
close their connections; the soak then waits for the server to drop every
connection and reads its last report.

It fails (exit status 1) if any operation failed or timed out, if datagram
echo loss exceeds what the hop's loss explains (``1 - (1 - loss)**2``, plus
0.03), if a datagram came back altered, if the server handled a request other
than once, if the server or the load process logged an error or a
traceback, or if memory or tasks do not level off:

* RSS: the largest sample of the last third of the load phase is at most the
  largest of the middle third times 1.10 plus 5 MiB (server and load process);
* tasks: likewise for the largest task count (times 1.10 plus 10 tasks), and
  once the connections are closed each process is back to the number of
  tasks it had before the load started.

Run it::

    python stress/soak.py                       # 10 minutes
    python stress/soak.py --quick               # 30 s
    python stress/soak.py --duration 120 --loss 0.05 --seed 7 --json soak.json
"""

from __future__ import annotations

import argparse
import collections
import functools
import gc
import json
import logging
import math
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

import trioquic
from trioquic.h3 import (
    Http3Client,
    Http3Settings,
    Request,
    open_http3_client,
    serve_http3,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"
SERVER_READY = "SOAK-SERVER-READY "
SERVER_TAG = "SOAK-SERVER "
HOP_READY = "HOP-READY "
HOP_TAG = "HOP "
PROTOCOL = "soak-echo"
MIB = 1024 * 1024
#: Length of the pattern ``GET /bytes/N`` serves (odd, so that pieces of a
#: power-of-two size never line up with it).
PATTERN_LENGTH = 1_048_573
SMALL_BODY = b"soak " * 20
#: Largest ``GET /bytes/N`` the server agrees to.
MAX_BYTES = 64 * MIB
#: Server pieces of a streamed body.
PIECE = 64 * 1024
#: The leveling criterion (see the module docstring).
RSS_FACTOR = 1.10
RSS_SLACK = 5 * MIB
TASK_FACTOR = 1.10
TASK_SLACK = 10
#: Datagram echo loss allowed beyond what the hop's random loss explains.
DATAGRAM_LOSS_SLACK = 0.03
#: The server's request counters, by the load's operations.
SERVER_KINDS = {
    "GET /small": "small",
    "POST /echo": "echo",
    "GET /bytes": "downloads",
    "GET /bytes (abandoned)": "downloads",
    "CONNECT session": "sessions",
}
#: Failures kept in detail (all are counted).
MAX_FAILURE_DETAILS = 100


# -- what every process shares -----------------------------------------------


@functools.cache
def pattern() -> bytes:
    return random.Random(0x50A4).randbytes(PATTERN_LENGTH)


def pattern_slice(offset: int, length: int) -> bytes:
    """``length`` bytes of the infinite repetition of :func:`pattern` from
    ``offset``: what ``GET /bytes/N`` serves there."""
    data = pattern()
    start = offset % PATTERN_LENGTH
    if start + length <= PATTERN_LENGTH:
        return data[start : start + length]
    out = bytearray()
    while len(out) < length:
        take = min(length - len(out), PATTERN_LENGTH - start)
        out += data[start : start + take]
        start = 0
    return bytes(out)


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc/self/statm``; 0
    elsewhere)."""
    try:
        with open("/proc/self/statm") as fp:
            resident = int(fp.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return resident * os.sysconf("SC_PAGE_SIZE")


def task_count() -> int:
    """Every task of this trio run (from the root task down its nurseries)."""
    count = 0
    root = trio.lowlevel.current_root_task()
    stack = [root] if root is not None else []
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


class LogRecorder(logging.Handler):
    """Counts the ``trioquic`` log records of WARNING and above by level,
    and keeps the first few."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname
        self.counts[level] += 1
        if len(self.first) < 10 and self.counts[level] <= 3:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text += f" [{type(exc).__name__}: {exc}]"
            self.first.append(f"{level}: {text}"[:500])

    @classmethod
    def install(cls) -> LogRecorder:
        """Log WARNING and above to stderr, and count them in a new
        recorder."""
        logging.basicConfig(
            level=logging.WARNING,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(message)s",
        )
        recorder = cls()
        logger = logging.getLogger("trioquic")
        logger.addHandler(recorder)
        if logger.level == logging.NOTSET or logger.level > logging.WARNING:
            logger.setLevel(logging.WARNING)
        return recorder

    @property
    def errors(self) -> int:
        return self.counts["ERROR"] + self.counts["CRITICAL"]


# -- the server process ------------------------------------------------------


async def server_main(args: argparse.Namespace) -> None:

    log = LogRecorder.install()
    counts: collections.Counter[str] = collections.Counter()
    started = time.monotonic()

    async def datagram_session(request: Request) -> None:
        received = 0
        async with request.stream_response(200) as writer:
            async with trio.open_nursery() as nursery:

                async def echo() -> None:
                    nonlocal received
                    while True:
                        data = await request.receive_datagram()
                        received += 1
                        counts["datagrams_received"] += 1
                        await request.send_datagram(data)
                        counts["datagrams_sent"] += 1

                nursery.start_soon(echo)
                # The session lasts until the client ends its side.
                await request.read()
                nursery.cancel_scope.cancel()
            await writer.send(b"%d" % received)

    async def handler(request: Request) -> None:
        counts["requests"] += 1
        method, path = request.method, request.path
        peer = request.peer_address
        where = [("x-peer", f"{peer[0]}:{peer[1]}")]
        if method == "CONNECT" and request.protocol == PROTOCOL:
            counts["sessions"] += 1
            await datagram_session(request)
        elif method == "GET" and path == "/small":
            counts["small"] += 1
            await request.respond(200, where, SMALL_BODY)
        elif method == "POST" and path == "/echo":
            counts["echo"] += 1
            await request.respond(200, where, await request.read())
        elif method == "GET" and path.startswith("/bytes/"):
            tail = path.removeprefix("/bytes/")
            size = int(tail) if tail.isdigit() else -1
            if not 0 <= size <= MAX_BYTES:
                await request.respond(400, body=b"bad size")
                return
            counts["downloads"] += 1
            headers = [*where, ("content-length", str(size))]
            async with request.stream_response(200, headers) as writer:
                for offset in range(0, size, PIECE):
                    piece = pattern_slice(offset, min(PIECE, size - offset))
                    await writer.send(piece)
                    counts["bytes_sent"] += len(piece)
        else:
            counts["not_found"] += 1
            await request.respond(404, body=b"not found")

    settings = trioquic.QuicSettings(
        certificate=args.cert,
        private_key=args.key,
        max_datagram_frame_size=65536,
        idle_timeout=args.idle_timeout,
    )
    http3_settings = Http3Settings(enable_connect_protocol=True, enable_datagrams=True)
    pattern()

    def report(server: trioquic.QuicServer, label: str) -> None:
        stats = server.statistics()
        line = {
            "label": label,
            "t": round(time.monotonic() - started, 3),
            "rss": rss_bytes(),
            "tasks": task_count(),
            "connections": server.connection_count,
            "gc_objects": len(gc.get_objects()),
            "counts": dict(counts),
            "router": {
                "received": stats.datagrams_received,
                "dropped": dict(stats.dropped),
                "accepted": stats.connections_accepted,
                "connection_ids": stats.connection_ids,
            },
            "log": dict(log.counts),
            "log_first": log.first,
        }
        print(SERVER_TAG + json.dumps(line), flush=True)

    async def reporter(server: trioquic.QuicServer) -> None:
        while True:
            await trio.sleep(args.report_interval)
            report(server, "periodic")

    with (
        trio.open_signal_receiver(
            signal.SIGUSR1, signal.SIGTERM, signal.SIGINT
        ) as signals,
        trio.move_on_after(args.lifetime),
    ):
        async with trio.open_nursery() as nursery:
            server: trioquic.QuicServer = await nursery.start(
                functools.partial(
                    serve_http3,
                    handler,
                    0,
                    host=HOST,
                    settings=settings,
                    http3_settings=http3_settings,
                )
            )
            nursery.start_soon(reporter, server)
            await trio.sleep(0.2)  # every task of the idle server is up
            report(server, "start")
            print(f"{SERVER_READY}{server.port}", flush=True)
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    report(server, "requested")
                else:
                    break
            report(server, "stop")
            nursery.cancel_scope.cancel()


# -- the hop process ---------------------------------------------------------


def hop_main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _lossy_hop import LossyHop  # type: ignore[import-not-found, unused-ignore]

    # One upstream socket per client address, never closed: churn and
    # rebinding make thousands. Keep them all (no eviction of a long-lived
    # client's socket), as far as the descriptor limit allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(16384, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    limit = 16384 if soft == resource.RLIM_INFINITY else soft
    hop = LossyHop(
        (HOST, args.target_port),
        delay=args.delay,
        loss=args.loss,
        loss_seconds=math.inf,
        seed=args.seed,
        max_clients=max(64, limit - 64),
    )
    counters = hop.serve(args.lifetime)  # prints HOP_READY, the same tag
    directions = {}
    for name in ("up", "down"):
        d = getattr(counters, name)
        directions[name] = {
            "received": d.received,
            "forwarded": d.forwarded,
            "lost": d.lost,
            "queue_drops": d.queue_drops,
            "bytes_forwarded": d.bytes_forwarded,
        }
    result = {**directions, "clients": counters.clients}
    print(HOP_TAG + json.dumps(result), flush=True)


# -- the load: outcomes ------------------------------------------------------


class Mismatch(Exception):
    """An answer that is not what was asked for (status, body, datagram)."""


def describe(exc: BaseException) -> str:
    """The exception's type, or its leaves' types for a group."""
    if isinstance(exc, BaseExceptionGroup):
        return "+".join(sorted({describe(e) for e in exc.exceptions}))
    name = type(exc).__name__
    code = getattr(exc, "error_code", None)
    if code is not None:
        name += f"({code!s})"
    return name


@dataclass
class Operation:
    ok: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    timeouts: int = 0
    seconds_total: float = 0.0
    seconds_max: float = 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values()) + self.timeouts

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": dict(self.errors),
            "timeouts": self.timeouts,
            "mean_seconds": round(self.seconds_total / self.ok, 4) if self.ok else None,
            "max_seconds": round(self.seconds_max, 3),
        }


@dataclass
class Workload:
    name: str
    cap: int
    operations: dict[str, Operation] = field(default_factory=dict)
    extra: collections.Counter[str] = field(default_factory=collections.Counter)
    started: int = 0

    def operation(self, what: str) -> Operation:
        return self.operations.setdefault(what, Operation())

    @property
    def ok(self) -> int:
        return sum(op.ok for op in self.operations.values())

    @property
    def failed(self) -> int:
        return sum(op.failed for op in self.operations.values())

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed": self.failed,
            "errors": sum(sum(op.errors.values()) for op in self.operations.values()),
            "timeouts": sum(op.timeouts for op in self.operations.values()),
            "operations": {k: v.summary() for k, v in sorted(self.operations.items())},
            "extra": dict(sorted(self.extra.items())),
        }


# -- the load: workloads -----------------------------------------------------


@dataclass
class Sample:
    t: float
    rss: int
    tasks: int
    clients: int


class Load:
    """The workloads of the load process (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, port: int, cert: str) -> None:

        self.args = args
        self.port = port
        self.quick: bool = args.quick
        self.settings = trioquic.QuicSettings(
            ca_certs=cert,
            max_datagram_frame_size=65536,
            idle_timeout=args.idle_timeout,
        )
        self.http3_settings = Http3Settings(enable_datagrams=True)
        self.deadline = math.inf
        self.started = 0.0
        self.clients = 0
        self.failures: list[dict[str, Any]] = []
        duration = args.duration
        # Caps far above what the pauses allow: a bound, not a target.
        self.workloads = {
            "mixed": Workload("mixed", cap=int(duration * 2000) + 100),
            "bulk": Workload("bulk", cap=int(duration * 10) + 10),
            "datagrams": Workload("datagrams", cap=int(duration * 20) + 10),
            "churn": Workload("churn", cap=int(duration * 200) + 100),
            "rebind": Workload("rebind", cap=int(duration * 1000) + 100),
        }

    # -- helpers --

    def rng(self, *names: object) -> random.Random:
        return random.Random("-".join(map(str, (self.args.seed, *names))))

    def now(self) -> float:
        return trio.current_time() - self.started

    def running(self, workload: Workload) -> bool:
        return trio.current_time() < self.deadline and workload.started < workload.cap

    async def pause(self, seconds: float) -> None:
        with trio.move_on_at(self.deadline):
            await trio.sleep(seconds)

    def fail(self, workload: Workload, what: str, outcome: str, detail: str) -> None:
        if len(self.failures) < MAX_FAILURE_DETAILS:
            self.failures.append(
                {
                    "t": round(self.now(), 3),
                    "workload": workload.name,
                    "operation": what,
                    "outcome": outcome,
                    "detail": detail[:400],
                }
            )

    async def attempt(
        self,
        workload: Workload,
        what: str,
        fn: Callable[[], Awaitable[object]],
        *,
        limit: float | None = None,
    ) -> bool:
        """Run one operation and record its outcome; True if it succeeded.
        It times out after ``limit`` seconds (``--request-timeout``)."""
        op = workload.operation(what)
        workload.started += 1
        begin = trio.current_time()
        limit = self.args.request_timeout if limit is None else limit
        try:
            with trio.move_on_after(limit) as scope:
                await fn()
        except Exception as exc:
            kind = describe(exc)
            op.errors[kind] += 1
            self.fail(workload, what, "error", f"{kind}: {exc!r}")
            return False
        if scope.cancelled_caught:
            op.timeouts += 1
            self.fail(workload, what, "timeout", f"no answer within {limit} s")
            return False
        spent = trio.current_time() - begin
        op.ok += 1
        op.seconds_total += spent
        op.seconds_max = max(op.seconds_max, spent)
        return True

    @asynccontextmanager
    async def connection(self, workload: Workload) -> AsyncIterator[Http3Client | None]:
        """A client connection through the hop, counted as a ``connect``
        operation (and a ``close`` one if leaving it fails); yields None if
        it could not be opened."""
        op = workload.operation("connect")
        workload.started += 1
        stage = "connect"
        begin = trio.current_time()
        try:
            async with open_http3_client(
                HOST,
                self.port,
                settings=self.settings,
                http3_settings=self.http3_settings,
            ) as client:
                spent = trio.current_time() - begin
                op.ok += 1
                op.seconds_total += spent
                op.seconds_max = max(op.seconds_max, spent)
                self.clients += 1
                stage = "inside"
                try:
                    yield client
                finally:
                    self.clients -= 1
                stage = "close"
        except Exception as exc:
            if stage == "inside":
                raise  # the workload's own: it records what it expects
            kind = describe(exc)
            workload.operation(stage).errors[kind] += 1
            self.fail(workload, stage, "error", f"{kind}: {exc!r}")
            if stage == "connect":
                yield None

    async def long_lived(
        self, workload: Workload, body: Callable[[Http3Client], Awaitable[None]]
    ) -> None:
        """Keep a connection open for ``body`` until the end; should it end
        early, open another."""
        while self.running(workload):
            async with self.connection(workload) as client:
                if client is not None:
                    await body(client)
                    if client.is_closed:
                        workload.extra["connections_lost"] += 1
            if self.running(workload):
                await self.pause(0.5)

    @staticmethod
    def usable(client: Http3Client) -> bool:
        return not client.is_closed and not client.goaway_received

    # -- operations --

    async def small_or_echo(
        self,
        workload: Workload,
        client: Http3Client,
        rng: random.Random,
        peers: set[str] | None = None,
    ) -> bool:
        def note_peer(headers: list[tuple[bytes, bytes]]) -> None:
            if peers is not None:
                peers.update(v.decode() for k, v in headers if k == b"x-peer")

        if rng.random() < 0.5:

            async def get() -> None:
                response = await client.request("GET", "/small")
                body = await response.read()
                if response.status != 200 or body != SMALL_BODY:
                    raise Mismatch(f"status {response.status}, {len(body)} bytes")
                note_peer(response.headers)

            return await self.attempt(workload, "GET /small", get)
        size = rng.choice((0, rng.randrange(1, 1200), rng.randrange(1200, 16384)))
        payload = rng.randbytes(size)

        async def echo() -> None:
            response = await client.request("POST", "/echo", body=payload)
            body = await response.read()
            if response.status != 200 or body != payload:
                raise Mismatch(
                    f"status {response.status}, {len(body)} of {size} bytes"
                    + (", content differs" if len(body) == size else "")
                )
            note_peer(response.headers)

        return await self.attempt(workload, "POST /echo", echo)

    async def download(
        self,
        workload: Workload,
        client: Http3Client,
        size: int,
        *,
        abandon: bool = False,
        limit: float | None = None,
    ) -> bool:
        what = "GET /bytes (abandoned)" if abandon else "GET /bytes"

        async def get() -> None:
            response = await client.request("GET", f"/bytes/{size}")
            async with response:
                if response.status != 200:
                    raise Mismatch(f"status {response.status}")
                offset = 0
                async for chunk in response:
                    if chunk != pattern_slice(offset, len(chunk)):
                        raise Mismatch(f"content differs at {offset} to {len(chunk)}")
                    offset += len(chunk)
                    if abandon and offset:
                        workload.extra["bytes"] += offset
                        return  # leaving: STOP_SENDING
                if offset != size:
                    raise Mismatch(f"{offset} of {size} bytes")
                workload.extra["bytes"] += offset

        return await self.attempt(workload, what, get, limit=limit)

    # -- workloads --

    async def mixed(self) -> None:
        workload = self.workloads["mixed"]

        async def body(client: Http3Client, index: int) -> None:
            async def worker(rng: random.Random) -> None:
                while self.running(workload) and self.usable(client):
                    await self.small_or_echo(workload, client, rng)
                    await self.pause(rng.uniform(0.0, 0.05))

            async with trio.open_nursery() as nursery:
                for i in range(self.args.mixed_concurrency):
                    nursery.start_soon(worker, self.rng("mixed", index, i))

        async with trio.open_nursery() as nursery:
            for index in range(self.args.mixed_connections):
                nursery.start_soon(
                    self.long_lived, workload, functools.partial(body, index=index)
                )

    async def bulk(self) -> None:
        workload = self.workloads["bulk"]
        rng = self.rng("bulk")
        low, high = (1 * MIB, 4 * MIB) if self.quick else (2 * MIB, 8 * MIB)

        async def body(client: Http3Client) -> None:
            while self.running(workload) and self.usable(client):
                size = rng.randrange(low, high + 1)
                await self.download(
                    workload, client, size, limit=self.args.bulk_timeout
                )
                await self.pause(rng.uniform(0.2, 1.5))

        await self.long_lived(workload, body)

    async def datagram_session(
        self, workload: Workload, client: Http3Client, rng: random.Random
    ) -> None:
        count = rng.randrange(20, 101)
        sent: dict[int, bytes] = {}
        echoed: set[int] = set()
        all_back = trio.Event()
        done_sending = False
        extra = workload.extra

        async def session() -> None:
            nonlocal done_sending
            async with client.open_request(
                "CONNECT", "/datagrams", protocol=PROTOCOL
            ) as stream:
                response = await stream.response()
                if response.status != 200:
                    raise Mismatch(f"status {response.status}")

                async def receive() -> None:
                    while True:
                        data = await stream.receive_datagram()
                        head, _, _ = data.partition(b":")
                        number = int(head) if head.isdigit() else -1
                        if sent.get(number) != data:
                            extra["datagrams_altered"] += 1
                            raise Mismatch(f"datagram {data[:40]!r} was not sent")
                        if number in echoed:
                            extra["datagrams_duplicated"] += 1
                            raise Mismatch(f"datagram {number} came back twice")
                        echoed.add(number)
                        extra["datagrams_echoed"] += 1
                        if done_sending and len(echoed) == len(sent):
                            all_back.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receive)
                    for number in range(count):
                        size = rng.randrange(16, 1000)
                        data = b"%d:" % number + rng.randbytes(size)
                        sent[number] = data
                        await stream.send_datagram(data)
                        extra["datagrams_sent"] += 1
                        await trio.sleep(self.args.datagram_interval)
                    done_sending = True
                    if len(echoed) == len(sent):
                        all_back.set()
                    with trio.move_on_after(1.0):
                        await all_back.wait()
                    nursery.cancel_scope.cancel()
                await stream.send(b"bye")
                await stream.finish()
                answer = await response.read()
                if not answer.isdigit():
                    raise Mismatch(f"session answer {answer[:40]!r}")
                # What completed sessions sent, the server received and came
                # back: the loss figures (raw counts include failed sessions).
                extra["completed_sent"] += len(sent)
                extra["completed_server_received"] += int(answer)
                extra["completed_echoed"] += len(echoed)

        await self.attempt(workload, "CONNECT session", session)

    async def datagrams(self) -> None:
        workload = self.workloads["datagrams"]

        async def body(client: Http3Client) -> None:
            async def sessions(index: int) -> None:
                rng = self.rng("datagrams", index)
                while self.running(workload) and self.usable(client):
                    await self.datagram_session(workload, client, rng)
                    await self.pause(rng.uniform(0.0, 0.5))

            async with trio.open_nursery() as nursery:
                for index in range(2):
                    nursery.start_soon(sessions, index)

        await self.long_lived(workload, body)

    async def churn(self) -> None:
        workload = self.workloads["churn"]

        async def loop(index: int) -> None:
            rng = self.rng("churn", index)
            while self.running(workload):
                async with self.connection(workload) as client:
                    if client is not None:
                        for _ in range(rng.randint(1, 3)):
                            if rng.random() < 0.1:
                                await self.download(
                                    workload, client, 1 * MIB, abandon=True
                                )
                            else:
                                await self.small_or_echo(workload, client, rng)
                await self.pause(rng.uniform(0.0, 0.3))

        async with trio.open_nursery() as nursery:
            for index in range(self.args.churn_loops):
                nursery.start_soon(loop, index)

    async def rebind(self) -> None:
        workload = self.workloads["rebind"]
        low, high = (2.0, 5.0) if self.quick else (5.0, 15.0)

        async def body(client: Http3Client) -> None:
            peers: set[str] = set()

            async def worker(rng: random.Random) -> None:
                while self.running(workload) and self.usable(client):
                    if rng.random() < 0.05:
                        size = rng.randrange(256 * 1024, MIB + 1)
                        await self.download(workload, client, size)
                    else:
                        await self.small_or_echo(workload, client, rng, peers)
                    await self.pause(rng.uniform(0.0, 0.05))

            async def rebinder(rng: random.Random) -> None:
                while self.running(workload) and self.usable(client):
                    await self.pause(rng.uniform(low, high))
                    if not (self.running(workload) and self.usable(client)):
                        break

                    async def move() -> None:
                        before = client.local_address
                        after = await rebind_client(client)
                        if after == before:
                            raise Mismatch(f"still on {after}")

                    await self.attempt(workload, "rebind", move, limit=10.0)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(rebinder, self.rng("rebinder"))
                for i in range(2):
                    nursery.start_soon(worker, self.rng("rebind", i))
            workload.extra["server_saw_addresses"] += len(peers)

        await self.long_lived(workload, body)

    async def run(self, samples: list[Sample]) -> None:
        self.started = trio.current_time()
        self.deadline = self.started + self.args.duration
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.mixed)
            nursery.start_soon(self.bulk)
            nursery.start_soon(self.datagrams)
            nursery.start_soon(self.churn)
            nursery.start_soon(self.rebind)
            nursery.start_soon(self.sample, samples)
            await trio.sleep(self.args.duration)
        # every workload has finished, and closed its connections

    async def sample(self, samples: list[Sample]) -> None:
        await self.pause(self.args.report_interval)
        while trio.current_time() < self.deadline:
            samples.append(Sample(self.now(), rss_bytes(), task_count(), self.clients))
            await self.pause(self.args.report_interval)


async def rebind_client(client: Http3Client) -> Any:
    """Move ``client``'s connection to a new local port."""
    return await client.rebind()


# -- the load: orchestration -------------------------------------------------


class Child:
    """A child process started under trio, its stdout read line by line."""

    def __init__(self, name: str, log: Any) -> None:
        self.name = name
        self.log = log
        self.process: trio.Process | None = None
        self.lines: list[tuple[float, str]] = []
        self.changed = trio.Event()
        self.eof = trio.Event()

    async def start(self, nursery: trio.Nursery, command: list[str]) -> None:
        self.process = await nursery.start(
            functools.partial(
                trio.run_process,
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self.log,
                check=False,
            )
        )
        nursery.start_soon(self._read)

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self.lines.append((trio.current_time(), line.decode(errors="replace")))
            self.changed.set()
            self.changed = trio.Event()
        self.eof.set()
        self.changed.set()

    def tagged(self, tag: str) -> list[tuple[float, str]]:
        return [(t, line[len(tag) :]) for t, line in self.lines if line.startswith(tag)]

    async def wait_for(self, tag: str, seconds: float, *, after: int = 0) -> str:
        """The rest of the first line starting with ``tag`` beyond the first
        ``after`` such lines (waiting at most ``seconds``)."""
        with trio.move_on_after(seconds):
            while True:
                found = self.tagged(tag)
                if len(found) > after:
                    return found[after][1]
                if self.process is not None and self.process.returncode is not None:
                    break
                await self.changed.wait()
        raise RuntimeError(f"the {self.name} did not print {tag.strip()!r}")

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)

    async def stop(self, grace: float = 10.0) -> int | None:
        assert self.process is not None
        self.signal(signal.SIGTERM)
        status: int | None = None
        with trio.move_on_after(grace):
            status = await self.process.wait()
        if status is None:
            self.process.kill()
            await self.process.wait()
        with trio.move_on_after(5):
            await self.eof.wait()  # its last lines are read
        return status


def _this(role: str, *options: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), f"--role={role}", *options]


def server_reports(server: Child, zero: float) -> list[dict[str, Any]]:
    reports = []
    for t, text in server.tagged(SERVER_TAG):
        report = json.loads(text)
        report["at"] = round(t - zero, 3)
        reports.append(report)
    return reports


async def orchestrate(args: argparse.Namespace) -> dict[str, Any]:

    load_log = LogRecorder.install()
    directory = tempfile.mkdtemp(prefix="trioquic-soak-")
    certificate = trioquic.generate_self_signed_certificate(
        ["localhost", HOST], directory
    )
    server_log = _log_file(directory, "server.log")
    hop_log = _log_file(directory, "hop.log")
    server = Child("server", server_log)
    hop = Child("hop", hop_log)
    lifetime = args.duration + 4 * args.idle_timeout + 180
    summary: dict[str, Any] = {
        "duration": args.duration,
        "seed": args.seed,
        "loss": args.loss,
        "delay": args.delay,
        "idle_timeout": args.idle_timeout,
    }
    samples: list[Sample] = []
    async with trio.open_nursery() as nursery:
        await server.start(
            nursery,
            _this(
                "server",
                f"--cert={certificate.certificate_path}",
                f"--key={certificate.private_key_path}",
                f"--report-interval={args.report_interval}",
                f"--idle-timeout={args.idle_timeout}",
                f"--lifetime={lifetime}",
            ),
        )
        server_port = int(await server.wait_for(SERVER_READY, 30))
        await hop.start(
            nursery,
            _this(
                "hop",
                f"--target-port={server_port}",
                f"--delay={args.delay}",
                f"--loss={args.loss}",
                f"--seed={args.seed}",
                f"--lifetime={lifetime}",
            ),
        )
        hop_port = int(await hop.wait_for(HOP_READY, 30))
        load = Load(args, hop_port, str(certificate.certificate_path))
        zero = trio.current_time()
        gc.collect()
        load_baseline = Sample(0.0, rss_bytes(), task_count(), 0)
        print(
            f"soak: {args.duration:g} s, seed {args.seed}, loss {args.loss:g} each "
            f"way, delay {args.delay * 1000:g} ms each way; server on port "
            f"{server_port}, hop on {hop_port}; logs in {directory}",
            flush=True,
        )
        samples.append(load_baseline)
        await load.run(samples)
        load_end = trio.current_time() - zero
        # Every client connection has closed: wait until the server has let
        # go of them too (a lost CONNECTION_CLOSE leaves one to its idle
        # timeout), and read its report.
        wait_limit = 3 * args.idle_timeout + 15
        final: dict[str, Any] | None = None
        base = server_reports(server, zero)[0]
        with trio.move_on_after(wait_limit):
            while True:
                seen = len(server.tagged(SERVER_TAG))
                server.signal(signal.SIGUSR1)
                try:
                    text = await server.wait_for(SERVER_TAG, 10, after=seen)
                except RuntimeError:  # the server is gone: the checks say so
                    break
                final = json.loads(text)
                if final["connections"] == 0 and final["tasks"] <= base["tasks"]:
                    break
                await trio.sleep(1.0)
        settled = trio.current_time() - zero
        gc.collect()
        load_final = Sample(settled, rss_bytes(), task_count(), load.clients)
        server_status = await server.stop()
        hop_status = await hop.stop()
        hop_lines = hop.tagged(HOP_TAG)
        nursery.cancel_scope.cancel()

    server_log.seek(0)
    server_stderr = server_log.read().decode(errors="replace")
    server_log.close()
    hop_log.close()
    reports = server_reports(server, zero)
    summary.update(
        analyse(
            args,
            load,
            samples,
            load_baseline,
            load_final,
            reports,
            final,
            load_end,
            settled,
        )
    )
    summary["hop"] = json.loads(hop_lines[-1][1]) if hop_lines else None
    summary["server_exit"] = server_status
    summary["hop_exit"] = hop_status
    summary["server_stderr_tail"] = server_stderr[-3000:]
    summary["load_log"] = {"counts": dict(load_log.counts), "first": load_log.first}
    summary["logs"] = directory
    last_log = reports[-1].get("log", {}) if reports else {}
    summary["server_log"] = {
        "counts": last_log,
        "first": reports[-1].get("log_first", []) if reports else [],
    }
    notes: list[str] = []
    summary["notes"] = notes
    checks: list[dict[str, Any]] = summary["checks"]
    tracebacks = server_stderr.count("Traceback")
    checks.append(
        check(
            "no error logged",
            tracebacks == 0 and load_log.errors == 0 and _server_errors(reports) == 0,
            f"server: {_server_errors(reports)} error records, {tracebacks} "
            f"tracebacks on stderr; load: {load_log.errors} error records",
        )
    )
    checks.append(
        check(
            "server exited cleanly",
            server_status == 0,
            f"exit status {server_status}",
        )
    )
    summary["ok"] = all(c["ok"] for c in checks)
    return summary


def _log_file(directory: str, name: str) -> Any:
    return open(os.path.join(directory, name), "w+b")


def _server_errors(reports: list[dict[str, Any]]) -> int:
    if not reports:
        return 0
    log = reports[-1].get("log", {})
    return int(log.get("ERROR", 0)) + int(log.get("CRITICAL", 0))


def check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "detail": detail}


def thirds(points: list[tuple[float, float]], end: float) -> tuple[float, float]:
    """The largest value of the middle third and of the last third of
    ``[0, end]``, from ``(t, value)`` points."""
    middle = [v for t, v in points if end / 3 <= t < 2 * end / 3]
    last = [v for t, v in points if t >= 2 * end / 3]
    return (max(middle, default=math.nan), max(last, default=math.nan))


def leveling(
    name: str,
    points: list[tuple[float, float]],
    end: float,
    factor: float,
    slack: float,
) -> dict[str, Any]:
    middle, last = thirds(points, end)
    limit = middle * factor + slack
    ok = not math.isnan(middle) and not math.isnan(last) and last <= limit
    unit, scale = (" MiB", MIB) if slack >= MIB else ("", 1)
    return check(
        name,
        ok,
        f"last third's max {last / scale:.1f}{unit} <= middle third's max "
        f"{middle / scale:.1f}{unit} x {factor} + {slack / scale:g}{unit} "
        f"= {limit / scale:.1f}{unit}",
    )


def analyse(
    args: argparse.Namespace,
    load: Load,
    samples: list[Sample],
    load_baseline: Sample,
    load_final: Sample,
    reports: list[dict[str, Any]],
    final: dict[str, Any] | None,
    load_end: float,
    settled: float,
) -> dict[str, Any]:
    checks: list[dict[str, Any]] = []
    workloads = {name: w.summary() for name, w in load.workloads.items()}
    ok = sum(w.ok for w in load.workloads.values())
    errors = sum(w["errors"] for w in workloads.values())
    timeouts = sum(w["timeouts"] for w in workloads.values())
    checks.append(
        check(
            "every operation completed",
            errors == 0 and timeouts == 0,
            f"{ok} ok, {errors} errors, {timeouts} timed out",
        )
    )
    idle = [name for name, w in load.workloads.items() if w.ok == 0]
    checks.append(
        check(
            "every workload ran",
            not idle,
            "no operation succeeded in " + ", ".join(idle) if idle else "all did work",
        )
    )
    # Datagrams: unreliable, so their loss is bounded, not forbidden.
    extra = load.workloads["datagrams"].extra
    sent = extra["completed_sent"]
    echoed = extra["completed_echoed"]
    at_server = extra["completed_server_received"]
    expected = 1 - (1 - args.loss) ** 2
    loss = 1 - echoed / sent if sent else math.nan
    datagrams = {
        "sent": sent,
        "server_received": at_server,
        "echoed": echoed,
        "echo_loss": round(loss, 4),
        "loss_up": round(1 - at_server / sent, 4) if sent else None,
        "loss_down": round(1 - echoed / at_server, 4) if at_server else None,
        "expected_echo_loss": round(expected, 4),
        "altered": extra["datagrams_altered"],
        "duplicated": extra["datagrams_duplicated"],
    }
    checks.append(
        check(
            "datagram echo loss within the hop's",
            sent > 0 and loss <= expected + DATAGRAM_LOSS_SLACK,
            f"{echoed} of {sent} echoed: loss {loss:.2%} (the hop explains "
            f"{expected:.2%}, allowed {expected + DATAGRAM_LOSS_SLACK:.2%})",
        )
    )
    checks.append(
        check(
            "no datagram altered or duplicated",
            extra["datagrams_altered"] == 0 and extra["datagrams_duplicated"] == 0,
            f"{extra['datagrams_altered']} altered, "
            f"{extra['datagrams_duplicated']} duplicated",
        )
    )
    rebinds = load.workloads["rebind"].operations.get("rebind", Operation()).ok
    seen = load.workloads["rebind"].extra["server_saw_addresses"]
    checks.append(
        check(
            "rebinding moved the connection",
            rebinds > 0 and seen >= 2,
            f"{rebinds} rebinds; the server saw {seen} client addresses",
        )
    )
    # Leveling: over the load phase, [0, duration] on the orchestrator's
    # clock (not the time it took to finish what was in flight).
    end = min(load_end, args.duration)
    during = [r for r in reports if 0 <= r["at"] <= end]
    checks.append(
        leveling(
            "server RSS levels off",
            [(r["at"], r["rss"]) for r in during],
            end,
            RSS_FACTOR,
            RSS_SLACK,
        )
    )
    checks.append(
        leveling(
            "server tasks level off",
            [(r["at"], r["tasks"]) for r in during],
            end,
            TASK_FACTOR,
            TASK_SLACK,
        )
    )
    checks.append(
        leveling(
            "load RSS levels off",
            [(s.t, s.rss) for s in samples],
            end,
            RSS_FACTOR,
            RSS_SLACK,
        )
    )
    checks.append(
        leveling(
            "load tasks level off",
            [(s.t, s.tasks) for s in samples],
            end,
            TASK_FACTOR,
            TASK_SLACK,
        )
    )
    base = reports[0] if reports else None
    # Every request the load sent was handled once by the server.
    attempted = collections.Counter[str]()
    for w in load.workloads.values():
        for what, op in w.operations.items():
            kind = SERVER_KINDS.get(what)
            if kind is not None:
                attempted[kind] += op.ok + op.failed
    handled = {k: int(final["counts"].get(k, 0)) for k in attempted} if final else {}
    exact = handled == dict(attempted)
    checks.append(
        check(
            "the server handled each request once",
            exact or (final is not None and (errors or timeouts) > 0),
            f"load sent {dict(sorted(attempted.items()))}, server handled "
            f"{dict(sorted(handled.items()))}",
        )
    )
    if base is not None and final is not None:
        back = final["connections"] == 0 and final["tasks"] == base["tasks"]
        detail = (
            f"{final['connections']} connections, {final['tasks']} tasks "
            f"(baseline {base['tasks']}) {settled - load_end:.1f} s after the load"
        )
    else:
        back, detail = False, "no server report"
    checks.append(check("server back to baseline", back, detail))
    checks.append(
        check(
            "load back to baseline",
            load_final.tasks == load_baseline.tasks and load.clients == 0,
            f"{load_final.tasks} tasks (baseline {load_baseline.tasks}), "
            f"{load.clients} clients open",
        )
    )
    return {
        "requests": {"ok": ok, "errors": errors, "timeouts": timeouts},
        "workloads": workloads,
        "datagrams": datagrams,
        "failures": load.failures,
        "load_end": round(load_end, 3),
        "settled": round(settled, 3),
        "server": {
            "baseline": base,
            "final": final,
            "samples": [
                {
                    k: r[k]
                    for k in (
                        "at",
                        "label",
                        "rss",
                        "tasks",
                        "connections",
                        "gc_objects",
                    )
                }
                | {"requests": r["counts"].get("requests", 0)}
                for r in reports
            ],
        },
        "load": {
            "baseline": vars(load_baseline),
            "final": vars(load_final),
            "samples": [vars(s) for s in samples],
        },
        "checks": checks,
    }


# -- the report --------------------------------------------------------------


def timeline(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the RSS and task table: start, every minute (every sixth of
    a short run), end of load, after the connections closed."""
    reports = summary["server"]["samples"]
    load_samples = summary["load"]["samples"]
    if not reports:
        return []
    end = summary["load_end"]
    step = 60.0 if summary["duration"] >= 180 else max(1.0, summary["duration"] / 6)
    marks = [0.0]
    while marks[-1] + step < end - step / 4:
        marks.append(marks[-1] + step)
    marks.append(end)

    def nearest(rows: list[dict[str, Any]], key: str, at: float) -> dict[str, Any]:
        return min(rows, key=lambda r: abs(r[key] - at))

    rows = []
    for mark in marks:
        r = nearest([r for r in reports if r["at"] <= end + 1], "at", mark)
        s = nearest(load_samples, "t", mark) if load_samples else None
        rows.append({"label": f"{mark:6.0f} s", "server": r, "load": s})
    rows.append(
        {
            "label": "settled",
            "server": reports[-1],
            "load": summary["load"]["final"],
        }
    )
    return rows


def render(summary: dict[str, Any]) -> str:
    out: list[str] = []
    out.append("")
    out.append("RSS and tasks over time (server; load process)")
    out.append(
        f"{'time':>10} {'srv RSS MiB':>12} {'srv tasks':>10} {'conns':>6} "
        f"{'requests':>9} {'gc objs':>9} {'load RSS MiB':>13} {'load tasks':>11}"
    )
    for row in timeline(summary):
        r, s = row["server"], row["load"]
        out.append(
            f"{row['label']:>10} {r['rss'] / MIB:12.1f} {r['tasks']:10d} "
            f"{r['connections']:6d} {r['requests']:9d} {r['gc_objects']:9d} "
            + (f"{s['rss'] / MIB:13.1f} {s['tasks']:11d}" if s else "")
        )
    out.append("")
    out.append("Outcomes per workload")
    out.append(
        f"{'workload':>10} {'operation':>24} {'ok':>8} {'errors':>7} {'t/o':>5} "
        f"{'mean s':>7} {'max s':>7}"
    )
    for name, w in summary["workloads"].items():
        for what, op in w["operations"].items():
            errs = sum(op["errors"].values())
            mean = op["mean_seconds"]
            out.append(
                f"{name:>10} {what:>24} {op['ok']:8d} {errs:7d} {op['timeouts']:5d} "
                + (f"{mean:7.3f}" if mean is not None else f"{'-':>7}")
                + f" {op['max_seconds']:7.2f}"
                + (f"  {op['errors']}" if errs else "")
            )
        if w["extra"]:
            out.append(f"{'':>10} {'':>24} {w['extra']}")
    d = summary["datagrams"]
    out.append("")
    out.append(
        f"Datagrams: {d['sent']} sent, {d['server_received']} reached the server, "
        f"{d['echoed']} echoed back: loss {d['echo_loss']:.2%} round trip "
        f"(up {d['loss_up']}, down {d['loss_down']}; the hop explains "
        f"{d['expected_echo_loss']:.2%})"
    )
    if summary.get("hop"):
        h = summary["hop"]
        out.append(
            f"Hop: up {h['up']['received']} received, {h['up']['lost']} lost, "
            f"{h['up']['queue_drops']} queue drops; down {h['down']['received']} "
            f"received, {h['down']['lost']} lost, {h['down']['queue_drops']} queue "
            f"drops; {h['clients']} client addresses"
        )
    if summary["failures"]:
        out.append("")
        out.append(f"Failures (first {len(summary['failures'])}):")
        for f in summary["failures"][:20]:
            out.append(
                f"  {f['t']:8.2f} s {f['workload']} {f['operation']}: "
                f"{f['outcome']} {f['detail']}"
            )
    logged = [
        *summary["server_log"]["first"],
        *(f"(load) {line}" for line in summary["load_log"]["first"]),
    ]
    if logged:
        out.append("")
        out.append("Logged (first records):")
        out.extend(f"  {line}" for line in logged)
    if "Traceback" in summary["server_stderr_tail"]:
        out.append("")
        out.append(f"Server stderr (end; all of it in {summary['logs']}):")
        out.extend(
            f"  {line}" for line in summary["server_stderr_tail"][-1500:].splitlines()
        )
    for note in summary["notes"]:
        out.append("")
        out.append(f"Note: {note}")
    out.append("")
    out.append("Checks")
    for c in summary["checks"]:
        out.append(f"  [{'ok' if c['ok'] else 'FAIL':>4}] {c['name']}: {c['detail']}")
    out.append("")
    out.append("soak " + ("passed" if summary["ok"] else "FAILED"))
    return "\n".join(out)


# -- entry point -------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of load (default 600; 30 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a 30 s run (smaller downloads)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--loss",
        type=float,
        default=0.02,
        help="the hop's random loss, each way (default 0.02)",
    )
    parser.add_argument(
        "--delay", type=float, default=0.005, help="the hop's delay, each way, seconds"
    )
    parser.add_argument(
        "--json", metavar="PATH", help="write the summary as JSON there ('-': stdout)"
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        help="seconds an operation may take before it counts as timed out",
    )
    parser.add_argument(
        "--bulk-timeout", type=float, default=120.0, help="the same, for bulk downloads"
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=10.0, help=argparse.SUPPRESS
    )
    parser.add_argument("--report-interval", type=float, default=None)
    parser.add_argument("--mixed-connections", type=int, default=2)
    parser.add_argument("--mixed-concurrency", type=int, default=4)
    parser.add_argument("--churn-loops", type=int, default=2)
    parser.add_argument("--datagram-interval", type=float, default=0.01)
    # The child processes (internal).
    parser.add_argument("--role", choices=("load", "server", "hop"), default="load")
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--target-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=900.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 30.0 if args.quick else 600.0
    if args.report_interval is None:
        args.report_interval = 1.0 if args.duration < 180 else 5.0
    if not 0.0 <= args.loss < 1.0:
        parser.error("--loss must be in [0, 1)")
    if args.duration <= 0:
        parser.error("--duration must be positive")
    return args


@contextmanager
def _stdout_for(path: str | None) -> Iterator[Any]:
    if path is None or path == "-":
        yield sys.stdout
    else:
        with open(path, "w") as fp:
            yield fp


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "server":
        trio.run(server_main, args)
        return 0
    if args.role == "hop":
        hop_main(args)
        return 0
    summary = trio.run(orchestrate, args)
    if args.json != "-":
        print(render(summary), flush=True)
    if args.json is not None:
        with _stdout_for(args.json) as fp:
            json.dump(summary, fp, indent=2, default=str)
            fp.write("\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
