"""The server under fuzz: trioquic's HTTP/3 server on 127.0.0.1, in a
process of its own, reporting its health as JSON lines on stdout.

``GET /data/<n>`` (optionally ``?i=<k>``) answers ``n`` bytes of a pattern
both sides derive from ``--payload-seed`` (streamed, so the send buffer's
backpressure is in play); ``POST /echo`` answers the request body; anything
else 404. Every ``--report-interval`` seconds it prints its resident set
size, Python's allocated memory blocks, its trio task count (the whole task
tree), its connections and the router's counters, and every log record of
WARNING or above since the last report. It runs until its standard input
closes, then shuts down gracefully and prints a last report
(``"event": "final"``).

Run by ``fuzz.py``; by hand::

    python stress/_fuzz_server.py --cert cert.pem --key key.pem
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import sys
import time
import tracemalloc
import warnings
from collections import Counter
from collections.abc import Iterator
from functools import partial
from typing import Any

import trio
import trio.lowlevel

import trioquic
from trioquic.h3 import Http3Settings, Request, serve_http3

#: The pattern the bodies are cut from.
PATTERN_SIZE = 1 << 20
#: Larger bodies are refused (404): fuzzed requests ask for anything.
MAX_BODY = 256 << 20
PIECE = 64 << 10


def pattern(seed: int) -> bytes:
    return random.Random(seed).randbytes(PATTERN_SIZE)


def body_start(index: int) -> int:
    """Where in the pattern the body of transfer ``index`` starts (so that
    every transfer's bytes differ)."""
    return (index * 7919 + 13) % PATTERN_SIZE


def body_pieces(data: bytes, index: int, size: int) -> Iterator[bytes]:
    """The body of transfer ``index``: ``size`` bytes of the pattern from
    :func:`body_start`, wrapping around, in pieces of at most 64 KiB."""
    offset = body_start(index)
    while size > 0:
        piece = data[offset : offset + min(PIECE, size)]
        yield piece
        size -= len(piece)
        offset = (offset + len(piece)) % PATTERN_SIZE


def rss_bytes() -> int:
    with open("/proc/self/statm") as fp:
        return int(fp.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def walk_tasks() -> list[trio.lowlevel.Task]:
    """Every task of this trio run."""
    tasks = []
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        tasks.append(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return tasks


def short_name(name: str) -> str:
    # "trioquic._endpoint._run_connection" and friends; drop object addresses.
    return name.split(" at 0x")[0]


class LogRecords(logging.Handler):
    """Keeps every record of WARNING or above, for the reports."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.pending: list[dict[str, Any]] = []
        self.count: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.count[record.levelname] += 1
        if len(self.pending) < 100:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.pending.append(
                {
                    "t": time.monotonic(),
                    "level": record.levelname,
                    "logger": record.name,
                    "message": text,
                }
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--payload-seed", type=int, default=0)
    parser.add_argument("--idle-timeout", type=float, default=5.0)
    parser.add_argument("--handshake-timeout", type=float, default=3.0)
    parser.add_argument(
        "--retry", choices=["never", "always", "under-load"], default="under-load"
    )
    parser.add_argument("--report-interval", type=float, default=0.5)
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also report tracemalloc's current heap (slows the server down)",
    )
    return parser.parse_args(argv)


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    records = LogRecords()
    logging.getLogger().addHandler(records)
    data = pattern(args.payload_seed)

    async def handler(request: Request) -> None:
        path, _, query = request.path.partition("?")
        if request.method == "GET" and path.startswith("/data/"):
            try:
                size = int(path[len("/data/") :])
                index = int(query[2:]) if query.startswith("i=") else 0
            except ValueError:
                size = index = -1
            if 0 <= size <= MAX_BODY and index >= 0:
                headers = [("content-length", str(size))]
                async with request.stream_response(200, headers) as writer:
                    for piece in body_pieces(data, index, size):
                        await writer.send(piece)
                return
        elif request.method == "POST" and path == "/echo":
            await request.respond(200, body=await request.read())
            return
        await request.respond(404)

    retry: dict[str, Any] = {"retry": args.retry}
    if args.retry == "under-load":
        retry["retry_under_load_threshold"] = 64
    settings = trioquic.QuicSettings(
        certificate=args.cert,
        private_key=args.key,
        idle_timeout=args.idle_timeout,
        handshake_timeout=args.handshake_timeout,
        max_pending_handshakes=128,
        **retry,
    )
    http3_settings = Http3Settings(max_request_body_size=1 << 20)

    #: Connections seen alive, to learn how each ended (by ``id``).
    watched: dict[int, tuple[trioquic.ConnectionIO, Any]] = {}
    causes: Counter[str] = Counter()
    #: How the connections that carried more than 1 MiB ended (the
    #: legitimate client's: the fuzz's carry little).
    big_closes: list[dict[str, Any]] = []

    def watch(server: trioquic.QuicServer) -> None:
        alive = {id(io): io for io in server.connections}
        for key, io in alive.items():
            if key not in watched:
                watched[key] = (io, io.peer_address)
        for key in [k for k in watched if k not in alive]:
            io, peer = watched.pop(key)
            reason = io.close_reason
            cause = reason.cause.value if reason is not None else "unknown"
            causes[cause] += 1
            statistics = io.statistics()
            if statistics.bytes_sent > 1 << 20 and len(big_closes) < 100:
                big_closes.append(
                    {
                        "t": time.monotonic(),
                        "peer": list(peer) if peer else None,
                        "cause": cause,
                        "reason": str(reason),
                        "bytes_sent": statistics.bytes_sent,
                    }
                )

    def report(server: trioquic.QuicServer, event: str, **extra: Any) -> None:
        watch(server)
        tasks = walk_tasks()
        statistics = server.statistics()
        fields: dict[str, Any] = {
            "t": time.monotonic(),
            "rss": rss_bytes(),
            "blocks": sys.getallocatedblocks(),
            "tasks": len(tasks),
            "task_names": dict(
                Counter(short_name(task.name) for task in tasks).most_common(12)
            ),
            "connections": server.connection_count,
            "stats": {
                "datagrams_received": statistics.datagrams_received,
                "datagrams_delivered": statistics.datagrams_delivered,
                "connections_accepted": statistics.connections_accepted,
                "version_negotiations_sent": statistics.version_negotiations_sent,
                "retries_sent": statistics.retries_sent,
                "invalid_tokens": statistics.invalid_tokens,
                "stateless_resets_sent": statistics.stateless_resets_sent,
                "refused_max_connections": statistics.refused_max_connections,
                "connections": statistics.connections,
                "pending_handshakes": statistics.pending_handshakes,
                "connection_ids": statistics.connection_ids,
                "dropped": dict(statistics.dropped),
            },
            "log_counts": dict(records.count),
            "close_causes": dict(causes),
            "big_closes": big_closes,
            "log": records.pending,
            **extra,
        }
        records.pending = []
        if args.tracemalloc:
            fields["heap"] = tracemalloc.get_traced_memory()[0]
        emit(event, **fields)

    async def reporter(server: trioquic.QuicServer) -> None:
        while True:
            await trio.sleep(args.report_interval)
            report(server, "report")

    async def wait_for_eof() -> None:
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        async with stdin:
            while await stdin.receive_some():
                pass

    if args.tracemalloc:
        tracemalloc.start()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                serve_http3,
                handler,
                args.port,
                host="127.0.0.1",
                settings=settings,
                http3_settings=http3_settings,
            )
        )
        nursery.start_soon(reporter, server)
        await trio.sleep(0.2)
        gc.collect()
        report(server, "listening", port=server.port)
        await wait_for_eof()
        nursery.cancel_scope.cancel()
    gc.collect()
    # The task tree of an idle trio run, for the fuzzer to compare with.
    report(server, "final")


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    trio.run(main, parse_args())
