"""The connection pool of :class:`~trioquic.httpx.HTTP3Transport`: HTTP/3
connections per origin, each a task in the transport's nursery.

A request takes a stream on the first usable connection of its origin that
has one (``Http3Client.start_request_nowait``: the server's MAX_STREAMS is
the test, exactly, at the moment the stream is opened). When none has, a new
connection is opened, up to ``max_connections``; beyond that the request
waits for a stream (the pool timeout). A connection that received GOAWAY
takes no new request; one that ended, or stayed idle for
``keepalive_expiry`` seconds, leaves the pool.
"""

from __future__ import annotations

import logging
import math
import socket as _stdlib_socket
from collections.abc import Callable
from contextlib import AsyncExitStack

import attrs
import trio

from .._errors import ConnectionClosed
from .._settings import QuicSettings
from .._udp import DatagramSocket, UdpSocket
from ..h3 import (
    ConnectionGoingAway,
    Http3Client,
    Http3Settings,
    RequestStream,
    open_http3_client,
)
from ..h3._headers import Headers

logger = logging.getLogger("trioquic.httpx")

#: ``(host, port)``: HTTP/3 origins are https only.
Origin = tuple[str, int]


class PoolClosed(Exception):
    """The transport was closed while a request waited for a connection."""


class Connection:
    """One pooled HTTP/3 connection (its task lives in the pool's nursery)."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.client: Http3Client | None = None
        #: Requests using it: from the stream's opening until the response
        #: body is read or closed.
        self.active = 0
        #: Cancelled to close the connection; its deadline is the idle expiry.
        self.scope = trio.CancelScope()
        #: Set once connected (``client`` is set) or failed (``error``).
        self.ready = trio.Event()
        self.error: BaseException | None = None
        self.closed = False
        #: The last session ticket of this connection given to the pool.
        self.ticket_kept: bytes | None = None

    def __repr__(self) -> str:
        return (
            f"<trioquic.httpx connection {self.origin[0]}:{self.origin[1]} "
            f"active={self.active}{' closed' if self.closed else ''}>"
        )

    @property
    def usable(self) -> bool:
        """Whether it can take a new request now."""
        client = self.client
        return (
            client is not None
            and not self.closed
            and not client.goaway_received
            and not client.is_closed
        )


@attrs.frozen
class Acquired:
    """A request's stream, and the connection it runs on."""

    connection: Connection
    stream: RequestStream


class Pool:
    """Connections per origin, and the session tickets they left behind."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        settings: QuicSettings,
        http3_settings: Http3Settings,
        max_connections: int,
        keepalive_expiry: float | None,
        zero_rtt: bool,
        local_address: str | None,
        socket_factory: Callable[[str, int], DatagramSocket] | None = None,
    ) -> None:
        self._nursery = nursery
        self._settings = settings
        self._http3_settings = http3_settings
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._zero_rtt = zero_rtt
        self._local_address = local_address
        self._socket_factory = socket_factory
        self.connections: dict[Origin, list[Connection]] = {}
        #: The newest unused session ticket per origin (each is used once).
        self.tickets: dict[Origin, bytes] = {}
        self.closed = False
        #: Every connection whose task runs (shielded once connected: the
        #: pool must end each one).
        self._running: set[Connection] = set()

    # -- taking and giving back ----------------------------------------------

    async def acquire(
        self,
        origin: Origin,
        method: str,
        path: str,
        headers: Headers,
        *,
        authority: str,
        end_stream: bool,
        early_ok: bool,
        connect_timeout: float | None,
        pool_timeout: float | None,
        connect_timeout_error: Callable[[], BaseException],
        pool_timeout_error: Callable[[], BaseException],
    ) -> Acquired:
        """A stream for a new request to ``origin`` (its headers sent), on a
        pooled connection or a new one. ``headers`` are normalized (lowercase
        byte names, no pseudo-header). Connect errors propagate as trioquic
        raises them (the transport maps them)."""
        pool_deadline = (
            math.inf if pool_timeout is None else trio.current_time() + pool_timeout
        )
        while True:
            if self.closed:
                raise PoolClosed("the transport is closed")
            conns = self.connections.get(origin)
            if conns is None:
                conns = self.connections[origin] = []
            connecting: Connection | None = None
            for conn in conns:
                if conn.client is None:
                    if conn.error is None:
                        connecting = conn
                    continue
                if not conn.usable:
                    continue
                client = conn.client
                if not early_ok and client.handshake is None:
                    # 0-RTT is only for idempotent requests: this one waits
                    # for the handshake.
                    await self._wait_handshake(
                        client, connect_timeout, connect_timeout_error
                    )
                    if not conn.usable:
                        continue
                try:
                    stream = client._start_request_fields(
                        method, path, headers, authority, end_stream
                    )
                except (ConnectionGoingAway, ConnectionClosed):
                    continue  # it can take no request: try the others
                if stream is not None:
                    self._activate(conn)
                    return Acquired(conn, stream)
            if connecting is not None:
                # Someone is connecting to this origin: its connection may
                # take this request too.
                with trio.move_on_at(pool_deadline) as scope:
                    await connecting.ready.wait()
                if scope.cancelled_caught:
                    raise pool_timeout_error()
                if isinstance(connecting.error, Exception):
                    # It failed to connect: so does this request (the
                    # transport maps the error to a fresh httpx exception).
                    raise connecting.error
                continue
            usable = [c for c in conns if c.usable]
            if len(usable) < self._max_connections:
                await self._connect(origin, connect_timeout, connect_timeout_error)
                continue
            # Every connection is at the server's stream limit: wait for a
            # stream on the least busy one.
            conn = min(usable, key=lambda c: c.active)
            assert conn.client is not None
            self._activate(conn)
            waited: RequestStream | None = None
            try:
                with trio.move_on_at(pool_deadline) as scope:
                    waited = await conn.client.start_request(
                        method,
                        path,
                        headers=headers,
                        authority=authority,
                        end_stream=end_stream,
                    )
            except (ConnectionGoingAway, ConnectionClosed):
                pass  # try again: another connection, or a new one
            except BaseException:
                self.release(conn)
                raise
            if waited is not None:
                return Acquired(conn, waited)
            self.release(conn)
            if scope.cancelled_caught:
                raise pool_timeout_error()

    async def _wait_handshake(
        self,
        client: Http3Client,
        seconds: float | None,
        timeout_error: Callable[[], BaseException],
    ) -> None:
        with trio.move_on_after(math.inf if seconds is None else seconds) as scope:
            try:
                await client.wait_handshake()
            except ConnectionClosed:
                return  # the connection is no longer usable: the caller sees
        if scope.cancelled_caught:
            raise timeout_error()

    def _activate(self, conn: Connection) -> None:
        if not conn.active:
            # A connection in use never expires (release re-arms it).
            conn.scope.deadline = math.inf
        conn.active += 1

    def release(self, conn: Connection) -> None:
        """A request on ``conn`` is over (its response read or closed)."""
        conn.active -= 1
        client = conn.client
        self._keep_ticket(conn)
        if conn.active == 0 and self._keepalive_expiry is not None:
            conn.scope.deadline = trio.current_time() + self._keepalive_expiry
        if client is not None and client.goaway_received and conn.active == 0:
            conn.scope.cancel()  # nothing more will run on it

    def _keep_ticket(self, conn: Connection) -> None:
        """Keep the connection's newest session ticket for the origin's next
        connection (once: a server accepts a ticket's 0-RTT data once)."""
        client = conn.client
        if client is None:
            return
        ticket = client.session_ticket
        if ticket is not None and ticket is not conn.ticket_kept:
            conn.ticket_kept = ticket
            self.tickets[conn.origin] = ticket

    # -- connections ---------------------------------------------------------------

    async def _connect(
        self,
        origin: Origin,
        seconds: float | None,
        timeout_error: Callable[[], BaseException],
    ) -> None:
        conn = Connection(origin)
        self.connections.setdefault(origin, []).append(conn)
        try:
            with trio.move_on_after(math.inf if seconds is None else seconds) as scope:
                await self._nursery.start(self._run_connection, conn)
            if scope.cancelled_caught:
                raise timeout_error()
        except BaseException as exc:
            conn.error = exc if isinstance(exc, Exception) else None
            conn.closed = True
            self._forget(conn)
            raise
        finally:
            conn.ready.set()

    def _forget(self, conn: Connection) -> None:
        conns = self.connections.get(conn.origin)
        if conns is not None and conn in conns:
            conns.remove(conn)
            if not conns:
                del self.connections[conn.origin]

    async def _open_socket(self, host: str, port: int) -> tuple[UdpSocket, str]:
        """A UDP socket bound to ``local_address``, and the server's address."""
        assert self._local_address is not None
        infos = await trio.socket.getaddrinfo(
            host, port, type=_stdlib_socket.SOCK_DGRAM
        )
        family, _, _, _, sockaddr = infos[0]
        sock = _stdlib_socket.socket(family, _stdlib_socket.SOCK_DGRAM)
        try:
            sock.bind((self._local_address, 0))
        except BaseException:
            sock.close()
            raise
        settings = self._settings
        return (
            UdpSocket(
                sock,
                settings.udp_buffer_size,
                offload=settings.udp_offload,
                report_unreachable=True,
            ),
            str(sockaddr[0]),
        )

    async def _run_connection(
        self,
        conn: Connection,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        host, port = conn.origin
        settings = self._settings
        ticket = self.tickets.pop(conn.origin, None)  # a ticket serves once
        if ticket is not None:
            settings = attrs.evolve(
                settings, session_ticket=ticket, zero_rtt=self._zero_rtt
            )
        started = False
        self._running.add(conn)
        try:
            # Until the connection is up, cancelling the request that opens
            # it cancels this task (nursery.start); from then on it is
            # shielded, and only the pool ends it (conn.scope: idle expiry,
            # the transport closing), so that it always closes gracefully,
            # even when the code around the client's block was cancelled.
            with trio.CancelScope() as guard:
                async with AsyncExitStack() as stack:
                    connect_host = host
                    sock: DatagramSocket | None = None
                    if self._socket_factory is not None:
                        sock = self._socket_factory(host, port)
                        stack.callback(sock.close)
                    elif self._local_address is not None:
                        sock, connect_host = await self._open_socket(host, port)
                        stack.callback(sock.close)
                        if settings.server_name is None:
                            settings = attrs.evolve(settings, server_name=host)
                    client = await stack.enter_async_context(
                        open_http3_client(
                            connect_host,
                            port,
                            settings=settings,
                            http3_settings=self._http3_settings,
                            socket=sock,
                        )
                    )
                    guard.shield = True
                    conn.client = client
                    if self._keepalive_expiry is not None:
                        conn.scope.deadline = (
                            trio.current_time() + self._keepalive_expiry
                        )
                    if self.closed:
                        conn.scope.cancel()
                    started = True
                    task_status.started()
                    with conn.scope:
                        await client.wait_closed()
                    self._retire(conn)
                    # Leaving closes it gracefully: GOAWAY, what was sent is
                    # delivered, CONNECTION_CLOSE with H3_NO_ERROR (bounded by
                    # the close grace period).
        except Exception:
            if not started:
                raise
            logger.debug(
                "trioquic.httpx: connection to %s ended", conn.origin, exc_info=True
            )
        finally:
            self._running.discard(conn)
            self._retire(conn)

    def _retire(self, conn: Connection) -> None:
        """The connection takes no more requests: out of the pool."""
        if not conn.closed:
            conn.closed = True
            self._forget(conn)
            self._keep_ticket(conn)

    def close(self) -> None:
        """Close every connection gracefully (each within its close grace
        period; the nursery then waits for them)."""
        self.closed = True
        for conn in list(self._running):
            conn.scope.cancel()
