"""httpx over HTTP/3: ``httpx.AsyncClient`` with trioquic's transport, under trio.

What it shows:

* ``httpx.AsyncClient(transport=HTTP3Transport(verify=...))``: every request
  goes over HTTP/3 (``response.http_version == "HTTP/3"``), on pooled QUIC
  connections (one per origin while the server's stream limit allows);
* the client must be used with ``async with``: the transport's connections
  live in a nursery that the block owns, and leave with it, gracefully;
* several requests at once (``--repeat N``) multiplexed on one connection;
* a streamed upload (``--upload BYTES``): the request body is an async
  generator, sent as the server reads it;
* httpx's own timeouts and exceptions (``httpx.ConnectError``,
  ``httpx.ReadTimeout``, ...): nothing here catches a trioquic exception;
* with ``--alt-svc``, ``AltSvcTransport`` instead: the first request goes over
  TCP (HTTP/1.1 or HTTP/2) and the next ones over HTTP/3 once the server's
  ``Alt-Svc`` header said where (what a browser does).

How to run it: start a server, e.g. ``trioquic serve --port 4433`` (it prints
the certificate it generated), then::

    python examples/httpx_client.py --ca-certs /tmp/trioquic-XXXX/cert.pem \\
        https://localhost:4433/bytes/1000 --repeat 10

    python examples/httpx_client.py --ca-certs /tmp/trioquic-XXXX/cert.pem \\
        --upload 1000000 https://localhost:4433/echo

It prints, for each URL, the status, the protocol and the body's size (with
``--show`` the body itself), then how many connections were used; it exits
with status 1 if a request failed or a status is not 2xx.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator

import httpx
import trio

from trioquic.httpx import AltSvcTransport, HTTP3Transport


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="+", help="https:// URLs to fetch")
    parser.add_argument("--ca-certs", help="PEM file of the CA to trust")
    parser.add_argument(
        "--insecure", action="store_true", help="do not verify the certificate"
    )
    parser.add_argument("--repeat", type=int, default=1, help="fetch each URL N times")
    parser.add_argument(
        "--upload", type=int, default=0, help="POST this many bytes, streamed"
    )
    parser.add_argument("--zero-rtt", action="store_true", help="0-RTT when resumed")
    parser.add_argument("--alt-svc", action="store_true", help="start on TCP")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds")
    parser.add_argument("--show", action="store_true", help="print the bodies")
    return parser.parse_args(argv)


async def upload(size: int) -> AsyncIterator[bytes]:
    chunk = b"x" * 16384
    sent = 0
    while sent < size:
        part = chunk[: size - sent]
        sent += len(part)
        yield part


async def fetch(client: httpx.AsyncClient, url: str, args: argparse.Namespace) -> bool:
    try:
        if args.upload:
            response = await client.post(url, content=upload(args.upload))
        else:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        print(f"{url}: {type(exc).__name__}: {exc}")
        return False
    size = len(response.content)
    print(f"{url}: {response.status_code} {response.http_version}, {size} bytes")
    if args.show:
        print(response.text)
    return response.is_success


async def main(args: argparse.Namespace) -> int:
    verify: bool | str = not args.insecure
    if args.ca_certs and not args.insecure:
        verify = args.ca_certs
    http3 = HTTP3Transport(verify=verify, zero_rtt=args.zero_rtt)
    transport: httpx.AsyncBaseTransport = (
        AltSvcTransport(verify=verify, http3=http3) if args.alt_svc else http3
    )
    ok = True
    async with httpx.AsyncClient(transport=transport, timeout=args.timeout) as client:
        for url in args.urls:
            if args.alt_svc:
                ok &= await fetch(client, url, args)  # learn the Alt-Svc first
            results: list[bool] = []

            async def one(url: str, results: list[bool]) -> None:
                results.append(await fetch(client, url, args))

            async with trio.open_nursery() as nursery:
                for _ in range(args.repeat):
                    nursery.start_soon(one, url, results)
            ok &= all(results)
        used = sum(len(conns) for conns in http3.connections.values())
        print(f"HTTP/3 connections open: {used}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(trio.run(main, parse_args()))
