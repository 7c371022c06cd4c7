"""ASGIAdapter: runs an ASGI 3 application, one call per request, on any
:class:`~trioquic.HttpRequest` (HTTP/3, and HTTP/2 or HTTP/1.1 from the TCP
front door)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import unquote

import trio

from .._http import HTTP_DISCONNECTED, HttpRequest, HttpResponseContext
from .._http import HttpResponseWriter as _Writer
from ._types import ASGIApp, Message, Scope

logger = logging.getLogger("trioquic.asgi")

#: Bytes read from a file at a time for ``http.response.pathsend`` (one
#: worker-thread round trip each: large reads keep that cost small).
FILE_CHUNK = 256 * 1024
#: Header fields that belong to one HTTP/1.1 connection: HTTP/2 and HTTP/3
#: forbid them (RFC 9113 section 8.2.2, RFC 9114 section 4.2), so they are
#: dropped from an application's response there.
_CONNECTION_FIELDS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
    }
)
_SERVER_ERROR_BODY = b"Internal Server Error"
_SERVER_ERROR_HEADERS = (
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(_SERVER_ERROR_BODY)).encode()),
)


class ClientDisconnected(OSError):
    """What ``send`` raises once the client has gone (it reset or stopped
    the stream, or the connection ended), or once the response is complete:
    the ``OSError`` subclass the ASGI spec (2.4) asks servers to raise."""


class _IncompleteResponse(Exception):
    """Resets a streamed response the application did not finish."""


def address_pair(address: Any) -> tuple[str, int] | None:
    """``(host, port)`` of a socket address (IPv6 addresses carry more)."""
    if type(address) is tuple and len(address) == 2:
        host, port = address
        if type(host) is str and type(port) is int:
            return address  # already the pair (the usual IPv4 case)
    if isinstance(address, tuple | list) and len(address) >= 2:
        return (str(address[0]), int(address[1]))
    return None


def split_target(target: str, root_path: str) -> tuple[str, bytes, bytes]:
    """``path`` (percent-decoded, UTF-8), ``raw_path`` and ``query_string``
    of a request target, ``root_path`` in front of both paths (as uvicorn
    does: an application mounted below ``root_path`` sees it there)."""
    raw, _, query = target.partition("?")
    path = unquote(raw) if "%" in raw else raw
    if root_path:
        path = root_path + path
        raw = root_path + raw
    return path, raw.encode("latin-1"), query.encode("latin-1")


def scope_headers(request: HttpRequest) -> list[tuple[bytes, bytes]]:
    """The request's fields for a scope: ``:authority`` given as ``host``
    (first) when the request carries no ``host`` field."""
    headers = request.headers
    authority = request.authority
    if authority:
        for name, _ in headers:
            if name == b"host":
                break
        else:
            return [(b"host", authority.encode("latin-1")), *headers]
    return list(headers)


def response_headers(
    headers: Iterable[Any], http_version: str
) -> list[tuple[bytes, bytes]]:
    """An application's response fields as byte pairs; connection-specific
    ones dropped on HTTP/2 and HTTP/3."""
    out = []
    drop = http_version != "1.1"
    for name, value in headers:
        name = bytes(name).lower()
        if drop and name in _CONNECTION_FIELDS:
            continue
        out.append((name, bytes(value)))
    return out


def describe(request: HttpRequest) -> str:
    """What a log line says of a request: method, path, client."""
    peer = address_pair(request.peer_address)
    who = f"{peer[0]}:{peer[1]}" if peer else "?"
    return f"{request.method} {request.path} from {who} (HTTP/{request.http_version})"


class ASGIAdapter:
    """An :data:`~trioquic.HttpHandler` that runs an ASGI 3 application:
    each request is one ``await app(scope, receive, send)`` call, in the
    request's own task (requests of a connection run concurrently, within
    the server's limits).

    - ``root_path``: where the application is mounted (``scope["root_path"]``;
      it is also put in front of ``path`` and ``raw_path``).
    - ``state``: the lifespan state; each scope gets a shallow copy
      (``scope["state"]``).
    - ``disconnect_grace``: the application is *not* cancelled when the
      client goes away; it receives ``http.disconnect`` (or
      ``websocket.disconnect``) and its ``send`` raises
      :exc:`ClientDisconnected`. From the moment it has been told, it has
      this many seconds to return before it is cancelled (``None``: never).
      When the connection ends, every application call is cancelled.

    An application that raises before its response started gets a 500
    answer; after, the response's stream is reset. Either way the error is
    logged once (logger ``trioquic.asgi``) with the request, and no other
    request is affected.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        root_path: str = "",
        state: dict[str, Any] | None = None,
        disconnect_grace: float | None = 30.0,
    ) -> None:
        if not callable(app):
            raise TypeError(
                "app must be an ASGI 3 application: async def app(scope, receive, send)"
            )
        if not isinstance(root_path, str):
            raise TypeError(f"root_path must be a str, got {type(root_path).__name__}")
        if root_path.endswith("/"):
            raise ValueError(
                f"root_path must not end with '/' (got {root_path!r}): "
                "use '' or e.g. '/api'"
            )
        if root_path and not root_path.startswith("/"):
            raise ValueError(f"root_path must start with '/', got {root_path!r}")
        if state is not None and not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        if disconnect_grace is not None and not (
            isinstance(disconnect_grace, int | float) and disconnect_grace >= 0
        ):
            raise ValueError(
                f"disconnect_grace must be a number of seconds >= 0 or None, "
                f"got {disconnect_grace!r}"
            )
        self.app = app
        self.root_path = root_path
        self.state = state
        self.disconnect_grace = disconnect_grace

    def __repr__(self) -> str:
        return f"<trioquic.asgi.ASGIAdapter app={self.app!r}>"

    async def __call__(self, request: HttpRequest) -> None:
        # The application learns of a disconnect through receive and send;
        # it is cancelled only if it ignores it (disconnect_grace).
        request.cancel_on_abort = False
        if request.method == "CONNECT" and request.protocol is not None:
            if request.protocol.lower() == "websocket":
                from ._websocket import WebSocketCycle

                await WebSocketCycle(self, request).run()
            else:
                await request.respond(501, [(b"content-length", b"0")])
            return
        await HttpCycle(self, request).run()

    def http_scope(self, request: HttpRequest) -> Scope:
        path, raw_path, query = split_target(request.path, self.root_path)
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": request.http_version,
            "method": request.method,
            "scheme": request.scheme or "https",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": self.root_path,
            "headers": scope_headers(request),
            "client": address_pair(request.peer_address),
            "server": address_pair(request.local_address),
            "extensions": {
                "http.response.trailers": {},
                "http.response.early_hint": {},
                "http.response.pathsend": {},
            },
        }
        if self.state is not None:
            scope["state"] = self.state.copy()
        return scope


#: A stand-in for "no scope of our own" (reentrant, does nothing).
_NO_SCOPE = contextlib.nullcontext()
#: HttpCycle.scope before run() sets it: never entered, never cancelled.
_NO_DEADLINE = trio.CancelScope()


class HttpCycle:
    """One ``http`` scope: the application call and its receive and send."""

    __slots__ = (
        "adapter",
        "body",
        "body_done",
        "body_finished",
        "complete",
        "context",
        "disconnected",
        "end",
        "head",
        "headers",
        "headers_sent",
        "request",
        "scope",
        "status",
        "trailers",
        "trailers_expected",
        "writer",
    )

    def __init__(self, adapter: ASGIAdapter, request: HttpRequest) -> None:
        self.adapter = adapter
        self.request = request
        self.head = request.method == "HEAD"
        self.body: AsyncIterator[bytes] | None = None
        self.body_done = False
        # the response
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] | None = None  # held start
        self.trailers_expected = False
        self.trailers: list[tuple[bytes, bytes]] = []
        self.headers_sent = False
        self.body_finished = False
        self.complete = False
        self.context: HttpResponseContext | None = None
        self.writer: _Writer | None = None
        self.disconnected = False
        self.end: trio.Event | None = None
        self.scope: trio.CancelScope = _NO_DEADLINE  # set by run()

    # -- the call -------------------------------------------------------------

    async def run(self) -> None:
        request = self.request
        adapter = self.adapter
        scope = adapter.http_scope(request)
        failure: Exception | None = None
        # The disconnect grace is a deadline on the scope the application
        # runs in: the server's own for the request when it offers one (the
        # HTTP/3 server does), else a scope of ours.
        own: trio.CancelScope | None = None
        outer = getattr(request, "cancel_scope", None)
        if not isinstance(outer, trio.CancelScope):
            outer = own = trio.CancelScope()
        self.scope = outer
        try:
            with own if own is not None else _NO_SCOPE:
                try:
                    await adapter.app(scope, self.receive, self.send)
                except Exception as exc:
                    failure = exc
                except trio.Cancelled:
                    self._cancelled(own is None)
                    raise
            if (
                failure is None
                and self.complete
                and (own is None or not own.cancelled_caught)
            ):
                return  # the usual ending: nothing to report
            if own is not None and own.cancelled_caught:
                await self.abort(None)
            elif failure is not None:
                if self.disconnected or request.aborted:
                    logger.debug(
                        "ASGI application ended after the client left (%s): %r",
                        describe(request),
                        failure,
                    )
                    await self.abort(failure)
                else:
                    logger.error(
                        "ASGI application raised while handling %s",
                        describe(request),
                        exc_info=failure,
                    )
                    await self.fail(failure)
            elif not self.complete:
                if request.aborted:
                    await self.abort(None)
                else:
                    logger.error(
                        "ASGI application returned without completing the "
                        "response to %s",
                        describe(request),
                    )
                    await self.fail(_IncompleteResponse("response incomplete"))
        finally:
            if self.body is not None:
                aclose = getattr(self.body, "aclose", None)
                if aclose is not None:
                    await aclose()

    def _cancelled(self, by_server: bool) -> None:
        """The application is being cancelled: say so if it is because it
        ignored the disconnect past its grace."""
        if not self.disconnected or self.adapter.disconnect_grace is None:
            return  # the connection or the server ended: nothing to say
        if trio.current_time() < self.scope.deadline:
            return
        logger.warning(
            "ASGI application ignored the disconnect for %s s and was cancelled: %s",
            self.adapter.disconnect_grace,
            describe(self.request),
        )
        if by_server and not self.headers_sent:
            # The server resets what was started; nothing was: say why.
            self.complete = True
            self.request.reset()

    async def fail(self, exc: Exception) -> None:
        """500 if nothing was sent yet, else reset the stream."""
        if not self.headers_sent:
            self.headers_sent = True
            with contextlib.suppress(*HTTP_DISCONNECTED):
                await self.request.respond(
                    500, _SERVER_ERROR_HEADERS, _SERVER_ERROR_BODY
                )
            self.completed()
        else:
            await self.abort(exc)

    async def abort(self, exc: BaseException | None) -> None:
        """Reset the response's stream if it is open (the request is over)."""
        if self.context is not None and not self.complete:
            exc = exc or _IncompleteResponse("response abandoned")
            self.complete = True
            with contextlib.suppress(*HTTP_DISCONNECTED):
                await self.context.__aexit__(type(exc), exc, exc.__traceback__)
        elif not self.headers_sent:
            self.request.reset()
        self.completed()

    def completed(self) -> None:
        self.complete = True
        if self.end is not None:
            self.end.set()

    def client_gone(self) -> None:
        """The application has been told the client left: start its grace."""
        if not self.disconnected:
            self.disconnected = True
            grace = self.adapter.disconnect_grace
            if grace is not None:
                self.scope.deadline = min(
                    self.scope.deadline, trio.current_time() + grace
                )
            if self.end is not None:
                self.end.set()

    # -- receive --------------------------------------------------------------

    async def receive(self) -> Message:
        if not self.body_done and not self.complete and not self.disconnected:
            if self.body is None:
                self.body = self.request.__aiter__()
            try:
                chunk = await self.body.__anext__()
            except StopAsyncIteration:
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            except HTTP_DISCONNECTED:
                self.body_done = True
                self.client_gone()
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": chunk, "more_body": True}
        # The body is over: what is left to say is that the client has gone
        # (said at once once the response is complete, as the spec asks).
        if not self.complete and not self.disconnected:
            await self.wait_end()
        else:
            await trio.lowlevel.checkpoint()
        return {"type": "http.disconnect"}

    async def wait_end(self) -> None:
        if self.request.aborted:
            await trio.lowlevel.checkpoint()
            self.client_gone()
            return
        if self.end is None:
            self.end = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_abort, nursery.cancel_scope)
            await self.end.wait()
            nursery.cancel_scope.cancel()

    async def _watch_abort(self, scope: trio.CancelScope) -> None:
        await self.request.wait_aborted()
        self.client_gone()
        scope.cancel()

    # -- send -----------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.disconnected or self.complete or self.request.aborted:
            await trio.lowlevel.checkpoint()
            if self.request.aborted or self.disconnected:
                self.client_gone()
                raise ClientDisconnected(f"the client has gone: cannot send {kind}")
            raise ClientDisconnected(f"the response is complete: cannot send {kind}")
        try:
            # The most frequent first: a streamed response is many bodies.
            if kind == "http.response.body":
                if self.headers is None:
                    raise RuntimeError(f"{kind} before http.response.start")
                if self.body_finished:
                    raise RuntimeError(
                        "http.response.body after the last one (more_body=False)"
                    )
                await self._send_body(
                    message.get("body", b""), bool(message.get("more_body", False))
                )
            elif kind == "http.response.start":
                await self._start(message)
            elif kind == "http.response.trailers":
                await self._send_trailers(message)
            elif kind == "http.response.pathsend":
                self._check_started(kind)
                if self.body_finished or self.context is not None:
                    raise RuntimeError("http.response.pathsend after a response body")
                await self._send_path(message["path"])
            elif kind == "http.response.early_hint":
                await self._early_hint(message)
            else:
                raise ValueError(
                    f"unexpected ASGI message {kind!r} in an http scope "
                    "(expected http.response.start, .body, .trailers, "
                    ".pathsend or .early_hint)"
                )
        except HTTP_DISCONNECTED as exc:
            self.client_gone()
            raise ClientDisconnected(f"the client has gone: {exc}") from exc

    def _check_started(self, kind: str) -> None:
        if self.headers is None:
            raise RuntimeError(f"{kind} before http.response.start")

    async def _start(self, message: Message) -> None:
        if self.headers is not None:
            raise RuntimeError("http.response.start sent twice")
        status = message["status"]
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"http.response.start status must be an int: {status!r}")
        self.status = status
        self.headers = response_headers(
            message.get("headers", ()), self.request.http_version
        )
        self.trailers_expected = bool(message.get("trailers", False))
        # Held until the first body message, so that the application may
        # still fail with a proper 500. Nothing was sent: a cancellation
        # point, not a scheduling point (the body message that follows is).
        await trio.lowlevel.checkpoint_if_cancelled()

    async def _open(self) -> _Writer:
        assert self.headers is not None
        self.headers_sent = True
        self.context = self.request.stream_response(self.status, self.headers)
        self.writer = await self.context.__aenter__()
        return self.writer

    async def _finish(self) -> None:
        assert self.context is not None
        self.complete = True
        try:
            await self.context.__aexit__(None, None, None)
        finally:
            self.completed()

    async def _send_body(self, body: bytes, more: bool) -> None:
        if self.head:
            body = b""
        writer = self.writer
        if writer is None:
            if not more and not self.trailers_expected:
                # The whole response in one message: one call.
                assert self.headers is not None
                self.headers_sent = True
                await self.request.respond(self.status, self.headers, body)
                self.complete = True
                if self.end is not None:
                    self.end.set()
                return
            writer = await self._open()
        if body:
            await writer.send(body)
        if not more:
            self.body_finished = True
            if not self.trailers_expected:
                await self._finish()

    async def _send_trailers(self, message: Message) -> None:
        if not self.trailers_expected:
            raise RuntimeError(
                "http.response.trailers without trailers=True in http.response.start"
            )
        if not self.body_finished:
            raise RuntimeError(
                "http.response.trailers before the last http.response.body"
            )
        self.trailers.extend(
            response_headers(message.get("headers", ()), self.request.http_version)
        )
        if message.get("more_trailers", False):
            await trio.lowlevel.checkpoint()
            return
        if self.writer is None:
            await self._open()
        assert self.writer is not None
        if self.trailers:
            self.writer.trailers = self.trailers
        await self._finish()

    async def _send_path(self, path: Any) -> None:
        async with await trio.open_file(path, "rb") as file:
            if self.head:
                await self._send_body(b"", False)
                return
            chunk = await file.read(FILE_CHUNK)
            if len(chunk) < FILE_CHUNK:
                await self._send_body(chunk, False)
                return
            writer = await self._open()
            while chunk:
                await writer.send(chunk)
                chunk = await file.read(FILE_CHUNK)
        self.body_finished = True
        if not self.trailers_expected:
            await self._finish()

    async def _early_hint(self, message: Message) -> None:
        links = message.get("links", ())
        if self.headers_sent or not links:
            # Too late (or nothing) to hint: dropped, as the spec allows.
            await trio.lowlevel.checkpoint()
            return
        await self.request.send_informational(
            103, [(b"link", bytes(link)) for link in links]
        )
