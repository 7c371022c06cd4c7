"""HTTP/3 settings, as one frozen, validated value."""

from __future__ import annotations

from typing import Any

import attrs

from .._validators import flag, int_at_least, seconds

_KIB = 1024
_MIB = 1024 * 1024


def _extra_headers(value: Any) -> tuple[tuple[bytes, bytes], ...]:
    if isinstance(value, str | bytes):
        raise TypeError(
            "Http3Settings.extra_response_headers must be a sequence of "
            "(name, value) pairs, not one string"
        )
    out = []
    for pair in value:
        name, field = pair
        bname = name.encode("ascii") if isinstance(name, str) else bytes(name)
        bvalue = field.encode("latin-1") if isinstance(field, str) else bytes(field)
        if not bname or bname.startswith(b":") or bname != bname.lower():
            raise ValueError(
                "Http3Settings.extra_response_headers names must be lowercase "
                f"and not pseudo-headers, got {name!r}"
            )
        out.append((bname, bvalue))
    return tuple(out)


@attrs.frozen(kw_only=True)
class Http3Settings:
    """Settings of an HTTP/3 endpoint; every field is validated when the
    object is built (a wrong value raises :exc:`TypeError` or
    :exc:`ValueError` naming the field)."""

    #: Requests a client may have open at once (the server's QUIC limit on
    #: bidirectional streams: it replaces ``QuicSettings.max_concurrent_streams``).
    max_concurrent_requests: int = attrs.field(default=100, validator=int_at_least(1))
    #: After this many requests the server sends GOAWAY and closes the
    #: connection once they are answered (None: no limit).
    max_requests_per_connection: int | None = attrs.field(
        default=None, validator=int_at_least(1, optional=True)
    )
    #: Largest header section accepted (SETTINGS_MAX_FIELD_SECTION_SIZE, RFC
    #: 9114 section 4.2.2: names + values + 32 bytes per field); larger
    #: requests get 431.
    max_header_list_size: int = attrs.field(
        default=16 * _KIB, validator=int_at_least(1)
    )
    #: Largest request body the server reads; larger ones get 413 (None: no
    #: limit).
    max_request_body_size: int | None = attrs.field(
        default=16 * _MIB, validator=int_at_least(0, optional=True)
    )
    #: Seconds from the handshake to the first request; then the server
    #: closes the connection with H3_NO_ERROR (None: wait forever).
    post_accept_timeout: float | None = attrs.field(
        default=10.0, validator=seconds(optional=True)
    )
    #: Bytes of a body buffered before the application reads them; beyond it
    #: no QUIC credit is granted on that stream, so the peer slows down.
    body_buffer_size: int = attrs.field(default=256 * _KIB, validator=int_at_least(1))
    #: Seconds requests in flight get to finish after GOAWAY on shutdown.
    goaway_grace_period: float = attrs.field(
        default=5.0, validator=seconds(optional=False)
    )
    #: Server: answer requests that arrive as 0-RTT early data with ``425 Too
    #: Early`` (RFC 8470), without running the handler, unless their method
    #: is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE): early data can
    #: be replayed by an attacker. trioquic's client retries such a request
    #: by itself once the handshake has completed.
    refuse_unsafe_early_data: bool = attrs.field(default=False, validator=flag)
    #: Client: server pushes (RFC 9114 section 4.6) the client accepts on a
    #: connection, push IDs 0 to ``max_pushes - 1`` (MAX_PUSH_ID). 0, the
    #: default, sends no MAX_PUSH_ID, so the server cannot push at all.
    #: Accepted pushes arrive through :meth:`Http3Client.receive_push`.
    max_pushes: int = attrs.field(default=0, validator=int_at_least(0))
    #: Announce extended CONNECT (RFC 9220 SETTINGS_ENABLE_CONNECT_PROTOCOL).
    enable_connect_protocol: bool = attrs.field(default=False, validator=flag)
    #: Announce HTTP datagrams (RFC 9297 SETTINGS_H3_DATAGRAM); QUIC datagrams
    #: must be enabled too (``QuicSettings.max_datagram_frame_size``).
    enable_datagrams: bool = attrs.field(default=False, validator=flag)
    #: Server: header fields added to every final response (not to 1xx
    #: ones), after the handler's, unless the handler set a field of the
    #: same name; e.g. ``((b"alt-svc", b'h3=":443"; ma=86400'),)``, which
    #: :func:`trioquic.serve_http` sets. Names and values as ``str`` or
    #: ``bytes``; names lowercase.
    extra_response_headers: tuple[tuple[bytes, bytes], ...] = attrs.field(
        default=(), converter=_extra_headers
    )
    #: Announce WebTransport over HTTP/3 (draft-ietf-webtrans-http3-02,
    #: SETTINGS_ENABLE_WEBTRANSPORT) and accept its streams: see
    #: :mod:`trioquic.webtransport`. Needs ``enable_connect_protocol`` and
    #: ``enable_datagrams``.
    enable_webtransport: bool = attrs.field(default=False, validator=flag)
    #: WebTransport sessions a connection may have open at once; a CONNECT
    #: beyond it is answered ``429``.
    webtransport_max_sessions: int = attrs.field(default=16, validator=int_at_least(1))
    #: Streams the peer may have open in one WebTransport session at once
    #: (accepted or waiting to be); a stream beyond it is refused
    #: (STOP_SENDING and RESET_STREAM, WT_BUFFERED_STREAM_REJECTED).
    webtransport_max_streams: int = attrs.field(default=100, validator=int_at_least(1))
    #: Received WebTransport datagrams queued per session; when it is full
    #: the oldest is dropped (and counted).
    webtransport_datagram_queue: int = attrs.field(
        default=64, validator=int_at_least(1)
    )

    def __attrs_post_init__(self) -> None:
        if self.enable_webtransport and not (
            self.enable_connect_protocol and self.enable_datagrams
        ):
            raise ValueError(
                "Http3Settings.enable_webtransport needs enable_connect_protocol"
                "=True and enable_datagrams=True (WebTransport sessions are "
                "extended CONNECT requests with HTTP datagrams)"
            )
