"""What every HTTP request handler of trioquic sees, whatever the version.

:class:`HttpRequest` is the shape of :class:`trioquic.h3.Request` (HTTP/3)
and of the TCP front door's requests (HTTP/2 and HTTP/1.1,
:mod:`trioquic.tcp`): a handler written against it (the built-in file server
of ``trioquic serve``, the ASGI adapter of :mod:`trioquic.asgi`, your own)
runs on all three.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ._engine import Headers
from ._errors import ConnectionClosed
from .h3._errors import H3Error

#: Header fields as applications may pass them: names and values as ``str``
#: or ``bytes``.
from .h3._headers import HeaderInput


class HttpResponseWriter(Protocol):
    """A streamed response (what :meth:`HttpRequest.stream_response` yields)."""

    #: Trailers to send when the block exits normally (``None``: none).
    trailers: HeaderInput | None

    async def send(self, data: bytes) -> None:
        """Send part of the body; waits while the transport's send buffer is
        full (backpressure). Raises (see :class:`HttpRequest`) once the
        client has gone."""
        ...


class HttpResponseContext(Protocol):
    async def __aenter__(self) -> HttpResponseWriter: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None: ...


class HttpRequest(Protocol):
    """One request, on HTTP/3, HTTP/2 or HTTP/1.1.

    ``path`` is the request target as sent (path and query; for HTTP/1.1
    the origin form). ``headers`` are lowercase-name byte pairs, without
    pseudo-headers; ``authority`` is ``:authority`` (or HTTP/1.1's
    ``host``). A WebSocket opening arrives the same way on every version:
    ``method == "CONNECT"`` and ``protocol == "websocket"`` (RFC 8441 and
    RFC 9220; the HTTP/1.1 door turns an ``Upgrade: websocket`` request into
    this); a 2xx response accepts it, and the body both ways is then the
    WebSocket frames.

    Reading the body or sending after the client has gone (the stream was
    reset or stopped, the connection ended) raises one of
    :data:`HTTP_DISCONNECTED`.
    """

    method: str
    scheme: str
    authority: str
    path: str
    protocol: str | None
    headers: Headers
    early_data: bool
    #: ``"3"``, ``"2"`` or ``"1.1"``.
    http_version: str

    @property
    def peer_address(self) -> Any: ...

    @property
    def local_address(self) -> Any: ...

    @property
    def cancel_on_abort(self) -> bool: ...

    @cancel_on_abort.setter
    def cancel_on_abort(self, value: bool) -> None: ...

    @property
    def aborted(self) -> bool: ...

    async def wait_aborted(self) -> None: ...

    async def read(self) -> bytes: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    @property
    def trailers(self) -> Headers | None: ...

    async def send_informational(
        self, status: int, headers: HeaderInput = ()
    ) -> None: ...

    async def respond(
        self,
        status: int,
        headers: HeaderInput = (),
        body: bytes = b"",
        *,
        trailers: HeaderInput | None = None,
    ) -> None: ...

    def stream_response(
        self, status: int, headers: HeaderInput = ()
    ) -> HttpResponseContext: ...

    def reset(self, error_code: int = ...) -> None: ...


#: What reading or sending raises once the client has gone: on HTTP/3 an
#: :class:`~trioquic.h3.H3Error` (stream reset or stopped) or
#: :class:`~trioquic.ConnectionClosed`; on the TCP door
#: :class:`trio.BrokenResourceError`.
HTTP_DISCONNECTED: tuple[type[Exception], ...] = (
    H3Error,
    ConnectionClosed,
    trio.BrokenResourceError,
)

HttpHandler = Callable[[HttpRequest], Awaitable[None]]
"""A request handler that runs on every HTTP version trioquic serves."""


if TYPE_CHECKING:
    from .h3._server import Request

    # mypy checks here that trioquic.h3.Request is an HttpRequest.
    _h3_request: type[HttpRequest] = Request
