"""The Python clients of the HTTP/3 bulk benchmark: one ``GET`` on one
connection, the body read to its end and counted, never kept.

* ``--impl trioquic``: ``trioquic.h3.open_http3_client`` and
  ``client.request``, the body read with ``async for``;
* ``--impl trioquic-qh3``: the same on trioquic's qh3 engine
  (``QuicSettings(engine="qh3")``);
* ``--impl aioquic``: aioquic's asyncio layer in the shape of its example
  client (a ``QuicConnectionProtocol`` feeding an ``H3Connection``; the
  protocol class of the request benchmark's load client, which counts body
  bytes as ``DataReceived`` events arrive);
* ``--impl qh3``: the same client on qh3's asyncio layer and ``H3Connection``
  (qh3 keeps aioquic's API).

All use the QUIC settings every peer of the HTTP/3 benchmarks uses
(``_shared.py``; qh3 is CUBIC only, so ``--cc cubic`` with ``qh3`` and
``trioquic-qh3``) and verify the server's certificate against ``--cert``.
The clock and the CPU count start just before connecting and stop at the
last body byte: the handshake is included, the interpreter's start, the
stacks' imports (trioquic loads its engine before the clock) and the
connection's close are not. Prints one line, ``H3-BULK {json}`` (status,
bytes, connected_s: seconds to the completed handshake, seconds, cpu_s,
tenths_s: the seconds at which each tenth of the body had arrived), and
exits. Run it::

    python benchmarks/_h3_peers/bulk_client.py --impl trioquic --port 4433 \
        --cert C --path /bytes/52428800
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import HOST, pin_to, quic_configuration, trioquic_settings

TAG = "H3-BULK "
IMPLEMENTATIONS = ("trioquic", "trioquic-qh3", "aioquic", "qh3")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """Wall and CPU seconds from construction to :meth:`stop`, and the
    seconds at which each tenth of the body had arrived (:meth:`progress`)."""

    def __init__(self, size: int | None = None) -> None:
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        self.size = size
        self.tenths: list[float] = []

    def progress(self, received: int) -> None:
        """Note ``received`` bytes of the body so far."""
        size = self.size
        while (
            size
            and len(self.tenths) < 10
            and received * 10 >= size * (len(self.tenths) + 1)
        ):
            self.tenths.append(time.perf_counter() - self.wall)

    def stop(self) -> dict[str, float]:
        return {
            "seconds": time.perf_counter() - self.wall,
            "cpu_s": cpu_seconds() - self.cpu,
            "tenths_s": self.tenths,
        }


async def trioquic_get(args: argparse.Namespace) -> dict[str, Any]:
    import trio

    from trioquic.h3 import open_http3_client
    from trioquic.lowlevel import create_endpoint_engine

    settings = trioquic_settings(
        args.cc,
        library_defaults=args.library_defaults,
        engine="qh3" if args.impl == "trioquic-qh3" else "aioquic",
        ca_certs=args.cert,
    )
    # trioquic imports its engine (aioquic) with the first endpoint, about
    # 70 ms: do it before the clock starts, as the aioquic client's imports
    # and certificate loading are done before its clock starts.
    create_endpoint_engine(settings, is_client=True).close()
    with trio.fail_after(args.timeout):
        clock = Clock(expected_size(args.path))
        async with open_http3_client(HOST, args.port, settings=settings) as client:
            connected = time.perf_counter() - clock.wall
            response = await client.request("GET", args.path)
            received = 0
            async for chunk in response:
                received += len(chunk)
                clock.progress(received)
            measured = clock.stop()
    return {
        "status": response.status,
        "bytes": received,
        "connected_s": connected,
        **measured,
    }


async def asyncio_get(args: argparse.Namespace) -> dict[str, Any]:
    """aioquic's or qh3's asyncio client (``args.impl`` names the library)."""
    import asyncio

    from load_client import make_protocol

    connect = importlib.import_module(f"{args.impl}.asyncio").connect
    config = quic_configuration(args.impl, is_client=True, congestion_control=args.cc)
    config.load_verify_locations(args.cert)
    authority = f"{HOST}:{args.port}".encode()
    base = make_protocol(args.impl)

    class Protocol(base):  # type: ignore[misc, valid-type]
        def quic_event_received(self, event: Any) -> None:
            super().quic_event_received(event)
            for entry in self._pending.values():  # [future, status, bytes]
                clock.progress(entry[2])

    async with asyncio.timeout(args.timeout):
        clock = Clock(expected_size(args.path))
        async with connect(
            HOST, args.port, configuration=config, create_protocol=Protocol
        ) as protocol:
            connected = time.perf_counter() - clock.wall
            status, received = await protocol.get(authority, args.path.encode())
            clock.progress(received)  # the last event's bytes (its entry is gone)
            measured = clock.stop()
    return {
        "status": int(status or 0),
        "bytes": received,
        "connected_s": connected,
        **measured,
    }


def expected_size(path: str) -> int | None:
    """The body size ``/bytes/<n>`` asks for (None for another path)."""
    prefix = "/bytes/"
    tail = path[len(prefix) :]
    return int(tail) if path.startswith(prefix) and tail.isdigit() else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=IMPLEMENTATIONS, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--path", default="/bytes/52428800")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds allowed in all"
    )
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--cc", choices=("reno", "cubic"), default="reno")
    parser.add_argument(
        "--library-defaults",
        action="store_true",
        help="trioquic: the library's default QUIC settings, not the shared ones",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin_to(args.cpu)
    if args.impl.startswith("trioquic"):
        import trio

        result = trio.run(trioquic_get, args)
    else:
        import asyncio

        result = asyncio.run(asyncio_get(args))
    print(TAG + json.dumps({"impl": args.impl, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
