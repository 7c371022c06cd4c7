"""A small DoQ client: :func:`query`."""

from __future__ import annotations

import attrs
import dns.message

from .._connection import QuicConnection
from .._endpoint import open_quic_connection
from .._settings import QuicSettings
from ._errors import DoqProtocolError
from ._wire import DEFAULT_PORT, DOQ_ALPN, MAX_MESSAGE_SIZE, frame


async def query_over(
    connection: QuicConnection, message: dns.message.Message
) -> dns.message.Message:
    """Send ``message`` on a new stream of ``connection`` (a DoQ connection,
    ALPN ``doq``) and return the response. The Message ID goes out as 0
    (``message`` is not changed). Raises :exc:`DoqProtocolError` for a
    response that breaks RFC 9250, :exc:`dns.exception.DNSException` for one
    that is not DNS, :exc:`trioquic.StreamReset` when the server resets the
    stream, :exc:`trioquic.ConnectionClosed` when the connection ends."""
    if not isinstance(message, dns.message.Message):
        raise TypeError(
            f"message must be a dns.message.Message, got {type(message).__name__}"
        )
    original_id = message.id
    message.id = 0
    try:
        wire = message.to_wire()
    finally:
        message.id = original_id
    stream = await connection.open_stream()
    async with stream:
        await stream.send_all(frame(wire))
        await stream.send_eof()
        data = bytearray()
        while chunk := await stream.receive_some():
            data += chunk
            if len(data) > 2 + MAX_MESSAGE_SIZE:
                raise DoqProtocolError("the response is longer than 65535 bytes")
    if len(data) < 2:
        raise DoqProtocolError("the stream ended before the response's length prefix")
    length = int.from_bytes(data[:2], "big")
    if len(data) - 2 != length:
        raise DoqProtocolError(
            f"the response's length prefix says {length} bytes, the stream held "
            f"{len(data) - 2}"
        )
    response = dns.message.from_wire(bytes(data[2:]))
    if response.id != 0:
        raise DoqProtocolError(f"the response's Message ID is {response.id}, not 0")
    return response


async def query(
    message: dns.message.Message,
    host: str,
    port: int = DEFAULT_PORT,
    *,
    settings: QuicSettings | None = None,
) -> dns.message.Message:
    """Ask a DoQ server one query on a connection of its own and return the
    response (see :func:`query_over` for several on one connection).

    ``settings`` is the client's QUIC side (``ca_certs``, ``server_name``);
    its ALPN is set to ``doq``. Not bounded in time: put a deadline around
    it (``with trio.fail_after(5):``).
    """
    if settings is None:
        settings = QuicSettings()
    elif not isinstance(settings, QuicSettings):
        raise TypeError(
            f"settings must be a trioquic.QuicSettings, got {type(settings).__name__}"
        )
    settings = attrs.evolve(settings, alpn_protocols=[DOQ_ALPN])
    async with open_quic_connection(host, port, settings=settings) as connection:
        return await query_over(connection, message)
