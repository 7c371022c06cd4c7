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
  SETTINGS_H3_DATAGRAM, and for WebTransport SETTINGS_ENABLE_WEBTRANSPORT);
* WebTransport streams (draft-ietf-webtrans-http3-02, what Chromium speaks):
  aioquic parses the peer's (bidirectional ones opened with the
  WEBTRANSPORT_STREAM signal 0x41, unidirectional ones of type 0x54) and
  writes the signal of ours; the data the peer sends back on a bidirectional
  stream we opened is not HTTP/3 framing, so it bypasses aioquic's parser.

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
    H3Stream,
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
    PeerSettingsQueries,
    PushCancelled,
    PushPromiseReceived,
    PushStreamOpened,
    RequestStopSending,
    RequestStreamReset,
    WebTransportStreamData,
)
from .._errors import StreamStateError
from .._events import (
    DatagramReceived,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamResetReceived,
)

_ENABLE_WEBTRANSPORT = int(Setting.ENABLE_WEBTRANSPORT)
#: The session of a WebTransport stream the application is done with.
_FORGOTTEN = -1

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
    reports its GOAWAY and CANCEL_PUSH frames as ``(frame type, ID)`` pairs.
    Holds at most one frame header and one such payload (other payloads are
    skipped as they arrive)."""

    #: Frames whose payload is one ID, which the parser reports.
    REPORTED = (_GOAWAY, _CANCEL_PUSH)

    def __init__(self) -> None:
        self.buffer = b""
        self.stream_type: int | None = None
        self.frame_type: int | None = None
        self.remaining = 0
        self.done = False  # not a control stream

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        if self.done:
            return found
        self.buffer += data
        while True:
            buf = Buffer(data=self.buffer)
            if self.stream_type is None:
                try:
                    self.stream_type = buf.pull_uint_var()
                except BufferReadError:
                    return found
                self.buffer = self.buffer[buf.tell() :]
                if self.stream_type != _CONTROL:
                    self.done = True
                    self.buffer = b""
                    return found
                continue
            if self.frame_type is None:
                try:
                    frame_type = buf.pull_uint_var()
                    length = buf.pull_uint_var()
                except BufferReadError:
                    return found
                self.frame_type = frame_type
                self.remaining = length
                self.buffer = self.buffer[buf.tell() :]
                continue
            if self.frame_type in self.REPORTED:
                name = "GOAWAY" if self.frame_type == _GOAWAY else "CANCEL_PUSH"
                if len(self.buffer) < self.remaining:
                    if self.remaining > 8:
                        raise H3ConnectionError(
                            H3_FRAME_ERROR, f"{name} frame too long"
                        )
                    return found
                payload = self.buffer[: self.remaining]
                self.buffer = self.buffer[self.remaining :]
                frame = Buffer(data=payload)
                try:
                    value = frame.pull_uint_var()
                except BufferReadError:
                    raise H3ConnectionError(
                        H3_FRAME_ERROR, f"cannot parse {name} frame"
                    ) from None
                if not frame.eof():
                    raise H3ConnectionError(H3_FRAME_ERROR, f"{name} has trailing data")
                found.append((self.frame_type, value))
            else:
                skip = min(self.remaining, len(self.buffer))
                self.buffer = self.buffer[skip:]
                self.remaining -= skip
                if self.remaining:
                    return found
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
        max_push_id: int | None,
        enable_webtransport: bool = False,
    ) -> None:
        self.tq_max_push_id = max_push_id
        #: Request streams this client sent HEAD on: their responses carry
        #: the content-length a GET would have, and no body.
        self.tq_head_streams: set[int] = set()
        self.tq_settings = {_MAX_FIELD_SECTION_SIZE: max_field_section_size}
        if enable_connect_protocol:
            self.tq_settings[_ENABLE_CONNECT_PROTOCOL] = 1
        if enable_datagrams:
            self.tq_settings[_H3_DATAGRAM] = 1
        if enable_webtransport:
            # draft-ietf-webtrans-http3-02 section 3.1 (Chromium's draft):
            # SETTINGS_ENABLE_WEBTRANSPORT, with extended CONNECT and HTTP
            # datagrams.
            self.tq_settings[_ENABLE_CONNECT_PROTOCOL] = 1
            self.tq_settings[_H3_DATAGRAM] = 1
            self.tq_settings[_ENABLE_WEBTRANSPORT] = 1
        super().__init__(quic, enable_webtransport=enable_webtransport)

    def _init_connection(self) -> None:
        # aioquic's client allows push IDs 0-8 whatever the application
        # wants. trioquic's sends MAX_PUSH_ID only when the application takes
        # pushes; without it a server cannot push (RFC 9114 section 4.6) and
        # a PUSH_PROMISE or push stream is an H3_ID_ERROR.
        self._max_push_id = self.tq_max_push_id  # None on a server
        super()._init_connection()

    def _check_content_length(self, stream: H3Stream) -> None:
        # RFC 9110 section 8.6: the content-length of a response to HEAD is
        # that of the GET's body, which is not sent. aioquic checks it
        # against the (empty) body and fails the connection.
        if stream.stream_id in self.tq_head_streams:
            self.tq_head_streams.discard(stream.stream_id)
            return
        super()._check_content_length(stream)

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        settings.pop(_ENABLE_CONNECT_PROTOCOL, None)
        settings.update(self.tq_settings)
        return settings


class AioquicH3Engine(PeerSettingsQueries):
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
        max_push_id: int | None = None,
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
        self._max_push_id = max_push_id if self.is_client else None
        #: Client: push stream ID -> push ID, of push streams reported open.
        self._push_streams: dict[int, int] = {}
        self._wt_enabled = False
        #: WebTransport stream ID -> its session's ID (both directions).
        self._wt_streams: dict[int, int] = {}
        #: Bidirectional WebTransport streams we opened: what the peer sends
        #: on them is raw data, not HTTP/3 frames.
        self._wt_local_bidi: set[int] = set()

    def start(self) -> None:
        if self._h3 is None:
            self._h3 = _H3Connection(
                self._transport,
                max_field_section_size=self._max_field_section_size,
                enable_connect_protocol=self._enable_connect_protocol,
                enable_datagrams=self._enable_datagrams,
                max_push_id=self._max_push_id,
                enable_webtransport=self._wt_enabled,
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
        if self._wt_streams:
            sid = getattr(event, "stream_id", None)
            if (
                sid is not None
                and sid in self._wt_streams
                and self._handle_webtransport(event, sid, out)
            ):
                return
        try:
            if isinstance(event, StreamDataReceived):
                results = h3._receive_stream_data(event)  # type: ignore[arg-type]
            elif isinstance(event, DatagramReceived):
                results = h3._receive_datagram(event.data)
            elif isinstance(event, StreamResetReceived):
                h3._receive_stream_reset(event.stream_id)
                if event.stream_id % 4 == 0 or event.stream_id in self._push_streams:
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
                if result.push_id is not None:
                    self._push_stream(result.stream_id, result.push_id, out)
                out.append(
                    HeadersReceived(
                        result.stream_id, result.headers, result.stream_ended
                    )
                )
            elif isinstance(result, h3_events.DataReceived):
                if result.push_id is not None:
                    self._push_stream(result.stream_id, result.push_id, out)
                out.append(
                    DataReceived(result.stream_id, result.data, result.stream_ended)
                )
            elif isinstance(result, h3_events.DatagramReceived):
                out.append(H3DatagramReceived(result.stream_id, result.data))
            elif isinstance(result, h3_events.PushPromiseReceived):
                out.append(
                    PushPromiseReceived(
                        result.stream_id, result.push_id, result.headers
                    )
                )
            elif isinstance(result, h3_events.WebTransportStreamDataReceived):
                self._wt_streams[result.stream_id] = result.session_id
                out.append(
                    WebTransportStreamData(
                        result.stream_id,
                        result.session_id,
                        result.data,
                        result.stream_ended,
                    )
                )
                if result.stream_ended:
                    h3._stream.pop(result.stream_id, None)
        if (
            isinstance(event, StreamDataReceived)
            and event.stream_id & 2
            and self._is_peer_stream(event.stream_id)
        ):
            self._follow_control(event, out)

    def _handle_webtransport(
        self, event: QuicEvent, stream_id: int, out: list[H3Event]
    ) -> bool:
        """An event of a known WebTransport stream; False to let aioquic's
        parser have it (a peer's stream, past its signal)."""
        h3 = self.h3
        forgotten = self._wt_streams[stream_id] == _FORGOTTEN
        if isinstance(event, StreamResetReceived):
            h3._stream.pop(stream_id, None)
            if forgotten:
                del self._wt_streams[stream_id]
            else:
                out.append(RequestStreamReset(stream_id, event.error_code))
            return True
        if forgotten:
            # Late data (or STOP_SENDING) of a stream the application is done
            # with: ignored, and forgotten entirely once it ends.
            if isinstance(event, StreamDataReceived) and event.end_stream:
                del self._wt_streams[stream_id]
            return True
        if isinstance(event, StopSendingReceived):
            out.append(RequestStopSending(stream_id, event.error_code))
            return True
        if isinstance(event, StreamDataReceived) and stream_id in self._wt_local_bidi:
            out.append(
                WebTransportStreamData(
                    stream_id,
                    self._wt_streams[stream_id],
                    event.data,
                    event.end_stream,
                )
            )
            return True
        return False

    def _push_stream(self, stream_id: int, push_id: int, out: list[H3Event]) -> None:
        """Report a push stream once, before its first message event."""
        if stream_id not in self._push_streams:
            self._push_streams[stream_id] = push_id
            out.append(PushStreamOpened(stream_id, push_id))

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
        for frame_type, last_id in parser.feed(event.data):
            if frame_type == _CANCEL_PUSH:
                # Only a push this endpoint allowed can be cancelled; trioquic's
                # server never promises one, so any ID is unknown to it (RFC
                # 9114 section 7.2.3: H3_ID_ERROR).
                if self._max_push_id is None or last_id > self._max_push_id:
                    raise H3ConnectionError(
                        H3_ID_ERROR,
                        f"CANCEL_PUSH for push {last_id}, which was never allowed",
                    )
                out.append(PushCancelled(last_id))
                continue
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

    # -- WebTransport -------------------------------------------------------------

    def enable_webtransport(self) -> None:
        if self._h3 is not None:
            raise RuntimeError("enable WebTransport before HTTP/3 starts")
        self._wt_enabled = True

    def open_webtransport_stream(
        self, session_id: int, unidirectional: bool
    ) -> int | None:
        quic = self._transport
        stream_id = quic.get_next_available_stream_id(is_unidirectional=unidirectional)
        limit = (
            quic._remote_max_streams_uni
            if unidirectional
            else quic._remote_max_streams_bidi
        )
        if stream_id // 4 >= limit:
            return None
        stream_id = self.h3.create_webtransport_stream(
            session_id, is_unidirectional=unidirectional
        )
        self._wt_streams[stream_id] = session_id
        if not unidirectional:
            self._wt_local_bidi.add(stream_id)
        return stream_id

    def forget_webtransport_stream(
        self, stream_id: int, *, receive_ended: bool
    ) -> None:
        self._wt_local_bidi.discard(stream_id)
        if receive_ended:
            self._wt_streams.pop(stream_id, None)
        elif stream_id in self._wt_streams:
            self._wt_streams[stream_id] = _FORGOTTEN
        if self._h3 is not None:
            self._h3._stream.pop(stream_id, None)

    # -- output -------------------------------------------------------------------

    def send_headers(self, stream_id: int, headers: Headers, end_stream: bool) -> None:
        if self.is_client and (b":method", b"HEAD") in headers:
            self.h3.tq_head_streams.add(stream_id)
        try:
            self.h3.send_headers(stream_id, headers, end_stream)
        except ProtocolError as exc:  # FrameUnexpected: not in this state
            raise StreamStateError(
                f"cannot send HEADERS on stream {stream_id}: {exc.reason_phrase}"
            ) from None
        except (RuntimeError, ValueError) as exc:  # the transport reset it
            raise StreamStateError(
                f"cannot send HEADERS on stream {stream_id}: {exc}"
            ) from None

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        try:
            self.h3.send_data(stream_id, data, end_stream)
        except ProtocolError as exc:
            raise StreamStateError(
                f"cannot send DATA on stream {stream_id}: {exc.reason_phrase}"
            ) from None
        except (RuntimeError, ValueError) as exc:  # the transport reset it
            raise StreamStateError(
                f"cannot send DATA on stream {stream_id}: {exc}"
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

    def cancel_push(self, push_id: int) -> None:
        """Client: ask the server not to send a promised push (CANCEL_PUSH)."""
        control = self.h3._local_control_stream_id
        assert control is not None
        self._transport.send_stream_data(
            control, encode_frame(FrameType.CANCEL_PUSH, encode_uint_var(push_id))
        )

    def abandon(self, stream_id: int) -> None:
        """Forget a request stream's parsing state (it was reset or abandoned)."""
        if self._h3 is None:
            return
        stream = self._h3._stream.get(stream_id)
        if stream is not None:
            stream.buffer = b""
