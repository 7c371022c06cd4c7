"""HTTP/3 exceptions."""

from __future__ import annotations

from .._errors import QuicError


class H3Error(QuicError):
    """An HTTP/3 request failed; :attr:`error_code` is an HTTP/3 error code
    (RFC 9114 section 8.1, e.g. :data:`~trioquic.h3.H3_REQUEST_CANCELLED`)."""

    def __init__(self, error_code: int, message: str = "") -> None:
        text = f"HTTP/3 error 0x{error_code:x}"
        if message:
            text += f": {message}"
        super().__init__(text)
        self.error_code = error_code


class RequestRejected(H3Error):
    """The server did not process the request (it reset the stream with
    H3_REQUEST_REJECTED, or the request was beyond the ID of a GOAWAY): it
    is safe to retry it on another connection."""


class ConnectionGoingAway(H3Error):
    """The server sent GOAWAY: this connection accepts no new requests."""
