"""The echo protocol over raw QUIC streams, and the ``trioquic echo-server``
and ``trioquic echo-client`` commands.

Protocol (ALPN ``trioquic-echo``): the client opens a bidirectional stream,
sends bytes and a FIN; the server sends every byte back, then a FIN. Any
number of streams may run at once on one connection.
"""

from __future__ import annotations

import argparse
import functools
import logging
import shlex
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

import trio

from .. import (
    ConnectionClosed,
    QuicConnection,
    QuicReceiveStream,
    QuicServer,
    QuicSettings,
    QuicStream,
    StreamReset,
    StreamStopped,
    open_quic_connection,
    serve_quic,
)
from ._common import (
    CommandError,
    _add_engine_argument,
    _add_handshake_arguments,
    _add_server_arguments,
    _add_trust_arguments,
    _certificate_spki,
    _check_readable,
    _port,
    _print_certificate,
    _print_engine,
    _print_listening,
    _quic_settings,
    _self_command,
    _serve_until_signalled,
    _server_certificate,
)

if TYPE_CHECKING:
    from ._common import Commands

logger = logging.getLogger("trioquic.echo")

#: The ALPN protocol the echo server and client negotiate.
ECHO_ALPN = "trioquic-echo"

#: Largest echo reply the client accepts on one stream.
MAX_REPLY_SIZE = 16 * 1024 * 1024

_STREAM_BROKEN = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    StreamReset,
    StreamStopped,
)


# -- the protocol ------------------------------------------------------------------


async def echo_stream(stream: QuicStream | QuicReceiveStream) -> None:
    """Send back everything read from ``stream``, then FIN.

    A unidirectional stream (which cannot answer) is read and discarded.
    Ends quietly when the peer resets the stream or the connection ends.
    """
    try:
        async with stream:
            echoed = 0
            while data := await stream.receive_some():
                if isinstance(stream, QuicStream):
                    await stream.send_all(data)
                    echoed += len(data)
            if isinstance(stream, QuicStream):
                await stream.send_eof()
            logger.info("stream %d: echoed %d bytes", stream.stream_id, echoed)
    except _STREAM_BROKEN as exc:
        logger.info("stream %d ended early: %s", stream.stream_id, exc)


async def echo_handler(connection: QuicConnection) -> None:
    """A :func:`~trioquic.serve_quic` handler: echo every stream the peer opens.

    Returns when the connection ends (the peer closed it, or it timed out).
    """
    peer = connection.peer_address
    logger.info("connection from %s", peer)
    async with trio.open_nursery() as nursery:
        while True:
            try:
                stream = await connection.accept_stream()
            except ConnectionClosed as exc:
                logger.info("connection from %s ended: %s", peer, exc.reason)
                break
            nursery.start_soon(echo_stream, stream)


async def echo_once(connection: QuicConnection, message: bytes) -> bytes:
    """Send ``message`` on a new stream, FIN, and return what comes back."""
    stream = await connection.open_stream()
    async with stream:
        await stream.send_all(message)
        await stream.send_eof()
        reply = bytearray()
        while data := await stream.receive_some():
            reply += data
            if len(reply) > MAX_REPLY_SIZE:
                raise ValueError(f"echo reply larger than {MAX_REPLY_SIZE} bytes")
        return bytes(reply)


async def echo_messages(
    host: str, port: int, messages: Sequence[bytes], *, settings: QuicSettings
) -> list[bytes]:
    """Connect to an echo server and echo each message on its own stream.

    The streams run concurrently; the replies come back in message order.
    """
    replies: list[bytes] = [b""] * len(messages)
    async with open_quic_connection(host, port, settings=settings) as connection:

        async def one(index: int) -> None:
            replies[index] = await echo_once(connection, messages[index])

        async with trio.open_nursery() as nursery:
            for index in range(len(messages)):
                nursery.start_soon(one, index)
    return replies


# -- echo-server -----------------------------------------------------------------


def _client_host(host: str) -> str:
    """The address a local client should use to reach a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


async def _run_echo_server(
    host: str,
    port: int,
    settings: QuicSettings,
    on_ready: Callable[[QuicServer], None],
    out: TextIO,
) -> None:
    """The echo server, until SIGINT or SIGTERM."""
    start = functools.partial(
        serve_quic, echo_handler, port, host=host, settings=settings
    )
    await _serve_until_signalled(start, on_ready, out)


def _cmd_echo_server(args: argparse.Namespace, prog: str, out: TextIO) -> int:
    certificate_path, key_path, generated = _server_certificate(args)
    spki = _certificate_spki(certificate_path)
    settings = _quic_settings(
        args,
        alpn_protocols=[ECHO_ALPN],
        certificate=certificate_path,
        private_key=key_path,
    )

    def on_ready(server: QuicServer) -> None:
        _print_listening(server, "echo server", out)
        _print_engine(settings, out)
        _print_certificate(certificate_path, key_path, generated, spki, out)
        client = [
            *_self_command(prog),
            "echo-client",
            _client_host(args.host),
            str(server.port),
            "--ca-certs",
            certificate_path,
            "hello",
            "world",
        ]
        print(f"try it with: {shlex.join(client)}", file=out)
        print("press Ctrl-C to stop", file=out)
        out.flush()

    trio.run(_run_echo_server, args.host, args.port, settings, on_ready, out)
    print("echo server stopped", file=out)
    return 0


# -- echo-client -------------------------------------------------------------------


def _cmd_echo_client(args: argparse.Namespace, prog: str, out: TextIO) -> int:
    if args.ca_certs is not None:
        _check_readable(args.ca_certs, "CA certificates")
    settings = _quic_settings(
        args,
        alpn_protocols=[ECHO_ALPN],
        ca_certs=args.ca_certs,
        verify_peer=not args.insecure,
        server_name=args.server_name,
        handshake_timeout=args.timeout,
    )
    messages = [message.encode() for message in args.message]

    async def run() -> list[bytes]:
        # Bounded: the handshake has its own timeout; this covers the rest.
        with trio.fail_after(args.timeout + 30):
            return await echo_messages(
                args.host, args.port, messages, settings=settings
            )

    try:
        replies = trio.run(run)
    except trio.TooSlowError:
        raise CommandError("the echo server did not answer in time") from None
    for reply in replies:
        print(reply.decode(errors="replace"), file=out)
    out.flush()
    if replies != messages:
        raise CommandError("an echo reply differs from the message sent")
    return 0


# -- the parsers -------------------------------------------------------------------


def add_echo_server_command(commands: Commands) -> None:
    """``trioquic echo-server``."""
    server = commands.add_parser(
        "echo-server",
        help="run a raw-QUIC echo server (ALPN trioquic-echo)",
        description=(
            "Echo every stream back to its sender. Without --certificate a "
            "self-signed development certificate for localhost, 127.0.0.1 "
            "and ::1 is generated. Ctrl-C stops the server gracefully."
        ),
    )
    _add_server_arguments(
        server,
        host="127.0.0.1",
        host_help="address to bind (default: 127.0.0.1)",
    )
    server.add_argument(
        "-v", "--verbose", action="store_true", help="log connections and streams"
    )
    _add_engine_argument(server)
    server.set_defaults(handler=_cmd_echo_server)


def add_echo_client_command(commands: Commands) -> None:
    """``trioquic echo-client``."""
    client = commands.add_parser(
        "echo-client",
        help="send messages to an echo server and print the replies",
        description="Send each MESSAGE on its own QUIC stream and print the echo.",
    )
    client.add_argument("host", metavar="HOST")
    client.add_argument("port", metavar="PORT", type=_port)
    client.add_argument("message", metavar="MESSAGE", nargs="+")
    _add_trust_arguments(client)
    _add_handshake_arguments(client, default_name="HOST")
    client.add_argument(
        "-v", "--verbose", action="store_true", help="log what the client does"
    )
    _add_engine_argument(client)
    client.set_defaults(handler=_cmd_echo_client)
