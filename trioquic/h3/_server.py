"""The server side of HTTP/3: :class:`ServerH3Driver` runs a handler per
request; the handler holds a :class:`Request` and answers it."""

from __future__ import annotations

import contextlib
import logging
import operator
import types
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any

import trio

from .._application import ConnectionIO
from .._engine import HeadersReceived
from .._errors import ConnectionClosed
from .._events import HandshakeInfo
from .._settings import QuicSettings
from ._driver import Body, Exchange, H3Driver
from ._errors import H3Error, H3ErrorCode
from ._headers import (
    HeaderInput,
    Headers,
    field_section_size,
    normalize_headers,
    split_pseudo,
    status_headers,
)
from ._settings import Http3Settings

if TYPE_CHECKING:
    from typing import Self

logger = logging.getLogger("trioquic.h3")

#: The largest client-initiated bidirectional stream ID (2**62 - 4): a first
#: GOAWAY with it refuses nothing that is already on its way.
_LAST_CLIENT_STREAM_ID = 2**62 - 4
#: Methods whose repetition has the effect of one (RFC 9110 section 9.2.2):
#: a replayed early request with one of them does no more harm.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


RequestHandler = Callable[["Request"], Awaitable[None]]
"""What :func:`~trioquic.h3.serve_http3` runs for each request."""


def _final_headers(settings: Http3Settings, fields: Headers) -> Headers:
    """A final response's fields with ``extra_response_headers`` added
    (those the handler did not set)."""
    extra = settings.extra_response_headers
    if extra:
        present = {name for name, _ in fields}
        fields.extend(pair for pair in extra if pair[0] not in present)
    return fields


class ServerH3Driver(H3Driver):
    """The server side: runs ``await handler(request)`` for each request, in
    its own task in the connection's nursery."""

    def __init__(
        self,
        handler: RequestHandler,
        http3_settings: Http3Settings | None = None,
        quic_settings: QuicSettings | None = None,
    ) -> None:
        super().__init__(http3_settings, quic_settings)
        self.handler = handler
        self.requests_seen = 0
        self._post_accept_deadline: float | None = None
        self._post_accept_scope = trio.CancelScope()
        self.active = 0
        self._highest_request = -4
        self.shutting_down = False
        self._closing = False
        self._two_step = False
        self._final_goaway_sent = False
        #: Request streams already handled (their late frames are ignored);
        #: pruned once the transport has forgotten them.
        self._done_ids: set[int] = set()
        #: STOP_SENDING codes of request streams whose request has not come
        #: yet (reordered, or a header block waiting for QPACK): the
        #: transport has reset their response side already.
        self._early_stops: dict[int, int] = {}
        #: The server's address (one socket per connection, so fixed): read
        #: once, not with a system call per request.
        self._local_address: Any = None

    def _peer_request_limit(self) -> int:
        return self.http3_settings.max_concurrent_requests

    def on_connection_established(
        self, io: ConnectionIO, handshake: HandshakeInfo
    ) -> None:
        super().on_connection_established(io, handshake)
        timeout = self.http3_settings.post_accept_timeout
        if timeout is not None:
            # The timer task starts at the end of this step only if no
            # request came with the handshake (clients usually send theirs
            # in the same flight): most connections never need it.
            self._post_accept_deadline = trio.current_time() + timeout
        if self.shutting_down:
            self.shutting_down = False
            self.begin_shutdown(two_step=self._two_step)

    def process_writes(self, io: ConnectionIO) -> None:
        super().process_writes(io)
        deadline = self._post_accept_deadline
        if deadline is not None:
            self._post_accept_deadline = None
            if self.requests_seen == 0:
                io.start_soon(self._post_accept_timeout, deadline)

    async def _post_accept_timeout(self, deadline: float) -> None:
        # Cancelled at the first request: no task is left per connection.
        with self._post_accept_scope:
            await trio.sleep_until(deadline)
        if self.requests_seen == 0:
            logger.debug("trioquic.h3: no request within the post-accept timeout")
            self.begin_shutdown()

    def _is_new_stream(self, stream_id: int) -> bool:
        return stream_id % 4 == 0 and stream_id not in self._done_ids

    def _mark_done(self, stream_id: int) -> None:
        done = self._done_ids
        done.add(stream_id)
        if len(done) > 2 * self.http3_settings.max_concurrent_requests + 64:
            io = self.io
            self._done_ids = {
                sid for sid in done if io.received_final_size(sid) is not None
            }

    def _on_stop_sending(self, stream_id: int, error_code: int) -> None:
        if stream_id not in self.exchanges and self._is_new_stream(stream_id):
            stops = self._early_stops
            if len(stops) > self.http3_settings.max_concurrent_requests + 64:
                # Bounded: the transport's stream limit keeps the real ones
                # fewer; a request stream that never brings its request
                # needs no memory of its stop.
                del stops[next(iter(stops))]
            stops[stream_id] = error_code
        super()._on_stop_sending(stream_id, error_code)

    def _on_headers(self, event: HeadersReceived) -> None:
        sid = event.stream_id
        ex = self.exchanges.get(sid)
        if ex is not None:
            if not ex.abandoned:
                self._on_trailers(ex, event)
            return
        if sid % 4 != 0 or sid in self._done_ids:
            return
        stop_code = self._early_stops.pop(sid, None)
        if stop_code is not None:
            # The client stopped the response before its request came: the
            # transport has reset our side, nobody wants an answer.
            self._highest_request = max(self._highest_request, sid)
            if not event.stream_ended:
                self.io.stop_stream(sid, H3ErrorCode.NO_ERROR)
            self._drop_credit(sid)
            self._mark_done(sid)
            return
        self._highest_request = max(self._highest_request, sid)
        ex = Exchange(self, sid)
        ex.headers_received = True
        goaway_sent = self.engine.goaway_sent
        if self.shutting_down and (goaway_sent is None or sid >= goaway_sent):
            # Beyond our GOAWAY: refuse it unprocessed (RFC 9114 section 5.2).
            self.io.stop_stream(sid, H3ErrorCode.REQUEST_REJECTED)
            self.io.reset_stream(sid, H3ErrorCode.REQUEST_REJECTED)
            self._drop_credit(sid)
            self._mark_done(sid)
            return
        self.exchanges[sid] = ex
        if event.stream_ended:
            ex.eof = True
        pseudo, headers = split_pseudo(event.headers)
        early = not self.io.handshake_complete
        request = Request._from_exchange(self, ex, pseudo, headers, early_data=early)
        self.requests_seen += 1
        self._post_accept_scope.cancel()
        self.active += 1
        limit = self.http3_settings.max_requests_per_connection
        if limit is not None and self.requests_seen >= limit:
            self.begin_shutdown()
        if field_section_size(event.headers) > self.http3_settings.max_header_list_size:
            self._simple_response(ex, 431)
            self.abandon_receive(ex, H3ErrorCode.NO_ERROR)
            self._finish_request(ex)
            return
        protocol = pseudo.get(b":protocol")
        # RFC 9114 section 4.3.1: a request other than CONNECT carries
        # :scheme and :path (aioquic only checks :method and :authority);
        # otherwise it is malformed.
        incomplete = pseudo.get(b":method") != b"CONNECT" and (
            b":scheme" not in pseudo or b":path" not in pseudo
        )
        if incomplete or (
            protocol is not None
            and (
                not self.http3_settings.enable_connect_protocol
                or pseudo.get(b":method") != b"CONNECT"
            )
        ):
            self.reset(ex, H3ErrorCode.MESSAGE_ERROR)
            self._finish_request(ex)
            return
        if (
            early
            and self.http3_settings.refuse_unsafe_early_data
            and request.method not in _IDEMPOTENT_METHODS
        ):
            # RFC 8470 section 5.2: the client may retry after the handshake.
            self._simple_response(ex, 425)
            self.abandon_receive(ex, H3ErrorCode.NO_ERROR)
            self._finish_request(ex)
            return
        self.io.start_soon(self._run_handler, ex, request, name=self.handler)

    def _check_unparsed(self, stream_id: int) -> None:
        # No credit is granted for a header block until it is complete: one
        # far larger than max_header_list_size is refused before it fills
        # the stream window (QPACK never makes a field section much larger).
        limit = 2 * self.http3_settings.max_header_list_size + 4096
        if self.engine.buffered(stream_id) > limit:
            logger.debug("trioquic.h3: header block too large (stream %d)", stream_id)
            self.io.stop_stream(stream_id, H3ErrorCode.EXCESSIVE_LOAD)
            self.io.reset_stream(stream_id, H3ErrorCode.EXCESSIVE_LOAD)
            self.engine.abandon(stream_id)
            self._drop_credit(stream_id)
            self._mark_done(stream_id)

    def _body_too_large(self, ex: Exchange) -> bool:
        limit = self.http3_settings.max_request_body_size
        if limit is None or ex.body_received <= limit:
            return False
        ex.failure = H3Error(
            H3ErrorCode.EXCESSIVE_LOAD, "the request body is too large"
        )
        if not ex.headers_sent:
            self._simple_response(ex, 413)
            self.abandon_receive(ex, H3ErrorCode.NO_ERROR)
        else:
            self.reset(ex, H3ErrorCode.EXCESSIVE_LOAD)
        if ex.cancel_scope is not None:
            ex.cancel_scope.cancel()
        ex.wake_all()
        return True

    def _simple_response(self, ex: Exchange, status: int) -> None:
        with contextlib.suppress(H3Error, ConnectionClosed, trio.ClosedResourceError):
            self.send_headers_nowait(
                ex,
                _final_headers(
                    self.http3_settings,
                    [(b":status", str(status).encode()), (b"content-length", b"0")],
                ),
                True,
            )

    def _peer_aborted(self, ex: Exchange) -> None:
        # The peer gave up on this request: its handler stops (unless it
        # asked to be told instead, Request.cancel_on_abort).
        if ex.cancel_scope is not None and ex.cancel_on_abort:
            ex.cancel_scope.cancel()

    async def _run_handler(self, ex: Exchange, request: Request) -> None:
        try:
            with trio.CancelScope() as scope:
                ex.cancel_scope = scope
                if ex.peer_aborted or ex.response_complete:
                    scope.cancel()
                try:
                    await self.handler(request)
                except Exception as exc:
                    if (
                        ex.peer_aborted
                        or ex.response_complete
                        or (isinstance(exc, ConnectionClosed) and self.io.error)
                    ):
                        # The client left (or the connection ended under the
                        # handler): nothing to answer, nothing to report.
                        logger.debug("trioquic.h3: handler ended: %r", exc)
                    else:
                        logger.exception(
                            "trioquic.h3: request handler raised (stream %d)",
                            ex.stream_id,
                        )
                        self._fail(ex)
                else:
                    if not ex.response_complete and not ex.peer_aborted:
                        if not ex.headers_sent:
                            logger.warning(
                                "trioquic.h3: request handler returned without "
                                "responding (stream %d): sending 500",
                                ex.stream_id,
                            )
                        self._fail(ex)
        finally:
            self._finish_request(ex)

    def _fail(self, ex: Exchange) -> None:
        if not ex.headers_sent:
            self._simple_response(ex, 500)
        else:
            self.reset(ex, H3ErrorCode.INTERNAL_ERROR)

    def _finish_request(self, ex: Exchange) -> None:
        ex.cancel_scope = None
        if not ex.response_complete:
            self.reset(ex, H3ErrorCode.INTERNAL_ERROR)
        if not ex.eof:
            # The response is complete: the rest of the request is not needed
            # (RFC 9114 section 4.1.1).
            self.abandon_receive(ex, H3ErrorCode.NO_ERROR)
        self.active -= 1
        self.exchanges.pop(ex.stream_id, None)
        self._drop_credit(ex.stream_id)
        self._mark_done(ex.stream_id)
        self._maybe_close()

    def _can_forget(self, ex: Exchange) -> bool:
        return False  # the handler's task forgets it

    # -- GOAWAY and closing ----------------------------------------------------------

    def begin_shutdown(self, *, two_step: bool = False) -> None:
        """Send GOAWAY (requests not yet received are refused) and close the
        connection once the requests in flight are answered.

        ``two_step`` (a server shutting down) is RFC 9114 section 5.2's
        graceful drain: a first GOAWAY with the largest stream ID tells the
        client to open no new request, and requests already on their way are
        still served; a round trip later, a second GOAWAY names the last
        request actually received."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self._two_step = two_step
        if self.started and self.io.error is None:
            self.extension.on_shutdown()
        if not self.started or self.io.error is not None:
            # Not up yet: on_connection_established sends it.
            return
        if two_step:
            self.engine.send_goaway(_LAST_CLIENT_STREAM_ID)
            self.io.start_soon(self._final_goaway)
        else:
            self._send_final_goaway()
        self.io.wake()

    async def _final_goaway(self) -> None:
        """The second step: wait a round trip (at least 10 ms; 100 ms before
        any RTT sample), so that requests the client sent before it saw the
        first GOAWAY have arrived, then name the last one."""
        rtt = self.io.statistics().smoothed_rtt
        await trio.sleep(max(2 * rtt, 0.01) if rtt else 0.1)
        self._send_final_goaway()
        self.io.wake()

    def _send_final_goaway(self) -> None:
        if self.io.error is not None:
            return
        self.engine.send_goaway(self._highest_request + 4)
        self._final_goaway_sent = True
        self._maybe_close()

    def _maybe_close(self) -> None:
        if (
            self.shutting_down
            and self._final_goaway_sent
            and self.active == 0
            and not self._closing
        ):
            self._closing = True
            if self.io.error is None:
                self.io.start_soon(self._close_when_flushed)

    async def _close_when_flushed(self) -> None:
        with trio.move_on_after(self.io.settings.close_grace_period):
            await self.io.wait_flushed()
        self.close()


class Request(Body):
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
    _driver: ServerH3Driver
    #: ``"3"``; the TCP front door's requests say ``"2"`` or ``"1.1"``.
    http_version = "3"
    #: Whether the request arrived as 0-RTT early data, before the handshake
    #: completed (RFC 8470): an attacker may have replayed it. A handler can
    #: answer ``425`` (Too Early) to have the client send it again after the
    #: handshake; ``Http3Settings.refuse_unsafe_early_data`` does that for
    #: every non-idempotent method.
    early_data: bool

    def __init__(self) -> None:
        raise TypeError("Request objects are made by trioquic")

    @classmethod
    def _from_exchange(
        cls,
        driver: ServerH3Driver,
        exchange: Exchange,
        pseudo: dict[bytes, bytes],
        headers: Headers,
        *,
        early_data: bool = False,
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
        self.early_data = early_data
        return self

    def __repr__(self) -> str:
        return (
            f"<trioquic.h3.Request {self.method} {self.path} stream={self.stream_id}>"
        )

    @property
    def peer_address(self) -> Any:
        """The client's current address (it follows the client if it
        migrates)."""
        return self._driver.io.peer_address

    @property
    def local_address(self) -> Any:
        """The server's address this request came to."""
        driver = self._driver
        address = driver._local_address
        if address is None:
            address = driver._local_address = driver.io.local_address
        return address

    @property
    def connection(self) -> Hashable:
        """An opaque object standing for this request's QUIC connection: the
        same for every request of the connection, different from any other
        open connection's (compare it, or use it as a dict key, e.g. to count
        what each client connection holds; drop it when the request ends)."""
        return self._driver.io

    @property
    def peer_datagrams_enabled(self) -> bool:
        """Whether HTTP datagrams (RFC 9297) can be sent on this request:
        this server enabled them (``Http3Settings.enable_datagrams``) and the
        client's SETTINGS did too (``H3_DATAGRAM``, RFC 9297 section 2.1.1).
        If not, :meth:`send_datagram` raises
        :exc:`~trioquic.DatagramError`; send DATAGRAM capsules on the
        stream instead."""
        driver = self._driver
        return bool(
            driver.http3_settings.enable_datagrams
            and driver.engine.peer_enabled_datagrams()
        )

    @property
    def cancel_on_abort(self) -> bool:
        """Whether the handler is cancelled when the client resets or stops
        the stream (default ``True``). A handler that sets it to ``False``
        learns of it instead from :attr:`aborted`, :meth:`wait_aborted`, and
        the errors reading and sending raise (the ASGI adapter does this, to
        give the application ``http.disconnect``). When the connection
        ends, every handler is cancelled either way."""
        return self._exchange.cancel_on_abort

    @cancel_on_abort.setter
    def cancel_on_abort(self, value: bool) -> None:
        self._exchange.cancel_on_abort = bool(value)

    @property
    def cancel_scope(self) -> trio.CancelScope | None:
        """The :class:`trio.CancelScope` the handler runs in (``None`` before
        and after): cancel it, or set its ``deadline``, to bound the
        handler's run without a scope of its own. The stream is reset if the
        handler is cancelled before the response is complete."""
        return self._exchange.cancel_scope

    @property
    def aborted(self) -> bool:
        """The client reset or stopped the stream, or the connection ended."""
        return self._exchange.aborted

    async def wait_aborted(self) -> None:
        """Return when :attr:`aborted` becomes true (at once if it is)."""
        await self._exchange.wait_aborted()

    async def send_informational(self, status: int, headers: HeaderInput = ()) -> None:
        """Send a 1xx informational response (e.g. 103 Early Hints), before
        the response. Raises :exc:`RuntimeError` once the response has
        started (:meth:`respond`, :meth:`stream_response`): an interim
        response cannot follow the final one (RFC 9114 section 4.1)."""
        fields = status_headers(status, headers)
        if not 100 <= status < 200:
            raise ValueError(f"informational responses are 1xx, got {status}")
        if self._exchange.headers_sent:
            raise RuntimeError(
                "send_informational() after the response started: 1xx responses "
                "must come before respond() or stream_response()"
            )
        await self._driver.send_headers(self._exchange, fields, False)

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
        fields = status_headers(status, headers)
        if status >= 200:
            fields = _final_headers(self._driver.http3_settings, fields)
        trailer_fields = normalize_headers(trailers) if trailers is not None else None
        # A cancellation point before anything is sent and one schedule
        # point at the end (send_data's, or our own), not one per part.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._start()
        driver, ex = self._driver, self._exchange
        driver.send_headers_nowait(ex, fields, not body and trailer_fields is None)
        if body:
            await driver.send_data(ex, bytes(body), trailer_fields is None)
        if trailer_fields is not None:
            await driver.send_headers(ex, trailer_fields, True)
        elif not body:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def stream_response(self, status: int, headers: HeaderInput = ()) -> ResponseWriter:
        """A response whose body is sent piece by piece: an async context
        manager yielding a :class:`ResponseWriter` (see its
        :meth:`~ResponseWriter.send` and :attr:`~ResponseWriter.trailers`)."""
        fields = status_headers(status, headers)
        if status >= 200:
            fields = _final_headers(self._driver.http3_settings, fields)
        return ResponseWriter(self, fields)

    async def send_datagram(self, data: bytes) -> None:
        """Send an HTTP datagram (RFC 9297) bound to this request's stream."""
        await self._driver.send_datagram(self._exchange, data)

    def send_datagram_nowait(self, data: bytes) -> None:
        """:meth:`send_datagram` without the checkpoint: the datagram is
        queued for the connection's next packets, and those queued together
        share packets (one worker step sends them). Raises
        :exc:`~trioquic.DatagramError` as :meth:`send_datagram` does."""
        self._driver.send_datagram_nowait(self._exchange, data)

    async def receive_datagram(self) -> bytes:
        """Wait for the next HTTP datagram of this request's stream."""
        return await self._driver.receive_datagram(self._exchange)

    def receive_datagram_nowait(self) -> bytes:
        """The next HTTP datagram already received, or :exc:`trio.WouldBlock`
        if there is none (to drain what arrived after
        :meth:`receive_datagram` returned)."""
        return self._driver.receive_datagram_nowait(self._exchange)

    def reset(self, error_code: int = H3ErrorCode.REQUEST_CANCELLED) -> None:
        """Abandon this request: reset its stream (RESET_STREAM, and
        STOP_SENDING if the body is still coming) with ``error_code``, an
        HTTP/3 error code (``H3ErrorCode.REQUEST_REJECTED`` tells the client
        it may retry elsewhere). The rest of the connection carries on.
        Idempotent; a response already complete is left as it is."""
        code = operator.index(error_code)
        if not 0 <= code < 2**62:
            raise ValueError(f"error codes are 0 to 2**62-1, got {code}")
        self._driver.reset(self._exchange, code)


class ResponseWriter:
    """A streamed response (:meth:`Request.stream_response`), an async context
    manager. Entering sends the headers; leaving normally sends the
    :attr:`trailers` (if set) and ends the stream; leaving by an exception
    resets the stream with H3ErrorCode.INTERNAL_ERROR."""

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
            driver.reset(ex, H3ErrorCode.INTERNAL_ERROR)
            return
        if ex.response_complete:
            return
        if self.trailers is not None:
            await driver.send_headers(ex, normalize_headers(self.trailers), True)
        else:
            await driver.send_data(ex, b"", True)
