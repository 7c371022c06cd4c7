"""The legitimate client of the fuzz: trioquic's HTTP/3 client, in a process
of its own, downloading and uploading through the fuzzer's relay until its
standard input closes, checking every byte.

Each round downloads ``GET /data/<size>?i=<round>`` and compares it byte for
byte, as it arrives, with the pattern both sides derive from
``--payload-seed``; then posts ``--echo-size`` random bytes to ``/echo`` and
compares the answer. One JSON line per transfer on stdout. A transfer that
fails is reported and the client connects again, so that one failure does
not hide the next ones.

Run by ``fuzz.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from typing import Any

import trio
import trio.lowlevel
from _fuzz_server import PATTERN_SIZE, body_start, pattern

import trioquic
from trioquic.h3 import open_http3_client


class TransferFailed(Exception):
    """A transfer came back wrong (already reported): connect again."""


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--payload-seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=8 << 20)
    parser.add_argument("--echo-size", type=int, default=256 << 10)
    parser.add_argument("--idle-timeout", type=float, default=5.0)
    parser.add_argument("--transfer-timeout", type=float, default=120.0)
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    data = pattern(args.payload_seed)
    stop = trio.Event()
    rng = random.Random(args.payload_seed)

    async def wait_for_eof() -> None:
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        async with stdin:
            while await stdin.receive_some():
                pass
        stop.set()

    settings = trioquic.QuicSettings(
        ca_certs=args.ca,
        server_name="localhost",
        idle_timeout=args.idle_timeout,
    )

    async def download(client: Any, index: int) -> dict[str, Any]:
        response = await client.request("GET", f"/data/{args.size}?i={index}")
        if response.status != 200:
            return {"ok": False, "error": f"status {response.status}"}
        offset = body_start(index)
        received = 0
        digest = hashlib.sha256()
        async for chunk in response:
            # Compare with the pattern, wrapping around.
            position = 0
            while position < len(chunk):
                take = min(len(chunk) - position, PATTERN_SIZE - offset)
                if chunk[position : position + take] != data[offset : offset + take]:
                    return {
                        "ok": False,
                        "error": f"corrupt at byte {received + position}",
                    }
                position += take
                offset = (offset + take) % PATTERN_SIZE
            received += len(chunk)
            digest.update(chunk)
        if received != args.size:
            return {"ok": False, "error": f"{received} of {args.size} bytes"}
        return {"ok": True, "bytes": received, "sha256": digest.hexdigest()[:16]}

    async def echo(client: Any) -> dict[str, Any]:
        body = rng.randbytes(args.echo_size)
        response = await client.request("POST", "/echo", body=body)
        answer = await response.read()
        if response.status != 200 or answer != body:
            return {"ok": False, "error": f"status {response.status}, echo differs"}
        return {"ok": True, "bytes": len(body)}

    index = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_eof)
        while not stop.is_set():
            try:
                async with open_http3_client(
                    "127.0.0.1", args.port, settings=settings
                ) as client:
                    while not stop.is_set():
                        for kind in ("download", "echo"):
                            started = time.monotonic()
                            with trio.fail_after(args.transfer_timeout):
                                if kind == "download":
                                    result = await download(client, index)
                                else:
                                    result = await echo(client)
                            emit(
                                transfer=index,
                                kind=kind,
                                seconds=round(time.monotonic() - started, 3),
                                **result,
                            )
                            if not result["ok"]:
                                raise TransferFailed
                        index += 1
            except TransferFailed:
                index += 1
            except (trioquic.QuicError, trio.TooSlowError) as exc:
                emit(
                    transfer=index,
                    kind="connection",
                    ok=False,
                    error=f"{type(exc).__name__}: {exc}",
                )
                index += 1
                await trio.sleep(0.5)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, parse_args())
