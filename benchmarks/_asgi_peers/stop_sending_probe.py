"""Does a server survive clients that stop reading? ``asgi_servers.py`` runs
this against every server after its measurements (hypercorn's trio worker
was seen to exit on STOP_SENDING).

With trioquic's HTTP/3 client: ``--aborts`` times, ``GET /stream``, read the
first piece of the body, then stop reading (``Response.aclose()``: STOP_SENDING
with H3_REQUEST_CANCELLED); then ``GET /`` on the same connection and on a new
one must each answer 200 with the whole 1 KB body. Prints one line,
``PROBE {json}`` (``same_connection``, ``new_connection``: true, or why not),
and exits. Run it::

    python benchmarks/_asgi_peers/stop_sending_probe.py --port 4433 --cert C
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import SMALL_PATH, SMALL_SIZE, STREAM_PATH

TAG = "PROBE "
HOST = "127.0.0.1"


async def small_answered(client: Any) -> bool | str:
    response = await client.request("GET", SMALL_PATH)
    body = await response.read()
    if response.status == 200 and len(body) == SMALL_SIZE:
        return True
    return f"status {response.status}, {len(body)} bytes"


async def probe(args: argparse.Namespace) -> dict[str, bool | str]:
    import trio

    from trioquic import QuicSettings
    from trioquic.h3 import open_http3_client

    settings = QuicSettings(alpn_protocols=["h3"], ca_certs=args.cert)
    outcome: dict[str, bool | str] = {}
    for key in ("same_connection", "new_connection"):
        try:
            with trio.fail_after(args.timeout):
                async with open_http3_client(HOST, args.port, settings=settings) as c:
                    if key == "same_connection":
                        for _ in range(args.aborts):
                            response = await c.request("GET", STREAM_PATH)
                            async for _chunk in response:
                                break
                            await response.aclose()
                    outcome[key] = await small_answered(c)
        except Exception as exc:  # what went wrong is the finding
            outcome[key] = f"{type(exc).__name__}: {exc}"[:300]
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True, help="the server's certificate")
    parser.add_argument("--aborts", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    import trio

    print(TAG + json.dumps(trio.run(probe, args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
