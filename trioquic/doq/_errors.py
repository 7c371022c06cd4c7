"""DoQ error codes (RFC 9250 section 4.3) and the protocol error the server
closes a connection with."""

from __future__ import annotations

import enum


class DoqErrorCode(enum.IntEnum):
    """Application error codes of DNS over QUIC (RFC 9250 section 4.3), used
    in CONNECTION_CLOSE, RESET_STREAM and STOP_SENDING. A code not listed
    here means :attr:`DOQ_UNSPECIFIED_ERROR` (section 4.3.4)."""

    #: The connection or stream ends with nothing to signal (shutdown).
    DOQ_NO_ERROR = 0x0
    #: The implementation failed internally and cannot pursue the
    #: transaction or the connection.
    DOQ_INTERNAL_ERROR = 0x1
    #: The peer broke the protocol; the connection is aborted.
    DOQ_PROTOCOL_ERROR = 0x2
    #: A client cancels an outstanding transaction (STOP_SENDING).
    DOQ_REQUEST_CANCELLED = 0x3
    #: Closing (or refusing) because of excessive load.
    DOQ_EXCESSIVE_LOAD = 0x4
    #: No more specific code applies.
    DOQ_UNSPECIFIED_ERROR = 0x5
    #: Reserved for tests of the error code extension mechanism.
    DOQ_ERROR_RESERVED = 0xD098EA5E


class DoqProtocolError(Exception):
    """A peer broke RFC 9250: the connection is closed with
    :attr:`DoqErrorCode.DOQ_PROTOCOL_ERROR` and this message as the reason."""
