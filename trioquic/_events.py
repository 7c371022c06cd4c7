"""Transport events an :class:`~trioquic.ApplicationOverQuic` receives.

They are trioquic's own small value classes, so applications never see the
QUIC engine's types.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class StreamDataReceived:
    """Data arrived on a stream, in order; ``end_stream`` marks the FIN."""

    stream_id: int
    data: bytes
    end_stream: bool


@attrs.frozen
class StreamResetReceived:
    """The peer abandoned sending on a stream (RESET_STREAM)."""

    stream_id: int
    error_code: int


@attrs.frozen
class StopSendingReceived:
    """The peer asked us to stop sending on a stream (STOP_SENDING).

    The engine has already reset the stream's send side with ``error_code``.
    """

    stream_id: int
    error_code: int


@attrs.frozen
class DatagramReceived:
    """A QUIC datagram (RFC 9221) arrived."""

    data: bytes


QuicEvent = (
    StreamDataReceived | StreamResetReceived | StopSendingReceived | DatagramReceived
)
