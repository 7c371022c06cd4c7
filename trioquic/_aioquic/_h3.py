"""The aioquic engine's HTTP/3: :class:`AioquicH3Engine` over aioquic's
``H3Connection``. It

* feeds trioquic's transport events to aioquic's ``H3Connection`` (as its
  ``handle_event`` would) and turns aioquic's HTTP/3 events into trioquic's
  own small event classes;
* catches aioquic's HTTP/3 ``ProtocolError`` and reports its error code as
  :exc:`~trioquic._engine.H3ConnectionError`, so the driver closes the
  connection through trioquic (not behind its back), and turns aioquic's
  refusals of a frame (``FrameUnexpected``) into
  :exc:`~trioquic.StreamStateError`;
* adds GOAWAY (RFC 9114 section 5.2), which aioquic neither sends nor parses:
  a shadow parser follows the peer's control stream for GOAWAY frames;
* sends the SETTINGS our :class:`~trioquic.h3.Http3Settings` ask for
  (SETTINGS_MAX_FIELD_SECTION_SIZE, SETTINGS_ENABLE_CONNECT_PROTOCOL,
  SETTINGS_H3_DATAGRAM).

The aioquic internals it uses are listed, and pinned, in :mod:`._pins`.
"""

from __future__ import annotations

from collections.abc import Sequence

from aioquic._buffer import Buffer, BufferReadError
from aioquic.buffer import encode_uint_var
from aioquic.h3 import events as h3_events
from aioquic.h3.connection import (
    ErrorCode,
    FrameType,
    H3Connection,
    ProtocolError,
    Setting,
    StreamType,
    encode_frame,
)
from aioquic.quic.connection import QuicConnection as _AioquicConnection

from .._engine import (
    DataReceived,
    GoawayReceived,
    H3ConnectionError,
    H3DatagramReceived,
    H3Event,
    Headers,
    HeadersReceived,
    RequestStopSending,
    RequestStreamReset,
)
from .._errors import StreamStateError
from .._events import (
    DatagramReceived,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamResetReceived,
)

H3_FRAME_ERROR = int(ErrorCode.H3_FRAME_ERROR)
H3_ID_ERROR = int(ErrorCode.H3_ID_ERROR)

_CONTROL = int(StreamType.CONTROL)
_GOAWAY = int(FrameType.GOAWAY)
_CANCEL_PUSH = int(FrameType.CANCEL_PUSH)
_MAX_FIELD_SECTION_SIZE = int(Setting.MAX_FIELD_SECTION_SIZE)
_ENABLE_CONNECT_PROTOCOL = int(Setting.ENABLE_CONNECT_PROTOCOL)
_H3_DATAGRAM = int(Setting.H3_DATAGRAM)


class _ControlParser:
    """Follows one peer unidirectional stream; if it is the control stream,
    reports the GOAWAY frames on it, and refuses CANCEL_PUSH (trioquic never
    promises a push, nor allows one: any push ID is unknown, H3_ID_ERROR,
    RFC 9114 section 7.2.3). Holds at most one frame header and a GOAWAY
    payload (other payloads are skipped as they arrive)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.stream_type: int | None = None
        self.frame_type: int | None = None
        self.remaining = 0
        self.done = False  # not a control stream

    def feed(self, data: bytes) -> list[int]:
        goaways: list[int] = []
        if self.done:
            return goaways
        self.buffer += data
        while True:
            buf = Buffer(data=self.buffer)
            if self.stream_type is None:
                try:
                    self.stream_type = buf.pull_uint_var()
                except BufferReadError:
                    return goaways
                self.buffer = self.buffer[buf.tell() :]
                if self.stream_type != _CONTROL:
                    self.done = True
                    self.buffer = b""
                    return goaways
                continue
            if self.frame_type is None:
                try:
                    frame_type = buf.pull_uint_var()
                    length = buf.pull_uint_var()
                except BufferReadError:
                    return goaways
                if frame_type == _CANCEL_PUSH:
                    raise H3ConnectionError(
                        H3_ID_ERROR,
                        "CANCEL_PUSH for a push never promised (no push is "
                        "promised or allowed on this connection)",
                    )
                self.frame_type = frame_type
                self.remaining = length
                self.buffer = self.buffer[buf.tell() :]
                continue
            if self.frame_type == _GOAWAY:
                if len(self.buffer) < self.remaining:
                    if self.remaining > 8:
                        raise H3ConnectionError(H3_FRAME_ERROR, "GOAWAY frame too long")
                    return goaways
                payload = self.buffer[: self.remaining]
                self.buffer = self.buffer[self.remaining :]
                frame = Buffer(data=payload)
                try:
                    last_id = frame.pull_uint_var()
                except BufferReadError:
                    raise H3ConnectionError(
                        H3_FRAME_ERROR, "cannot parse GOAWAY frame"
                    ) from None
                if not frame.eof():
                    raise H3ConnectionError(H3_FRAME_ERROR, "GOAWAY has trailing data")
                goaways.append(last_id)
            else:
                skip = min(self.remaining, len(self.buffer))
                self.buffer = self.buffer[skip:]
                self.remaining -= skip
                if self.remaining:
                    return goaways
            self.frame_type = None
            self.remaining = 0


class _H3Connection(H3Connection):
    """aioquic's H3Connection with our SETTINGS."""

    def __init__(
        self,
        quic: _AioquicConnection,
        *,
        max_field_section_size: int,
        enable_connect_protocol: bool,
        enable_datagrams: bool,
    ) -> None:
        self.tq_settings = {_MAX_FIELD_SECTION_SIZE: max_field_section_size}
        if enable_connect_protocol:
            self.tq_settings[_ENABLE_CONNECT_PROTOCOL] = 1
        if enable_datagrams:
            self.tq_settings[_H3_DATAGRAM] = 1
        super().__init__(quic)

    def _init_connection(self) -> None:
        # A client that allows no push sends no MAX_PUSH_ID: a server then
        # cannot push (RFC 9114 section 4.6), and a PUSH_PROMISE is an
        # H3_ID_ERROR. trioquic's client does not take pushes.
        self._max_push_id = None
        super()._init_connection()

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        settings.pop(_ENABLE_CONNECT_PROTOCOL, None)
        settings.update(self.tq_settings)
        return settings


class AioquicH3Engine:
    """One HTTP/3 connection's state machine over aioquic (a
    :class:`~trioquic._engine.H3Engine`).

    Synchronous: the driver calls it from its hooks and its tasks, then wakes
    the IoWorker to flush. aioquic's ``H3Connection`` is made by
    :meth:`start` (making it opens the control streams).
    """

    def __init__(
        self,
        quic: _AioquicConnection,
        *,
        max_field_section_size: int,
        enable_connect_protocol: bool,
        enable_datagrams: bool,
    ) -> None:
        self._transport = quic
        self.is_client = bool(quic.configuration.is_client)
        self._max_field_section_size = max_field_section_size
        self._enable_connect_protocol = enable_connect_protocol
        self._enable_datagrams = enable_datagrams
        self._h3: _H3Connection | None = None
        self._control_parsers: dict[int, _ControlParser] = {}
        self._last_goaway: int | None = None
        self.goaway_sent: int | None = None

    def start(self) -> None:
        if self._h3 is None:
            self._h3 = _H3Connection(
                self._transport,
                max_field_section_size=self._max_field_section_size,
                enable_connect_protocol=self._enable_connect_protocol,
                enable_datagrams=self._enable_datagrams,
            )

    @property
    def h3(self) -> _H3Connection:
        h3 = self._h3
        if h3 is None:
            raise StreamStateError("HTTP/3 is not started on this connection yet")
        return h3

    # -- input ----------------------------------------------------------------

    def handle(self, events: Sequence[QuicEvent]) -> list[H3Event]:
        """Feed transport events; return HTTP/3 events. Raises
        :exc:`H3ConnectionError` on an HTTP/3 connection error (the caller
        closes the connection with its code)."""
        out: list[H3Event] = []
        for event in events:
            self._handle_one(event, out)
        return out

    def _handle_one(self, event: QuicEvent, out: list[H3Event]) -> None:
        """One transport event through ``H3Connection.handle_event``'s
        dispatch, without its error handling (it would close the QUIC
        connection behind the IoWorker's back) and without building an
        aioquic event: ``_receive_stream_data`` reads only ``stream_id``,
        ``data`` and ``end_stream``, which trioquic's event has too (pinned
        in ``_pins``)."""
        if self._h3 is None:
            self.start()  # the driver starts first; never lose an event
        h3 = self.h3
        if h3._is_done:
            return
        results: list[h3_events.H3Event] = []
        try:
            if isinstance(event, StreamDataReceived):
                results = h3._receive_stream_data(event)  # type: ignore[arg-type]
            elif isinstance(event, DatagramReceived):
                results = h3._receive_datagram(event.data)
            elif isinstance(event, StreamResetReceived):
                h3._receive_stream_reset(event.stream_id)
                if event.stream_id % 4 == 0:
                    out.append(RequestStreamReset(event.stream_id, event.error_code))
            elif isinstance(event, StopSendingReceived):
                h3._receive_stop_sending(event.stream_id)
                if event.stream_id % 4 == 0:
                    out.append(RequestStopSending(event.stream_id, event.error_code))
        except ProtocolError as exc:
            h3._is_done = True
            raise H3ConnectionError(int(exc.error_code), exc.reason_phrase) from None
        for result in results:
            if isinstance(result, h3_events.HeadersReceived):
                if result.push_id is None:
                    out.append(
                        HeadersReceived(
                            result.stream_id, result.headers, result.stream_ended
                        )
                    )
            elif isinstance(result, h3_events.DataReceived):
                if result.push_id is None:
                    out.append(
                        DataReceived(result.stream_id, result.data, result.stream_ended)
                    )
            elif isinstance(result, h3_events.DatagramReceived):
                out.append(H3DatagramReceived(result.stream_id, result.data))
        if (
            isinstance(event, StreamDataReceived)
            and event.stream_id & 2
            and self._is_peer_stream(event.stream_id)
        ):
            self._follow_control(event, out)

    def _is_peer_stream(self, stream_id: int) -> bool:
        client_initiated = not stream_id & 1
        return client_initiated != self.is_client

    def _follow_control(self, event: StreamDataReceived, out: list[H3Event]) -> None:
        parser = self._control_parsers.get(event.stream_id)
        if parser is None:
            if len(self._control_parsers) >= 16:
                return
            parser = self._control_parsers[event.stream_id] = _ControlParser()
        if parser.done:
            return
        for last_id in parser.feed(event.data):
            if self.is_client and last_id % 4 != 0:
                raise H3ConnectionError(
                    H3_ID_ERROR, "GOAWAY must carry a client-initiated bidi stream ID"
                )
            if self._last_goaway is not None and last_id > self._last_goaway:
                raise H3ConnectionError(H3_ID_ERROR, "GOAWAY ID increased")
            self._last_goaway = last_id
            out.append(GoawayReceived(last_id))

    # -- facts --------------------------------------------------------------------

    def buffered(self, stream_id: int) -> int:
        """Bytes of ``stream_id`` the HTTP/3 layer holds, not yet turned into
        events (a partial frame, a header block)."""
        if self._h3 is None:
            return 0
        stream = self._h3._stream.get(stream_id)
        return len(stream.buffer) if stream is not None else 0

    def _peer_settings(self) -> dict[int, int] | None:
        return self._h3.received_settings if self._h3 is not None else None

    @property
    def peer_settings_received(self) -> bool:
        return self._peer_settings() is not None

    def peer_enabled_datagrams(self) -> bool:
        settings = self._peer_settings()
        return bool(settings and settings.get(_H3_DATAGRAM) == 1)

    def peer_enabled_connect_protocol(self) -> bool:
        settings = self._peer_settings()
        return bool(settings and settings.get(_ENABLE_CONNECT_PROTOCOL) == 1)

    def peer_max_field_section_size(self) -> int | None:
        settings = self._peer_settings()
        if settings is None:
            return None
        return settings.get(_MAX_FIELD_SECTION_SIZE)

    # -- output -------------------------------------------------------------------

    def send_headers(self, stream_id: int, headers: Headers, end_stream: bool) -> None:
        try:
            self.h3.send_headers(stream_id, headers, end_stream)
        except ProtocolError as exc:  # FrameUnexpected: not in this state
            raise StreamStateError(
                f"cannot send HEADERS on stream {stream_id}: {exc.reason_phrase}"
            ) from None

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        try:
            self.h3.send_data(stream_id, data, end_stream)
        except ProtocolError as exc:
            raise StreamStateError(
                f"cannot send DATA on stream {stream_id}: {exc.reason_phrase}"
            ) from None

    def send_goaway(self, last_id: int) -> None:
        """Send GOAWAY; a later one may only lower the ID."""
        if self.goaway_sent is not None and last_id >= self.goaway_sent:
            return
        control = self.h3._local_control_stream_id
        assert control is not None
        self.goaway_sent = last_id
        self._transport.send_stream_data(
            control, encode_frame(FrameType.GOAWAY, encode_uint_var(last_id))
        )

    def abandon(self, stream_id: int) -> None:
        """Forget a request stream's parsing state (it was reset or abandoned)."""
        if self._h3 is None:
            return
        stream = self._h3._stream.get(stream_id)
        if stream is not None:
            stream.buffer = b""
