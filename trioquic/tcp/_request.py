"""What the TCP door's requests share (HTTP/1.1 and HTTP/2): the buffered
request body, abort detection, and the handler's task."""

from __future__ import annotations

import collections
import logging
import types
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio

from .._engine import Headers
from ..h3._headers import HeaderInput, normalize_headers

if TYPE_CHECKING:
    from typing import Self

    from .._http import HttpHandler

logger = logging.getLogger("trioquic.tcp")

#: Hop-by-hop fields (RFC 9110 section 7.6.1): the door frames messages
#: itself, so a handler's copies are dropped.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
    }
)


def check_status(status: int) -> None:
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError(f"status must be an int, got {type(status).__name__}")
    if not 100 <= status <= 999:
        raise ValueError(f"status must be a 3-digit code, got {status}")


def gone() -> trio.BrokenResourceError:
    return trio.BrokenResourceError("the client went away")


class TcpRequest:
    """One request that came through the TCP door (HTTP/1.1 or HTTP/2); it
    has the shape of :class:`trioquic.HttpRequest`.

    ``headers`` hold the regular fields without ``host`` (HTTP/1.1) or
    pseudo-headers (HTTP/2): the host is :attr:`authority`. Reading the body
    or sending after the client has gone raises
    :exc:`trio.BrokenResourceError`.
    """

    method: str
    scheme: str
    authority: str
    path: str
    protocol: str | None
    headers: Headers
    #: Never true over TCP (TLS early data is not accepted).
    early_data = False
    #: ``"2"``, ``"1.1"`` (or ``"1.0"`` for an HTTP/1.0 client).
    http_version: str

    def __init__(
        self,
        method: str,
        scheme: str,
        authority: str,
        path: str,
        protocol: str | None,
        headers: Headers,
        peer: Any,
        local: Any,
    ) -> None:
        self.method = method
        self.scheme = scheme
        self.authority = authority
        self.path = path
        self.protocol = protocol
        self.headers = headers
        self._peer = peer
        self._local = local
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._body_received = 0
        self._body_done = False
        self._trailers: Headers | None = None
        self._readable: trio.Event | None = None
        self._aborted = False
        self._abort_event: trio.Event | None = None
        self._cancel_on_abort = True
        self._scope: trio.CancelScope | None = None
        #: A status the door answers with instead of 500 when the handler
        #: ends without a response (413 when the body was too large).
        self._fail_status = 500
        self._failure: BaseException | None = None
        self.headers_sent = False
        self.response_complete = False

    def __repr__(self) -> str:
        return (
            f"<trioquic.tcp request {self.method} {self.path} HTTP/{self.http_version}>"
        )

    # -- what the door feeds in ------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        self._body_received += len(data)
        self._wake_reader()

    def _feed_end(self, trailers: Headers | None = None) -> None:
        self._body_done = True
        if trailers:
            self._trailers = trailers
        self._wake_reader()

    def _wake_reader(self) -> None:
        readable = self._readable
        if readable is not None:
            self._readable = None
            readable.set()

    def _abort(self) -> None:
        """The client went away (or reset the stream)."""
        if self._aborted:
            return
        self._aborted = True
        self._wake_reader()
        if self._abort_event is not None:
            self._abort_event.set()
        if self._scope is not None and self._cancel_on_abort:
            self._scope.cancel()

    def _fail_body(self, status: int, failure: BaseException) -> None:
        """The body cannot be read (too large): reads raise ``failure`` and
        the handler stops; the door answers ``status`` if it can."""
        self._failure = failure
        self._fail_status = status
        self._chunks.clear()
        self._wake_reader()
        if self._scope is not None:
            self._scope.cancel()

    def _consumed(self, size: int) -> None:
        """``size`` buffered body bytes were taken by the handler."""

    async def _before_read(self) -> None:
        """Called before the handler first waits for body bytes."""

    # -- the HttpRequest interface -------------------------------------------------

    @property
    def peer_address(self) -> Any:
        """The client's address."""
        return self._peer

    @property
    def local_address(self) -> Any:
        """The server's address this request came to."""
        return self._local

    @property
    def cancel_on_abort(self) -> bool:
        """Whether the handler is cancelled when the client goes away
        (default ``True``); with ``False`` it learns of it from
        :attr:`aborted`, :meth:`wait_aborted` and the errors reading and
        sending raise."""
        return self._cancel_on_abort

    @cancel_on_abort.setter
    def cancel_on_abort(self, value: bool) -> None:
        self._cancel_on_abort = bool(value)

    @property
    def aborted(self) -> bool:
        """The client closed the connection or reset the stream."""
        return self._aborted

    async def wait_aborted(self) -> None:
        """Return when :attr:`aborted` becomes true (at once if it is)."""
        if self._abort_event is None:
            self._abort_event = trio.Event()
            if self._aborted:
                self._abort_event.set()
        await self._abort_event.wait()

    async def _receive_chunk(self) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while not self._chunks:
            if self._failure is not None:
                raise self._failure
            if self._aborted:
                raise gone()
            if self._body_done:
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return b""
            await self._before_read()
            readable = self._readable
            if readable is None:
                readable = self._readable = trio.Event()
            await readable.wait()
            waited = True
        if self._aborted and self._failure is None:
            raise gone()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        self._consumed(len(chunk))
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return chunk

    async def read(self) -> bytes:
        """The whole (rest of the) body."""
        parts = []
        while chunk := await self._receive_chunk():
            parts.append(chunk)
        return b"".join(parts)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as it arrives (the client is slowed down
        when the handler reads slowly)."""
        while chunk := await self._receive_chunk():
            yield chunk

    @property
    def trailers(self) -> Headers | None:
        """The request's trailers, once the body has been read to its end
        (None if the client sent none)."""
        return self._trailers

    def _start(self) -> None:
        if self.headers_sent:
            raise RuntimeError("a response was already sent for this request")
        self.headers_sent = True

    async def send_informational(self, status: int, headers: HeaderInput = ()) -> None:
        """Send a 1xx informational response (e.g. 103 Early Hints) before
        the response; raises :exc:`RuntimeError` once the response started.
        HTTP/1.0 clients get none (they do not know 1xx)."""
        check_status(status)
        if not 100 <= status < 200 or status == 101:
            raise ValueError(
                f"informational responses are 1xx other than 101, got {status}"
            )
        fields = normalize_headers(headers)
        if self.headers_sent:
            raise RuntimeError(
                "send_informational() after the response started: 1xx responses "
                "must come before respond() or stream_response()"
            )
        await self._send_informational(status, fields)

    async def respond(
        self,
        status: int,
        headers: HeaderInput = (),
        body: bytes = b"",
        *,
        trailers: HeaderInput | None = None,
    ) -> None:
        """Send the whole response: status, headers, body and trailers."""
        check_status(status)
        if status < 200:
            raise ValueError(
                f"respond() sends a final response (2xx-5xx), got {status}; "
                "use send_informational() for 1xx"
            )
        fields = normalize_headers(headers)
        trailer_fields = normalize_headers(trailers) if trailers is not None else None
        self._start()
        await self._send_response(status, fields, bytes(body), trailer_fields)

    def stream_response(
        self, status: int, headers: HeaderInput = ()
    ) -> TcpResponseWriter:
        """A response whose body is sent piece by piece: an async context
        manager yielding a :class:`TcpResponseWriter`."""
        check_status(status)
        if status < 200:
            raise ValueError(f"stream_response() sends a final response, got {status}")
        return TcpResponseWriter(self, status, normalize_headers(headers))

    def reset(self, error_code: int = 0x8) -> None:
        """Abandon this request: HTTP/2 resets the stream with
        ``error_code`` (default CANCEL); HTTP/1.1 closes the connection."""
        raise NotImplementedError

    # -- what each version implements -------------------------------------------

    async def _send_informational(self, status: int, fields: Headers) -> None:
        raise NotImplementedError

    async def _send_response(
        self, status: int, fields: Headers, body: bytes, trailers: Headers | None
    ) -> None:
        raise NotImplementedError

    async def _begin_stream(self, status: int, fields: Headers) -> None:
        raise NotImplementedError

    async def _send_data(self, data: bytes) -> None:
        raise NotImplementedError

    async def _end_stream(self, trailers: Headers | None) -> None:
        raise NotImplementedError

    async def _fail(self) -> None:
        """The handler failed: answer ``_fail_status`` if nothing was sent,
        else end the exchange abruptly (without waiting)."""
        raise NotImplementedError


class TcpResponseWriter:
    """A streamed response (:meth:`TcpRequest.stream_response`), an async
    context manager. Entering sends the head; leaving normally sends the
    :attr:`trailers` (if set and the protocol carries them) and ends the
    body; leaving by an exception ends the exchange abruptly (HTTP/2
    RST_STREAM, HTTP/1.1 connection closed)."""

    def __init__(self, request: TcpRequest, status: int, fields: Headers) -> None:
        self._request = request
        self._status = status
        self._fields = fields
        #: Trailers to send when the block exits normally.
        self.trailers: HeaderInput | None = None

    async def __aenter__(self) -> Self:
        request = self._request
        request._start()
        await request._begin_stream(self._status, self._fields)
        return self

    async def send(self, data: bytes) -> None:
        """Send part of the body; waits while the connection's send buffer
        is full (and, on HTTP/2, for flow-control credit). Not cancel-safe."""
        if data:
            await self._request._send_data(bytes(data))
        else:
            await trio.lowlevel.checkpoint()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        request = self._request
        if exc is not None:
            await request._fail()
            return
        if request.response_complete:
            return
        trailers = (
            normalize_headers(self.trailers) if self.trailers is not None else None
        )
        await request._end_stream(trailers)


async def run_handler(handler: HttpHandler, request: TcpRequest) -> None:
    """Run ``handler(request)`` in its own cancel scope (cancelled when the
    client goes away and the request asks for it); an exception, or a
    handler that returns without responding, gives 500 before the head and
    an abrupt end after; it is logged with the request."""
    fail = False
    with trio.CancelScope() as scope:
        request._scope = scope
        if request._aborted and request._cancel_on_abort:
            scope.cancel()
        try:
            await handler(request)
        except Exception as exc:
            if request._aborted or exc is request._failure:
                # The client left, or the door stopped the body: nothing to
                # report.
                logger.debug("trioquic.tcp: handler of %r ended: %r", request, exc)
            else:
                logger.exception("trioquic.tcp: request handler raised (%r)", request)
            fail = not request.response_complete and not request._aborted
        else:
            if not request.response_complete and not request._aborted:
                if not request.headers_sent and request._failure is None:
                    logger.warning(
                        "trioquic.tcp: request handler returned without "
                        "responding (%r): sending 500",
                        request,
                    )
                fail = True
    request._scope = None
    if scope.cancelled_caught and not request._aborted:
        # Stopped by the door (a body too large).
        fail = not request.response_complete
    if fail:
        await request._fail()
