"""The client side of HTTP/3: :class:`ClientH3Driver` opens requests, and
:class:`Http3Client` is what applications hold."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio

from .._application import ConnectionIO
from .._engine import (
    HeadersReceived,
    PushPromiseReceived,
    PushStreamOpened,
)
from .._errors import CloseReason, ConnectionClosed
from .._events import HandshakeInfo
from .._settings import QuicSettings
from .._statistics import ConnectionStatistics
from ._driver import _MAX_INFORMATIONAL, Body, Exchange, H3Driver
from ._errors import (
    ConnectionGoingAway,
    H3Error,
    H3ErrorCode,
    RequestRejected,
    _Stopped,
)
from ._headers import HeaderInput, Headers, normalize_headers, split_pseudo
from ._settings import Http3Settings


class ClientH3Driver(H3Driver):
    """The client side: opens requests and delivers responses."""

    def __init__(
        self,
        http3_settings: Http3Settings | None = None,
        quic_settings: QuicSettings | None = None,
        *,
        authority: str = "",
    ) -> None:
        super().__init__(http3_settings, quic_settings)
        self.authority = authority
        self._open_lot = trio.lowlevel.ParkingLot()
        #: Pushes by push ID (at most ``max_pushes``: later IDs are refused).
        self.pushes: dict[int, _PushState] = {}
        #: Promised pushes not yet taken by :meth:`Http3Client.receive_push`.
        self.push_queue: deque[_PushState] = deque()
        self.push_lot = trio.lowlevel.ParkingLot()

    def _max_push_id(self) -> int | None:
        pushes = self.http3_settings.max_pushes
        return pushes - 1 if pushes else None

    def _push(self, push_id: int) -> _PushState:
        state = self.pushes.get(push_id)
        if state is None:
            state = self.pushes[push_id] = _PushState(push_id)
        return state

    def _on_push(self, event: PushPromiseReceived | PushStreamOpened) -> None:
        state = self._push(event.push_id)
        if isinstance(event, PushPromiseReceived):
            if state.headers is None:
                state.headers = event.headers
                if not state.cancelled:
                    self.push_queue.append(state)
                    self.push_lot.unpark_all()
            elif state.headers != event.headers:
                # RFC 9114 section 4.6: the same push ID promised with other
                # request headers.
                self.io.close(
                    H3ErrorCode.GENERAL_PROTOCOL_ERROR,
                    f"push {event.push_id} promised twice with different headers",
                )
            return
        ex = Exchange(self, event.stream_id)
        ex.send_finished = True  # a push stream carries nothing of ours
        self.exchanges[event.stream_id] = ex
        # Credit the push's body as it is read, as a response's.
        self._raw[event.stream_id] = 0
        self._credited[event.stream_id] = 0
        state.exchange = ex
        if state.cancelled or state.failure is not None:
            # Refused here, or withdrawn by the server: nothing will read it
            # (the failure lets the exchange be forgotten at once).
            ex.failure = H3Error(H3ErrorCode.REQUEST_CANCELLED, "push cancelled")
            self.abandon_receive(ex, H3ErrorCode.REQUEST_CANCELLED)
            self._maybe_done(ex)
        state.lot.unpark_all()

    def _on_push_cancelled(self, push_id: int) -> None:
        state = self._push(push_id)
        if state.failure is None:
            state.failure = H3Error(
                H3ErrorCode.REQUEST_CANCELLED, f"the server cancelled push {push_id}"
            )
        with suppress(ValueError):
            self.push_queue.remove(state)
        state.lot.unpark_all()

    def cancel_push(self, state: _PushState) -> None:
        """The application does not want this push: CANCEL_PUSH before its
        stream arrived, STOP_SENDING on it after (RFC 9114 section 4.6)."""
        if state.cancelled or self.io.error is not None:
            return
        state.cancelled = True
        ex = state.exchange
        if ex is None:
            self.engine.cancel_push(state.push_id)
        else:
            if ex.response_status is None and ex.failure is None:
                ex.failure = H3Error(H3ErrorCode.REQUEST_CANCELLED, "push cancelled")
            self.abandon_receive(ex, H3ErrorCode.REQUEST_CANCELLED)
            self._maybe_done(ex)
        state.lot.unpark_all()
        self.io.wake()

    async def wait_push_response(self, state: _PushState) -> Exchange:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if state.cancelled:
                raise H3Error(H3ErrorCode.REQUEST_CANCELLED, "the push was cancelled")
            if state.failure is not None:
                raise state.failure
            if state.exchange is not None:
                break
            self._raise_if_closed()
            await state.lot.park()
        await self.wait_response(state.exchange)
        return state.exchange

    def process_writes(self, io: ConnectionIO) -> None:
        super().process_writes(io)
        if self._open_lot:
            self._open_lot.unpark_all()

    def on_connection_close(self, io: ConnectionIO, reason: CloseReason) -> None:
        super().on_connection_close(io, reason)
        self._open_lot.unpark_all()
        self.push_lot.unpark_all()
        for state in self.pushes.values():
            state.lot.unpark_all()

    def send_goaway(self) -> None:
        """Tell the server this client is leaving (GOAWAY with push ID 0: no
        server push is accepted, RFC 9114 section 5.2)."""
        if self.io.error is not None:
            return
        self.engine.send_goaway(0)
        self.io.wake()

    def _on_goaway(self, last_id: int) -> None:
        for sid, ex in list(self.exchanges.items()):
            if sid % 4 == 0 and sid >= last_id and ex.response_status is None:
                # The server will not process it (RFC 9114 section 5.2).
                ex.failure = RequestRejected(
                    H3ErrorCode.REQUEST_REJECTED,
                    f"the server sent GOAWAY({last_id}): request {sid} not processed",
                )
                self.reset(ex, H3ErrorCode.REQUEST_CANCELLED)
                self.exchanges.pop(sid, None)
                ex.wake_all()
        self._open_lot.unpark_all()

    def _on_headers(self, event: HeadersReceived) -> None:
        ex = self.exchanges.get(event.stream_id)
        if ex is None or ex.abandoned:
            return
        if ex.response_status is not None:
            self._on_trailers(ex, event)
            return
        pseudo, headers = split_pseudo(event.headers)
        status_field = pseudo.get(b":status", b"")
        status = int(status_field) if status_field.isdigit() else 0
        if not 100 <= status <= 999:
            self._fail_response(ex, H3ErrorCode.MESSAGE_ERROR, "bad :status")
        elif 100 <= status < 200:
            if len(ex.informational) >= _MAX_INFORMATIONAL:
                self._fail_response(
                    ex,
                    H3ErrorCode.EXCESSIVE_LOAD,
                    f"more than {_MAX_INFORMATIONAL} informational responses",
                )
                return
            ex.informational.append((status, headers))
        else:
            ex.response_status = status
            ex.response_headers = headers
            ex.headers_received = True
            if event.stream_ended:
                ex.eof = True
        ex.receive_lot.unpark_all()

    def _fail_response(self, ex: Exchange, code: H3ErrorCode, message: str) -> None:
        """The server's response is malformed: the request fails with
        ``code``, and its stream is reset."""
        ex.failure = H3Error(code, message)
        self.reset(ex, code)
        ex.receive_lot.unpark_all()

    def _body_finished(self, ex: Exchange) -> None:
        self._maybe_done(ex)

    async def start_request(
        self,
        method: str,
        path: str,
        headers: Headers,
        *,
        authority: str | None,
        protocol: str | None,
        end_stream: bool,
    ) -> Exchange:
        await trio.lowlevel.checkpoint_if_cancelled()
        if protocol is not None:
            await self.wait_settings()
            if not self.engine.peer_enabled_connect_protocol():
                raise H3Error(
                    H3ErrorCode.REQUEST_REJECTED,
                    "the server did not enable extended CONNECT "
                    "(SETTINGS_ENABLE_CONNECT_PROTOCOL)",
                )
        while True:
            ex = self.start_request_nowait(
                method,
                path,
                headers,
                authority=authority,
                protocol=protocol,
                end_stream=end_stream,
            )
            if ex is not None:
                return ex
            await self._open_lot.park()

    def start_request_nowait(
        self,
        method: str,
        path: str,
        headers: Headers,
        *,
        authority: str | None,
        protocol: str | None,
        end_stream: bool,
    ) -> Exchange | None:
        """Open a request stream and send its headers, or return None while
        the server's limit on concurrent streams is reached."""
        if self.goaway_id is not None:
            raise ConnectionGoingAway(
                H3ErrorCode.REQUEST_REJECTED,
                "the server sent GOAWAY: no new requests on this connection",
            )
        self._raise_if_closed()
        sid = self.io.open_stream()
        if sid is None:
            return None
        ex = Exchange(self, sid)
        self.exchanges[sid] = ex
        self._raw[sid] = 0
        self._credited[sid] = 0
        pseudo: Headers = [(b":method", method.encode())]
        if method == "CONNECT" and protocol is None:
            pseudo.append((b":authority", (authority or self.authority).encode()))
        else:
            pseudo += [
                (b":scheme", b"https"),
                (b":authority", (authority or self.authority).encode()),
                (b":path", path.encode()),
            ]
            if protocol is not None:
                pseudo.append((b":protocol", protocol.encode()))
        ex.headers_sent = True
        self.send_headers_nowait(ex, pseudo + headers, end_stream)
        return ex

    async def wait_response(self, ex: Exchange) -> bool:
        """Wait for ex's response headers; return whether it had to wait
        (parking is a full checkpoint: then the caller needs no other)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        blocked = False
        while ex.response_status is None:
            if ex.failure is not None:
                raise ex.failure
            if ex.eof:
                raise H3Error(
                    H3ErrorCode.MESSAGE_ERROR, "the stream ended without a response"
                )
            self._raise_if_closed()
            blocked = True
            await ex.receive_lot.park()
        return blocked

    def _can_forget(self, ex: Exchange) -> bool:
        return ex.response_status is not None or ex.failure is not None


class Response(Body):
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

    async def receive_chunk(self) -> bytes:
        """The next piece of the body as it arrived, ``b""`` at its end (what
        ``async for`` yields, one call at a time: a deadline can be put
        around each). Raises as :meth:`read` does."""
        return await self._driver.receive_chunk(self._exchange)

    def receive_chunk_nowait(self) -> bytes:
        """The next piece of the body if one has arrived (``b""`` at its
        end); raises :exc:`trio.WouldBlock` while none has (then use
        :meth:`receive_chunk`), else as :meth:`read` does. Not a
        checkpoint."""
        driver, ex = self._driver, self._exchange
        if ex.receiving:
            raise trio.BusyResourceError("another task is already reading this body")
        chunks = ex.chunks
        if chunks:
            chunk = chunks.popleft()
            ex.buffered -= len(chunk)
            driver._update_credit(ex.stream_id)
            return chunk
        if ex.eof:
            driver._body_finished(ex)
            return b""
        if ex.failure is not None:
            raise ex.failure
        if ex.abandoned:
            raise H3Error(H3ErrorCode.REQUEST_CANCELLED, "the body was abandoned")
        driver._raise_if_closed()
        raise trio.WouldBlock

    def read_nowait(self) -> bytes:
        """The whole (rest of the) body, if all of it has arrived (as it
        often has with the headers of a small response); raises
        :exc:`trio.WouldBlock` while some is still to come (then use
        :meth:`read`). Not a checkpoint; a single buffered piece is returned
        as it is, without a copy."""
        driver, ex = self._driver, self._exchange
        if ex.receiving:
            raise trio.BusyResourceError("another task is already reading this body")
        if not ex.eof:
            raise trio.WouldBlock
        chunks = ex.chunks
        body = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        ex.buffered = 0
        if not ex.response_complete:
            # Else the exchange is over: forgetting it credits the stream.
            driver._update_credit(ex.stream_id)
        driver._body_finished(ex)
        return body

    @property
    def complete(self) -> bool:
        """Whether the whole body has been read."""
        ex = self._exchange
        return ex.eof and not ex.chunks

    async def aclose(self) -> None:
        """Stop reading the body: what is buffered is dropped, the server is
        asked to stop sending (STOP_SENDING, H3ErrorCode.REQUEST_CANCELLED) unless the
        body already ended, and the request's state is freed. Idempotent."""
        driver, ex = self._driver, self._exchange
        if not ex.eof:
            driver.abandon_receive(ex, H3ErrorCode.REQUEST_CANCELLED)
        else:
            ex.chunks.clear()
            ex.buffered = 0
        driver._maybe_done(ex)
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _PushState:
    """What the client knows of one push."""

    def __init__(self, push_id: int) -> None:
        self.push_id = push_id
        #: The promised request's header section (pseudo-headers first).
        self.headers: Headers | None = None
        #: The push stream's exchange, once it arrived.
        self.exchange: Exchange | None = None
        self.cancelled = False
        self.failure: H3Error | None = None
        self.lot = trio.lowlevel.ParkingLot()


class Push:
    """A server push (RFC 9114 section 4.6), as
    :meth:`Http3Client.receive_push` returns it: the request the server
    promised to answer, and its response once it comes."""

    push_id: int
    #: The promised request's header section, pseudo-headers included.
    headers: Headers
    method: str
    path: str
    authority: str

    def __init__(self, driver: ClientH3Driver, state: _PushState) -> None:
        assert state.headers is not None
        self._driver = driver
        self._state = state
        self.push_id = state.push_id
        self.headers = state.headers
        pseudo, _ = split_pseudo(state.headers)
        self.method = pseudo.get(b":method", b"").decode("latin-1")
        self.path = pseudo.get(b":path", b"").decode("latin-1")
        self.authority = pseudo.get(b":authority", b"").decode("latin-1")

    def __repr__(self) -> str:
        return f"<trioquic.h3.Push {self.push_id} {self.method} {self.path}>"

    async def response(self) -> Response:
        """Wait for the pushed response's headers and return it (read its body
        from it). Raises :exc:`~trioquic.h3.H3Error` if the server cancelled
        the push or reset its stream, or it was cancelled here,
        :exc:`~trioquic.ConnectionClosed` if the connection ended."""
        driver = self._driver
        return Response(driver, await driver.wait_push_response(self._state))

    def cancel(self) -> None:
        """Refuse the push: CANCEL_PUSH if its response has not started to
        arrive, else STOP_SENDING on its stream; what arrived is dropped.
        Idempotent."""
        self._driver.cancel_push(self._state)


class RequestStream:
    """A request whose body is sent piece by piece, and whose response streams
    (:meth:`Http3Client.open_request`): also how an extended CONNECT session
    (RFC 9220) carries HTTP datagrams (RFC 9297)."""

    def __init__(
        self, driver: ClientH3Driver, exchange: Exchange, *, early: bool = False
    ) -> None:
        self._driver = driver
        self._exchange = exchange
        self.stream_id = exchange.stream_id
        #: Whether the request's headers left as 0-RTT early data (before the
        #: handshake completed; the server may answer 425 Too Early).
        self.early = early
        self._response: Response | None = None

    @property
    def rejection(self) -> RequestRejected | None:
        """Why the server did not process the request (its GOAWAY did not
        cover it, or it reset the stream with H3_REQUEST_REJECTED), if it did
        not: then it is safe to send it again on another connection."""
        failure = self._exchange.failure
        return failure if isinstance(failure, RequestRejected) else None

    def cancel(self, error_code: int = H3ErrorCode.REQUEST_CANCELLED) -> None:
        """Abandon the request: reset its stream (if the body was not
        finished) and stop reading the response (STOP_SENDING, unless it
        was read to its end); its state is freed. Idempotent."""
        driver, ex = self._driver, self._exchange
        if ex.eof and not ex.chunks and ex.response_complete:
            driver._maybe_done(ex)
            return
        if ex.response_status is None and ex.failure is None:
            ex.failure = H3Error(error_code, "the request was cancelled")
        driver.reset(ex, error_code)
        if driver.io.error is not None:
            driver.exchanges.pop(ex.stream_id, None)

    async def send(self, data: bytes, *, end_stream: bool = False) -> None:
        """Send part of the request body (waits while the send buffer is
        full); with ``end_stream``, the last part: the body ends with it (as
        :meth:`finish` after it, in one step)."""
        await self._driver.send_data(self._exchange, bytes(data), end_stream)

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
            blocked = await self._driver.wait_response(self._exchange)
            self._response = Response(self._driver, self._exchange)
            if blocked:
                return self._response  # parking was the checkpoint
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await trio.lowlevel.checkpoint()
        return self._response

    async def send_datagram(self, data: bytes) -> None:
        """Send an HTTP datagram (RFC 9297) bound to this request's stream."""
        await self._driver.send_datagram(self._exchange, data)

    def send_datagram_nowait(self, data: bytes) -> None:
        """:meth:`send_datagram` without the checkpoint: the datagram is
        queued for the connection's next packets, and those queued together
        share packets. Raises :exc:`~trioquic.DatagramError` as
        :meth:`send_datagram` does."""
        self._driver.send_datagram_nowait(self._exchange, data)

    async def receive_datagram(self) -> bytes:
        """Wait for the next HTTP datagram of this request's stream."""
        return await self._driver.receive_datagram(self._exchange)

    def receive_datagram_nowait(self) -> bytes:
        """The next HTTP datagram already received, or :exc:`trio.WouldBlock`
        if there is none."""
        return self._driver.receive_datagram_nowait(self._exchange)


class Http3Client:
    """An HTTP/3 client connection, as :func:`~trioquic.h3.open_http3_client`
    yields it. Requests may run concurrently from several tasks."""

    def __init__(self, driver: ClientH3Driver) -> None:
        # Made by open_http3_client.
        self._driver = driver

    def __repr__(self) -> str:
        state = "closed" if self.is_closed else "open"
        return (
            f"<trioquic.h3.Http3Client {self._driver.authority} {state} "
            f"requests={len(self._driver.exchanges)}>"
        )

    @property
    def session_ticket(self) -> bytes | None:
        """The newest TLS session ticket from the server, as opaque bytes for
        ``QuicSettings.session_ticket`` (resumption, and 0-RTT requests with
        ``zero_rtt=True``); None until the server sent one."""
        return self._driver.io.session_ticket

    @property
    def handshake(self) -> HandshakeInfo | None:
        """What the handshake settled (ALPN, resumption, 0-RTT), or None while
        a 0-RTT connection's handshake still runs."""
        return self._driver.io.handshake

    async def wait_handshake(self) -> HandshakeInfo:
        """Wait for the handshake (immediate unless opened with 0-RTT)."""
        return await self._driver.io.wait_handshake()

    @property
    def is_closed(self) -> bool:
        """Whether the connection has ended."""
        return self._driver.io.error is not None

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the connection ended, once it has."""
        return self._driver.io.close_reason

    async def wait_closed(self) -> ConnectionClosed:
        """Wait until the connection has ended (the server closed it, an idle
        timeout, ...); return the exception that describes how. Cancel-safe."""
        return await self._driver.io.wait_closed()

    @property
    def local_address(self) -> Any:
        return self._driver.io.local_address

    @property
    def peer_address(self) -> Any:
        return self._driver.io.peer_address

    def statistics(self) -> ConnectionStatistics:
        """The QUIC connection's statistics (RTT, congestion window, ...)."""
        return self._driver.io.statistics()

    @property
    def peer_datagrams_enabled(self) -> bool:
        """Whether HTTP datagrams (RFC 9297) can be sent on this connection:
        this client enabled them (``Http3Settings.enable_datagrams``) and the
        server's SETTINGS did too (``H3_DATAGRAM``). ``False`` until the
        server's SETTINGS arrive (they come before any response)."""
        driver = self._driver
        return bool(
            driver.http3_settings.enable_datagrams
            and driver.engine.peer_enabled_datagrams()
        )

    async def rebind(self) -> Any:
        """Move the connection to a new local UDP port while requests carry
        on (connection migration; see :meth:`trioquic.QuicConnection.rebind`,
        whose rules apply). Returns the new local address."""
        return await self._driver.io.rebind()

    @property
    def active_requests(self) -> int:
        """Requests whose state the client still holds (sent and not yet
        answered, or whose response body is still being read)."""
        return len(self._driver.exchanges)

    async def receive_push(self) -> Push:
        """Wait for the server's next push promise (in the order promised).

        Only with ``Http3Settings(max_pushes=N)``: a client allows no push by
        default, and raises :exc:`RuntimeError` here. A push not wanted should
        be cancelled (:meth:`Push.cancel`); one taken but not read holds at
        most ``body_buffer_size`` bytes, as a response does. Raises
        :exc:`~trioquic.ConnectionClosed` once the connection has ended and
        no promised push is left."""
        driver = self._driver
        if not driver.http3_settings.max_pushes:
            raise RuntimeError(
                "this client accepts no server push: open it with "
                "http3_settings=Http3Settings(max_pushes=N)"
            )
        await trio.lowlevel.checkpoint_if_cancelled()
        blocked = False
        while not driver.push_queue:
            driver._raise_if_closed()
            blocked = True
            await driver.push_lot.park()
        if not blocked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return Push(driver, driver.push_queue.popleft())

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

        A request sent as 0-RTT early data (``zero_rtt``) that the server
        answers with ``425 Too Early`` (RFC 8470) is sent again once the
        handshake has completed, and that answer is returned; unless its
        body is an async iterable, which cannot be sent twice (then the 425
        response is returned).
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
        early = not driver.io.handshake_complete  # the headers left as 0-RTT
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
            driver.reset(ex, H3ErrorCode.REQUEST_CANCELLED)
            raise
        response = Response(driver, ex)
        replayable = body is None or isinstance(body, bytes | bytearray | memoryview)
        if response.status == 425 and early and replayable:
            await response.aclose()
            await self.wait_handshake()
            return await self.request(
                method,
                path,
                headers=fields,
                body=body,
                trailers=trailer_fields,
                authority=authority,
            )
        return response

    def start_request_nowait(
        self,
        method: str,
        path: str,
        *,
        headers: HeaderInput = (),
        authority: str | None = None,
        end_stream: bool = False,
    ) -> RequestStream | None:
        """Open a request and send its headers now, or return None while the
        server's limit on concurrent requests (its MAX_STREAMS) is reached:
        what a connection pool asks before it opens another connection.

        With ``end_stream`` the request has no body; otherwise send it with
        :meth:`RequestStream.send` and :meth:`RequestStream.finish`. Then
        wait for :meth:`RequestStream.response`, and read or close the
        response; a request given up on is ended with
        :meth:`RequestStream.cancel` (unlike :meth:`open_request`, nothing
        ends it for you). Raises :exc:`~trioquic.h3.ConnectionGoingAway` after
        the server's GOAWAY, :exc:`~trioquic.ConnectionClosed` once the
        connection ended: in both cases nothing was sent.
        """
        return self._start_request_fields(
            method, path, normalize_headers(headers), authority, end_stream
        )

    def _start_request_fields(
        self,
        method: str,
        path: str,
        fields: Headers,
        authority: str | None,
        end_stream: bool,
    ) -> RequestStream | None:
        """:meth:`start_request_nowait` with ``fields`` already normalized
        (lowercase byte names, no pseudo-header): for a caller that
        converted them once for many requests."""
        driver = self._driver
        early = not driver.io.handshake_complete
        ex = driver.start_request_nowait(
            method,
            path,
            fields,
            authority=authority,
            protocol=None,
            end_stream=end_stream,
        )
        return None if ex is None else RequestStream(driver, ex, early=early)

    async def start_request(
        self,
        method: str,
        path: str,
        *,
        headers: HeaderInput = (),
        authority: str | None = None,
        end_stream: bool = False,
    ) -> RequestStream:
        """As :meth:`start_request_nowait`, waiting while the server's limit
        on concurrent requests is reached. Cancel-safe (a cancelled call
        sent nothing)."""
        driver = self._driver
        fields = normalize_headers(headers)
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            early = not driver.io.handshake_complete
            ex = driver.start_request_nowait(
                method,
                path,
                fields,
                authority=authority,
                protocol=None,
                end_stream=end_stream,
            )
            if ex is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return RequestStream(driver, ex, early=early)
            await driver._open_lot.park()

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
        cancels the request (H3ErrorCode.REQUEST_CANCELLED).
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
            driver.reset(ex, H3ErrorCode.REQUEST_CANCELLED)
            raise
        if not ex.response_complete:
            with suppress(_Stopped):
                await driver.send_data(ex, b"", True)
        if not (ex.eof and not ex.chunks):
            driver.abandon_receive(ex, H3ErrorCode.NO_ERROR)
        driver.exchanges.pop(ex.stream_id, None)
