"""trioquic's exceptions. aioquic's never reach users; these do."""

from __future__ import annotations

import attrs
import trio

#: QUIC transport error codes (RFC 9000 section 20.1) that trioquic itself uses.
NO_ERROR = 0x0
INTERNAL_ERROR = 0x1
CONNECTION_REFUSED = 0x2
FLOW_CONTROL_ERROR = 0x3
PROTOCOL_VIOLATION = 0xA
APPLICATION_ERROR = 0xC


@attrs.frozen
class CloseReason:
    """Why a connection ended.

    ``error_code`` is a QUIC transport error code when ``frame_type`` is not
    ``None`` or ``is_transport`` is true, otherwise the application's code.
    ``by_peer`` tells who closed it; timeouts have ``by_peer=False``.
    """

    error_code: int
    frame_type: int | None
    reason: str
    by_peer: bool
    is_transport: bool = True

    def __str__(self) -> str:
        who = "peer" if self.by_peer else "local endpoint"
        kind = "transport" if self.is_transport else "application"
        text = f"closed by {who} ({kind} error 0x{self.error_code:x}"
        if self.frame_type is not None:
            text += f", frame type 0x{self.frame_type:x}"
        text += ")"
        if self.reason:
            text += f": {self.reason}"
        return text


class QuicError(Exception):
    """Base class of trioquic's own exceptions."""


class ConnectionClosed(QuicError, trio.BrokenResourceError):
    """The QUIC connection has ended; :attr:`reason` says how.

    It is a :exc:`trio.BrokenResourceError`, so code written for trio streams
    treats a stream whose connection ended as a broken stream.
    """

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(str(reason))
        self.reason = reason


class HandshakeTimeout(ConnectionClosed):
    """The handshake did not complete within ``QuicSettings.handshake_timeout``."""


class IdleTimeout(ConnectionClosed):
    """Nothing was heard from the peer for the idle timeout."""


class StatelessReset(ConnectionClosed):
    """The peer answered with a stateless reset (RFC 9000 section 10.3): it no
    longer has the connection's state (it restarted, or lost the connection)
    and said so with the token it gave us for the connection ID in use. The
    connection ended at once, without CONNECTION_CLOSE; :attr:`reason` has
    ``reason="stateless reset"`` and ``by_peer=True``."""


class StreamReset(QuicError, trio.BrokenResourceError):
    """The peer reset the stream (RESET_STREAM) with :attr:`error_code`."""

    def __init__(self, stream_id: int, error_code: int) -> None:
        super().__init__(
            f"stream {stream_id} was reset by the peer (error code 0x{error_code:x})"
        )
        self.stream_id = stream_id
        self.error_code = error_code


class StreamStopped(QuicError, trio.BrokenResourceError):
    """The peer asked us to stop sending on the stream (STOP_SENDING).

    The stream's send side has been reset with the same :attr:`error_code`.
    """

    def __init__(self, stream_id: int, error_code: int) -> None:
        super().__init__(
            f"the peer stopped reading stream {stream_id} "
            f"(STOP_SENDING, error code 0x{error_code:x})"
        )
        self.stream_id = stream_id
        self.error_code = error_code


class DatagramError(QuicError):
    """A QUIC datagram (RFC 9221) could not be sent: disabled, or too large."""
