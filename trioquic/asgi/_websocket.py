"""The ``websocket`` scope: an accepted WebSocket request's body carries
RFC 6455 frames both ways (extended CONNECT on HTTP/3 and HTTP/2, or the
TCP door's HTTP/1.1 upgrade), spoken here by a wsproto server
:class:`~wsproto.connection.Connection`."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.events import (
    Message as WsMessage,
)
from wsproto.utilities import LocalProtocolError

from .._http import HTTP_DISCONNECTED, HttpRequest, HttpResponseContext
from .._http import HttpResponseWriter as _Writer
from ._adapter import (
    ClientDisconnected,
    address_pair,
    describe,
    logger,
    response_headers,
    scope_headers,
    split_target,
)
from ._types import Message, Scope

if TYPE_CHECKING:
    from ._adapter import ASGIAdapter

#: What ends reading the body: its end, or the client gone.
_BODY_OVER: tuple[type[BaseException], ...] = (StopAsyncIteration, *HTTP_DISCONNECTED)
_GONE: tuple[type[BaseException], ...] = (*HTTP_DISCONNECTED, ClientDisconnected)
#: RFC 6455 close codes used here.
_NORMAL = 1000
_ABNORMAL = 1006
_INTERNAL_ERROR = 1011


def websocket_scope(adapter: ASGIAdapter, request: HttpRequest) -> Scope:
    path, raw_path, query = split_target(request.path, adapter.root_path)
    subprotocols = [
        item.strip()
        for name, value in request.headers
        if name == b"sec-websocket-protocol"
        for item in value.decode("latin-1").split(",")
        if item.strip()
    ]
    scope: Scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": request.http_version,
        "scheme": "ws" if request.scheme in ("http", "ws") else "wss",
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": adapter.root_path,
        "headers": scope_headers(request),
        "client": address_pair(request.peer_address),
        "server": address_pair(request.local_address),
        "subprotocols": subprotocols,
        "extensions": {"websocket.http.response": {}},
    }
    if adapter.state is not None:
        scope["state"] = adapter.state.copy()
    return scope


class WebSocketCycle:
    """One ``websocket`` scope: the handshake as an HTTP response (2xx
    accepts, ``websocket.close`` before that is a 403, or the application's
    own denial response), then messages over wsproto."""

    def __init__(self, adapter: ASGIAdapter, request: HttpRequest) -> None:
        self.adapter = adapter
        self.request = request
        self.connection = Connection(ConnectionType.SERVER)
        self.state = "connecting"  # accepted, denial, closed
        self.connect_told = False
        self.disconnect_told = False
        self.close_code = _ABNORMAL
        self.close_reason = ""
        self.pending: deque[Message] = deque()
        self.fragments: list[Any] = []
        self.body: AsyncIterator[bytes] | None = None
        self.context: HttpResponseContext | None = None
        self.writer: _Writer | None = None
        self.finished = False  # our side of the stream is over
        self.write_lock = trio.Lock()
        self.denial_status = 0
        self.denial_headers: list[tuple[bytes, bytes]] | None = None
        self.scope = trio.CancelScope()

    async def run(self) -> None:
        request = self.request
        scope = websocket_scope(self.adapter, request)
        failure: Exception | None = None
        with self.scope:
            try:
                await self.adapter.app(scope, self.receive, self.send)
            except Exception as exc:
                failure = exc
        try:
            if self.scope.cancelled_caught:
                logger.warning(
                    "ASGI application ignored the disconnect and was cancelled: %s",
                    describe(request),
                )
            elif failure is not None and not (self.disconnect_told or request.aborted):
                logger.error(
                    "ASGI application raised while handling %s",
                    describe(request),
                    exc_info=failure,
                )
            elif failure is not None:
                logger.debug(
                    "ASGI websocket ended after the client left (%s): %r",
                    describe(request),
                    failure,
                )
            elif self.state == "connecting":
                logger.error(
                    "ASGI application returned without accepting or closing "
                    "the WebSocket %s",
                    describe(request),
                )
            await self.finish(_INTERNAL_ERROR if failure is not None else _NORMAL)
        finally:
            if self.body is not None:
                aclose = getattr(self.body, "aclose", None)
                if aclose is not None:
                    await aclose()

    async def finish(self, code: int) -> None:
        """End the exchange however the application left it."""
        try:
            if self.state == "connecting":
                if not self.request.aborted:
                    await self.request.respond(500, [(b"content-length", b"0")])
            elif self.state == "denial":
                if self.context is not None:
                    error = RuntimeError("denial response incomplete")
                    await self.context.__aexit__(RuntimeError, error, None)
                else:
                    self.request.reset()
            elif self.state == "accepted":
                await self.close(code, "")
                await self.end_stream()
            else:
                await self.end_stream()
        except _GONE:
            pass
        self.state = "closed"

    # -- writing frames -------------------------------------------------------

    async def write(self, event: Any) -> None:
        data = self.connection.send(event)
        async with self.write_lock:
            if self.finished or self.writer is None:
                raise ClientDisconnected("the WebSocket is closed")
            try:
                await self.writer.send(data)
            except HTTP_DISCONNECTED as exc:
                self.gone()
                raise ClientDisconnected(f"the client has gone: {exc}") from exc

    async def close(self, code: int, reason: str) -> None:
        if self.connection.state in (
            ConnectionState.OPEN,
            ConnectionState.REMOTE_CLOSING,
        ):
            await self.write(CloseConnection(code=code, reason=reason or None))

    async def end_stream(self) -> None:
        async with self.write_lock:
            if self.finished or self.context is None:
                return
            self.finished = True
            with contextlib.suppress(*HTTP_DISCONNECTED):
                await self.context.__aexit__(None, None, None)

    def gone(self) -> None:
        grace = self.adapter.disconnect_grace
        if grace is not None:
            self.scope.deadline = min(self.scope.deadline, trio.current_time() + grace)

    # -- receive --------------------------------------------------------------

    def _disconnect(self) -> Message:
        self.disconnect_told = True
        self.gone()
        return {
            "type": "websocket.disconnect",
            "code": self.close_code,
            "reason": self.close_reason,
        }

    async def receive(self) -> Message:
        if not self.connect_told:
            self.connect_told = True
            await trio.lowlevel.checkpoint()
            return {"type": "websocket.connect"}
        if self.pending:
            await trio.lowlevel.checkpoint()
            return self.pending.popleft()
        if self.state != "accepted" or self.connection.state is ConnectionState.CLOSED:
            if self.state == "connecting":
                await self.request.wait_aborted()
            else:
                await trio.lowlevel.checkpoint()
            return self._disconnect()
        while not self.pending:
            if self.body is None:
                self.body = self.request.__aiter__()
            try:
                data: bytes | None = await self.body.__anext__()
            except _BODY_OVER:
                data = None
            await self._feed(data)
        return self.pending.popleft()

    async def _feed(self, data: bytes | None) -> None:
        connection = self.connection
        if connection.state is ConnectionState.CLOSED:
            self.pending.append(self._disconnect())
            return
        try:
            connection.receive_data(data)
        except LocalProtocolError:
            self.pending.append(self._disconnect())
            return
        for event in connection.events():
            if isinstance(event, TextMessage | BytesMessage):
                self.fragments.append(event.data)
                if event.message_finished:
                    message: Message
                    if isinstance(event, TextMessage):
                        message = {
                            "type": "websocket.receive",
                            "text": "".join(self.fragments),
                        }
                    else:
                        message = {
                            "type": "websocket.receive",
                            "bytes": b"".join(self.fragments),
                        }
                    self.fragments = []
                    self.pending.append(message)
            elif isinstance(event, Ping):
                with contextlib.suppress(ClientDisconnected):
                    await self.write(event.response())
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                self.close_reason = event.reason or ""
                if connection.state is ConnectionState.REMOTE_CLOSING:
                    with contextlib.suppress(ClientDisconnected):
                        await self.write(event.response())
                await self.end_stream()
                self.pending.append(self._disconnect())
                return
            # a protocol error makes wsproto send a close: handled above

    # -- send -----------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.disconnect_told or self.request.aborted or self.state == "closed":
            await trio.lowlevel.checkpoint()
            self.gone()
            raise ClientDisconnected(f"the WebSocket is closed: cannot send {kind}")
        try:
            if kind == "websocket.accept":
                await self._accept(message)
            elif kind == "websocket.send":
                if self.state != "accepted":
                    raise RuntimeError("websocket.send before websocket.accept")
                text, data = message.get("text"), message.get("bytes")
                if text is not None:
                    await self.write(WsMessage(data=str(text)))
                elif data is not None:
                    await self.write(WsMessage(data=bytes(data)))
                else:
                    raise ValueError("websocket.send needs 'bytes' or 'text'")
            elif kind == "websocket.close":
                await self._close(message)
            elif kind == "websocket.http.response.start":
                if self.state != "connecting":
                    raise RuntimeError(
                        "websocket.http.response.start after the handshake was answered"
                    )
                self.state = "denial"
                self.denial_status = int(message["status"])
                self.denial_headers = response_headers(
                    message.get("headers", ()), self.request.http_version
                )
                await trio.lowlevel.checkpoint()
            elif kind == "websocket.http.response.body":
                await self._denial_body(message)
            else:
                raise ValueError(
                    f"unexpected ASGI message {kind!r} in a websocket scope"
                )
        except HTTP_DISCONNECTED as exc:
            self.gone()
            raise ClientDisconnected(f"the client has gone: {exc}") from exc

    async def _accept(self, message: Message) -> None:
        if self.state != "connecting":
            raise RuntimeError("websocket.accept after the handshake was answered")
        headers = response_headers(
            message.get("headers", ()), self.request.http_version
        )
        subprotocol = message.get("subprotocol")
        if subprotocol is not None:
            headers.append(
                (b"sec-websocket-protocol", str(subprotocol).encode("latin-1"))
            )
        self.state = "accepted"
        self.context = self.request.stream_response(200, headers)
        self.writer = await self.context.__aenter__()

    async def _close(self, message: Message) -> None:
        code = int(message.get("code", _NORMAL))
        reason = str(message.get("reason") or "")
        if self.state == "connecting":
            # Closing before accepting refuses the handshake (ASGI: 403).
            self.state = "closed"
            await self.request.respond(403, [(b"content-length", b"0")])
            return
        if self.state != "accepted":
            raise RuntimeError("websocket.close during a denial response")
        await self.close(code, reason)
        await self.end_stream()

    async def _denial_body(self, message: Message) -> None:
        if self.state != "denial" or self.denial_headers is None:
            raise RuntimeError(
                "websocket.http.response.body before websocket.http.response.start"
            )
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        if self.context is None:
            if not more:
                self.state = "closed"
                await self.request.respond(
                    self.denial_status, self.denial_headers, body
                )
                return
            self.context = self.request.stream_response(
                self.denial_status, self.denial_headers
            )
            self.writer = await self.context.__aenter__()
        assert self.writer is not None
        if body:
            await self.writer.send(body)
        if not more:
            self.state = "closed"
            await self.end_stream()
