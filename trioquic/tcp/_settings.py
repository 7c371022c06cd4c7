"""Settings of the TCP front door, as one frozen, validated value."""

from __future__ import annotations

import os
import ssl
from typing import Any

import attrs

from .._validators import flag, int_at_least, seconds

_KIB = 1024
_MIB = 1024 * 1024


def _optional_path(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is not None and not isinstance(value, str | os.PathLike):
        raise TypeError(
            f"TcpSettings.{attribute.name} must be a PEM file path or None, "
            f"got {type(value).__name__}"
        )


def _alpn(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(
            "TcpSettings.alpn_protocols must be a sequence of names, "
            'e.g. ("h2", "http/1.1"), not one string'
        )
    protocols = tuple(value)
    for name in protocols:
        if name not in ("h2", "http/1.1"):
            raise ValueError(
                f'TcpSettings.alpn_protocols may hold "h2" and "http/1.1", got {name!r}'
            )
    if not protocols:
        raise ValueError('TcpSettings.alpn_protocols must name "h2" or "http/1.1"')
    return protocols


def _alt_svc(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(
            "TcpSettings.alt_svc must be an Alt-Svc header value (str) or None, "
            f"got {type(value).__name__}; see trioquic.tcp.alt_svc_value()"
        )
    if not value or any(c in value for c in "\r\n\0"):
        raise ValueError(
            f"TcpSettings.alt_svc must be a non-empty header value, got {value!r}"
        )


def _ssl_context(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, ssl.SSLContext):
        raise TypeError(
            "TcpSettings.ssl_context must be an ssl.SSLContext or None, "
            f"got {type(value).__name__}"
        )


@attrs.frozen(kw_only=True)
class TcpSettings:
    """Settings of the TCP front door (:func:`~trioquic.serve_tcp`): HTTP/1.1
    and HTTP/2 over TLS, or over plain TCP behind a proxy.

    Every field is validated when the object is built; a wrong value raises
    :exc:`TypeError` or :exc:`ValueError` naming the field. With neither
    ``certificate`` nor ``ssl_context`` the door speaks plain text (HTTP/1.1,
    and HTTP/2 to clients that start with its preface, "prior knowledge").
    """

    #: Certificate chain, a PEM file path (the same file
    #: ``QuicSettings.certificate`` names serves both doors). ``None``: plain
    #: text, unless ``ssl_context`` is given.
    certificate: str | os.PathLike[str] | None = attrs.field(
        default=None, validator=_optional_path
    )
    #: Private key, a PEM file path; ``None`` when ``certificate`` holds it too.
    private_key: str | os.PathLike[str] | None = attrs.field(
        default=None, validator=_optional_path
    )
    #: A server-side :class:`ssl.SSLContext` of your own, used as it is
    #: instead of ``certificate``/``private_key`` (set its ALPN protocols).
    ssl_context: ssl.SSLContext | None = attrs.field(
        default=None, validator=_ssl_context
    )
    #: ALPN protocols offered over TLS, most preferred first.
    alpn_protocols: tuple[str, ...] = attrs.field(
        default=("h2", "http/1.1"), converter=_alpn
    )
    #: ``Alt-Svc`` header value added to every response that does not set
    #: its own (``None``: none). :func:`~trioquic.tcp.alt_svc_value` makes
    #: one; :func:`~trioquic.serve_http` sets it by itself.
    alt_svc: str | None = attrs.field(default=None, validator=_alt_svc)
    #: Connections served at once; beyond it new ones wait in the kernel's
    #: accept backlog.
    max_connections: int = attrs.field(default=10_000, validator=int_at_least(1))
    #: Seconds a client has for the TLS handshake.
    handshake_timeout: float = attrs.field(default=10.0, validator=seconds())
    #: Seconds a connection may stay idle (no request in progress) before it
    #: is closed; also the time a client has to send a request's head.
    keep_alive_timeout: float = attrs.field(default=20.0, validator=seconds())
    #: Largest request head accepted (HTTP/1.1: request line and header
    #: bytes; HTTP/2: the header list size of RFC 9113 section 6.5.2);
    #: larger ones get 431 (HTTP/2 connections far beyond it are closed).
    max_header_size: int = attrs.field(default=16 * _KIB, validator=int_at_least(64))
    #: Largest request body read; larger ones get 413, or end the stream
    #: (HTTP/2) or connection (HTTP/1.1) once the response has started
    #: (``None``: no limit).
    max_request_body_size: int | None = attrs.field(
        default=16 * _MIB, validator=int_at_least(0, optional=True)
    )
    #: Bytes of one request body buffered before the handler reads them;
    #: beyond it the door stops reading (HTTP/1.1) or grants no flow-control
    #: credit (HTTP/2), so the client slows down.
    body_buffer_size: int = attrs.field(
        default=256 * _KIB, validator=int_at_least(1024)
    )
    #: HTTP/2: response bytes queued for the socket before a handler's
    #: ``send`` waits.
    send_buffer_size: int = attrs.field(
        default=256 * _KIB, validator=int_at_least(1024)
    )
    #: HTTP/2: requests a client may have open at once on one connection
    #: (SETTINGS_MAX_CONCURRENT_STREAMS).
    max_concurrent_streams: int = attrs.field(default=100, validator=int_at_least(1))
    #: HTTP/2: announce extended CONNECT (RFC 8441), for WebSockets.
    enable_connect_protocol: bool = attrs.field(default=True, validator=flag)
    #: Seconds requests in flight get to finish when the server stops
    #: (HTTP/2: new streams refused, GOAWAY after the last response;
    #: HTTP/1.1: ``connection: close``); then connections are closed.
    grace_period: float = attrs.field(default=5.0, validator=seconds())
    #: Bytes asked of the socket per read.
    read_size: int = attrs.field(default=64 * _KIB, validator=int_at_least(1024))

    def __attrs_post_init__(self) -> None:
        if self.private_key is not None and self.certificate is None:
            raise ValueError(
                "TcpSettings.private_key was given without a certificate: "
                "set certificate too"
            )
        if self.ssl_context is not None and self.certificate is not None:
            raise ValueError(
                "TcpSettings: give either ssl_context or certificate/private_key, "
                "not both"
            )

    @property
    def tls(self) -> bool:
        """Whether the door speaks TLS."""
        return self.certificate is not None or self.ssl_context is not None

    def make_ssl_context(self) -> ssl.SSLContext | None:
        """The server's :class:`ssl.SSLContext` (``None`` in plain text):
        ``ssl_context`` as given, or one built from the certificate, TLS 1.2
        or later, ALPN ``alpn_protocols``."""
        if self.ssl_context is not None:
            return self.ssl_context
        if self.certificate is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        context.load_cert_chain(self.certificate, self.private_key)
        context.set_alpn_protocols(list(self.alpn_protocols))
        return context
