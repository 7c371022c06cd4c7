"""A QUIC echo server on raw streams.

What it shows:

* ``trioquic.serve_quic(handler, port, ...)`` started with ``nursery.start``,
  which reports the bound address once the server listens;
* a handler that accepts every stream the client opens and runs one task per
  stream in its own nursery (the handler runs inside the connection's
  nursery, so those tasks never outlive the connection);
* streams as trio streams: ``receive_some`` returns ``b""`` at the peer's FIN,
  ``send_eof`` sends ours;
* a self-signed development certificate from
  ``trioquic.generate_self_signed_certificate()``;
* graceful shutdown: Ctrl-C cancels the server's scope, which sends
  CONNECTION_CLOSE to every client before the program exits.

How to run it (from the repository root, with trioquic installed)::

    python examples/echo_server.py                 # listens on 127.0.0.1:4433
    python examples/echo_server.py --port 0        # any free port

It prints the port, the certificate file, and the client command to run in
another terminal, for example::

    python examples/echo_client.py --ca-certs /tmp/trioquic-XXXX/cert.pem \\
        127.0.0.1 4433 hello world

The protocol (ALPN ``trioquic-echo``) is the one ``trioquic echo-server``
speaks, so either client works with either server.
"""

from __future__ import annotations

import argparse
import functools
import signal

import trio

import trioquic

ALPN = "trioquic-echo"


async def echo_stream(stream: trioquic.QuicStream | trioquic.QuicReceiveStream) -> None:
    """Send back every byte the peer sends on ``stream``, then FIN."""
    try:
        async with stream:
            while data := await stream.receive_some():
                if isinstance(stream, trioquic.QuicStream):
                    await stream.send_all(data)
            if isinstance(stream, trioquic.QuicStream):
                await stream.send_eof()
    except trio.BrokenResourceError:
        # The peer reset the stream, or the connection ended: nothing to echo.
        # (trioquic.StreamReset and ConnectionClosed are BrokenResourceErrors.)
        pass


async def handle_connection(connection: trioquic.QuicConnection) -> None:
    """Called by serve_quic for each connection, once its handshake is done."""
    print(f"connection from {connection.peer_address}", flush=True)
    async with trio.open_nursery() as nursery:
        while True:
            try:
                stream = await connection.accept_stream()
            except trioquic.ConnectionClosed as exc:
                print(f"connection ended: {exc.reason}", flush=True)
                return
            nursery.start_soon(echo_stream, stream)


async def main(host: str, port: int) -> None:
    cert = trioquic.generate_self_signed_certificate()
    settings = trioquic.QuicSettings(
        alpn_protocols=[ALPN],
        certificate=str(cert.certificate_path),
        private_key=str(cert.private_key_path),
    )
    # Ctrl-C (SIGINT) and SIGTERM are turned into a graceful stop.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    trioquic.serve_quic,
                    handle_connection,
                    port,
                    host=host,
                    settings=settings,
                )
            )
            print(f"listening on {host}:{server.port}")
            print(f"certificate: {cert.certificate_path}")
            print(
                "run: python examples/echo_client.py "
                f"--ca-certs {cert.certificate_path} {host} {server.port} hello world"
            )
            print("press Ctrl-C to stop", flush=True)
            async for _ in signals:
                break
            print("stopping: closing every connection", flush=True)
            # Cancelling the server's scope closes each connection gracefully.
            nursery.cancel_scope.cancel()
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="trioquic echo server example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    args = parser.parse_args()
    trio.run(main, args.host, args.port)
