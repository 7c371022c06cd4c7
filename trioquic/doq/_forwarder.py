"""A ready-made DoQ handler that relays queries to a classic DNS server over
UDP (and TCP when the answer is truncated): :class:`UdpForwarder`."""

from __future__ import annotations

import logging
import secrets
import socket as _stdlib_socket
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import trio

from ._server import QueryContext
from ._wire import error_response

logger = logging.getLogger("trioquic.doq")

#: Largest UDP response read from the upstream server.
_MAX_UDP_RESPONSE = 65535


class UpstreamError(Exception):
    """The upstream server did not answer usably (timeouts, TCP failure)."""


def _parse_upstream(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(
            f"upstream must be HOST:PORT (e.g. 127.0.0.1:53), got {text!r}"
        )
    port = int(port_text)
    if not 0 < port <= 65535:
        raise ValueError(f"upstream port must be 1..65535, got {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


class UdpForwarder:
    """A DoQ handler that forwards each query to ``upstream``, a classic DNS
    server: ``serve_doq(UdpForwarder(("127.0.0.1", 53)), ...)``.

    Each query goes out with a random Message ID (RFC 9250 section 4.2.1:
    DoQ's ID 0 is not an ID on another transport) from a new socket, and the
    answer comes back with ID 0. Every attempt waits ``timeout`` seconds, and
    there are ``attempts`` of them; an answer with the TC bit is asked again
    over TCP (``tcp_fallback``). When the upstream never answers usably the
    client gets SERVFAIL. At most ``max_in_flight`` queries are forwarded at
    once; the others wait their turn (within the server's handler timeout).

    ``upstream`` is ``(host, port)`` or ``"HOST:PORT"``. The query is
    forwarded as received (only its ID changes), EDNS options included.
    Queries signed with TSIG are answered FORMERR by the server before they
    get here (it holds no keys).
    """

    def __init__(
        self,
        upstream: tuple[str, int] | str,
        *,
        timeout: float = 2.0,
        attempts: int = 2,
        tcp_fallback: bool = True,
        max_in_flight: int = 256,
    ) -> None:
        if isinstance(upstream, str):
            upstream = _parse_upstream(upstream)
        if (
            not isinstance(upstream, tuple)
            or len(upstream) != 2
            or not isinstance(upstream[0], str)
            or isinstance(upstream[1], bool)
            or not isinstance(upstream[1], int)
        ):
            raise TypeError(
                f"upstream must be (host, port) or 'HOST:PORT', got {upstream!r}"
            )
        if not 0 < upstream[1] <= 65535:
            raise ValueError(f"upstream port must be 1..65535, got {upstream[1]}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be greater than 0, got {timeout!r}")
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise TypeError(f"attempts must be an int, got {type(attempts).__name__}")
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
            raise TypeError(
                f"max_in_flight must be an int, got {type(max_in_flight).__name__}"
            )
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.upstream = upstream
        self.timeout = float(timeout)
        self.attempts = attempts
        self.tcp_fallback = bool(tcp_fallback)
        self.max_in_flight = max_in_flight
        self._slots = trio.Semaphore(max_in_flight)
        #: Queries that got SERVFAIL because the upstream failed.
        self.failures = 0

    def __repr__(self) -> str:
        return f"<trioquic.doq.UdpForwarder upstream={self.upstream!r}>"

    async def __call__(
        self, query: dns.message.Message, context: QueryContext
    ) -> dns.message.Message:
        wire = context.wire
        async with self._slots:
            try:
                response = await self.forward(query, wire)
            except UpstreamError as exc:
                self.failures += 1
                logger.warning(
                    "trioquic.doq: upstream %s failed for %s: %s",
                    self.upstream,
                    query.question,
                    exc,
                )
                return error_response(query, dns.rcode.SERVFAIL)
        response.id = 0
        return response

    async def forward(
        self, query: dns.message.Message, wire: bytes
    ) -> dns.message.Message:
        """Send ``wire`` (the query's bytes) upstream with a fresh random ID;
        return the matching answer (with that ID). Raises
        :exc:`UpstreamError`."""
        host, port = self.upstream
        infos = await trio.socket.getaddrinfo(
            host, port, type=_stdlib_socket.SOCK_DGRAM
        )
        family, _, _, _, address = infos[0]
        failure = "no answer"
        for _attempt in range(self.attempts):
            message_id = secrets.randbelow(0x10000)
            out = message_id.to_bytes(2, "big") + wire[2:]
            with trio.move_on_after(self.timeout):
                response = await self._udp_exchange(
                    family, address, out, query, message_id
                )
                if response.flags & dns.flags.TC and self.tcp_fallback:
                    return await self._tcp_exchange(address, out, query, message_id)
                return response
            failure = f"no answer within {self.timeout:g} s, {self.attempts} attempts"
        raise UpstreamError(failure)

    async def _udp_exchange(
        self,
        family: int,
        address: Any,
        out: bytes,
        query: dns.message.Message,
        message_id: int,
    ) -> dns.message.Message:
        with trio.socket.socket(family, _stdlib_socket.SOCK_DGRAM) as sock:
            await sock.connect(address)
            await sock.send(out)
            while True:
                try:
                    data = await sock.recv(_MAX_UDP_RESPONSE)
                except ConnectionRefusedError:
                    # ICMP port unreachable: nothing listens; try again after
                    # the attempt's timeout rather than spin.
                    await trio.sleep_forever()
                response = _matching(data, query, message_id)
                if response is not None:
                    return response

    async def _tcp_exchange(
        self,
        address: Any,
        out: bytes,
        query: dns.message.Message,
        message_id: int,
    ) -> dns.message.Message:
        try:
            stream = await trio.open_tcp_stream(address[0], address[1])
        except OSError as exc:
            raise UpstreamError(f"TCP fallback failed: {exc}") from None
        async with stream:
            try:
                await stream.send_all(len(out).to_bytes(2, "big") + out)
                data = await _receive_exactly(stream, 2)
                data = await _receive_exactly(stream, int.from_bytes(data, "big"))
            except (OSError, trio.BrokenResourceError, EOFError) as exc:
                raise UpstreamError(f"TCP fallback failed: {exc}") from None
        response = _matching(data, query, message_id)
        if response is None:
            raise UpstreamError("TCP fallback: the answer does not match the query")
        return response


def _matching(
    data: bytes, query: dns.message.Message, message_id: int
) -> dns.message.Message | None:
    """``data`` parsed when it answers ``query`` (sent with ``message_id``),
    else None (a stray or forged datagram)."""
    try:
        response = dns.message.from_wire(data)
    except (dns.exception.DNSException, ValueError, IndexError):
        return None
    if response.id != message_id or not response.flags & dns.flags.QR:
        return None
    if response.question != query.question and response.rcode() != dns.rcode.FORMERR:
        return None
    return response


async def _receive_exactly(stream: trio.SocketStream, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        if not chunk:
            raise EOFError("the upstream closed the TCP connection early")
        data += chunk
    return bytes(data)
