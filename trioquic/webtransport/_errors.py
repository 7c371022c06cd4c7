"""WebTransport's error codes and exceptions.

A WebTransport application error code is 32 bits; on a QUIC stream reset or
STOP_SENDING it travels as an HTTP/3 error code, in the range the draft
reserves for it (draft-ietf-webtrans-http3, "Resetting Data Streams"):
``0x52e4a40fa8db + n + n // 0x1e``, which skips the reserved (GREASE) codes
``0x1f * N + 0x21``.
"""

from __future__ import annotations

import operator

import attrs
import trio

from .._errors import QuicError

#: The HTTP/3 error code of WebTransport application error code 0.
FIRST_WEBTRANSPORT_CODE = 0x52E4A40FA8DB
#: The HTTP/3 error code of WebTransport application error code 2**32 - 1.
LAST_WEBTRANSPORT_CODE = 0x52E5AC983162
#: A stream refused: its session is unknown, or beyond the session's limit.
WT_BUFFERED_STREAM_REJECTED = 0x3994BD84
#: The stream's session has ended.
WT_SESSION_GONE = 0x170D7B68
#: Longest reason a CLOSE_WEBTRANSPORT_SESSION capsule may carry, in bytes.
MAX_CLOSE_REASON = 1024


def _check_code(code: int) -> int:
    code = operator.index(code)
    if not 0 <= code < 2**32:
        raise ValueError(
            f"WebTransport error codes are 32-bit (0 to 2**32-1), got {code}"
        )
    return code


def webtransport_code_to_http3(code: int) -> int:
    """The HTTP/3 error code that carries WebTransport error ``code``."""
    code = _check_code(code)
    return FIRST_WEBTRANSPORT_CODE + code + code // 0x1E


def http3_code_to_webtransport(code: int) -> int | None:
    """The WebTransport error code an HTTP/3 error code carries, or None if
    it carries none (outside the range, or a reserved code)."""
    if not FIRST_WEBTRANSPORT_CODE <= code <= LAST_WEBTRANSPORT_CODE:
        return None
    if (code - 0x21) % 0x1F == 0:
        return None
    shifted = code - FIRST_WEBTRANSPORT_CODE
    return shifted - shifted // 0x1F


@attrs.frozen
class SessionCloseInfo:
    """How a WebTransport session ended."""

    #: The application's 32-bit code (0 when the peer closed without one).
    code: int
    #: The reason given with it (may be empty).
    reason: str
    #: Whether the peer closed it.
    by_peer: bool
    #: False when it did not end with a close capsule or FIN: the CONNECT
    #: stream was reset, a capsule was malformed, or the connection ended.
    clean: bool = True


class WebTransportError(QuicError):
    """Base class of WebTransport's errors."""


class SessionRejected(WebTransportError):
    """The server answered the session's CONNECT with :attr:`status` (not
    2xx), or the server does not speak WebTransport (:attr:`status` None)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


class SessionClosed(WebTransportError, trio.BrokenResourceError):
    """The session has ended (:attr:`info` says how): its streams and
    datagrams are gone."""

    def __init__(self, info: SessionCloseInfo) -> None:
        who = "the peer" if info.by_peer else "this side"
        text = f"the WebTransport session was closed by {who} (code {info.code}"
        if info.reason:
            text += f", {info.reason!r}"
        super().__init__(text + ")")
        self.info = info


class StreamResetError(WebTransportError, trio.BrokenResourceError):
    """The peer reset the stream (:attr:`error_code`: its WebTransport code,
    None if the HTTP/3 code :attr:`http3_error_code` carries none)."""

    def __init__(self, stream_id: int, http3_error_code: int, what: str) -> None:
        self.stream_id = stream_id
        self.http3_error_code = http3_error_code
        self.error_code = http3_code_to_webtransport(http3_error_code)
        code = (
            f"code {self.error_code}"
            if self.error_code is not None
            else f"HTTP/3 code 0x{http3_error_code:x}"
        )
        super().__init__(f"WebTransport stream {stream_id}: {what} ({code})")


class StreamStoppedError(StreamResetError):
    """The peer asked us to stop sending on the stream (STOP_SENDING); our
    side of it is reset."""
