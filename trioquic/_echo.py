"""The echo protocol over raw QUIC streams, shared by the command line.

Protocol (ALPN ``trioquic-echo``): the client opens a bidirectional stream,
sends bytes and a FIN; the server sends every byte back, then a FIN. Any
number of streams may run at once on one connection.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Sequence

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ._connection import QuicConnection
from ._endpoint import open_quic_connection
from ._errors import ConnectionClosed, StreamReset, StreamStopped
from ._settings import QuicSettings
from ._stream import QuicReceiveStream, QuicStream

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


def spki_sha256(certificate_path: str | os.PathLike[str]) -> str:
    """Base64 SHA-256 of the SubjectPublicKeyInfo of the first certificate in
    a PEM file (what ``--ignore-certificate-errors-spki-list`` wants)."""
    with open(certificate_path, "rb") as fp:
        certificate = x509.load_pem_x509_certificate(fp.read())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()
