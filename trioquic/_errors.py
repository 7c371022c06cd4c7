"""trioquic's exceptions. aioquic's never reach users; these do."""

from __future__ import annotations

import enum

import attrs
import trio

#: QUIC transport error codes (RFC 9000 section 20.1) that trioquic itself uses.
NO_ERROR = 0x0
INTERNAL_ERROR = 0x1
CONNECTION_REFUSED = 0x2


class CloseCause(enum.Enum):
    """What ended a connection, as the engine recorded it (never guessed from
    the reason text)."""

    #: This endpoint closed it (the application, or trioquic on its behalf).
    CLOSED_LOCALLY = "closed_locally"
    #: The peer sent CONNECTION_CLOSE.
    CLOSED_BY_PEER = "closed_by_peer"
    #: Nothing was heard from the peer for the idle timeout.
    IDLE_TIMEOUT = "idle_timeout"
    #: The handshake did not complete within ``QuicSettings.handshake_timeout``.
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    #: The peer answered with a stateless reset (RFC 9000 section 10.3).
    STATELESS_RESET = "stateless_reset"
    #: Client, during the handshake: the kernel reported ICMP port
    #: unreachable from the server's address (nothing listens there).
    CONNECTION_REFUSED = "connection_refused"
    #: Client, during the handshake: the kernel reported ICMP host or
    #: network unreachable for the server's address.
    PEER_UNREACHABLE = "peer_unreachable"
    #: The endpoint shut down (its scope was cancelled).
    SHUTDOWN = "shutdown"
    #: trioquic failed internally; the connection was closed with INTERNAL_ERROR.
    INTERNAL_ERROR = "internal_error"


@attrs.frozen(kw_only=True)
class CloseReason:
    """Why a connection ended.

    ``error_code`` is a QUIC transport error code when ``is_transport`` is
    true (``frame_type`` then names the frame that caused it, if any),
    otherwise the application's code. :attr:`cause` says what ended it;
    :attr:`by_peer` is derived from it.
    """

    error_code: int
    reason: str = ""
    cause: CloseCause
    frame_type: int | None = None
    is_transport: bool = True

    @property
    def by_peer(self) -> bool:
        """Whether the peer ended the connection (CONNECTION_CLOSE or a
        stateless reset); timeouts and local closes are not."""
        return self.cause in (CloseCause.CLOSED_BY_PEER, CloseCause.STATELESS_RESET)

    def __str__(self) -> str:
        if self.cause in (CloseCause.CONNECTION_REFUSED, CloseCause.PEER_UNREACHABLE):
            return self.reason  # nothing was exchanged: no code to show
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

    @staticmethod
    def from_reason(reason: CloseReason) -> ConnectionClosed:
        """The exception that describes ``reason``: a :exc:`HandshakeTimeout`,
        :exc:`IdleTimeout` or :exc:`StatelessReset` for those causes, else a
        :exc:`ConnectionClosed`."""
        cls = _CLOSED_BY_CAUSE.get(reason.cause, ConnectionClosed)
        return cls(reason)


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


class PeerUnreachable(ConnectionClosed):
    """The server could not be reached at all: during the handshake the
    kernel reported an ICMP host or network unreachable error for its
    address (Linux; elsewhere the handshake timeout applies)."""


class ConnectionRefused(PeerUnreachable):
    """Nothing listens on the server's UDP port: during the handshake the
    kernel reported ICMP port unreachable (like TCP's "connection refused";
    Linux, elsewhere the handshake timeout applies)."""


class StreamStateError(QuicError, RuntimeError):
    """The stream's state does not allow this operation (for example sending
    on a stream the peer opened for receiving only): a bug in the calling
    code, reported at the call."""


_CLOSED_BY_CAUSE: dict[CloseCause, type[ConnectionClosed]] = {
    CloseCause.HANDSHAKE_TIMEOUT: HandshakeTimeout,
    CloseCause.IDLE_TIMEOUT: IdleTimeout,
    CloseCause.STATELESS_RESET: StatelessReset,
    CloseCause.CONNECTION_REFUSED: ConnectionRefused,
    CloseCause.PEER_UNREACHABLE: PeerUnreachable,
}
