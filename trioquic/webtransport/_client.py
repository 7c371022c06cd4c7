"""The client side: :func:`open_webtransport_session` (its own connection)
and :func:`connect_webtransport` (a session on an HTTP/3 client you hold)."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .._settings import QuicSettings
from .._udp import DatagramSocket
from ..h3._client import Http3Client
from ..h3._endpoint import open_http3_client
from ..h3._errors import H3ErrorCode
from ..h3._headers import HeaderInput, normalize_headers
from ..h3._settings import Http3Settings
from ._errors import SessionCloseInfo, SessionRejected
from ._server import webtransport_settings
from ._session import WebTransportSession, hub_of

#: The request header of draft-02 (what Chromium sends).
_DRAFT_HEADER = (b"sec-webtransport-http3-draft02", b"1")


@asynccontextmanager
async def connect_webtransport(
    client: Http3Client, path: str, *, headers: HeaderInput = ()
) -> AsyncIterator[WebTransportSession]:
    """A WebTransport session on ``client``'s connection (which must enable
    WebTransport in its ``Http3Settings``); several may share it::

        async with connect_webtransport(client, "/echo") as session:
            stream = await session.open_bidirectional_stream()

    Raises :exc:`SessionRejected` if the server answered another status than
    2xx, or does not enable WebTransport. Leaving the block closes the
    session (code 0) if it is still open.
    """
    if not isinstance(client, Http3Client):
        raise TypeError(f"client must be an Http3Client, got {type(client).__name__}")
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    driver = client._driver
    hub = hub_of(driver)
    fields = normalize_headers(headers)
    if not any(name == _DRAFT_HEADER[0] for name, _ in fields):
        fields.append(_DRAFT_HEADER)
    await driver.wait_settings()
    if not driver.engine.peer_enabled_webtransport():
        raise SessionRejected(
            None,
            "the server does not enable WebTransport (SETTINGS_ENABLE_WEBTRANSPORT)",
        )
    ex = await driver.start_request(
        "CONNECT",
        path,
        fields,
        authority=None,
        protocol="webtransport",
        end_stream=False,
    )
    session = WebTransportSession(
        hub, ex, path=path, authority=driver.authority, headers=fields
    )
    # Known before the answer: the server's first streams may overtake it.
    hub.sessions[session.session_id] = session
    try:
        await driver.wait_response(ex)
        status = ex.response_status
        assert status is not None
        if not 200 <= status < 300:
            raise SessionRejected(
                status, f"the server refused the WebTransport session: {status}"
            )
    except BaseException:
        hub.sessions.pop(session.session_id, None)
        session._ended(
            SessionCloseInfo(0, "refused", by_peer=True, clean=False), send=False
        )
        driver.reset(ex, H3ErrorCode.REQUEST_CANCELLED)
        driver.exchanges.pop(ex.stream_id, None)
        raise
    session._start()
    try:
        yield session
    finally:
        with trio.CancelScope(shield=True):
            await session.aclose()
        driver.exchanges.pop(ex.stream_id, None)


@asynccontextmanager
async def open_webtransport_session(
    url: str,
    *,
    settings: QuicSettings | None = None,
    http3_settings: Http3Settings | None = None,
    headers: HeaderInput = (),
    socket: DatagramSocket | None = None,
) -> AsyncIterator[WebTransportSession]:
    """Connect to ``url`` (``https://host:port/path``) and open a
    WebTransport session; the connection lives as long as the block::

        async with open_webtransport_session(
            "https://localhost:4433/echo", settings=QuicSettings(ca_certs=...)
        ) as session:
            await session.send_datagram(b"ping")

    WebTransport, extended CONNECT and datagrams are turned on in the
    settings given; ``socket``: connect over a datagram socket you own.
    Raises :exc:`SessionRejected` if the server refuses.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"WebTransport URLs are https://host[:port]/path, got {url!r}")
    port = parts.port or 443
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    quic, http3 = webtransport_settings(settings, http3_settings)
    async with (
        open_http3_client(
            parts.hostname, port, settings=quic, http3_settings=http3, socket=socket
        ) as client,
        connect_webtransport(client, path, headers=headers) as session,
    ):
        yield session
