"""Endpoints: ``serve_quic`` / ``serve_application`` and
``open_quic_connection`` / ``open_application``.

Task tree (DESIGN.md section 2)::

    endpoint nursery (owned by serve_* / open_*)
    ├── InboundPacketRouter task, one per UDP socket
    └── per-connection child nursery, one per QUIC connection
        ├── IoWorker task
        └── application task(s): your handler, wait_for_data, ...

Cancelling the endpoint (or leaving ``open_*``) closes every connection
gracefully: CONNECTION_CLOSE is flushed under a shielded scope bounded by
``QuicSettings.close_grace_period``; then the nursery exits, and the sockets
are closed.
"""

from __future__ import annotations

import functools
import logging
import socket as _stdlib_socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from ._application import ApplicationOverQuic, ConnectionIO
from ._connection import QuicConnection, StreamApplication
from ._engine import Address, EndpointEngine, create_endpoint_engine
from ._errors import INTERNAL_ERROR
from ._retry import RetryTokens
from ._router import InboundPacketRouter, RouterCounters
from ._routing import Accept, RoutingTable
from ._settings import QuicSettings
from ._statistics import RouterStatistics
from ._udp import DatagramSocket, UdpSocket, bind_udp_sockets
from ._worker import IoWorker

logger = logging.getLogger("trioquic")

App = TypeVar("App", bound=ApplicationOverQuic)

#: What a serve_* factory returns for each new connection.
ApplicationFactory = Callable[[], ApplicationOverQuic]


def _check_settings(settings: QuicSettings | None) -> QuicSettings:
    if settings is None:
        return QuicSettings()
    if not isinstance(settings, QuicSettings):
        raise TypeError(
            f"settings must be a trioquic.QuicSettings, got {type(settings).__name__}"
        )
    return settings


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, got {port}")
    return port


class QuicServer:
    """A running QUIC server, as ``await nursery.start(serve_quic, ...)``
    reports it: where it listens, its connections, its statistics."""

    def __init__(self, endpoint: _Endpoint, sockets: Sequence[DatagramSocket]) -> None:
        self._endpoint = endpoint
        self._sockets = list(sockets)

    def __repr__(self) -> str:
        return (
            f"<trioquic.QuicServer addresses={self.addresses!r} "
            f"connections={self.connection_count}>"
        )

    @property
    def addresses(self) -> list[Address]:
        """The bound local addresses, one per socket (a server that binds
        several addresses binds them all on one port)."""
        return [s.local_address for s in self._sockets]

    @property
    def port(self) -> int:
        """The port it listens on (of the first socket, with sockets of your
        own that differ)."""
        return int(self._sockets[0].local_address[1])

    @property
    def connections(self) -> list[ConnectionIO]:
        """The connections alive now (handshaking or established)."""
        return [worker.io for worker in self._endpoint.workers]

    @property
    def connection_count(self) -> int:
        return len(self._endpoint.workers)

    def statistics(self) -> RouterStatistics:
        """Datagrams received, delivered, dropped (by reason), accepted."""
        return self._endpoint.counters.snapshot(self._endpoint.table)


async def _run_connection(worker: IoWorker) -> None:
    """One connection's child nursery: the IoWorker runs in the task that
    owns it (one task fewer per connection), the application's tasks in it."""
    async with trio.open_nursery() as nursery:
        await worker.run(nursery)


def _routing_table(
    settings: QuicSettings, *, is_client: bool
) -> RoutingTable[IoWorker]:
    if is_client:
        return RoutingTable(cid_length=settings.connection_id_length, accept_new=False)
    return RoutingTable(
        cid_length=settings.connection_id_length,
        accept_new=True,
        new_cid=None if settings.quic_lb is None else settings.quic_lb.generate,
        retry_tokens=(
            RetryTokens(
                lifetime=settings.retry_token_lifetime, key=settings.retry_token_key
            )
            if settings.retry != "never"
            else None
        ),
        retry=settings.retry,
        retry_threshold=settings.retry_under_load_threshold,
        max_connections=settings.max_connections,
        max_pending_handshakes=settings.max_pending_handshakes,
        stateless_reset=settings.stateless_reset_rate > 0,
        stateless_reset_rate=settings.stateless_reset_rate,
        stateless_reset_rate_per_address=settings.stateless_reset_rate_per_address,
    )


class _Endpoint:
    """What the routers and connections of one endpoint share."""

    def __init__(
        self,
        settings: QuicSettings,
        engine: EndpointEngine,
        *,
        is_client: bool,
        nursery: trio.Nursery,
        factory: ApplicationFactory | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.is_client = is_client
        self.table = _routing_table(settings, is_client=is_client)
        self.counters = RouterCounters()
        self.nursery = nursery
        self.factory = factory
        self.workers: set[IoWorker] = set()

    def router(self, socket: DatagramSocket) -> InboundPacketRouter:
        return InboundPacketRouter(
            socket,
            self.table,
            self.counters,
            self.engine,
            accept=self.accept if self.factory is not None else None,
            on_unreachable=self.unreachable if self.is_client else None,
        )

    def unreachable(self, addr: Address, error: int) -> None:
        """The network reported ``addr`` unreachable (a client socket's ICMP
        report): tell the connections to it."""
        for worker in list(self.workers):
            worker.peer_unreachable(addr, error)

    def accept(self, decision: Accept, socket: DatagramSocket) -> IoWorker | None:
        assert self.factory is not None
        engine = self.engine.server_connection(
            original_destination_cid=decision.original_destination_cid
            or decision.destination_cid,
            retry_source_cid=decision.retry_source_cid,
            source_cid=decision.source_cid,
        )
        try:
            application = self.factory()
            if not isinstance(application, ApplicationOverQuic):
                raise TypeError(
                    "application_factory must return an ApplicationOverQuic, "
                    f"got {type(application).__name__}"
                )
        except Exception:
            # The application's bug, not the datagram's: no connection, and
            # the Initial counts as not accepted (the client retries).
            logger.exception("trioquic: the application factory failed")
            return None
        try:
            worker = IoWorker(
                engine=engine,
                application=application,
                socket=socket,
                table=self.table,
                settings=self.settings,
            )
        except Exception:
            # The application's attach() failed: as for the factory.
            logger.exception("trioquic: the application could not be attached")
            return None
        worker.register_cid(decision.destination_cid)
        self.start(worker)
        return worker

    def start(self, worker: IoWorker) -> None:
        self.workers.add(worker)

        async def run() -> None:
            try:
                await _run_connection(worker)
            finally:
                self.workers.discard(worker)

        self.nursery.start_soon(run)


async def serve_application(
    application_factory: Callable[[], ApplicationOverQuic],
    port: int,
    *,
    host: str | None = None,
    settings: QuicSettings | None = None,
    sockets: Sequence[DatagramSocket] | None = None,
    task_status: trio.TaskStatus[QuicServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve QUIC with one :class:`ApplicationOverQuic` per connection.

    ``application_factory()`` is called for each accepted connection. Runs
    until cancelled; reports the :class:`QuicServer` via ``task_status``.
    """
    if not callable(application_factory):
        raise TypeError(
            "application_factory must be a callable returning an ApplicationOverQuic"
        )
    await _serve(
        application_factory,
        port,
        host=host,
        settings=settings,
        sockets=sockets,
        task_status=task_status,
    )


async def serve_quic(
    handler: Callable[[QuicConnection], Awaitable[object]],
    port: int,
    *,
    host: str | None = None,
    settings: QuicSettings | None = None,
    sockets: Sequence[DatagramSocket] | None = None,
    task_status: trio.TaskStatus[QuicServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve QUIC on ``port``; run ``await handler(connection)`` for each
    connection, in that connection's own nursery, once its handshake is done.

    Like :func:`trio.serve_tcp`: use ``await nursery.start(serve_quic, ...)``
    to get the :class:`QuicServer` (bound addresses, statistics) once it is
    listening; cancel the scope around it to stop. ``host=None`` listens on
    every interface (one socket per address family).

    When the handler returns, the connection is closed (NO_ERROR) once what
    it wrote to its streams has been acknowledged (waiting at most
    ``close_grace_period``: CONNECTION_CLOSE abandons unacknowledged data).
    A handler that raises because the connection or a stream broke
    (:exc:`ConnectionClosed`, :exc:`StreamReset`, ...) ends only that
    connection; any other exception is logged and the connection is closed
    with INTERNAL_ERROR: one connection's failure never stops the server.

    ``sockets`` serves on datagram sockets you own instead of binding
    ``host``/``port`` (for example ``trioquic.testing``'s in-memory network);
    they are not closed on exit.
    """
    if not callable(handler):
        raise TypeError("handler must be an async function taking a QuicConnection")
    resolved = _check_settings(settings)

    def start_handler(app: StreamApplication) -> None:
        app.io.start_soon(_run_handler, handler, app.connection, name=handler)

    await _serve(
        functools.partial(StreamApplication, resolved, start_handler),
        port,
        host=host,
        settings=resolved,
        sockets=sockets,
        task_status=task_status,
    )


#: Exceptions that mean "the peer or the connection ended this", not a bug.
_ENDED_BY_CONNECTION = (trio.BrokenResourceError, trio.ClosedResourceError)


async def _run_handler(
    handler: Callable[[QuicConnection], Awaitable[object]], connection: QuicConnection
) -> None:
    """Run a serve_quic handler so that its failure stays in its connection.

    Errors that mean the connection or a stream broke (ConnectionClosed,
    StreamReset, StreamStopped are all BrokenResourceError) end the connection
    quietly; other exceptions are logged and close it with INTERNAL_ERROR.
    Cancellation and KeyboardInterrupt propagate.
    """
    io = connection._io  # the connection's own ConnectionIO
    try:
        await handler(connection)
    except _ENDED_BY_CONNECTION as exc:
        logger.debug("trioquic: handler ended with its connection: %s", exc)
    except BaseExceptionGroup as group:
        _, rest = group.split(_ENDED_BY_CONNECTION)
        if rest is None:
            logger.debug("trioquic: handler ended with its connection: %s", group)
        else:
            bugs, fatal = rest.split(Exception)
            if fatal is not None:
                raise fatal from None
            logger.error(
                "trioquic: connection handler raised; closing its connection",
                exc_info=bugs,
            )
            io.close(INTERNAL_ERROR, "internal error", transport=True)
            return
    except Exception:
        logger.exception("trioquic: connection handler raised; closing its connection")
        io.close(INTERNAL_ERROR, "internal error", transport=True)
        return
    # Let what the handler wrote reach the peer before closing: CONNECTION_CLOSE
    # abandons every stream's unacknowledged data.
    with trio.move_on_after(io.settings.close_grace_period):
        await io.wait_flushed()
    connection.close()


async def _serve(
    factory: ApplicationFactory,
    port: int,
    *,
    host: str | None,
    settings: QuicSettings | None,
    sockets: Sequence[DatagramSocket] | None,
    task_status: trio.TaskStatus[QuicServer],
) -> None:
    resolved = _check_settings(settings)
    _check_port(port)
    if host is not None and not isinstance(host, str):
        raise TypeError(f"host must be a str or None, got {type(host).__name__}")
    if sockets is not None and not sockets:
        raise ValueError("sockets must hold at least one datagram socket")
    # Settings errors surface here, unwrapped, before anything runs.
    engine = create_endpoint_engine(resolved, is_client=False)
    own_sockets = sockets is None
    try:
        if sockets is None:
            sockets = await bind_udp_sockets(
                host,
                port,
                buffer_size=resolved.udp_buffer_size,
                offload=resolved.udp_offload,
            )
    except BaseException:
        engine.close()
        raise
    try:
        async with trio.open_nursery() as nursery:
            endpoint = _Endpoint(
                resolved, engine, is_client=False, nursery=nursery, factory=factory
            )
            for sock in sockets:
                nursery.start_soon(endpoint.router(sock).run)
            task_status.started(QuicServer(endpoint, sockets))
    finally:
        engine.close()
        if own_sockets:
            for sock in sockets:
                sock.close()


async def _resolve(host: str, port: int) -> tuple[int, Address]:
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, got {type(host).__name__}")
    _check_port(port)
    infos = await trio.socket.getaddrinfo(host, port, type=_stdlib_socket.SOCK_DGRAM)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host!r}")
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


@asynccontextmanager
async def _open_client(
    application: ApplicationOverQuic,
    host: str,
    port: int,
    settings: QuicSettings | None,
    socket: DatagramSocket | None = None,
    early: Callable[[], None] | None = None,
) -> AsyncIterator[ConnectionIO]:
    """The client endpoint: socket, router, one connection.

    Yields the connection's io once the handshake is complete, or, with
    ``settings.zero_rtt`` and a session ticket that allows early data, right
    after the first flight with 0-RTT keys in place (``early()`` is called
    first, for applications that must set up before writing).
    """
    resolved = _check_settings(settings)
    own_socket = socket is None
    if socket is None:
        family, remote_address = await _resolve(host, port)
        socket = UdpSocket.for_peer(
            family,
            buffer_size=resolved.udp_buffer_size,
            offload=resolved.udp_offload,
        )
    else:
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, got {type(host).__name__}")
        _check_port(port)
        remote_address = (host, port)
    user_exc: BaseException | None = None
    try:
        endpoint_engine = create_endpoint_engine(resolved, is_client=True)
    except BaseException:
        if own_socket:
            socket.close()
        raise
    try:
        async with trio.open_nursery() as outer:
            # The router and the worker run shielded from the caller's
            # cancellation, so that a cancelled ``async with`` still sends
            # CONNECTION_CLOSE (the worker must be alive to send it); they
            # end when _close_gracefully is done and ``services`` is cancelled.
            services = trio.CancelScope(shield=True)
            nursery: trio.Nursery = await outer.start(_shielded_nursery, services)
            endpoint = _Endpoint(
                resolved, endpoint_engine, is_client=True, nursery=nursery
            )
            engine = endpoint_engine.client_connection(resolved.server_name or host)
            worker = IoWorker(
                engine=engine,
                application=application,
                socket=socket,
                table=endpoint.table,
                settings=resolved,
            )
            path = _ClientPath(endpoint, worker, own_socket=own_socket)
            worker.rebinder = path.rebind
            engine.connect(remote_address, trio.current_time())
            endpoint.start(worker)
            await path.start_router(socket, close=own_socket)
            early_data = resolved.zero_rtt and engine.early_data_ready()
            if early_data and early is not None:
                early()
            worker.wake()
            try:
                if early_data:
                    await trio.lowlevel.checkpoint()
                else:
                    await worker.io.wait_handshake()
                yield worker.io
                # Leaving normally: deliver what was written before closing.
                with trio.move_on_after(resolved.close_grace_period):
                    await worker.wait_flushed()
            except BaseException as exc:
                user_exc = exc
            finally:
                await _close_gracefully(worker)
                services.cancel()
    finally:
        endpoint_engine.close()
        if own_socket:
            socket.close()
    if user_exc is not None:
        try:
            raise user_exc
        finally:
            user_exc = None


#: Longest time a client keeps receiving on its old socket after rebind().
_REBIND_DRAIN = 1.0


class _ClientPath:
    """A client endpoint's socket and its router, which
    :meth:`QuicConnection.rebind` can move to a new socket."""

    def __init__(
        self, endpoint: _Endpoint, worker: IoWorker, *, own_socket: bool
    ) -> None:
        self._endpoint = endpoint
        self._worker = worker
        self._own_socket = own_socket
        self._router_scope: trio.CancelScope | None = None
        self._lock = trio.Lock()

    async def start_router(self, socket: DatagramSocket, *, close: bool) -> None:
        """Start an InboundPacketRouter on ``socket`` in the endpoint's
        nursery (closing ``socket`` when it stops, if ``close``)."""
        self._router_scope = await self._endpoint.nursery.start(
            self._run_router, socket, close
        )

    async def _run_router(
        self,
        socket: DatagramSocket,
        close: bool,
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        router = self._endpoint.router(socket)
        try:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                await router.run()
        finally:
            if close:
                socket.close()

    async def rebind(self) -> Address:
        async with self._lock:
            worker = self._worker
            old = worker.socket
            if self._own_socket and isinstance(old, UdpSocket):
                settings = worker.settings
                new = UdpSocket.for_peer(
                    old.family,
                    buffer_size=settings.udp_buffer_size,
                    offload=settings.udp_offload,
                )
                old_scope = self._router_scope
                try:
                    await self.start_router(new, close=True)
                except BaseException:
                    new.close()
                    raise
                worker.socket = new
                if old_scope is not None:
                    # Keep receiving what is already on its way to the old
                    # port for a few PTOs, then stop (which closes it).
                    drain = min(_REBIND_DRAIN, 3 * worker.engine.probe_timeout())
                    self._endpoint.nursery.start_soon(_cancel_after, old_scope, drain)
            else:
                rebind = getattr(old, "rebind", None)
                if not callable(rebind):
                    raise RuntimeError(
                        f"cannot rebind: the connection runs over a caller-owned "
                        f"{type(old).__name__}, which has no rebind() method"
                    )
                rebind()
                await trio.lowlevel.checkpoint()
            if worker.error is not None:
                raise worker.error
            # RFC 9000 section 9.5: a new path gets a new connection ID.
            worker.engine.change_connection_id()
            worker.wake()
            return worker.socket.local_address


async def _cancel_after(scope: trio.CancelScope, delay: float) -> None:
    await trio.sleep(delay)
    scope.cancel()


async def _shielded_nursery(
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A nursery inside ``scope`` (a shielded scope), reported and kept open
    until ``scope`` is cancelled."""
    with scope:
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await trio.sleep_forever()


async def _close_gracefully(worker: IoWorker) -> None:
    with trio.CancelScope(shield=True):
        with trio.move_on_after(worker.settings.close_grace_period):
            if worker.error is None:
                worker.close(0, "")
            await worker.finished.wait()


@asynccontextmanager
async def open_quic_connection(
    host: str,
    port: int,
    *,
    settings: QuicSettings | None = None,
    socket: DatagramSocket | None = None,
) -> AsyncIterator[QuicConnection]:
    """Connect to a QUIC server; the connection lives for the ``async with``.

    ::

        async with trioquic.open_quic_connection("localhost", 4433, settings=s) as conn:
            stream = await conn.open_stream()
            await stream.send_all(b"hello")

    Returns once the handshake is complete; raises
    :exc:`~trioquic.HandshakeTimeout` or :exc:`~trioquic.ConnectionClosed` if
    it fails. Leaving the block closes the connection gracefully: what was
    written to streams is delivered first (waiting at most
    ``close_grace_period`` for the peer's acknowledgements), then
    CONNECTION_CLOSE (NO_ERROR) is sent within ``close_grace_period``; leaving
    it by an exception closes at once. An exception
    raised in the block comes out as itself, not in an ExceptionGroup.

    ``socket`` connects over a datagram socket you own (for example one of
    ``trioquic.testing``'s in-memory network, where ``(host, port)`` is the
    server's address as is); it is not closed on exit.
    """
    resolved = _check_settings(settings)
    app = StreamApplication(resolved)
    async with _open_client(app, host, port, resolved, socket):
        yield app.connection


@asynccontextmanager
async def open_application(
    application: App,
    host: str,
    port: int,
    *,
    settings: QuicSettings | None = None,
    socket: DatagramSocket | None = None,
) -> AsyncIterator[App]:
    """Connect to a QUIC server and run ``application`` over the connection.

    Yields the application once the handshake is complete; leaving the block
    closes the connection gracefully.
    """
    if not isinstance(application, ApplicationOverQuic):
        raise TypeError(
            "application must be an ApplicationOverQuic, "
            f"got {type(application).__name__}"
        )
    async with _open_client(application, host, port, settings, socket):
        yield application
