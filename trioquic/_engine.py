"""The engine interface: what trioquic needs from a sans-io QUIC state machine.

trioquic's runtime (the router, the IoWorker, :class:`~trioquic.ConnectionIO`)
and its HTTP/3 driver speak only to these protocols, with trioquic's own
events, errors and value types. An engine package implements them and is the
only code that imports its QUIC library: ``trioquic._aioquic`` today (over
aioquic), and any second engine beside it. :func:`create_endpoint_engine`
picks the engine for an endpoint.

Three objects, from the outside in:

* :class:`EndpointEngine`, one per endpoint: configuration built once from
  :class:`~trioquic.QuicSettings` (certificates, session tickets, the key
  log), a factory of connection engines, and the stateless packets the router
  sends without a connection (Retry, refusals, INVALID_TOKEN closes);
* :class:`QuicEngine`, one per connection: datagrams and timers in,
  datagrams out, transport events, streams, datagrams, the close cause;
* :class:`H3Engine`, one per HTTP/3 connection, made by its QuicEngine:
  transport events in, :data:`H3Event` out, frames written on streams.

Every method is synchronous, and ``now`` is always passed in (trioquic gives
:func:`trio.current_time`). Errors: an engine raises only trioquic's own
exceptions (:exc:`~trioquic.StreamStateError`, :exc:`ValueError`,
:exc:`H3ConnectionError`), never its library's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ._events import EventValue, HandshakeInfo, QuicEvent

if TYPE_CHECKING:
    from ._errors import CloseCause, CloseReason
    from ._settings import QuicSettings
    from ._stateless_reset import StatelessResetKey
    from ._statistics import ConnectionStatistics

#: A socket address, as the socket layer gives it: ``(host, port)`` or
#: ``(host, port, flowinfo, scope_id)``.
Address = Any
#: Header fields: lowercase names and values, as bytes.
Headers = list[tuple[bytes, bytes]]


class QuicEngine(Protocol):
    """One QUIC connection's state machine.

    The IoWorker calls it in a fixed order each step (see ``_worker.py``):
    :meth:`receive_datagram`, :meth:`handle_timer` when due,
    :meth:`poll_events`, the application's writes, :meth:`datagrams_to_send`,
    :meth:`get_timer`, :meth:`take_cid_changes`.
    """

    #: Whether this is the client's side.
    is_client: bool
    #: What the handshake settled, once it completed (a server that accepted
    #: 0-RTT data sets it as soon as it can answer in 1-RTT packets).
    handshake: HandshakeInfo | None
    #: Why the connection ended, set once when it does.
    close_reason: CloseReason | None
    #: Client: the newest session ticket from the server, as opaque bytes.
    session_ticket: bytes | None

    @property
    def host_cid(self) -> bytes:
        """The connection ID the peer uses to reach us now."""
        ...

    # -- driving ------------------------------------------------------------

    def connect(self, addr: Address, now: float) -> None:
        """Client: start the handshake towards ``addr``."""
        ...

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one UDP payload (never raises on bad input: a datagram that is
        not a valid packet of this connection is ignored, or ends it with the
        right transport error)."""
        ...

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is due next, or None."""
        ...

    def handle_timer(self, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Every datagram ready to leave now (within the anti-amplification
        limit and the congestion and pacing budgets)."""
        ...

    def poll_events(self) -> list[QuicEvent]:
        """The transport events for the application since the last call.
        Lifecycle changes are recorded on the engine instead
        (:attr:`handshake`, :attr:`close_reason`, :meth:`take_cid_changes`)."""
        ...

    def take_cid_changes(self) -> tuple[list[bytes], list[bytes]]:
        """The connection IDs issued and retired since the last call, so the
        router's table can follow them (an issued ID is reported before the
        peer can use it)."""
        ...

    def peer_reset_tokens(self) -> tuple[bytes, ...]:
        """The stateless reset tokens of the peer's connection IDs in use."""
        ...

    def amplification_budget(self) -> int | None:
        """Server, before the client's address is validated: the bytes it may
        still send (three times what it received); None when unlimited."""
        ...

    def probe_timeout(self) -> float:
        """The current PTO in seconds (RFC 9002 section 6.2)."""
        ...

    def close(
        self,
        error_code: int,
        reason: str = "",
        *,
        transport: bool = False,
        cause: CloseCause | None = None,
    ) -> None:
        """Start closing: CONNECTION_CLOSE goes out with the next
        :meth:`datagrams_to_send`, and :attr:`close_reason` is set with
        ``cause`` (default: closed locally)."""
        ...

    def abandon(self, reason: CloseReason) -> None:
        """End the connection at once, sending nothing (the peer is gone or
        unreachable); :attr:`close_reason` becomes ``reason`` unless it was
        already set."""
        ...

    def end_logging(self) -> None:
        """Write the connection's qlog trace now, if there is one."""
        ...

    def send_ping(self) -> None:
        """Queue a PING (ack-eliciting: the peer's acknowledgement restarts
        our idle timer, the PING restarts the peer's)."""
        ...

    # -- handshake and identity -------------------------------------------------

    @property
    def handshake_complete(self) -> bool:
        """Whether the TLS handshake has completed (a server: the client's
        Finished arrived; until then what it receives is early data)."""
        ...

    def early_data_ready(self) -> bool:
        """Client, after :meth:`connect`: whether 0-RTT keys are in place."""
        ...

    def set_peer_stream_limits(
        self, *, bidirectional: int, unidirectional: int
    ) -> None:
        """How many streams of each kind the peer may open at once. Only
        before the handshake (the limits are transport parameters)."""
        ...

    def peer_address(self) -> Address | None: ...

    def change_connection_id(self) -> None:
        """Switch to the peer's next spare connection ID (after a rebind)."""
        ...

    # -- streams ------------------------------------------------------------

    def open_stream(self, unidirectional: bool) -> int | None:
        """A new local stream's ID, or None while the peer's limit forbids it."""
        ...

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """Queue data (and FIN). Raises :exc:`~trioquic.StreamStateError` when
        the stream cannot send (receive-only, finished, reset)."""
        ...

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """RESET_STREAM; nothing happens if the send side already finished."""
        ...

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        """STOP_SENDING; nothing happens if the receive side already finished."""
        ...

    def sending_held(self, now: float) -> bool:
        """Whether new stream data could not leave now anyway (congestion
        window full, or the pacer holds it): a write need not wake the worker."""
        ...

    def send_buffered(self, stream_id: int) -> int:
        """Unacknowledged plus unsent bytes held for ``stream_id``."""
        ...

    def has_unacknowledged_stream_data(self) -> bool:
        """Whether some stream data, FIN or reset is not acknowledged yet."""
        ...

    def consume(self, stream_id: int, count: int) -> bool:
        """The application read ``count`` bytes of the stream: grant the peer
        that much credit. True when a MAX_* frame is now due."""
        ...

    def credit_unread(self, stream_id: int, final_size: int) -> bool:
        """Grant credit for every byte up to ``final_size`` not consumed yet."""
        ...

    def forget_stream(self, stream_id: int) -> None:
        """The application is done with the stream: drop its credit records."""
        ...

    def received_final_size(self, stream_id: int) -> int | None:
        """The highest offset received on the stream, or None if unknown."""
        ...

    # -- datagrams (RFC 9221) ---------------------------------------------------

    def max_datagram_size(self) -> int:
        """Largest QUIC datagram payload that can be sent now (0: disabled)."""
        ...

    def send_datagram(self, data: bytes) -> None:
        """Queue a datagram; the oldest is dropped (and counted) when the
        queue is full."""
        ...

    # -- observation and HTTP/3 ---------------------------------------------------

    def statistics(self) -> ConnectionStatistics:
        """Transport figures (the worker adds its own counters)."""
        ...

    def create_h3(
        self,
        *,
        max_field_section_size: int,
        enable_connect_protocol: bool,
        enable_datagrams: bool,
        max_push_id: int | None = None,
    ) -> H3Engine:
        """The HTTP/3 state machine of this connection (not started).
        ``max_push_id`` (client): the largest push ID the server may use
        (MAX_PUSH_ID); None allows no push."""
        ...


class EndpointEngine(Protocol):
    """What an engine keeps for one endpoint, and the packets its router
    sends without a connection."""

    #: Derives the stateless reset token of every connection ID the endpoint
    #: issues (so the router can answer for connections it has forgotten).
    stateless_reset_key: StatelessResetKey

    def client_connection(self, server_name: str) -> QuicEngine:
        """A new client connection (call :meth:`QuicEngine.connect` next)."""
        ...

    def server_connection(
        self,
        *,
        original_destination_cid: bytes,
        retry_source_cid: bytes | None,
        source_cid: bytes | None = None,
    ) -> QuicEngine:
        """A new server connection for a client's first Initial, whose
        source connection ID is ``source_cid`` (None: not known)."""
        ...

    def retry_packet(
        self,
        *,
        version: int,
        destination_cid: bytes,
        source_cid: bytes,
        original_destination_cid: bytes,
        token: bytes,
    ) -> bytes:
        """A Retry packet with its integrity tag (RFC 9001 section 5.8)."""
        ...

    def refusal_packets(
        self, *, version: int, destination_cid: bytes, source_cid: bytes
    ) -> list[bytes]:
        """An Initial carrying CONNECTION_CLOSE (CONNECTION_REFUSED) that
        refuses a new client without reading its ClientHello."""
        ...

    def invalid_token_packets(
        self, data: bytes, addr: Address, now: float
    ) -> list[bytes]:
        """The datagrams that close a connection attempt whose Initial carried
        an invalid token, with INVALID_TOKEN (RFC 9000 section 8.1.3)."""
        ...

    def close(self) -> None:
        """Release what the endpoint holds (key log file, ...)."""
        ...


def create_endpoint_engine(
    settings: QuicSettings, *, is_client: bool
) -> EndpointEngine:
    """The engine of a new endpoint, as ``settings.engine`` selects it.
    Raises :exc:`ValueError` (or :exc:`TypeError`) for settings it cannot
    use, and :exc:`EngineNotInstalled` (an :exc:`ImportError`) for an engine
    whose library is missing."""
    if settings.engine == "qh3":
        try:
            from ._qh3 import Qh3Endpoint
        except ImportError as exc:
            if (exc.name or "").split(".")[0] != "qh3":
                raise
            raise EngineNotInstalled(
                "QuicSettings(engine='qh3') needs qh3: pip install 'trioquic[qh3]'"
            ) from None

        return Qh3Endpoint(settings, is_client=is_client)
    from ._aioquic import AioquicEndpoint

    return AioquicEndpoint(settings, is_client=is_client)


class EngineNotInstalled(ImportError):
    """The QUIC engine the settings select is not installed (the message
    says how to install it)."""


# -- HTTP/3 ---------------------------------------------------------------------


@attrs.frozen
class HeadersReceived:
    """A header section (request or response headers, or trailers)."""

    stream_id: int
    headers: Headers
    stream_ended: bool


class DataReceived(EventValue):
    """DATA on a request stream (one per QUIC stream frame: slotted, not
    attrs, to be cheap)."""

    __slots__ = ("data", "stream_ended", "stream_id")
    _field_names = ("stream_id", "data", "stream_ended")

    def __init__(self, stream_id: int, data: bytes, stream_ended: bool) -> None:
        self.stream_id = stream_id
        self.data = data
        self.stream_ended = stream_ended


class H3DatagramReceived(EventValue):
    """An HTTP datagram (RFC 9297) for a request stream."""

    __slots__ = ("data", "stream_id")
    _field_names = ("stream_id", "data")

    def __init__(self, stream_id: int, data: bytes) -> None:
        self.stream_id = stream_id
        self.data = data


class WebTransportStreamData(EventValue):
    """Data on a WebTransport stream (draft-ietf-webtrans-http3-02): a
    bidirectional stream that began with the WEBTRANSPORT_STREAM signal, or
    a unidirectional stream of type 0x54, bound to the session whose CONNECT
    stream is ``session_id``. ``data`` is the application's (the signal and
    session ID are consumed by HTTP/3)."""

    __slots__ = ("data", "session_id", "stream_ended", "stream_id")
    _field_names = ("stream_id", "session_id", "data", "stream_ended")

    def __init__(
        self, stream_id: int, session_id: int, data: bytes, stream_ended: bool
    ) -> None:
        self.stream_id = stream_id
        self.session_id = session_id
        self.data = data
        self.stream_ended = stream_ended


@attrs.frozen
class GoawayReceived:
    """The peer sent GOAWAY with this stream (or push) ID."""

    last_id: int


@attrs.frozen
class RequestStreamReset:
    """The peer reset a request stream (RESET_STREAM), or a WebTransport
    stream."""

    stream_id: int
    error_code: int


@attrs.frozen
class RequestStopSending:
    """The peer asked us to stop sending on a request stream (or a
    WebTransport stream)."""

    stream_id: int
    error_code: int


@attrs.frozen
class PushPromiseReceived:
    """Client: the server promised a push (PUSH_PROMISE) on a request stream:
    ``headers`` are the promised request's."""

    stream_id: int
    push_id: int
    headers: Headers


@attrs.frozen
class PushStreamOpened:
    """Client: the push stream of ``push_id`` arrived; its response comes as
    :class:`HeadersReceived` and :class:`DataReceived` on ``stream_id``, and
    a reset of it as :class:`RequestStreamReset`."""

    stream_id: int
    push_id: int


@attrs.frozen
class PushCancelled:
    """Client: the server withdrew a promised push (CANCEL_PUSH)."""

    push_id: int


H3Event = (
    HeadersReceived
    | DataReceived
    | H3DatagramReceived
    | GoawayReceived
    | RequestStreamReset
    | RequestStopSending
    | PushPromiseReceived
    | PushStreamOpened
    | PushCancelled
    | WebTransportStreamData
)


class H3ConnectionError(Exception):
    """An HTTP/3 connection error found in the peer's input: the connection
    must close with :attr:`error_code` (an HTTP/3 error code)."""

    def __init__(self, error_code: int, reason: str) -> None:
        super().__init__(reason)
        self.error_code = error_code
        self.reason = reason


class PeerSettingsQueries:
    """The :class:`H3Engine` queries of the peer's SETTINGS, for an engine
    whose HTTP/3 state machine keeps them as a dict (aioquic's and qh3's
    ``received_settings``): it supplies :meth:`_peer_settings`."""

    #: SETTINGS identifiers (RFC 9114, RFC 9220, RFC 9297,
    #: draft-ietf-webtrans-http3).
    _MAX_FIELD_SECTION_SIZE = 0x6
    _ENABLE_CONNECT_PROTOCOL = 0x8
    _H3_DATAGRAM = 0x33
    _ENABLE_WEBTRANSPORT = 0x2B603742

    def _peer_settings(self) -> dict[int, int] | None:
        """The peer's SETTINGS, or None before they arrived."""
        raise NotImplementedError

    def _peer_setting_is_one(self, identifier: int) -> bool:
        settings = self._peer_settings()
        return bool(settings and settings.get(identifier) == 1)

    @property
    def peer_settings_received(self) -> bool:
        return self._peer_settings() is not None

    def peer_enabled_datagrams(self) -> bool:
        return self._peer_setting_is_one(self._H3_DATAGRAM)

    def peer_enabled_connect_protocol(self) -> bool:
        return self._peer_setting_is_one(self._ENABLE_CONNECT_PROTOCOL)

    def peer_enabled_webtransport(self) -> bool:
        return self._peer_setting_is_one(self._ENABLE_WEBTRANSPORT)

    def peer_max_field_section_size(self) -> int | None:
        settings = self._peer_settings()
        if settings is None:
            return None
        return settings.get(self._MAX_FIELD_SECTION_SIZE)


class H3Engine(Protocol):
    """One HTTP/3 connection's state machine (QPACK, frames, SETTINGS,
    GOAWAY), writing through the QuicEngine that made it."""

    #: The ID of the last GOAWAY we sent, if any.
    goaway_sent: int | None

    def start(self) -> None:
        """Open the control and QPACK streams and send SETTINGS (once)."""
        ...

    def handle(self, events: Sequence[QuicEvent]) -> list[H3Event]:
        """Feed transport events; return HTTP/3 events. Raises
        :exc:`H3ConnectionError` on a connection error in the peer's input."""
        ...

    def buffered(self, stream_id: int) -> int:
        """Bytes of the stream held, not yet turned into events."""
        ...

    def abandon(self, stream_id: int) -> None:
        """Forget a request stream's parsing state."""
        ...

    @property
    def peer_settings_received(self) -> bool: ...

    def peer_enabled_datagrams(self) -> bool: ...

    def peer_enabled_connect_protocol(self) -> bool: ...

    def peer_max_field_section_size(self) -> int | None: ...

    # -- WebTransport (draft-ietf-webtrans-http3-02) ------------------------------

    def enable_webtransport(self) -> None:
        """Announce WebTransport in SETTINGS (with extended CONNECT and HTTP
        datagrams). Only before :meth:`start`."""
        ...

    def peer_enabled_webtransport(self) -> bool: ...

    def open_webtransport_stream(
        self, session_id: int, unidirectional: bool
    ) -> int | None:
        """Open a WebTransport stream of the session ``session_id`` and write
        its signal; None while the peer's stream limit forbids it. Data the
        peer sends back on a bidirectional one comes as
        :class:`WebTransportStreamData`."""
        ...

    def forget_webtransport_stream(
        self, stream_id: int, *, receive_ended: bool
    ) -> None:
        """The application is done with a WebTransport stream: drop its state.
        Unless ``receive_ended`` (FIN or reset received), what still arrives
        on it is ignored."""
        ...

    def send_headers(self, stream_id: int, headers: Headers, end_stream: bool) -> None:
        """A HEADERS frame. Raises :exc:`~trioquic.StreamStateError` where
        HTTP/3 forbids one (the caller keeps the message's state)."""
        ...

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """A DATA frame (or only FIN, for empty ``data``)."""
        ...

    def cancel_push(self, push_id: int) -> None:
        """Client: send CANCEL_PUSH for a promised push."""
        ...

    def send_goaway(self, last_id: int) -> None:
        """GOAWAY on the control stream; a later one may only lower the ID."""
        ...
