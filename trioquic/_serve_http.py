"""``serve_http``: HTTP/3 on UDP and the TCP front door (HTTP/2, HTTP/1.1)
on the same port, one handler for all three, with ``Alt-Svc`` leading TCP
clients to HTTP/3."""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from ._endpoint import QuicServer
from ._http import HttpHandler
from ._settings import QuicSettings
from ._udp import UdpSocket, bind_udp_sockets
from .h3._endpoint import serve_http3
from .h3._settings import Http3Settings
from .tcp._alt_svc import alt_svc_value
from .tcp._server import TcpServer, serve_tcp
from .tcp._settings import TcpSettings

#: Attempts at finding a port free on both UDP and TCP when ``port=0``.
_PORT_ATTEMPTS = 8


@attrs.frozen
class HttpServer:
    """A running :func:`serve_http`: the HTTP/3 server, the TCP front door
    (``None`` without one), the port both listen on, and where."""

    http3: QuicServer
    tcp: TcpServer | None
    port: int
    #: The bound local addresses: UDP's, then TCP's not already listed.
    addresses: tuple[Any, ...]


async def serve_http(
    handler: HttpHandler,
    port: int,
    *,
    host: str | None = None,
    settings: QuicSettings,
    http3_settings: Http3Settings | None = None,
    tcp: bool | TcpSettings = True,
    alt_svc: bool = True,
    udp_sockets: Sequence[socket.socket] = (),
    tcp_sockets: Sequence[socket.socket] = (),
    task_status: trio.TaskStatus[HttpServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` over HTTP/3 (UDP ``port``) and, unless ``tcp`` is
    false, over HTTP/2 and HTTP/1.1 on TCP ``port`` (the same number).

    ``handler`` takes a :class:`~trioquic.HttpRequest`. ``tcp=True`` builds
    the TCP door's :class:`~trioquic.TcpSettings` from ``settings``' PEM
    certificate and key (give a :class:`~trioquic.TcpSettings` to choose
    yourself). With ``alt_svc`` every response, on both doors, carries
    ``alt-svc: h3=":PORT"; ma=86400`` (unless the handler sets its own, or
    ``TcpSettings.alt_svc`` is set): a browser that reached the site over
    TCP then moves to HTTP/3.

    ``port=0`` binds UDP first, then TCP on the port UDP got (trying other
    ports when TCP's is taken). Use ``await nursery.start(serve_http, ...)``
    to get the :class:`HttpServer`; cancel to stop both doors gracefully.

    ``udp_sockets`` (and ``tcp_sockets``, listening) are sockets bound
    elsewhere, used instead of binding ``host`` and ``port``, which are then
    not used: :func:`trioquic.workers.serve_workers` binds them in its parent
    process. They are closed when the server stops.
    """
    if not isinstance(settings, QuicSettings):
        raise TypeError(
            f"settings must be a trioquic.QuicSettings, got {type(settings).__name__}"
        )
    if http3_settings is None:
        http3_settings = Http3Settings()
    elif not isinstance(http3_settings, Http3Settings):
        raise TypeError(
            "http3_settings must be a trioquic.h3.Http3Settings, "
            f"got {type(http3_settings).__name__}"
        )
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0 to 65535, got {port}")
    if not isinstance(tcp, bool | TcpSettings):
        raise TypeError(
            f"tcp must be a bool or a trioquic.TcpSettings, got {type(tcp).__name__}"
        )
    if not isinstance(alt_svc, bool):
        raise TypeError(f"alt_svc must be a bool, got {type(alt_svc).__name__}")
    tcp_settings = _tcp_settings(tcp, settings)
    if udp_sockets:
        udp, listeners = _adopt(udp_sockets, tcp_sockets, settings, tcp_settings)
    else:
        udp, listeners = await _bind(host, port, settings, tcp_settings is not None)
    try:
        bound = udp[0].local_address[1]
        if alt_svc:
            value = alt_svc_value(bound)
            if not any(
                name == b"alt-svc" for name, _ in http3_settings.extra_response_headers
            ):
                http3_settings = attrs.evolve(
                    http3_settings,
                    extra_response_headers=(
                        *http3_settings.extra_response_headers,
                        (b"alt-svc", value.encode()),
                    ),
                )
            if tcp_settings is not None and tcp_settings.alt_svc is None:
                tcp_settings = attrs.evolve(tcp_settings, alt_svc=value)
        async with trio.open_nursery() as nursery:
            http3 = await nursery.start(
                _partial(
                    serve_http3,
                    handler,
                    bound,
                    settings=settings,
                    http3_settings=http3_settings,
                    sockets=udp,
                )
            )
            tcp_server = None
            if tcp_settings is not None:
                tcp_server = await nursery.start(
                    _partial(
                        serve_tcp,
                        handler,
                        bound,
                        settings=tcp_settings,
                        listeners=listeners,
                    )
                )
                listeners = []  # serve_tcp closes them now
            addresses = list(http3.addresses)
            if tcp_server is not None:
                addresses += [a for a in tcp_server.addresses if a not in addresses]
            task_status.started(
                HttpServer(http3, tcp_server, int(bound), tuple(addresses))
            )
    finally:
        for sock in udp:
            sock.close()
        for listener in listeners:
            with trio.CancelScope(shield=True):
                await listener.aclose()


def _partial(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``functools.partial`` that ``nursery.start`` can name (it looks at
    the function's ``__name__``)."""

    async def call(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await fn(*args, task_status=task_status, **kwargs)

    call.__name__ = call.__qualname__ = getattr(fn, "__name__", "call")
    return call


def _adopt(
    udp_sockets: Sequence[socket.socket],
    tcp_sockets: Sequence[socket.socket],
    settings: QuicSettings,
    tcp_settings: TcpSettings | None,
) -> tuple[list[UdpSocket], list[trio.SocketListener]]:
    """Sockets bound elsewhere, ready for the two doors."""
    for sock in [*udp_sockets, *tcp_sockets]:
        if not isinstance(sock, socket.socket):
            raise TypeError(
                "udp_sockets and tcp_sockets must be bound socket.socket "
                f"objects, got {type(sock).__name__}"
            )
    if tcp_settings is not None and not tcp_sockets:
        raise ValueError(
            "with udp_sockets and the TCP front door, give tcp_sockets too "
            "(listening), or tcp=False"
        )
    udp = [
        UdpSocket(sock, settings.udp_buffer_size, offload=settings.udp_offload)
        for sock in udp_sockets
    ]
    listeners = (
        [
            trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            for sock in tcp_sockets
        ]
        if tcp_settings is not None
        else []
    )
    return udp, listeners


async def _bind(
    host: str | None, port: int, settings: QuicSettings, tcp: bool
) -> tuple[list[UdpSocket], list[trio.SocketListener]]:
    """UDP sockets, then TCP listeners on the same port number."""
    for attempt in range(_PORT_ATTEMPTS):
        udp = await bind_udp_sockets(
            host,
            port,
            buffer_size=settings.udp_buffer_size,
            offload=settings.udp_offload,
        )
        if not tcp:
            return udp, []
        try:
            listeners = await _tcp_listeners(host, udp)
        except OSError as exc:
            for sock in udp:
                sock.close()
            retry = port == 0 and exc.errno == errno.EADDRINUSE
            if retry and attempt + 1 < _PORT_ATTEMPTS:
                continue
            raise
        return udp, listeners
    raise AssertionError("unreachable")  # pragma: no cover


async def _tcp_listeners(
    host: str | None, udp: list[UdpSocket]
) -> list[trio.SocketListener]:
    """TCP listeners on the addresses and port the UDP sockets got (a name
    such as ``localhost`` is ``127.0.0.1`` and ``::1`` for both doors, as
    :func:`~trioquic.lowlevel.bind_udp_sockets` resolves it); for a wildcard
    host, trio's own wildcard listeners."""
    port = udp[0].local_address[1]
    if host is None or host == "":
        return await trio.open_tcp_listeners(port, host=host)
    listeners: list[trio.SocketListener] = []
    try:
        for sock in udp:
            listeners += await trio.open_tcp_listeners(
                port, host=str(sock.local_address[0])
            )
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    return listeners


def _tcp_settings(
    tcp: bool | TcpSettings, settings: QuicSettings
) -> TcpSettings | None:
    """The TCP door's settings: as given, or made from the QUIC
    certificate (through a temporary PEM file, removed at once, when it is
    a ``cryptography`` object: the ``ssl`` module reads only files)."""
    if tcp is False:
        return None
    if isinstance(tcp, TcpSettings):
        return tcp
    certificate, key = settings.certificate, settings.private_key
    if certificate is None:
        raise ValueError(
            "serve_http needs QuicSettings.certificate (and private_key) to "
            "serve TLS on TCP too; or pass tcp=False, or tcp=TcpSettings(...)"
        )
    if isinstance(certificate, str | os.PathLike) and (
        key is None or isinstance(key, str | os.PathLike)
    ):
        return TcpSettings(certificate=certificate, private_key=key)
    from cryptography.hazmat.primitives import serialization

    with tempfile.TemporaryDirectory(prefix="trioquic-tcp-") as directory:
        cert_path = os.path.join(directory, "cert.pem")
        key_path = os.path.join(directory, "key.pem")
        if isinstance(certificate, str | os.PathLike):
            with open(certificate, "rb") as source:
                cert_pem = source.read()
        else:
            cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
        if isinstance(key, str | os.PathLike):
            with open(key, "rb") as source:
                key_pem = source.read()
        else:
            key_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        with open(cert_path, "wb") as out:
            out.write(cert_pem)
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
            out.write(key_pem)
        context = TcpSettings(
            certificate=cert_path, private_key=key_path
        ).make_ssl_context()
    return TcpSettings(ssl_context=context)
