"""Transport events an :class:`~trioquic.ApplicationOverQuic` receives.

They are trioquic's own small value classes, so applications never see the
QUIC engine's types. The two made for every stream frame or datagram
received (:class:`StreamDataReceived`, :class:`DatagramReceived`) are plain
slotted classes, cheaper to create than attrs' frozen ones: they compare
equal by type and fields, print their fields, and are read-only by
convention.
"""

from __future__ import annotations

from typing import Any

import attrs


class EventValue:
    """Base of the small event classes: equality, hashing and repr from the
    fields named in ``_field_names`` (in order)."""

    __slots__ = ()
    _field_names: tuple[str, ...] = ()

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._field_names)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, EventValue)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((type(self), self._fields()))

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in self._field_names
        )
        return f"{type(self).__name__}({fields})"


class StreamDataReceived(EventValue):
    """Data arrived on a stream, in order; ``end_stream`` marks the FIN."""

    __slots__ = ("data", "end_stream", "stream_id")
    _field_names = ("stream_id", "data", "end_stream")
    __match_args__ = ("stream_id", "data", "end_stream")

    def __init__(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        self.stream_id = stream_id
        self.data = data
        self.end_stream = end_stream


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


class DatagramReceived(EventValue):
    """A QUIC datagram (RFC 9221) arrived."""

    __slots__ = ("data",)
    _field_names = ("data",)
    __match_args__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


@attrs.frozen(kw_only=True)
class HandshakeInfo:
    """What the handshake settled."""

    #: The negotiated ALPN protocol.
    alpn_protocol: str | None
    #: Whether a TLS session was resumed from a ticket.
    session_resumed: bool
    #: Whether the server accepted the client's 0-RTT data.
    early_data_accepted: bool


QuicEvent = (
    StreamDataReceived | StreamResetReceived | StopSendingReceived | DatagramReceived
)
