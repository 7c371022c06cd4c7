"""The server side: :func:`accept` a session from an HTTP/3 request, or
:func:`serve_webtransport` sessions on a port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence

import attrs
import trio

from .._settings import QuicSettings
from .._udp import DatagramSocket
from ..h3._endpoint import serve_http3
from ..h3._headers import HeaderInput, normalize_headers
from ..h3._server import Request
from ..h3._settings import Http3Settings
from ._errors import SessionClosed, SessionRejected
from ._session import WebTransportSession, hub_of

#: The response header draft-02 clients (Chromium) require.
_DRAFT_HEADER = (b"sec-webtransport-http3-draft", b"draft02")

SessionHandler = Callable[[WebTransportSession], Awaitable[None]]
"""What :func:`serve_webtransport` runs for each session."""


def is_webtransport_request(request: object) -> bool:
    """Whether ``request`` asks for a WebTransport session (extended
    CONNECT with ``:protocol webtransport``)."""
    return (
        getattr(request, "method", None) == "CONNECT"
        and getattr(request, "protocol", None) == "webtransport"
    )


async def accept(request: Request, *, headers: HeaderInput = ()) -> WebTransportSession:
    """Accept the WebTransport session ``request`` asks for: answer ``200``
    (with ``headers``) and return the session. Use it in the request's
    handler, which the session lives as long as::

        async def handler(request):
            if trioquic.webtransport.is_webtransport_request(request):
                async with await trioquic.webtransport.accept(request) as session:
                    ...

    To reject a session, answer the request with another status instead
    (``await request.respond(404)``). Raises :exc:`SessionRejected` (after
    answering ``429``) when the connection has
    ``Http3Settings.webtransport_max_sessions`` sessions open already,
    :exc:`ValueError` if the request is not a WebTransport CONNECT,
    :exc:`RuntimeError` if the server does not enable WebTransport.
    """
    if not isinstance(request, Request):
        raise TypeError(
            "accept() takes the trioquic.h3.Request of a serve_http3 handler, "
            f"got {type(request).__name__}"
        )
    if not is_webtransport_request(request):
        raise ValueError(
            "not a WebTransport request (it must be CONNECT with :protocol "
            f"webtransport): {request.method} {request.protocol!r}"
        )
    driver = request._driver
    hub = hub_of(driver)
    fields = normalize_headers(headers)
    limit = driver.http3_settings.webtransport_max_sessions
    if len(hub.sessions) >= limit:
        await request.respond(429, [("content-length", "0")])
        raise SessionRejected(
            429, f"too many WebTransport sessions on this connection (limit {limit})"
        )
    ex = request._exchange
    request._start()
    if not any(name == _DRAFT_HEADER[0] for name, _ in fields):
        fields.append(_DRAFT_HEADER)
    await driver.send_headers(ex, [(b":status", b"200"), *fields], False)
    session = WebTransportSession(
        hub, ex, path=request.path, authority=request.authority, headers=request.headers
    )
    session._start()
    return session


def webtransport_settings(
    settings: QuicSettings | None, http3_settings: Http3Settings | None
) -> tuple[QuicSettings, Http3Settings]:
    """QUIC and HTTP/3 settings with what WebTransport needs turned on
    (QUIC datagrams, extended CONNECT, HTTP datagrams, WebTransport)."""
    quic = settings if settings is not None else QuicSettings()
    if not isinstance(quic, QuicSettings):
        raise TypeError(f"settings must be QuicSettings, got {type(quic).__name__}")
    if quic.max_datagram_frame_size is None:
        quic = attrs.evolve(quic, max_datagram_frame_size=65536)
    http3 = http3_settings if http3_settings is not None else Http3Settings()
    if not isinstance(http3, Http3Settings):
        raise TypeError(
            f"http3_settings must be Http3Settings, got {type(http3).__name__}"
        )
    http3 = attrs.evolve(
        http3,
        enable_connect_protocol=True,
        enable_datagrams=True,
        enable_webtransport=True,
    )
    return quic, http3


async def serve_webtransport(
    handler: SessionHandler,
    port: int,
    *,
    host: str | None = None,
    settings: QuicSettings | None = None,
    http3_settings: Http3Settings | None = None,
    paths: Collection[str] | None = None,
    fallback: Callable[[Request], Awaitable[None]] | None = None,
    sockets: Sequence[DatagramSocket] | None = None,
    task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebTransport on ``port``: ``await handler(session)`` runs for
    each session, which is closed (code 0) when the handler returns. A
    :exc:`SessionClosed` the handler lets out once its session has ended
    (the peer closed it under a stream) is not an error.

    ``paths``: the paths sessions are accepted on (others get ``404``; None:
    any). ``fallback`` answers the requests that are not WebTransport (e.g.
    the page that opens the session); without it they get ``404``.
    ``sockets``: serve on datagram sockets you own (as
    :func:`~trioquic.h3.serve_http3`). WebTransport,
    extended CONNECT and datagrams are turned on in the settings given.
    Reports the :class:`~trioquic.QuicServer` through ``task_status``;
    cancel to shut down (sessions get DRAIN_WEBTRANSPORT_SESSION, then
    ``goaway_grace_period`` seconds to end).
    """
    if not callable(handler):
        raise TypeError("handler must be an async function taking a session")
    if isinstance(paths, str):
        raise TypeError("paths must be a collection of paths, not one string")
    allowed = frozenset(paths) if paths is not None else None
    quic, http3 = webtransport_settings(settings, http3_settings)

    async def on_request(request: Request) -> None:
        if is_webtransport_request(request):
            if allowed is not None and request.path not in allowed:
                await request.respond(404, [("content-length", "0")])
                return
            async with await accept(request) as session:
                try:
                    await handler(session)
                except SessionClosed:
                    if not session.is_closed:
                        raise
                    # The session ended under the handler: nothing to report.
        elif fallback is not None:
            await fallback(request)
        else:
            await request.respond(
                404, [("content-type", "text/plain")], b"WebTransport only\n"
            )

    await serve_http3(
        on_request,
        port,
        host=host,
        settings=quic,
        http3_settings=http3,
        sockets=sockets,
        task_status=task_status,
    )
