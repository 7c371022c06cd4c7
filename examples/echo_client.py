"""A QUIC echo client on raw streams.

What it shows:

* ``trioquic.open_quic_connection(host, port, settings=...)``: an async
  context manager that returns once the handshake is done and closes the
  connection gracefully (CONNECTION_CLOSE) when the block ends;
* trusting a development certificate with ``QuicSettings(ca_certs=...)``;
* several streams on one connection at once, one task per stream, each
  ``send_all`` + ``send_eof`` (FIN) and then reading until the server's FIN;
* errors as exceptions: a failed handshake raises ``trioquic.ConnectionClosed``
  (``ConnectionRefused`` at once when nothing listens on the port, on
  Linux; ``HandshakeTimeout`` when nothing answers).

How to run it: start a server first (``python examples/echo_server.py`` or
``trioquic echo-server``), then, with the certificate path and port it
printed::

    python examples/echo_client.py --ca-certs /tmp/trioquic-XXXX/cert.pem \\
        127.0.0.1 4433 hello world

It prints one line per message, in order, as ``'hello' -> 'hello'``.
"""

from __future__ import annotations

import argparse
import sys

import trio

import trioquic

ALPN = "trioquic-echo"


async def echo(connection: trioquic.QuicConnection, message: bytes) -> bytes:
    """Send ``message`` on a new stream and return what the server sends back."""
    stream = await connection.open_stream()
    async with stream:
        await stream.send_all(message)
        await stream.send_eof()
        reply = bytearray()
        while data := await stream.receive_some():
            reply += data
        return bytes(reply)


async def main(host: str, port: int, ca_certs: str, messages: list[str]) -> None:
    settings = trioquic.QuicSettings(alpn_protocols=[ALPN], ca_certs=ca_certs)
    replies: dict[int, bytes] = {}
    with trio.fail_after(30):  # bound the whole exchange
        async with trioquic.open_quic_connection(
            host, port, settings=settings
        ) as connection:
            print(f"connected to {host}:{port} ({connection.alpn_protocol})")

            async def one(index: int) -> None:
                replies[index] = await echo(connection, messages[index].encode())

            async with trio.open_nursery() as nursery:
                for index in range(len(messages)):
                    nursery.start_soon(one, index)
            rtt_ms = connection.statistics().smoothed_rtt * 1000
    for index, message in enumerate(messages):
        print(f"{message!r} -> {replies[index].decode()!r}")
    print(f"{len(messages)} streams, smoothed RTT {rtt_ms:.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="trioquic echo client example")
    parser.add_argument("--ca-certs", required=True, help="the server's cert.pem")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("message", nargs="+")
    args = parser.parse_args()
    try:
        trio.run(main, args.host, args.port, args.ca_certs, args.message)
    except trioquic.ConnectionClosed as exc:
        sys.exit(f"echo_client: connection failed: {exc.reason}")
