"""HTTP/1.1 over one TCP (or TLS) connection, with h11 doing the protocol.

Requests are served one after the other (pipelined requests wait their
turn). While a handler runs, a second task reads the connection: it feeds
the request body (stopping when ``body_buffer_size`` bytes wait unread: TCP
backpressure), notices the client closing the connection (the request is
then aborted), and after a WebSocket upgrade carries the raw bytes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http
from typing import TYPE_CHECKING, Any

import h11
import trio

from .._engine import Headers
from ._request import HOP_BY_HOP, TcpRequest, gone, logger, run_handler

if TYPE_CHECKING:
    from ._server import ServerState

_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_NO_BODY_STATUSES = frozenset({204, 304})
#: h11's state of a client that asked to switch protocols (not in h11.__all__).
_MIGHT_SWITCH: Any = getattr(h11, "MIGHT_SWITCH_PROTOCOL")  # noqa: B009
_SWITCHED: Any = h11.SWITCHED_PROTOCOL
#: h11's states of a server whose response went out whole (MUST_CLOSE: with
#: ``connection: close``).
_RESPONSE_SENT = (h11.DONE, h11.MUST_CLOSE)


def websocket_accept(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _WEBSOCKET_GUID).digest())


#: Reason phrases of the status line, by status.
_REASONS = {status.value: status.phrase.encode("ascii") for status in http.HTTPStatus}


def _has_token(value: bytes, token: bytes) -> bool:
    return any(part.strip().lower() == token for part in value.split(b","))


class H11Request(TcpRequest):
    """A request over HTTP/1.1."""

    http_version = "1.1"

    def __init__(
        self,
        connection: H11Connection,
        websocket_key: bytes | None,
        *args: Any,
    ) -> None:
        super().__init__(*args)
        self._connection = connection
        self._websocket_key = websocket_key
        self._head = self.method == "HEAD"
        self._chunked = False
        self._switched = False
        self._expect_continue = False

    # -- body ----------------------------------------------------------------------

    def _consumed(self, size: int) -> None:
        self._connection._wake_pump()

    async def _before_read(self) -> None:
        # Not h11's they_are_waiting_for_100_continue: an Early Hints
        # response sent before clears it, while the client still waits.
        if self._expect_continue and not self.headers_sent:
            self._expect_continue = False
            conn = self._connection
            await conn.send(
                h11.InformationalResponse(
                    status_code=100, headers=[], reason=b"Continue"
                )
            )

    # -- response --------------------------------------------------------------------

    def _head_fields(self, fields: Headers) -> list[tuple[bytes, bytes]]:
        out = [(n, v) for n, v in fields if n not in HOP_BY_HOP]
        conn = self._connection
        alt_svc = conn.server.alt_svc
        if alt_svc is not None and not any(n == b"alt-svc" for n, _ in out):
            out.append((b"alt-svc", alt_svc))
        if conn.h11.their_state is h11.SEND_BODY:
            # Answered before the whole body came: the connection cannot be
            # reused (the rest is read and dropped before closing).
            conn.closing = True
        if any(n == b"connection" and _has_token(v, b"close") for n, v in fields):
            conn.closing = True  # the handler asks for it
        if conn.closing:
            out.append((b"connection", b"close"))
        return out

    async def _send_informational(self, status: int, fields: Headers) -> None:
        conn = self._connection
        if conn.h11.their_http_version != b"1.1":
            await trio.lowlevel.checkpoint()
            return
        await conn.send(
            h11.InformationalResponse(
                status_code=status, headers=fields, reason=_REASONS.get(status, b"")
            )
        )

    async def _send_response(
        self, status: int, fields: Headers, body: bytes, trailers: Headers | None
    ) -> None:
        if self._websocket_key is not None and 200 <= status < 300:
            await self._begin_stream(status, fields)
            if body:
                await self._send_data(body)
            await self._end_stream(None)
            return
        conn = self._connection
        if self._websocket_key is not None:
            self._feed_end()  # refused: no WebSocket bytes will follow
        head = self._head_fields(fields)
        chunked = trailers is not None and conn.h11.their_http_version == b"1.1"
        if (
            not chunked
            and status not in _NO_BODY_STATUSES
            and not any(n == b"content-length" for n, _ in head)
        ):
            head.append((b"content-length", b"%d" % len(body)))
        h = conn.h11
        try:
            data = h.send(
                h11.Response(
                    status_code=status, headers=head, reason=_REASONS.get(status, b"")
                )
            )
            if body and not self._head and status not in _NO_BODY_STATUSES:
                data += h.send(h11.Data(data=body))
            data += h.send(h11.EndOfMessage(headers=trailers or []))
        except h11.LocalProtocolError as exc:
            conn.broken = True
            raise RuntimeError(f"cannot send this HTTP/1.1 response: {exc}") from exc
        self.response_complete = True
        await conn.send_bytes(data, self)

    async def _begin_stream(self, status: int, fields: Headers) -> None:
        conn = self._connection
        if self._websocket_key is not None and 200 <= status < 300:
            head = [
                (b"upgrade", b"websocket"),
                (b"connection", b"Upgrade"),
                (b"sec-websocket-accept", websocket_accept(self._websocket_key)),
            ]
            head += [
                (n, v)
                for n, v in self._head_fields(fields)
                if n not in (b"connection", b"content-length")
            ]
            await conn.send(
                h11.InformationalResponse(
                    status_code=101, headers=head, reason=b"Switching Protocols"
                )
            )
            conn.switch_protocol(self)
            return
        if self._websocket_key is not None:
            self._feed_end()  # refused: no WebSocket bytes will follow
        head = self._head_fields(fields)
        self._chunked = conn.h11.their_http_version == b"1.1" and not any(
            n == b"content-length" for n, _ in head
        )
        await conn.send(
            h11.Response(
                status_code=status, headers=head, reason=_REASONS.get(status, b"")
            )
        )

    async def _send_data(self, data: bytes) -> None:
        conn = self._connection
        if self._switched:
            await conn.send_bytes(data, self)
        elif self._head:
            await trio.lowlevel.checkpoint()
        else:
            await conn.send(h11.Data(data=data))

    async def _end_stream(self, trailers: Headers | None) -> None:
        conn = self._connection
        self.response_complete = True
        if self._switched:
            # The WebSocket is over: the connection closes after the handler.
            conn.broken = True
            await trio.lowlevel.checkpoint()
            return
        if trailers and not self._chunked:
            logger.debug("trioquic.tcp: trailers dropped (no chunked encoding)")
            trailers = None
        await conn.send(h11.EndOfMessage(headers=trailers or []))

    async def _fail(self) -> None:
        conn = self._connection
        if self.headers_sent or self._aborted or conn.reset_called:
            conn.broken = True
            self.response_complete = True
            return
        self.headers_sent = True
        conn.closing = True
        with contextlib.suppress(trio.BrokenResourceError):
            await self._send_response(self._fail_status, [], b"", None)

    def reset(self, error_code: int = 0x8) -> None:
        """Abandon this request: HTTP/1.1 has no stream to reset, so the
        connection is closed once the handler returns."""
        self._connection.broken = True
        self._connection.reset_called = True
        self.response_complete = True


class H11Connection:
    """Serves the requests of one HTTP/1.1 connection."""

    def __init__(
        self,
        server: ServerState,
        stream: trio.abc.Stream,
        scheme: str,
        peer: Any,
        local: Any,
        initial: bytes = b"",
    ) -> None:
        self.server = server
        self.stream = stream
        self.scheme = scheme
        self.peer = peer
        self.local = local
        settings = server.settings
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=settings.max_header_size
        )
        if initial:
            self.h11.receive_data(initial)
        self._read_size = settings.read_size
        self._body_limit = settings.body_buffer_size
        #: Stop after the current response (server shutdown).
        self.closing = False
        #: The connection cannot carry another request.
        self.broken = False
        self.reset_called = False
        self._idle_scope: trio.CancelScope | None = None
        self._pump_wake: trio.Event | None = None
        self._request: H11Request | None = None
        self._pump_go = trio.Event()
        self._pump_done = trio.Event()
        self._pump_stop = False
        self._pump_request: H11Request | None = None
        self._pump_scope: trio.CancelScope | None = None

    def begin_shutdown(self) -> None:
        """Close when idle; a response in progress gets ``connection: close``
        (if its head has not gone yet) and the connection then closes."""
        self.closing = True
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    async def run(self) -> None:
        # The reading task lives as long as the connection (one task, not
        # one per request); it reads for one request at a time (_serve).
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump_loop)
            try:
                await self._serve_requests()
            finally:
                nursery.cancel_scope.cancel()

    async def _serve_requests(self) -> None:
        h = self.h11
        while not self.closing:
            request = await self._next_request()
            if request is None:
                break
            self._request = request
            await self._serve(request)
            self._request = None
            if h.their_state is h11.SEND_BODY and h.our_state in _RESPONSE_SENT:
                if not request._aborted and not self.reset_called:
                    # Answered before the body was read: take the rest in
                    # (bounded) so that closing does not reset the
                    # connection under the response.
                    await self._linger()
                break
            if (
                self.broken
                or h.our_state is not h11.DONE
                or h.their_state is not h11.DONE
            ):
                break
            h.start_next_cycle()

    async def _linger(self) -> None:
        """Read and drop what the client still sends, at most a second and
        ``body_buffer_size`` bytes, until it closes."""
        left = self._body_limit
        with trio.move_on_after(1):
            while left > 0:
                data = await self._receive()
                if not data:
                    return
                left -= len(data)

    # -- sending ---------------------------------------------------------------------

    async def send(self, event: Any) -> None:
        try:
            data = self.h11.send(event)
        except h11.LocalProtocolError as exc:
            # e.g. more body than the content-length the handler set
            self.broken = True
            raise RuntimeError(f"cannot send this HTTP/1.1 response: {exc}") from exc
        if data:
            await self.send_bytes(data, self._request)
        else:
            await trio.lowlevel.checkpoint()

    async def send_bytes(self, data: bytes, request: H11Request | None) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.broken = True
            if request is not None:
                request._abort()
            raise gone() from exc

    # -- receiving -------------------------------------------------------------------

    async def _receive(self) -> bytes:
        try:
            return bytes(await self.stream.receive_some(self._read_size))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    async def _next_request(self) -> H11Request | None:
        h = self.h11
        with trio.CancelScope() as scope:
            self._idle_scope = scope
            scope.deadline = (
                trio.current_time() + self.server.settings.keep_alive_timeout
            )
            while True:
                try:
                    event = h.next_event()
                except h11.RemoteProtocolError as exc:
                    await self._refuse(exc)
                    return None
                if event is h11.NEED_DATA:
                    h.receive_data(await self._receive())
                    continue
                if isinstance(event, h11.Request):
                    self._idle_scope = None
                    return await self._make_request(event)
                return None
        self._idle_scope = None
        return None

    async def _refuse(self, exc: h11.RemoteProtocolError) -> None:
        """Answer a malformed request (400, or 431 for a head too large) and
        close."""
        self.broken = True
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        status = exc.error_status_hint
        logger.debug("trioquic.tcp: bad HTTP/1.1 request (%s): %s", status, exc)
        headers = [(b"content-length", b"0"), (b"connection", b"close")]
        if self.server.alt_svc is not None:
            headers.append((b"alt-svc", self.server.alt_svc))
        # h11 refuses to send once the peer errored: the response is built by
        # hand (it is fixed).
        lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b""))]
        lines += [name + b": " + value for name, value in headers]
        with trio.move_on_after(1):
            with contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError
            ):
                await self.stream.send_all(b"\r\n".join(lines) + b"\r\n\r\n")

    async def _make_request(self, event: h11.Request) -> H11Request | None:
        # h11 bounds only a head still incomplete; one that arrived whole
        # in a read is measured here.
        size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
        if size > self.server.settings.max_header_size:
            await self._simple(431, [])
            return None
        authority = ""
        headers: Headers = []
        upgrade = None
        key = None
        version = b"13"
        for name, value in event.headers:
            if name == b"host":
                authority = value.decode("latin-1")
                continue
            if name == b"upgrade":
                upgrade = value
            elif name == b"sec-websocket-key":
                key = value
                continue
            elif name == b"sec-websocket-version":
                version = value
            headers.append((name, value))
        method = event.method.decode("ascii")
        protocol = None
        websocket = upgrade is not None and _has_token(upgrade, b"websocket")
        if websocket:
            if method != "GET" or key is None or version != b"13":
                await self._simple(400, [(b"sec-websocket-version", b"13")])
                return None
            method = "CONNECT"
            protocol = "websocket"
            headers = [
                (n, v) for n, v in headers if n not in (b"upgrade", b"connection")
            ]
        else:
            key = None
        request = H11Request(
            self,
            key,
            method,
            self.scheme,
            authority,
            event.target.decode("latin-1"),
            protocol,
            headers,
            self.peer,
            self.local,
        )
        request.http_version = event.http_version.decode("ascii")
        request._expect_continue = self.h11.they_are_waiting_for_100_continue
        # What of the body already arrived (all of a GET's: its end) is
        # taken now, so the response knows whether the request is complete.
        self._take_body(request)
        return request

    async def _simple(self, status: int, headers: Headers) -> None:
        self.broken = True
        head = [*headers, (b"content-length", b"0"), (b"connection", b"close")]
        if self.server.alt_svc is not None:
            head.append((b"alt-svc", self.server.alt_svc))
        h = self.h11
        try:
            data = h.send(
                h11.Response(
                    status_code=status, headers=head, reason=_REASONS.get(status, b"")
                )
            )
            data += h.send(h11.EndOfMessage())
            await self.stream.send_all(data)
        except (
            h11.LocalProtocolError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ):
            pass

    async def _serve(self, request: H11Request) -> None:
        """Run the handler while the reading task reads for ``request``;
        then stop the reading task and wait until it has let go of the
        socket and of h11."""
        self._pump_request = request
        self._pump_stop = False
        done = self._pump_done = trio.Event()
        self._pump_go.set()
        try:
            await run_handler(self.server.handler, request)
        finally:
            self._pump_stop = True
            if self._pump_scope is not None:
                self._pump_scope.cancel()
        await done.wait()

    async def _pump_loop(self) -> None:
        while True:
            await self._pump_go.wait()
            self._pump_go = trio.Event()
            request = self._pump_request
            if request is not None and not self._pump_stop:
                with trio.CancelScope() as scope:
                    self._pump_scope = scope
                    await self._pump(request)
                self._pump_scope = None
            self._pump_request = None
            self._pump_done.set()

    def _wake_pump(self) -> None:
        wake = self._pump_wake
        if wake is not None:
            self._pump_wake = None
            wake.set()

    async def _wait_pump(self) -> None:
        wake = self._pump_wake
        if wake is None:
            wake = self._pump_wake = trio.Event()
        await wake.wait()

    def switch_protocol(self, request: H11Request) -> None:
        """The WebSocket was accepted (101): from now on the connection's
        bytes are the request's body (the reading task takes over from h11,
        starting with what h11 already holds)."""
        request._switched = True
        self._wake_pump()

    def _take_body(self, request: H11Request) -> Any:
        """Hand the body events h11 already has to the request; return the
        first other event (NEED_DATA, PAUSED, ConnectionClosed), or None
        when the reading is over (bad or too large a body)."""
        h = self.h11
        max_body = self.server.settings.max_request_body_size
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                logger.debug("trioquic.tcp: bad request body: %s", exc)
                self.broken = True
                request._abort()
                return None
            if isinstance(event, h11.Data):
                request._feed(bytes(event.data))
                if max_body is not None and request._body_received > max_body:
                    self.broken = True
                    request._fail_body(
                        413, trio.BrokenResourceError("the request body is too large")
                    )
                    return None
                continue
            if isinstance(event, h11.EndOfMessage):
                if request._websocket_key is None:
                    request._feed_end(list(event.headers) or None)
                # (a WebSocket's body is what follows the 101)
                continue
            return event

    async def _pump(self, request: H11Request) -> None:
        """Feed the request body; notice the client leaving."""
        h = self.h11
        limit = self._body_limit
        raw = False
        while True:
            if raw:
                if request._buffered >= limit:
                    await self._wait_pump()
                    continue
                data = await self._receive()
                if not data:
                    request._feed_end()
                    return
                request._feed(data)
                continue
            event = self._take_body(request)
            if event is None:
                return
            if isinstance(event, h11.ConnectionClosed):
                self.broken = True
                request._abort()
                return
            if event is h11.PAUSED:
                if h.their_state is _SWITCHED:
                    data, _closed = h.trailing_data
                    if data:
                        request._feed(bytes(data))
                    raw = True
                    continue
                if h.their_state is _MIGHT_SWITCH:
                    # A WebSocket opening: its bytes wait for the 101.
                    await self._wait_pump()
                    continue
                if len(h.trailing_data[0]) >= limit:
                    # Enough pipelined requests buffered: stop reading.
                    await trio.sleep_forever()
            elif request._buffered >= limit:
                await self._wait_pump()
                continue
            data = await self._receive()
            if not data:
                self.broken = True
                request._abort()
                return
            h.receive_data(data)
