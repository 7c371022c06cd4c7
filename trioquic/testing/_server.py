"""Ready-made settings and a server on a :class:`MemoryNetwork`, so a test of
a protocol over trioquic takes a few lines."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import trio

from .._certs import DevelopmentCertificate, generate_self_signed_certificate
from .._connection import QuicConnection
from .._endpoint import QuicServer, open_quic_connection, serve_quic
from .._settings import QuicSettings
from ._network import MemoryNetwork, MemorySocket

#: The ALPN protocol :func:`server_settings` and :func:`client_settings` use.
TEST_ALPN = "trioquic-test"
#: The name the development certificate carries and clients verify.
TEST_SERVER_NAME = "localhost"


@functools.cache
def development_certificate() -> DevelopmentCertificate:
    """A self-signed certificate for ``localhost``, generated once per process
    (in a temporary directory) and shared by every caller."""
    return generate_self_signed_certificate()


def server_settings(**changes: Any) -> QuicSettings:
    """:class:`~trioquic.QuicSettings` for a test server: the
    :func:`development_certificate`, ALPN :data:`TEST_ALPN`, and any field
    given as a keyword (``server_settings(idle_timeout=5)``)."""
    certificate = development_certificate()
    fields: dict[str, Any] = {
        "alpn_protocols": [TEST_ALPN],
        "certificate": str(certificate.certificate_path),
        "private_key": str(certificate.private_key_path),
    }
    fields.update(changes)
    return QuicSettings(**fields)


def client_settings(**changes: Any) -> QuicSettings:
    """:class:`~trioquic.QuicSettings` for a test client that trusts the
    :func:`development_certificate` (verifying the name :data:`TEST_SERVER_NAME`
    whatever address it connects to), ALPN :data:`TEST_ALPN`, and any field
    given as a keyword."""
    certificate = development_certificate()
    fields: dict[str, Any] = {
        "alpn_protocols": [TEST_ALPN],
        "ca_certs": str(certificate.certificate_path),
        "server_name": TEST_SERVER_NAME,
    }
    fields.update(changes)
    return QuicSettings(**fields)


_default_server_settings = server_settings
_default_client_settings = client_settings


@attrs.define(eq=False)
class MemoryServer:
    """A :func:`~trioquic.serve_quic` server running on a
    :class:`MemoryNetwork`, as :func:`open_memory_server` yields it."""

    #: The network the server is on.
    network: MemoryNetwork
    #: The server's ``(host, port)``.
    address: tuple[str, int]
    #: The server's socket.
    socket: MemorySocket
    #: What :func:`~trioquic.serve_quic` reported (statistics, connections).
    server: QuicServer
    #: The settings the server runs with.
    server_settings: QuicSettings
    #: Settings a client needs to connect (trusting the server's certificate).
    client_settings: QuicSettings

    @asynccontextmanager
    async def connect(
        self,
        *,
        host: str = "10.0.0.2",
        settings: QuicSettings | None = None,
        socket: MemorySocket | None = None,
    ) -> AsyncIterator[QuicConnection]:
        """Connect to the server: :func:`~trioquic.open_quic_connection` over
        ``socket``, or over a new socket on ``host`` (closed on exit), with
        ``settings`` (default :attr:`client_settings`)."""
        own = socket is None
        if socket is None:
            socket = self.network.socket(host)
        try:
            async with open_quic_connection(
                self.address[0],
                self.address[1],
                settings=settings if settings is not None else self.client_settings,
                socket=socket,
            ) as connection:
                yield connection
        finally:
            if own:
                socket.close()


@asynccontextmanager
async def open_memory_server(
    handler: Callable[[QuicConnection], Awaitable[object]],
    *,
    network: MemoryNetwork | None = None,
    host: str = "10.0.0.1",
    port: int = 4433,
    server_settings: QuicSettings | None = None,
    client_settings: QuicSettings | None = None,
) -> AsyncIterator[MemoryServer]:
    """Run ``serve_quic(handler)`` on ``(host, port)`` of ``network`` (a new
    lossless one by default) for the duration of the ``async with``::

        async def echo(connection):
            stream = await connection.accept_stream()
            await stream.send_all(await stream.receive_some())

        async def test_echo(autojump_clock):
            async with open_memory_server(echo) as server:
                async with server.connect() as connection:
                    stream = await connection.open_stream()
                    await stream.send_all(b"hi")
                    assert await stream.receive_some() == b"hi"

    ``server_settings`` / ``client_settings`` default to this module's
    :func:`server_settings` / :func:`client_settings`. On exit the server is
    cancelled (its connections are closed gracefully) and its socket closed.
    An exception raised in the block comes out as itself.
    """
    if network is None:
        network = MemoryNetwork()
    if server_settings is None:
        server_settings = _default_server_settings()
    if client_settings is None:
        client_settings = _default_client_settings()

    def start(sock: MemorySocket) -> Callable[..., Awaitable[object]]:
        return functools.partial(
            serve_quic, handler, port, settings=server_settings, sockets=[sock]
        )

    async with serving_on(network, host, port, start) as (sock, server):
        yield MemoryServer(
            network=network,
            address=(host, port),
            socket=sock,
            server=server,
            server_settings=server_settings,
            client_settings=client_settings,
        )


@asynccontextmanager
async def serving_on(
    network: MemoryNetwork,
    host: str,
    port: int,
    start: Callable[[MemorySocket], Callable[..., Awaitable[object]]],
    around: AbstractAsyncContextManager[object] | None = None,
) -> AsyncIterator[tuple[MemorySocket, Any]]:
    """Run the server ``start(sock)`` makes (a function for
    ``nursery.start``) on ``(host, port)`` of ``network`` for the block,
    inside ``around`` if given; yield the socket and what the server
    reported. On exit it is cancelled (gracefully) and its socket closed; an
    exception raised in the block comes out as itself, not in a group."""
    sock = network.socket(host, port)
    user_exc: BaseException | None = None
    try:
        async with around or contextlib.nullcontext(), trio.open_nursery() as nursery:
            started = await nursery.start(start(sock))
            try:
                yield sock, started
            except BaseException as exc:
                user_exc = exc
            finally:
                nursery.cancel_scope.cancel()
    finally:
        sock.close()
    if user_exc is not None:
        try:
            raise user_exc
        finally:
            user_exc = None
