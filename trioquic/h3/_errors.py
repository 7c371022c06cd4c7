"""HTTP/3 error codes and exceptions."""

from __future__ import annotations

import enum

from .._errors import QuicError


class H3ErrorCode(enum.IntEnum):
    """HTTP/3 error codes (RFC 9114 section 8.1, and RFC 9297's
    H3_DATAGRAM_ERROR): what a stream reset, STOP_SENDING or the
    connection's close carries. Members are ints, so a code read off the
    wire compares equal to its member."""

    DATAGRAM_ERROR = 0x33
    NO_ERROR = 0x100
    GENERAL_PROTOCOL_ERROR = 0x101
    INTERNAL_ERROR = 0x102
    STREAM_CREATION_ERROR = 0x103
    CLOSED_CRITICAL_STREAM = 0x104
    FRAME_UNEXPECTED = 0x105
    FRAME_ERROR = 0x106
    EXCESSIVE_LOAD = 0x107
    ID_ERROR = 0x108
    SETTINGS_ERROR = 0x109
    MISSING_SETTINGS = 0x10A
    REQUEST_REJECTED = 0x10B
    REQUEST_CANCELLED = 0x10C
    REQUEST_INCOMPLETE = 0x10D
    MESSAGE_ERROR = 0x10E
    CONNECT_ERROR = 0x10F
    VERSION_FALLBACK = 0x110


def _describe(error_code: int) -> str:
    try:
        return f"H3_{H3ErrorCode(error_code).name} (0x{error_code:x})"
    except ValueError:
        return f"0x{error_code:x}"


class H3Error(QuicError):
    """An HTTP/3 request failed; :attr:`error_code` is an HTTP/3 error code
    (an :class:`H3ErrorCode` when it is one, e.g.
    ``H3ErrorCode.REQUEST_CANCELLED``)."""

    def __init__(self, error_code: int, message: str = "") -> None:
        text = f"HTTP/3 error {_describe(error_code)}"
        if message:
            text += f": {message}"
        super().__init__(text)
        try:
            code: int = H3ErrorCode(error_code)
        except ValueError:
            code = error_code
        self.error_code = code


class RequestRejected(H3Error):
    """The server did not process the request (it reset the stream with
    H3_REQUEST_REJECTED, or the request was beyond the ID of a GOAWAY): it
    is safe to retry it on another connection."""


class ConnectionGoingAway(H3Error):
    """The server sent GOAWAY: this connection accepts no new requests."""


class _Stopped(H3Error):
    """The peer sent STOP_SENDING: our side of the stream is reset (what a
    client whose server answered early and stopped reading meets while it
    still sends; the client then reads the response)."""
