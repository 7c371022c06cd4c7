"""An HTTP/3 client written directly on ``trioquic.h3``.

What it shows:

* ``trioquic.h3.open_http3_client(host, port, settings=...)``: an async
  context manager holding one QUIC connection, closed gracefully when the
  block ends;
* several requests on that connection at once, one task each;
* ``await client.request(method, path, headers=..., body=...)`` returning a
  ``Response`` as soon as its headers arrive; the body is read as it
  streams in with ``async for chunk in response`` (or all at once with
  ``await response.read()``);
* a request body given as an async iterator (streamed), with ``--upper``.

How to run it: start a server first (``python examples/http3_server.py``
or ``trioquic serve``), then, with the certificate path and port it
printed::

    python examples/http3_client.py --ca-certs /tmp/trioquic-XXXX/cert.pem \\
        https://127.0.0.1:4433/ https://127.0.0.1:4433/count/3

    python examples/http3_client.py --ca-certs /tmp/trioquic-XXXX/cert.pem \\
        --upper "shout this" https://127.0.0.1:4433/upper

All URLs must be on the same host and port (one connection). For each one it
prints the URL and status, then the body; it exits with status 1 if any
status is not 2xx.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from collections.abc import AsyncIterator

import trio

import trioquic
from trioquic.h3 import Http3Client, open_http3_client


async def fetch(client: Http3Client, path: str, upper: str | None) -> tuple[int, bytes]:
    if upper is None:
        response = await client.request("GET", path)
    else:

        async def body() -> AsyncIterator[bytes]:
            for word in upper.split(" "):  # streamed in several chunks
                yield word.encode() + b" "

        response = await client.request("POST", path, body=body())
    received = bytearray()
    async for chunk in response:
        received += chunk
    return response.status, bytes(received)


async def main(urls: list[str], ca_certs: str, upper: str | None) -> None:
    parts = [urllib.parse.urlsplit(url) for url in urls]
    host, port = parts[0].hostname or "localhost", parts[0].port or 443
    if any((p.hostname, p.port or 443) != (host, port) for p in parts):
        sys.exit("http3_client: give URLs of one host and port")
    settings = trioquic.QuicSettings(alpn_protocols=["h3"], ca_certs=ca_certs)
    results: dict[int, tuple[int, bytes]] = {}
    with trio.fail_after(30):  # bound the whole exchange
        async with open_http3_client(host, port, settings=settings) as client:

            async def one(index: int) -> None:
                path = parts[index].path or "/"
                results[index] = await fetch(client, path, upper)

            async with trio.open_nursery() as nursery:
                for index in range(len(urls)):
                    nursery.start_soon(one, index)
    for index, url in enumerate(urls):
        status, body = results[index]
        print(f"{url}: {status}")
        print(body.decode(errors="replace"), end="")
    if any(not 200 <= status < 300 for status, _ in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="trioquic HTTP/3 client example")
    parser.add_argument("--ca-certs", required=True, help="the server's cert.pem")
    parser.add_argument("--upper", metavar="TEXT", help="POST TEXT (to /upper)")
    parser.add_argument("url", nargs="+")
    args = parser.parse_args()
    try:
        trio.run(main, args.url, args.ca_certs, args.upper)
    except trioquic.ConnectionClosed as exc:
        sys.exit(f"http3_client: connection failed: {exc.reason}")
