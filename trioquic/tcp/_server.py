"""``serve_tcp``: the TCP front door (HTTP/1.1 and HTTP/2, over TLS or plain
TCP), serving the same :data:`~trioquic.HttpHandler` as HTTP/3."""

from __future__ import annotations

import contextlib
import errno
import logging
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from .._http import HttpHandler
from ._h2 import H2Connection
from ._h11 import H11Connection
from ._settings import TcpSettings

logger = logging.getLogger("trioquic.tcp")

#: The start of the HTTP/2 connection preface (RFC 9113 section 3.4): a
#: plain-text client that sends it speaks HTTP/2 with prior knowledge.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_ACCEPT_ERRORS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS, errno.ECONNABORTED}
)


class ServerState:
    """What every connection of one server shares."""

    def __init__(
        self,
        handler: HttpHandler,
        settings: TcpSettings,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.ssl_context = ssl_context
        self.alt_svc = settings.alt_svc.encode("latin-1") if settings.alt_svc else None
        self.stopping = False
        self.connections: set[_Connection] = set()


class _Connection:
    """One accepted connection: its cancel scope, and the protocol object
    once the handshake is done (for a graceful shutdown)."""

    __slots__ = ("closed", "protocol", "scope")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.protocol: H11Connection | H2Connection | None = None
        self.closed = trio.Event()

    def begin_shutdown(self) -> None:
        if self.protocol is None:
            self.scope.cancel()
        else:
            self.protocol.begin_shutdown()


class TcpServer:
    """A running TCP front door, as ``await nursery.start(serve_tcp, ...)``
    reports it."""

    def __init__(
        self, listeners: Sequence[trio.SocketListener], state: ServerState
    ) -> None:
        self._listeners = list(listeners)
        self._state = state
        self._addresses = [listener.socket.getsockname() for listener in listeners]

    def __repr__(self) -> str:
        return f"<trioquic.TcpServer addresses={self.addresses!r}>"

    @property
    def addresses(self) -> list[Any]:
        """The bound local addresses, one per listening socket."""
        return list(self._addresses)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.addresses[0][1])

    @property
    def tls(self) -> bool:
        """Whether it speaks TLS."""
        return self._state.ssl_context is not None

    @property
    def connection_count(self) -> int:
        """Connections open now."""
        return len(self._state.connections)


def _check_port(port: Any) -> None:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0 to 65535, got {port}")


async def serve_tcp(
    handler: HttpHandler,
    port: int,
    *,
    host: str | None = None,
    settings: TcpSettings | None = None,
    listeners: Sequence[trio.SocketListener] | None = None,
    task_status: trio.TaskStatus[TcpServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP/1.1 and HTTP/2 on TCP ``port``: ``await handler(request)``
    runs for each request (a :class:`trioquic.HttpRequest`), the same
    handler :func:`trioquic.h3.serve_http3` runs.

    Use ``await nursery.start(serve_tcp, handler, port, settings=...)`` to get
    the :class:`TcpServer` once it listens. Over TLS (``settings.certificate``)
    ALPN picks HTTP/2 or HTTP/1.1; in plain text HTTP/1.1 is spoken, and
    HTTP/2 to a client that opens with the HTTP/2 preface. ``listeners``
    serves on sockets you bound (the server closes them when it stops).

    Each connection runs in its own task; at most
    ``settings.max_connections`` at once. Cancelling ``serve_tcp`` stops
    accepting and shuts down gracefully: HTTP/2 connections refuse new
    streams and send GOAWAY once their requests are answered, HTTP/1.1
    responses not yet started carry ``connection: close``; requests in
    flight have ``settings.grace_period`` seconds to finish, then the
    connections are closed.
    """
    if not callable(handler):
        raise TypeError("handler must be an async function taking a request")
    if settings is None:
        settings = TcpSettings()
    elif not isinstance(settings, TcpSettings):
        raise TypeError(
            f"settings must be a trioquic.TcpSettings, got {type(settings).__name__}"
        )
    _check_port(port)
    if host is not None and not isinstance(host, str):
        raise TypeError(f"host must be a str or None, got {type(host).__name__}")
    state = ServerState(handler, settings, settings.make_ssl_context())
    if listeners is None:
        listeners = await trio.open_tcp_listeners(port, host=host)
    elif not listeners:
        raise ValueError("listeners must hold at least one trio.SocketListener")
    listeners = list(listeners)
    shield = trio.CancelScope(shield=True)
    try:
        async with trio.open_nursery() as nursery:

            async def run_connections(
                task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                # Shielded from the caller's cancellation: on shutdown the
                # connections live on to finish their requests.
                with shield:
                    async with trio.open_nursery() as connections:
                        task_status.started(connections)
                        await trio.sleep_forever()

            connections: trio.Nursery = await nursery.start(run_connections)
            limiter = trio.CapacityLimiter(settings.max_connections)
            try:
                async with trio.open_nursery() as accepting:
                    for listener in listeners:
                        accepting.start_soon(
                            _accept_loop, listener, state, connections, limiter
                        )
                    task_status.started(TcpServer(listeners, state))
            finally:
                state.stopping = True
                with trio.CancelScope(shield=True):
                    for listener in listeners:
                        await listener.aclose()
                    await _shut_down(state)
                shield.cancel()
    finally:
        for listener in listeners:
            with trio.CancelScope(shield=True):
                await listener.aclose()


async def _shut_down(state: ServerState) -> None:
    for connection in list(state.connections):
        connection.begin_shutdown()
    with trio.move_on_after(state.settings.grace_period):
        for connection in list(state.connections):
            await connection.closed.wait()
    for connection in list(state.connections):
        connection.scope.cancel()


async def _accept_loop(
    listener: trio.SocketListener,
    state: ServerState,
    connections: trio.Nursery,
    limiter: trio.CapacityLimiter,
) -> None:
    while True:
        borrower = object()
        await limiter.acquire_on_behalf_of(borrower)
        try:
            stream = await listener.accept()
        except OSError as exc:
            limiter.release_on_behalf_of(borrower)
            if exc.errno in _ACCEPT_ERRORS:
                logger.error("trioquic.tcp: accept failed (%s); retrying", exc)
                await trio.sleep(0.1)
                continue
            raise
        except BaseException:
            limiter.release_on_behalf_of(borrower)
            raise
        connections.start_soon(_serve_connection, stream, state, limiter, borrower)


async def _serve_connection(
    stream: trio.SocketStream,
    state: ServerState,
    limiter: trio.CapacityLimiter,
    borrower: object,
) -> None:
    connection = _Connection()
    state.connections.add(connection)
    transport: trio.abc.Stream = stream
    try:
        with connection.scope:
            if state.stopping:
                return
            try:
                peer = stream.socket.getpeername()
                local = stream.socket.getsockname()
            except OSError:
                return
            settings = state.settings
            initial = b""
            context = state.ssl_context
            if context is not None:
                # Not https_compatible: closing sends close_notify (clients
                # tell a truncated response from a complete one); a client's
                # EOF without it reads as the end all the same.
                tls = trio.SSLStream(stream, context, server_side=True)
                transport = tls
                with trio.move_on_after(settings.handshake_timeout) as handshake:
                    try:
                        await tls.do_handshake()
                    except trio.BrokenResourceError as exc:
                        logger.debug("trioquic.tcp: TLS handshake failed: %r", exc)
                        return
                if handshake.cancelled_caught:
                    logger.debug("trioquic.tcp: TLS handshake timed out")
                    return
                use_h2 = tls.selected_alpn_protocol() == "h2"
                scheme = "https"
            else:
                scheme = "http"
                with trio.move_on_after(settings.keep_alive_timeout):
                    initial = await _peek_preface(stream)
                use_h2 = initial.startswith(_H2_PREFACE)
            protocol: H11Connection | H2Connection
            if use_h2:
                protocol = H2Connection(state, transport, scheme, peer, local, initial)
            else:
                protocol = H11Connection(state, transport, scheme, peer, local, initial)
            connection.protocol = protocol
            if state.stopping:
                protocol.begin_shutdown()
            await protocol.run()
    except Exception:
        logger.exception("trioquic.tcp: connection failed")
    finally:
        state.connections.discard(connection)
        connection.closed.set()
        limiter.release_on_behalf_of(borrower)
        # TLS close_notify where the peer still listens, even when the
        # connection was cut short by the end of the grace period (shielded,
        # bounded: aclose closes the socket however it ends).
        with trio.CancelScope(shield=True) as closing:
            closing.deadline = trio.current_time() + 0.5
            with contextlib.suppress(trio.BrokenResourceError, trio.BusyResourceError):
                await transport.aclose()


async def _peek_preface(stream: trio.SocketStream) -> bytes:
    """The first bytes of a plain-text connection: enough to tell the
    HTTP/2 preface from an HTTP/1.1 request."""
    data = b""
    while len(data) < len(_H2_PREFACE) and _H2_PREFACE.startswith(data):
        try:
            chunk = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            break
        if not chunk:
            break
        data += chunk
    return data


if TYPE_CHECKING:
    from .._http import HttpRequest
    from ._h2 import H2Request
    from ._h11 import H11Request

    # mypy checks here that the door's requests are HttpRequests.
    _h11_request: type[HttpRequest] = H11Request
    _h2_request: type[HttpRequest] = H2Request
