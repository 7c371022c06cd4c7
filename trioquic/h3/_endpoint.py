"""``serve_http3`` and ``open_http3_client``."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio.lowlevel

from .._endpoint import QuicServer, _check_settings, _open_client, _serve
from .._settings import QuicSettings
from .._udp import DatagramSocket
from ._client import ClientH3Driver, Http3Client
from ._server import RequestHandler, ServerH3Driver
from ._settings import Http3Settings


def _check_http3_settings(settings: Http3Settings | None) -> Http3Settings:
    if settings is None:
        return Http3Settings()
    if not isinstance(settings, Http3Settings):
        raise TypeError(
            "http3_settings must be a trioquic.h3.Http3Settings, "
            f"got {type(settings).__name__}"
        )
    return settings


def _quic_settings(
    settings: QuicSettings | None, http3: Http3Settings, *, server: bool
) -> QuicSettings:
    resolved = _check_settings(settings)
    changes: dict[str, Any] = {}
    if not resolved.alpn_protocols:
        changes["alpn_protocols"] = ["h3"]
    if server:
        changes["max_concurrent_streams"] = http3.max_concurrent_requests
    if http3.enable_datagrams and resolved.max_datagram_frame_size is None:
        raise ValueError(
            "Http3Settings.enable_datagrams needs QUIC datagrams: set "
            "QuicSettings.max_datagram_frame_size (e.g. 65536)"
        )
    return attrs.evolve(resolved, **changes) if changes else resolved


async def serve_http3(
    handler: RequestHandler,
    port: int,
    *,
    host: str | None = None,
    settings: QuicSettings | None = None,
    http3_settings: Http3Settings | None = None,
    sockets: Sequence[DatagramSocket] | None = None,
    task_status: trio.TaskStatus[QuicServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP/3 on ``port``: ``await handler(request)`` runs for each
    request, in its own task in the connection's nursery.

    Use ``await nursery.start(serve_http3, handler, port, settings=...)`` to
    get the :class:`~trioquic.QuicServer` once it listens. ALPN defaults to
    ``["h3"]`` when ``settings.alpn_protocols`` is empty; the QUIC limit on
    concurrent bidirectional streams is ``http3_settings.max_concurrent_requests``.

    A handler that raises gets its request answered with 500 (or its stream
    reset with H3_INTERNAL_ERROR once the headers went out); the connection
    carries on. Cancelling ``serve_http3`` shuts down gracefully: every
    connection gets GOAWAY, requests in flight have
    ``http3_settings.goaway_grace_period`` seconds to finish, then the
    connections are closed (H3_NO_ERROR).
    """
    if not callable(handler):
        raise TypeError("handler must be an async function taking a Request")
    http3 = _check_http3_settings(http3_settings)
    resolved = _quic_settings(settings, http3, server=True)
    drivers: set[ServerH3Driver] = set()
    stopping = False

    def factory() -> ServerH3Driver:
        driver = ServerH3Driver(handler, http3, resolved)
        if stopping:
            # Accepted while shutting down: GOAWAY as soon as it is up.
            driver.begin_shutdown(two_step=True)
        drivers.add(driver)
        driver.on_closed = functools.partial(drivers.discard, driver)
        return driver

    shield = trio.CancelScope(shield=True)

    async def run_server(
        task_status: trio.TaskStatus[QuicServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # Shielded from the caller's cancellation: on shutdown the
        # connections must live on to send GOAWAY and finish their requests.
        with shield:
            await _serve(
                factory,
                port,
                host=host,
                settings=resolved,
                sockets=sockets,
                task_status=task_status,
            )

    async with trio.open_nursery() as nursery:
        server = await nursery.start(run_server)
        task_status.started(server)
        try:
            await trio.sleep_forever()
        finally:
            stopping = True
            with trio.CancelScope(shield=True):
                await _shut_down(drivers, http3.goaway_grace_period)
            shield.cancel()


async def _shut_down(drivers: set[ServerH3Driver], grace: float) -> None:
    """GOAWAY to every connection; wait for them to finish their requests
    and close, at most ``grace`` seconds; then close the rest."""
    for driver in list(drivers):
        driver.begin_shutdown(two_step=True)
    with trio.move_on_after(grace):
        for driver in list(drivers):
            await driver.closed.wait()
    for driver in list(drivers):
        driver.close()
    # Let the workers flush the CONNECTION_CLOSE frames.
    await trio.lowlevel.checkpoint()


@asynccontextmanager
async def open_http3_client(
    host: str,
    port: int,
    *,
    settings: QuicSettings | None = None,
    http3_settings: Http3Settings | None = None,
    socket: DatagramSocket | None = None,
) -> AsyncIterator[Http3Client]:
    """Connect to an HTTP/3 server; the connection lives for the ``async with``::

        async with open_http3_client("localhost", 4433, settings=s) as client:
            response = await client.request("GET", "/")
            print(response.status, await response.read())

    ALPN defaults to ``["h3"]``; the ``:authority`` of requests defaults to
    ``host`` (with ``:port`` unless it is 443). Leaving the block waits (at
    most ``close_grace_period``) for what was sent to be acknowledged, then
    closes the connection with H3_NO_ERROR. ``socket`` connects over a
    datagram socket you own (e.g. ``trioquic.testing``'s memory network).
    """
    http3 = _check_http3_settings(http3_settings)
    resolved = _quic_settings(settings, http3, server=False)
    authority = host if port == 443 else f"{host}:{port}"
    if resolved.server_name and port == 443:
        authority = resolved.server_name
    driver = ClientH3Driver(http3, resolved, authority=authority)
    async with _open_client(
        driver, host, port, resolved, socket, early=driver.start
    ) as io:
        yield Http3Client(driver)
        # Leaving: GOAWAY (no push is accepted), what was sent is delivered,
        # then CONNECTION_CLOSE with H3_NO_ERROR.
        driver.send_goaway()
        with trio.move_on_after(resolved.close_grace_period):
            await io.wait_flushed()
        driver.close()
