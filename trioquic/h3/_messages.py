"""Requests and responses: what HTTP/3 applications hold."""

from __future__ import annotations

import types
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

import trio

from .._engine import HandshakeInfo
from ._driver import (
    ClientH3Driver,
    Exchange,
    H3Driver,
    ServerH3Driver,
    _Stopped,
    normalize_headers,
)
from ._engine import (
    H3_INTERNAL_ERROR,
    H3_NO_ERROR,
    H3_REQUEST_CANCELLED,
    Headers,
)

if TYPE_CHECKING:
    from typing import Self

HeaderInput = Iterable[tuple[bytes | str, bytes | str]]


class _Body:
    """Reading a message body (shared by Request and Response)."""

    _driver: H3Driver
    _exchange: Exchange

    async def read(self) -> bytes:
        """The whole (rest of the) body. Raises :exc:`~trioquic.h3.H3Error`
        if the peer reset the stream, :exc:`~trioquic.ConnectionClosed` if the
        connection ended."""
        parts = []
        while chunk := await self._driver.receive_chunk(self._exchange):
            parts.append(chunk)
        return b"".join(parts)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as it arrives (QUIC credit is granted as
        chunks are taken: a slow reader slows the peer down)."""
        while chunk := await self._driver.receive_chunk(self._exchange):
            yield chunk

    @property
    def trailers(self) -> Headers | None:
        """The trailers, once the body has been read to its end (None if the
        peer sent none)."""
        return self._exchange.trailers


def _status_headers(status: int, headers: HeaderInput) -> Headers:
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError(f"status must be an int, got {type(status).__name__}")
    if not 100 <= status <= 999:
        raise ValueError(f"status must be a 3-digit code, got {status}")
    return [(b":status", str(status).encode()), *normalize_headers(headers)]


class Request(_Body):
    """One request, as a :func:`~trioquic.h3.serve_http3` handler receives it.

    ``headers`` hold the regular fields (lowercase names, no pseudo-headers);
    the pseudo-headers are attributes. The handler answers with
    :meth:`respond`, or :meth:`stream_response` for a streamed body. The
    handler runs in its own cancel scope: if the client resets the stream
    (or sends STOP_SENDING), the handler is cancelled.
    """

    method: str
    scheme: str
    authority: str
    path: str
    protocol: str | None
    headers: Headers
    stream_id: int

    def __init__(self) -> None:
        raise TypeError("Request objects are made by trioquic")

    @classmethod
    def _from_exchange(
        cls,
        driver: ServerH3Driver,
        exchange: Exchange,
        pseudo: dict[bytes, bytes],
        headers: Headers,
    ) -> Request:
        self = object.__new__(cls)
        self._driver = driver
        self._exchange = exchange
        self.method = pseudo.get(b":method", b"").decode("latin-1")
        self.scheme = pseudo.get(b":scheme", b"").decode("latin-1")
        self.authority = pseudo.get(b":authority", b"").decode("latin-1")
        self.path = pseudo.get(b":path", b"").decode("latin-1")
        protocol = pseudo.get(b":protocol")
        self.protocol = protocol.decode("latin-1") if protocol is not None else None
        self.headers = headers
        self.stream_id = exchange.stream_id
        return self

    def __repr__(self) -> str:
        return (
            f"<trioquic.h3.Request {self.method} {self.path} stream={self.stream_id}>"
        )

    @property
    def peer_address(self) -> Any:
        """The client's current address (it follows the client if it
        migrates), or None once the connection is gone."""
        io = self._driver.io
        return io.peer_address if io is not None else None

    async def send_informational(self, status: int, headers: HeaderInput = ()) -> None:
        """Send a 1xx informational response (e.g. 103 Early Hints)."""
        if not 100 <= status < 200:
            raise ValueError(f"informational responses are 1xx, got {status}")
        await self._driver.send_headers(
            self._exchange, _status_headers(status, headers), False
        )

    def _start(self) -> None:
        if self._exchange.headers_sent:
            raise RuntimeError("a response was already sent for this request")
        self._exchange.headers_sent = True

    async def respond(
        self,
        status: int,
        headers: HeaderInput = (),
        body: bytes = b"",
        *,
        trailers: HeaderInput | None = None,
    ) -> None:
        """Send the whole response: status, headers, body and trailers."""
        fields = _status_headers(status, headers)
        trailer_fields = normalize_headers(trailers) if trailers is not None else None
        self._start()
        driver, ex = self._driver, self._exchange
        await driver.send_headers(ex, fields, not body and trailer_fields is None)
        if body:
            await driver.send_data(ex, bytes(body), trailer_fields is None)
        if trailer_fields is not None:
            await driver.send_headers(ex, trailer_fields, True)

    def stream_response(self, status: int, headers: HeaderInput = ()) -> ResponseWriter:
        """A response whose body is sent piece by piece: an async context
        manager yielding a :class:`ResponseWriter` (see its
        :meth:`~ResponseWriter.send` and :attr:`~ResponseWriter.trailers`)."""
        return ResponseWriter(self, _status_headers(status, headers))

    async def send_datagram(self, data: bytes) -> None:
        """Send an HTTP datagram (RFC 9297) bound to this request's stream."""
        await self._driver.send_datagram(self._exchange, data)

    async def receive_datagram(self) -> bytes:
        """Wait for the next HTTP datagram of this request's stream."""
        return await self._driver.receive_datagram(self._exchange)


class ResponseWriter:
    """A streamed response (:meth:`Request.stream_response`), an async context
    manager. Entering sends the headers; leaving normally sends the
    :attr:`trailers` (if set) and ends the stream; leaving by an exception
    resets the stream with H3_INTERNAL_ERROR."""

    def __init__(self, request: Request, headers: Headers) -> None:
        self._request = request
        self._headers = headers
        #: Trailers to send when the block exits normally.
        self.trailers: HeaderInput | None = None

    async def __aenter__(self) -> Self:
        request = self._request
        request._start()
        await request._driver.send_headers(request._exchange, self._headers, False)
        return self

    async def send(self, data: bytes) -> None:
        """Send part of the body; waits while the stream's send buffer
        (``QuicSettings.stream_send_buffer``) is full. Not cancel-safe."""
        await self._request._driver.send_data(
            self._request._exchange, bytes(data), False
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        driver, ex = self._request._driver, self._request._exchange
        if exc is not None:
            driver.reset(ex, H3_INTERNAL_ERROR)
            return
        if ex.response_complete:
            return
        if self.trailers is not None:
            await driver.send_headers(ex, normalize_headers(self.trailers), True)
        else:
            await driver.send_data(ex, b"", True)


class Response(_Body):
    """A response, as :meth:`Http3Client.request` returns it once its headers
    arrived; the body streams (:meth:`read`, ``async for``)."""

    status: int
    headers: Headers
    informational: list[tuple[int, Headers]]

    def __init__(self, driver: ClientH3Driver, exchange: Exchange) -> None:
        assert exchange.response_status is not None
        assert exchange.response_headers is not None
        self._driver = driver
        self._exchange = exchange
        self.status = exchange.response_status
        self.headers = exchange.response_headers
        self.informational = list(exchange.informational)
        self.stream_id = exchange.stream_id

    def __repr__(self) -> str:
        return f"<trioquic.h3.Response {self.status} stream={self.stream_id}>"

    async def aclose(self) -> None:
        """Stop reading the body: what is buffered is dropped, the server is
        asked to stop sending (STOP_SENDING, H3_REQUEST_CANCELLED) unless the
        body already ended, and the request's state is freed. Idempotent."""
        driver, ex = self._driver, self._exchange
        if not ex.eof:
            driver.abandon_receive(ex, H3_REQUEST_CANCELLED)
        else:
            ex.chunks.clear()
            ex.buffered = 0
        driver._maybe_done(ex)
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class RequestStream:
    """A request whose body is sent piece by piece, and whose response streams
    (:meth:`Http3Client.open_request`): also how an extended CONNECT session
    (RFC 9220) carries HTTP datagrams (RFC 9297)."""

    def __init__(self, driver: ClientH3Driver, exchange: Exchange) -> None:
        self._driver = driver
        self._exchange = exchange
        self.stream_id = exchange.stream_id
        self._response: Response | None = None

    async def send(self, data: bytes) -> None:
        """Send part of the request body (waits while the send buffer is full)."""
        await self._driver.send_data(self._exchange, bytes(data), False)

    async def finish(self, trailers: HeaderInput | None = None) -> None:
        """End the request body, with trailers if given."""
        if trailers is not None:
            await self._driver.send_headers(
                self._exchange, normalize_headers(trailers), True
            )
        else:
            await self._driver.send_data(self._exchange, b"", True)

    async def response(self) -> Response:
        """Wait for the response's headers (its body then streams)."""
        if self._response is None:
            await self._driver.wait_response(self._exchange)
            self._response = Response(self._driver, self._exchange)
        await trio.lowlevel.checkpoint()
        return self._response

    async def send_datagram(self, data: bytes) -> None:
        """Send an HTTP datagram (RFC 9297) bound to this request's stream."""
        await self._driver.send_datagram(self._exchange, data)

    async def receive_datagram(self) -> bytes:
        """Wait for the next HTTP datagram of this request's stream."""
        return await self._driver.receive_datagram(self._exchange)


class Http3Client:
    """An HTTP/3 client connection, as :func:`~trioquic.h3.open_http3_client`
    yields it. Requests may run concurrently from several tasks."""

    def __init__(self, driver: ClientH3Driver) -> None:
        self._driver = driver

    @property
    def driver(self) -> ClientH3Driver:
        return self._driver

    @property
    def session_ticket(self) -> bytes | None:
        """The newest TLS session ticket from the server, as opaque bytes for
        ``QuicSettings.session_ticket`` (resumption, and 0-RTT requests with
        ``zero_rtt=True``); None until the server sent one."""
        io = self._driver.io
        return io.session_ticket if io is not None else None

    async def wait_handshake(self) -> HandshakeInfo:
        """Wait for the handshake (immediate unless opened with 0-RTT)."""
        io = self._driver.io
        assert io is not None
        return await io.wait_handshake()

    @property
    def goaway_received(self) -> bool:
        """Whether the server sent GOAWAY (no new request can be sent)."""
        return self._driver.goaway_id is not None

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: HeaderInput = (),
        body: bytes | AsyncIterable[bytes] | None = None,
        trailers: HeaderInput | None = None,
        authority: str | None = None,
    ) -> Response:
        """Send a request and return the :class:`Response` once its headers
        arrived (read its body from it).

        Raises :exc:`~trioquic.h3.ConnectionGoingAway` if the server sent
        GOAWAY before it could be sent, :exc:`~trioquic.h3.RequestRejected`
        if the server did not process it, :exc:`~trioquic.h3.H3Error` if the
        server reset the stream, :exc:`~trioquic.ConnectionClosed` if the
        connection ended.
        """
        driver = self._driver
        fields = normalize_headers(headers)
        trailer_fields = normalize_headers(trailers) if trailers is not None else None
        empty = body is None or (isinstance(body, bytes | bytearray) and not body)
        ex = await driver.start_request(
            method,
            path,
            fields,
            authority=authority,
            protocol=None,
            end_stream=empty and trailer_fields is None,
        )
        try:
            try:
                if isinstance(body, bytes | bytearray | memoryview):
                    if body:
                        await driver.send_data(ex, bytes(body), trailer_fields is None)
                elif body is not None:
                    async for chunk in body:
                        await driver.send_data(ex, bytes(chunk), False)
                    if trailer_fields is None:
                        await driver.send_data(ex, b"", True)
                if trailer_fields is not None:
                    await driver.send_headers(ex, trailer_fields, True)
            except _Stopped:
                pass  # the server answered early and stopped reading: read on
            await driver.wait_response(ex)
        except BaseException:
            driver.reset(ex, H3_REQUEST_CANCELLED)
            raise
        return Response(driver, ex)

    @asynccontextmanager
    async def open_request(
        self,
        method: str,
        path: str,
        *,
        headers: HeaderInput = (),
        authority: str | None = None,
        protocol: str | None = None,
    ) -> AsyncIterator[RequestStream]:
        """A request streaming both ways::

            async with client.open_request("POST", "/upload") as stream:
                await stream.send(b"part")
                await stream.finish()
                response = await stream.response()

        ``protocol`` makes it an extended CONNECT (RFC 9220; ``method`` must be
        ``"CONNECT"`` and the server must enable it). Leaving the block ends
        the request body if it was not finished; leaving it by an exception
        cancels the request (H3_REQUEST_CANCELLED).
        """
        if protocol is not None and method != "CONNECT":
            raise ValueError("protocol (extended CONNECT) needs method='CONNECT'")
        driver = self._driver
        ex = await driver.start_request(
            method,
            path,
            normalize_headers(headers),
            authority=authority,
            protocol=protocol,
            end_stream=False,
        )
        stream = RequestStream(driver, ex)
        try:
            yield stream
        except BaseException:
            driver.reset(ex, H3_REQUEST_CANCELLED)
            raise
        if not ex.response_complete:
            with suppress(_Stopped):
                await driver.send_data(ex, b"", True)
        if not (ex.eof and not ex.chunks):
            driver.abandon_receive(ex, H3_NO_ERROR)
        driver.exchanges.pop(ex.stream_id, None)
