"""The qh3 engine's HTTP/3: :class:`Qh3H3Engine` over qh3's ``H3Connection``.

It behaves as the aioquic engine's HTTP/3 does (same events, same error codes
for the same malformed input). qh3's ``H3Connection`` parses frames and runs
QPACK (ls-qpack); :class:`_H3Connection` adds what it lacks:

* the peer's control stream is parsed here (RFC 9114 section 6.2.1): frame
  types are checked as soon as a frame header arrives, unknown frames are
  skipped as they arrive (never buffered), SETTINGS and the one-ID frames are
  bounded; GOAWAY (a client checks the ID is a request stream's, and a later
  one may not raise it), CANCEL_PUSH (only for a push this endpoint allowed)
  and MAX_PUSH_ID (may not decrease) are checked;
* on request and push streams: the HTTP/2 frame types HTTP/3 reserves, push
  IDs beyond our MAX_PUSH_ID, a frame truncated by the end of the stream, a
  request that ends before its headers (H3_REQUEST_INCOMPLETE, as aioquic),
  interim responses that end the stream or are never followed by a final
  one, field names and values RFC 9114 section 4.2 forbids, connection-specific
  fields, ``te`` other than ``trailers``, a malformed ``:status`` or
  ``content-length`` and a body whose size differs from it (HEADERS frames
  are taken here, so that each field section is checked once, with qh3's
  pseudo-header rules too: one regular expression over the whole section
  checks its bytes);
* push streams opened by a client, and a client's QPACK streams closed by the
  server (critical streams);
* our SETTINGS (SETTINGS_MAX_FIELD_SECTION_SIZE, extended CONNECT, HTTP
  datagrams, WebTransport) and no MAX_PUSH_ID unless the application takes
  pushes.

Every qh3 exception is translated: :exc:`~trioquic._engine.H3ConnectionError`
for the peer's input, :exc:`~trioquic.StreamStateError` for ours. ls-qpack's
encoder cannot encode a field whose representation exceeds 4096 bytes (and
is unusable after failing), so a field section with such a field is written
here, as literals.

The qh3 internals used are listed, with a hash of each upstream method's
source, in :data:`H3_PINS`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence

from qh3._hazmat import (
    Buffer,
    BufferReadError,
    DecoderStreamError,
    DecompressionFailed,
    EncoderStreamError,
    HeaderTooLarge,
    QpackDecoder,
    StreamBlocked,
    encode_uint_var,
)
from qh3.h3 import events as h3_events
from qh3.h3.connection import (
    ClosedCriticalStream,
    ErrorCode,
    FieldSectionTooLarge,
    FrameError,
    FrameType,
    FrameUnexpected,
    H3Connection,
    H3Stream,
    HeadersState,
    MessageError,
    MissingSettingsError,
    ProtocolError,
    Setting,
    StreamCreationError,
    StreamType,
    encode_frame,
)
from qh3.quic.connection import QuicConnection as _Qh3Connection
from qh3.quic.connection import QuicConnectionError

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

#: The session of a WebTransport stream the application is done with.
_FORGOTTEN = -1

_CONTROL = int(StreamType.CONTROL)
_PUSH = int(StreamType.PUSH)
_DATA = int(FrameType.DATA)
_HEADERS = int(FrameType.HEADERS)
_CANCEL_PUSH = int(FrameType.CANCEL_PUSH)
_SETTINGS = int(FrameType.SETTINGS)
_PUSH_PROMISE = int(FrameType.PUSH_PROMISE)
_GOAWAY = int(FrameType.GOAWAY)
_MAX_PUSH_ID = int(FrameType.MAX_PUSH_ID)
_WEBTRANSPORT_STREAM = int(FrameType.WEBTRANSPORT_STREAM)
_MAX_FIELD_SECTION_SIZE = int(Setting.MAX_FIELD_SECTION_SIZE)
_ENABLE_CONNECT_PROTOCOL = int(Setting.ENABLE_CONNECT_PROTOCOL)
_H3_DATAGRAM = int(Setting.H3_DATAGRAM)
_ENABLE_WEBTRANSPORT = int(Setting.ENABLE_WEBTRANSPORT)

H3_DATAGRAM_ERROR = int(ErrorCode.H3_DATAGRAM_ERROR)
H3_INTERNAL_ERROR = int(ErrorCode.H3_INTERNAL_ERROR)
H3_FRAME_ERROR = int(ErrorCode.H3_FRAME_ERROR)
H3_REQUEST_INCOMPLETE = int(ErrorCode.H3_REQUEST_INCOMPLETE)
QPACK_DECOMPRESSION_FAILED = int(ErrorCode.QPACK_DECOMPRESSION_FAILED)
QPACK_ENCODER_STREAM_ERROR = int(ErrorCode.QPACK_ENCODER_STREAM_ERROR)
QPACK_DECODER_STREAM_ERROR = int(ErrorCode.QPACK_DECODER_STREAM_ERROR)

#: HTTP/2 frame types HTTP/3 reserves: receiving one is H3_FRAME_UNEXPECTED
#: (RFC 9114 section 7.2.8).
_RESERVED_FRAME_TYPES = frozenset((0x2, 0x6, 0x8, 0x9))
#: Control-stream frames read whole; the others are skipped as they arrive.
_WHOLE_CONTROL_FRAMES = frozenset((_SETTINGS, _MAX_PUSH_ID, _GOAWAY, _CANCEL_PUSH))
#: Largest SETTINGS frame accepted (a few dozen bytes in practice; the
#: control stream's data is credited at once, so it must be bounded).
MAX_SETTINGS_FRAME = 16 * 1024
#: The largest encoded field ls-qpack's encoder can write (see
#: :func:`_lsqpack_can_encode`).
QPACK_MAX_FIELD = 4096
#: Representation overhead of one literal field: the prefix byte and the two
#: length integers (at most a few bytes each at this size).
_FIELD_OVERHEAD = 8

_CONNECTION_SPECIFIC = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
    )
)
#: Regular fields whose value is checked (RFC 9114 sections 4.1.2, 4.2).
_CHECKED_FIELDS = _CONNECTION_SPECIFIC | {b"te", b"content-length"}
#: Any byte a field name may not contain (RFC 9114 section 4.2: lowercase,
#: visible ASCII; a colon only first, checked apart).
_BAD_NAME = re.compile(rb"[^\x21-\x40\x5b-\x7e]")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_WHITESPACE = b" \t"
#: One field that breaks none of those rules, as ``name NUL value``: a name
#: of lowercase visible ASCII with a colon only first, a value without NUL,
#: CR or LF and without surrounding whitespace.
_FIELD = (
    rb":?[\x21-\x39\x3b-\x40\x5b-\x7e]*\x00"
    rb"(?:[^\x00\r\n\t ](?:[^\x00\r\n]*[^\x00\r\n\t ])?)?"
)
#: A whole field section of such fields, joined by LF: one match checks
#: every byte of a section (with its count of LFs, which tells a NUL and an
#: LF hidden in one value from a separator); a section that fails it is read
#: field by field for the message.
_WELL_FORMED = re.compile(_FIELD + rb"(?:\n" + _FIELD + rb")*")
_join_field = b"\x00".join

#: What a field section is: its pseudo-headers allowed, and required.
_REQUEST, _RESPONSE, _TRAILERS, _PROMISE = range(4)
_REQUEST_PSEUDO = frozenset(
    (b":method", b":scheme", b":authority", b":path", b":protocol")
)
_PSEUDO: tuple[tuple[frozenset[bytes], frozenset[bytes]], ...] = (
    (_REQUEST_PSEUDO, frozenset((b":method", b":authority"))),
    (frozenset((b":status",)), frozenset((b":status",))),
    (frozenset(), frozenset()),
    (_REQUEST_PSEUDO - {b":protocol"},) * 2,
)


class _IdError(ProtocolError):
    error_code = ErrorCode.H3_ID_ERROR


def _lsqpack_can_encode(headers: Headers) -> bool:
    """Whether ls-qpack's encoder can write every field: it fails on a field
    whose representation exceeds 4096 bytes, and an encoder that failed once
    panics on its next use. Counted on the raw length (Huffman coding is used
    only when shorter), so a compressible field near the limit is sent as a
    literal too."""
    if len(b"".join(map(b"".join, headers))) + _FIELD_OVERHEAD <= QPACK_MAX_FIELD:
        return True  # every field is shorter than all of them
    return all(
        len(name) + len(value) + _FIELD_OVERHEAD <= QPACK_MAX_FIELD
        for name, value in headers
    )


def _qpack_int(value: int, prefix_bits: int, flags: int) -> bytes:
    """A QPACK prefixed integer (RFC 9204 section 4.1.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal_field_section(headers: Headers) -> bytes:
    """An encoded field section of literal field lines with literal names
    (RFC 9204 section 4.5.6), referencing no table: Required Insert Count 0,
    so the peer's decoder acknowledges nothing and our encoder's state is
    untouched."""
    out = bytearray(b"\x00\x00")
    for name, value in headers:
        out += _qpack_int(len(name), 3, 0x20)
        out += name
        out += _qpack_int(len(value), 7, 0x00)
        out += value
    return bytes(out)


def _check_fields(headers: Headers, kind: int) -> tuple[int | None, bytes | None]:
    """RFC 9114 section 4's rules for a field section of ``kind`` (qh3's
    ``validate_headers`` is not called: each rule is checked once, here):
    the bytes of names and values, pseudo-headers (allowed for the kind,
    required, each once, before the regular fields, ``:authority`` and
    ``:path`` not empty for http and https), connection-specific fields,
    ``te`` other than ``trailers`` outside a request, ``content-length`` and
    ``:status``. Returns the content-length and the ``:status``, if any."""
    joined = b"\n".join(map(_join_field, headers))
    if (
        _WELL_FORMED.fullmatch(joined) is None
        or joined.count(b"\n") != len(headers) - 1
    ):
        _check_field_bytes(headers)
    allowed, required = _PSEUDO[kind]
    pseudo: dict[bytes, bytes] = {}
    regular = False
    content_length: int | None = None
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                raise MessageError(
                    f"Pseudo-header {name!r} is not allowed after regular headers"
                )
            if name not in allowed:
                raise MessageError(f"Pseudo-header {name!r} is not valid")
            if name in pseudo:
                raise MessageError(f"Pseudo-header {name!r} is included twice")
            pseudo[name] = value
            continue
        regular = True
        if name not in _CHECKED_FIELDS:
            continue
        if name == b"content-length":
            try:
                content_length = int(value)
            except ValueError:
                content_length = -1
            if content_length < 0:
                raise MessageError("content-length is not a non-negative integer")
        elif name == b"te" and kind in (_REQUEST, _PROMISE):
            if value.lower() != b"trailers":
                raise MessageError("Header b'te' value is not trailers")
        else:
            raise MessageError(f"Header {name!r} is connection-specific")
    if not pseudo.keys() >= required:
        missing = sorted(required.difference(pseudo))
        raise MessageError(f"Pseudo-headers {missing} are missing")
    if pseudo.get(b":scheme") in (b"http", b"https"):
        if not pseudo.get(b":authority"):
            raise MessageError("Pseudo-header b':authority' cannot be empty")
        if not pseudo.get(b":path"):
            raise MessageError("Pseudo-header b':path' cannot be empty")
    status = pseudo.get(b":status")
    if status is not None:
        if len(status) != 3 or not status.isdigit():
            raise MessageError(f"Pseudo-header b':status' has invalid value {status!r}")
        if status == b"101":
            raise MessageError("Pseudo-header b':status' cannot be 101")
    return content_length, status


def _check_field_bytes(headers: Headers) -> None:
    """The first field whose name or value has a byte RFC 9114 section 4.2
    forbids, as a MessageError naming it (a section :data:`_WELL_FORMED`
    refused)."""
    for name, value in headers:
        if _BAD_NAME.search(name) or b":" in name[1:]:
            raise MessageError(f"Header {name!r} contains invalid characters")
        if _BAD_VALUE.search(value):
            raise MessageError(f"Header {name!r} value has forbidden characters")
        if value and (value[0] in _WHITESPACE or value[-1] in _WHITESPACE):
            raise MessageError(f"Header {name!r} value has surrounding whitespace")


def _pull_id(payload: bytes, name: str) -> int:
    """The one varint of a GOAWAY, CANCEL_PUSH or MAX_PUSH_ID payload."""
    buf = Buffer(data=payload)
    try:
        value = buf.pull_uint_var()
    except BufferReadError:
        raise FrameError(f"Could not parse {name} frame") from None
    if not buf.eof():
        raise FrameError(f"{name} frame has trailing data")
    return int(value)


class _H3Connection(H3Connection):
    """qh3's H3Connection with our SETTINGS and the checks it lacks."""

    def __init__(
        self,
        quic: _Qh3Connection,
        *,
        max_field_section_size: int,
        enable_connect_protocol: bool,
        enable_datagrams: bool,
        max_push_id: int | None,
        enable_webtransport: bool = False,
    ) -> None:
        self.tq_max_push_id = max_push_id
        #: Request streams this client sent HEAD on (their content-length is
        #: the GET's, with no body).
        self.tq_head_streams: set[int] = set()
        #: Streams whose response began with an interim (1xx) response.
        self.tq_interim: set[int] = set()
        #: stream ID -> [content-length, body bytes so far].
        self.tq_lengths: dict[int, list[int]] = {}
        #: GOAWAY and CANCEL_PUSH found on the peer's control stream.
        self.tq_events: list[H3Event] = []
        self.tq_last_goaway: int | None = None
        # the peer's control stream: unparsed bytes, the frame being read
        self._tq_control = bytearray()
        self._tq_frame_type: int | None = None
        self._tq_frame_left = 0
        self.tq_settings = {_MAX_FIELD_SECTION_SIZE: max_field_section_size}
        if enable_connect_protocol:
            self.tq_settings[_ENABLE_CONNECT_PROTOCOL] = 1
        if enable_datagrams:
            self.tq_settings[_H3_DATAGRAM] = 1
        if enable_webtransport:
            # draft-ietf-webtrans-http3-02 section 3.1: with extended CONNECT
            # and HTTP datagrams.
            self.tq_settings[_ENABLE_CONNECT_PROTOCOL] = 1
            self.tq_settings[_H3_DATAGRAM] = 1
            self.tq_settings[_ENABLE_WEBTRANSPORT] = 1
        super().__init__(quic, enable_webtransport=enable_webtransport)
        # The server driver answers 431 to a field section over our limit,
        # and refuses one over twice the limit before it is complete: the
        # decoder must take at least that much.
        limit = 2 * max_field_section_size + 4096
        if limit > self._max_field_section_size:
            self._max_field_section_size = limit
            self._max_encoded_field_section_size = limit * 4 + 32
            self._decoder = QpackDecoder(
                self._max_table_capacity,
                self._blocked_streams,
                max_field_section_size=limit,
            )

    def _init_connection(self) -> None:
        # qh3's client allows push IDs 0-8 whatever the application wants;
        # ours sends MAX_PUSH_ID only when the application takes pushes.
        self._max_push_id = self.tq_max_push_id if self._is_client else None
        super()._init_connection()

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        for setting in (_ENABLE_CONNECT_PROTOCOL, _H3_DATAGRAM, _ENABLE_WEBTRANSPORT):
            settings.pop(setting, None)
        settings.update(self.tq_settings)
        return settings

    def _encode_headers(self, stream_id: int, headers: Headers) -> bytes:
        if _lsqpack_can_encode(headers):
            return super()._encode_headers(stream_id, headers)
        return literal_field_section(headers)

    # -- unidirectional streams ---------------------------------------------------

    def _receive_stream_data_uni(
        self, stream: H3Stream, data: bytes, stream_ended: bool
    ) -> list[h3_events.H3Event]:
        if stream.stream_type is None:
            pending = bytes(stream.buffer) + data
            buf = Buffer(data=pending)
            try:
                stream_type = buf.pull_uint_var()
            except BufferReadError:
                stream_type = None
            if stream_type == _PUSH and not self._is_client:
                raise StreamCreationError("Clients must not open push streams")
            if stream_type == _CONTROL:
                if self._peer_control_stream_id is not None:
                    raise StreamCreationError("Only one control stream is allowed")
                self._peer_control_stream_id = stream.stream_id
                stream.stream_type = _CONTROL
                stream.buffer.clear()
                self._log_stream_type(stream_id=stream.stream_id, stream_type=_CONTROL)
                data = pending[buf.tell() :]
        if stream.stream_type == _CONTROL:
            if stream_ended:
                raise ClosedCriticalStream("Closing control stream is not allowed")
            self._receive_control(data)
            return []
        events = super()._receive_stream_data_uni(stream, data, stream_ended)
        if stream.stream_type == _PUSH and stream.push_id is not None:
            self._check_push_id(stream.push_id)
        if stream.receiving_ended and stream.stream_id in (
            self._peer_encoder_stream_id,
            self._peer_decoder_stream_id,
        ):
            raise ClosedCriticalStream("Closing a QPACK stream is not allowed")
        return events

    def _receive_control(self, data: bytes) -> None:
        """The peer's control stream, past its type: frame types checked as
        soon as their header arrives, unknown payloads skipped unbuffered."""
        pending = bytes(self._tq_control) + data if self._tq_control else data
        pos = 0
        while True:
            if self._tq_frame_type is None:
                buf = Buffer(data=pending[pos:])
                try:
                    frame_type = buf.pull_uint_var()
                    length = buf.pull_uint_var()
                except BufferReadError:
                    break
                pos += buf.tell()
                self._check_control_frame(frame_type, length)
                self._tq_frame_type = frame_type
                self._tq_frame_left = length
            frame_type = self._tq_frame_type
            left = self._tq_frame_left
            available = len(pending) - pos
            if frame_type in _WHOLE_CONTROL_FRAMES:
                if available < left:
                    break
                payload = pending[pos : pos + left]
                pos += left
                self._tq_frame_type = None
                self._control_frame(frame_type, payload)
            else:
                if available == 0 and left:
                    break
                take = min(left, available)
                pos += take
                self._tq_frame_left = left - take
                if self._tq_frame_left:
                    break
                self._tq_frame_type = None
        self._tq_control = bytearray(pending[pos:])

    def _check_control_frame(self, frame_type: int, length: int) -> None:
        if frame_type != _SETTINGS and not self._settings_received:
            raise MissingSettingsError("the first frame must be SETTINGS")
        if frame_type == _SETTINGS and self._settings_received:
            raise FrameUnexpected("SETTINGS have already been received")
        if frame_type == _MAX_PUSH_ID and self._is_client:
            raise FrameUnexpected("Servers must not send MAX_PUSH_ID")
        if (
            frame_type in (_DATA, _HEADERS, _PUSH_PROMISE)
            or frame_type in _RESERVED_FRAME_TYPES
        ):
            raise FrameUnexpected("Invalid frame type on control stream")
        if frame_type == _SETTINGS and length > MAX_SETTINGS_FRAME:
            raise FieldSectionTooLarge(f"SETTINGS frame of {length} bytes")
        if frame_type in (_GOAWAY, _CANCEL_PUSH, _MAX_PUSH_ID) and length > 8:
            raise FrameError(f"frame 0x{frame_type:x} of {length} bytes is too long")

    def _control_frame(self, frame_type: int, payload: bytes) -> None:
        if frame_type == _SETTINGS:
            try:
                super()._handle_control_frame(frame_type, payload)
            except BufferReadError:
                raise FrameError("Could not parse SETTINGS frame") from None
        elif frame_type == _MAX_PUSH_ID:
            max_push_id = _pull_id(payload, "MAX_PUSH_ID")
            if self._max_push_id is not None and max_push_id < self._max_push_id:
                raise _IdError("MAX_PUSH_ID reduced the maximum push ID")
            self._max_push_id = max_push_id
        elif frame_type == _GOAWAY:
            last_id = _pull_id(payload, "GOAWAY")
            if self._is_client and last_id % 4 != 0:
                raise _IdError("GOAWAY must carry a client-initiated bidi stream ID")
            if self.tq_last_goaway is not None and last_id > self.tq_last_goaway:
                raise _IdError("GOAWAY ID increased")
            self.tq_last_goaway = last_id
            self.tq_events.append(GoawayReceived(last_id))
        else:  # CANCEL_PUSH
            push_id = _pull_id(payload, "CANCEL_PUSH")
            # Only a push this endpoint allowed can be cancelled; trioquic's
            # server never promises one (RFC 9114 section 7.2.3).
            if not self._is_client or self._max_push_id is None:
                raise _IdError(f"CANCEL_PUSH for push {push_id}, never allowed")
            if push_id > self._max_push_id:
                raise _IdError(f"CANCEL_PUSH for push {push_id}, never allowed")
            self.tq_events.append(PushCancelled(push_id))

    def _check_push_id(self, push_id: int) -> None:
        if self._max_push_id is None or push_id > self._max_push_id:
            raise _IdError("Push ID exceeds the maximum push ID")

    # -- request and push streams -----------------------------------------------

    def _receive_request_or_push_data(
        self, stream: H3Stream, data: bytes, stream_ended: bool
    ) -> list[h3_events.H3Event]:
        if (
            stream_ended
            and data
            and not stream.blocked
            and stream.frame_type != _WEBTRANSPORT_STREAM
        ):
            # qh3 ignores what follows trailers in a read that ends the
            # stream; read the frames first, then the end, so a frame after
            # trailers is refused (RFC 9114 section 4.1).
            events = super()._receive_request_or_push_data(stream, data, False)
            if (
                stream.frame_size is None
                and not stream.buffer
                and not stream.blocked
                and stream.frame_type != _WEBTRANSPORT_STREAM
                and stream.headers_recv_state is not HeadersState.INITIAL
            ):
                # Whole frames after the headers: the end is what qh3 makes
                # of a bare one, carried by the last event (as _fold_end).
                stream.receiving_ended = True
                last = events[-1] if events else None
                if isinstance(last, h3_events.DataReceived | h3_events.HeadersReceived):
                    last.stream_ended = True
                else:
                    events.append(
                        h3_events.DataReceived(
                            data=b"",
                            push_id=stream.push_id,
                            stream_id=stream.stream_id,
                            stream_ended=True,
                        )
                    )
                return events
            return _fold_end(
                events, self._receive_request_or_push_data(stream, b"", True)
            )
        events = super()._receive_request_or_push_data(stream, data, stream_ended)
        if (
            not stream.receiving_ended
            or stream.blocked
            or stream.frame_type == _WEBTRANSPORT_STREAM
        ):
            return events
        if stream.buffer or stream.frame_size is not None:
            # RFC 9114 section 7.1
            raise FrameError("Frame is truncated by the end of the stream")
        if stream.headers_recv_state is HeadersState.INITIAL:
            self._message_ended_early(stream, events)
        return events

    def _message_ended_early(
        self, stream: H3Stream, events: list[h3_events.H3Event]
    ) -> None:
        """A request or push stream ended before its (final) headers."""
        stream.headers_recv_state = HeadersState.AFTER_TRAILERS  # nothing follows
        if not self._is_client:
            # The application never saw the request, so nothing would respond
            # (RFC 9114 section 4.1).
            stream.sending_ended = True
            with contextlib.suppress(QuicConnectionError, AssertionError):
                self._quic.reset_stream(stream.stream_id, H3_REQUEST_INCOMPLETE)
            return
        if stream.stream_id in self.tq_interim:
            raise MessageError("Interim response cannot end the stream")
        events.append(
            h3_events.DataReceived(
                data=b"",
                push_id=stream.push_id,
                stream_id=stream.stream_id,
                stream_ended=True,
            )
        )

    def _handle_request_or_push_frame(
        self,
        frame_type: int,
        frame_data: bytes | None,
        stream: H3Stream,
        stream_ended: bool,
        *,
        frame_offset: int = 0,
        frame_length: int | None = None,
    ) -> list[h3_events.H3Event]:
        if frame_type in _RESERVED_FRAME_TYPES:
            raise FrameUnexpected("Invalid frame type on request stream")
        if (
            frame_type == _PUSH_PROMISE
            and stream.push_id is None
            and self._is_client
            and frame_data is not None
        ):
            buf = Buffer(data=frame_data)
            try:
                push_id = buf.pull_uint_var()
            except BufferReadError:
                raise FrameError("Could not parse PUSH_PROMISE frame") from None
            self._check_push_id(push_id)
        if frame_type == _HEADERS:
            return [
                self._headers_frame(
                    stream, frame_data, stream_ended, frame_offset, frame_length
                )
            ]
        events = super()._handle_request_or_push_frame(
            frame_type,
            frame_data,
            stream,
            stream_ended,
            frame_offset=frame_offset,
            frame_length=frame_length,
        )
        for event in events:
            if isinstance(event, h3_events.PushPromiseReceived):
                _check_fields(event.headers, _PROMISE)
        return events

    def _headers_frame(
        self,
        stream: H3Stream,
        frame_data: bytes | None,
        stream_ended: bool,
        offset: int,
        length: int | None,
    ) -> h3_events.H3Event:
        """A HEADERS frame, as qh3's ``_handle_request_or_push_frame`` takes
        it (decoded, logged, the stream's state moved on, the same event),
        its fields checked once, by :func:`_check_fields` (not by qh3's
        ``validate_headers`` too); a response's interim headers are
        remembered, a final message's content-length counted against its
        body."""
        state = stream.headers_recv_state
        if state is HeadersState.AFTER_TRAILERS:
            raise FrameUnexpected("HEADERS frame is not allowed in this state")
        sid = stream.stream_id
        headers = self._decode_headers(sid, frame_data, offset=offset, length=length)
        if state is not HeadersState.INITIAL:
            _check_fields(headers, _TRAILERS)
            self._log_headers(stream, frame_data, length, headers)
            stream.headers_recv_state = HeadersState.AFTER_TRAILERS
            # Trailers end the message: the end of the stream is theirs.
            return h3_events.HeadersReceived(
                headers=headers,
                push_id=stream.push_id,
                stream_id=sid,
                stream_ended=stream_ended or stream.receiving_ended,
            )
        if self._is_client:
            content_length, status = _check_fields(headers, _RESPONSE)
            self._log_headers(stream, frame_data, length, headers)
            if status is not None and status < b"2":  # qh3: below 200
                if stream_ended:
                    # qh3 would take it as the final response.
                    raise MessageError("Interim response cannot end the stream")
                self.tq_interim.add(sid)
                return h3_events.InformationalHeadersReceived(
                    headers=headers, stream_id=sid
                )
        else:
            content_length, _ = _check_fields(headers, _REQUEST)
            self._log_headers(stream, frame_data, length, headers)
        stream.headers_recv_state = HeadersState.AFTER_HEADERS
        self.tq_interim.discard(sid)
        if content_length is not None and sid not in self.tq_head_streams:
            self.tq_lengths[sid] = [content_length, 0]
        self.tq_head_streams.discard(sid)
        return h3_events.HeadersReceived(
            headers=headers,
            push_id=stream.push_id,
            stream_id=sid,
            stream_ended=stream_ended,
        )

    def _log_headers(
        self,
        stream: H3Stream,
        frame_data: bytes | None,
        length: int | None,
        headers: Headers,
    ) -> None:
        """qh3's qlog event for a HEADERS frame, when a trace is written."""
        logger = self._quic_logger
        if logger is None:
            return
        if frame_data is None:
            length = stream.blocked_frame_size
        elif length is None:
            length = len(frame_data)
        logger.log_event(
            category="http",
            event="frame_parsed",
            data=logger.encode_http3_headers_frame(
                length=length or 0, headers=headers, stream_id=stream.stream_id
            ),
        )


def _fold_end(
    events: list[h3_events.H3Event], end: list[h3_events.H3Event]
) -> list[h3_events.H3Event]:
    """A stream's events, then those of its end: a bare end is carried by
    the last message event instead, as when both come in one read."""
    if (
        len(end) == 1
        and isinstance(end[0], h3_events.DataReceived)
        and not end[0].data
        and events
        and isinstance(events[-1], h3_events.DataReceived | h3_events.HeadersReceived)
    ):
        events[-1].stream_ended = True
        return events
    events.extend(end)
    return events


def _translate(exc: BaseException) -> H3ConnectionError | None:
    """The connection error for what qh3 raised on the peer's input; None for
    an exception that is not qh3's (cancellation, interrupts)."""
    if isinstance(exc, ProtocolError):
        return H3ConnectionError(int(exc.error_code), exc.reason_phrase)
    if isinstance(exc, BufferReadError):
        return H3ConnectionError(H3_FRAME_ERROR, "malformed frame")
    if isinstance(exc, HeaderTooLarge):
        return H3ConnectionError(int(ErrorCode.H3_EXCESSIVE_LOAD), str(exc))
    if isinstance(exc, DecompressionFailed | StreamBlocked):
        return H3ConnectionError(QPACK_DECOMPRESSION_FAILED, "QPACK decoding failed")
    if isinstance(exc, EncoderStreamError):
        return H3ConnectionError(QPACK_ENCODER_STREAM_ERROR, "QPACK encoder stream")
    if isinstance(exc, DecoderStreamError):
        return H3ConnectionError(QPACK_DECODER_STREAM_ERROR, "QPACK decoder stream")
    if isinstance(exc, Exception) or type(exc).__name__ == "PanicException":
        # qh3 asserts where it should raise, and its Rust parts panic: the
        # connection cannot go on, but the peer is told so.
        return H3ConnectionError(
            H3_INTERNAL_ERROR, f"HTTP/3 engine failure: {type(exc).__name__}"
        )
    return None


class Qh3H3Engine(PeerSettingsQueries):
    """One HTTP/3 connection's state machine over qh3 (a
    :class:`~trioquic._engine.H3Engine`).

    Synchronous: the driver calls it from its hooks and its tasks, then wakes
    the IoWorker to flush. qh3's ``H3Connection`` is made by :meth:`start`
    (making it opens the control streams).
    """

    def __init__(
        self,
        quic: _Qh3Connection,
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
        if self._h3 is None:
            self.start()  # the driver starts first; never lose an event
        h3 = self.h3
        for event in events:
            if h3._is_done:
                break
            try:
                self._handle_one(h3, event, out)
            except H3ConnectionError:
                h3._is_done = True
                raise
            except BaseException as exc:
                error = _translate(exc)
                if error is None:
                    raise
                h3._is_done = True
                raise error from None
        return out

    def _handle_one(
        self, h3: _H3Connection, event: QuicEvent, out: list[H3Event]
    ) -> None:
        """One transport event through ``H3Connection.handle_event``'s
        dispatch, without its error handling (it would close the QUIC
        connection behind the IoWorker's back). ``_receive_stream_data``
        reads only ``stream_id``, ``data`` and ``end_stream``, which
        trioquic's event has too."""
        if self._wt_streams:
            sid = getattr(event, "stream_id", None)
            if (
                sid is not None
                and sid in self._wt_streams
                and self._handle_webtransport(h3, event, sid, out)
            ):
                return
        if isinstance(event, StreamDataReceived):
            results = h3._receive_stream_data(event)  # type: ignore[arg-type]
            if h3.tq_events:
                out.extend(h3.tq_events)
                h3.tq_events.clear()
            self._convert(h3, results, out)
        elif isinstance(event, DatagramReceived):
            # RFC 9297 section 2.1: the quarter stream ID, then the payload.
            buf = Buffer(data=event.data)
            try:
                quarter = buf.pull_uint_var()
            except BufferReadError:
                raise H3ConnectionError(
                    H3_DATAGRAM_ERROR, "Could not parse quarter stream ID"
                ) from None
            out.append(H3DatagramReceived(quarter * 4, event.data[buf.tell() :]))
        elif isinstance(event, StreamResetReceived):
            sid = event.stream_id
            h3._receive_stream_reset(sid, event.error_code)
            h3.tq_lengths.pop(sid, None)
            h3.tq_interim.discard(sid)
            if sid % 4 == 0 or sid in self._push_streams:
                out.append(RequestStreamReset(sid, event.error_code))
        elif isinstance(event, StopSendingReceived):
            h3._receive_stop_sending(event.stream_id, event.error_code)
            if event.stream_id % 4 == 0:
                out.append(RequestStopSending(event.stream_id, event.error_code))

    def _convert(
        self,
        h3: _H3Connection,
        results: list[h3_events.H3Event],
        out: list[H3Event],
    ) -> None:
        lengths = h3.tq_lengths
        for result in results:
            if isinstance(result, h3_events.DataReceived):
                sid = result.stream_id
                if result.push_id is not None:
                    self._push_stream(sid, result.push_id, out)
                data = result.data
                if type(data) is not bytes:
                    data = bytes(data)
                if lengths:
                    self._count_body(lengths, sid, len(data), result.stream_ended)
                out.append(DataReceived(sid, data, result.stream_ended))
            elif isinstance(
                result,
                h3_events.HeadersReceived | h3_events.InformationalHeadersReceived,
            ):
                sid = result.stream_id
                ended = getattr(result, "stream_ended", False)
                push_id = getattr(result, "push_id", None)
                if push_id is not None:
                    self._push_stream(sid, push_id, out)
                if ended and lengths:
                    self._count_body(lengths, sid, 0, True)
                out.append(HeadersReceived(sid, result.headers, ended))
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
                        bytes(result.data),
                        result.stream_ended,
                    )
                )
                if result.stream_ended:
                    h3._stream.pop(result.stream_id, None)

    @staticmethod
    def _count_body(
        lengths: dict[int, list[int]], stream_id: int, size: int, ended: bool
    ) -> None:
        """A body's size against its content-length (RFC 9114 section 4.1.2)."""
        entry = lengths.get(stream_id)
        if entry is None:
            return
        entry[1] += size
        if ended:
            del lengths[stream_id]
            if entry[0] != entry[1]:
                raise MessageError("content-length does not match data size")

    def _handle_webtransport(
        self, h3: _H3Connection, event: QuicEvent, stream_id: int, out: list[H3Event]
    ) -> bool:
        """An event of a known WebTransport stream; False to let qh3's parser
        have it (a peer's stream, past its signal)."""
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
            quic.max_concurrent_uni_streams
            if unidirectional
            else quic.max_concurrent_bidi_streams
        )
        if stream_id // 4 >= limit:
            return None
        try:
            stream_id = self.h3.create_webtransport_stream(
                session_id, is_unidirectional=unidirectional
            )
        except (QuicConnectionError, AssertionError) as exc:
            raise StreamStateError(
                f"cannot open a WebTransport stream: {exc}"
            ) from None
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
        h3 = self.h3
        stream = h3._stream.get(stream_id)
        if (
            end_stream
            and not self.is_client
            and (stream is None or stream.headers_send_state is HeadersState.INITIAL)
            and dict(headers).get(b":status", b"").startswith(b"1")
        ):
            raise StreamStateError(
                f"cannot send HEADERS on stream {stream_id}: "
                "an interim response cannot end the stream"
            )
        if self.is_client and (b":method", b"HEAD") in headers:
            h3.tq_head_streams.add(stream_id)
        try:
            h3.send_headers(stream_id, headers, end_stream)
        except ProtocolError as exc:  # FrameUnexpected: not in this state
            raise StreamStateError(
                f"cannot send HEADERS on stream {stream_id}: {exc.reason_phrase}"
            ) from None
        except (QuicConnectionError, AssertionError) as exc:
            raise StreamStateError(
                f"cannot send HEADERS on stream {stream_id}: {exc}"
            ) from None

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        h3 = self.h3
        stream = h3._stream.get(stream_id)
        if stream is not None and stream.sending_ended:
            raise StreamStateError(
                f"cannot send DATA on stream {stream_id}: it was already ended"
            )
        try:
            h3.send_data(stream_id, data, end_stream)
        except ProtocolError as exc:
            raise StreamStateError(
                f"cannot send DATA on stream {stream_id}: {exc.reason_phrase}"
            ) from None
        except (QuicConnectionError, AssertionError) as exc:
            raise StreamStateError(
                f"cannot send DATA on stream {stream_id}: {exc}"
            ) from None

    def _send_control(self, frame_type: int, value: int) -> None:
        control = self.h3._local_control_stream_id
        if control is None:
            raise StreamStateError("HTTP/3 has no control stream yet")
        try:
            self._transport.send_stream_data(
                control, encode_frame(frame_type, encode_uint_var(value))
            )
        except (QuicConnectionError, AssertionError) as exc:
            raise StreamStateError(
                f"cannot write on the control stream: {exc}"
            ) from None

    def send_goaway(self, last_id: int) -> None:
        """Send GOAWAY; a later one may only lower the ID."""
        if self.goaway_sent is not None and last_id >= self.goaway_sent:
            return
        self._send_control(_GOAWAY, last_id)
        self.goaway_sent = last_id

    def cancel_push(self, push_id: int) -> None:
        """Client: ask the server not to send a promised push (CANCEL_PUSH)."""
        self._send_control(_CANCEL_PUSH, push_id)

    def abandon(self, stream_id: int) -> None:
        """Forget a request stream's parsing state (it was reset or abandoned)."""
        if self._h3 is None:
            return
        self._h3.tq_lengths.pop(stream_id, None)
        stream = self._h3._stream.get(stream_id)
        if stream is not None:
            stream.buffer.clear()


#: The qh3 methods this module overrides, wraps, calls or whose behaviour it
#: relies on: ``module:Class.method`` -> (the first 16 hex digits of the
#: SHA-256 of its dedented source, as written against qh3 2.1.0; why).
#: ``tests/test_qh3_h3_engine.py`` fails, naming the method, when an
#: installed qh3 differs. Private attributes read or set: ``H3Connection``'s
#: ``_stream``, ``_is_done``, ``_quic``, ``_decoder``, ``_max_table_capacity``,
#: ``_blocked_streams``, ``_max_field_section_size``,
#: ``_max_encoded_field_section_size``, ``_max_push_id``, ``_settings_received``,
#: ``_local_control_stream_id``, ``_peer_control_stream_id``,
#: ``_peer_encoder_stream_id``, ``_peer_decoder_stream_id``,
#: ``_log_stream_type``, ``_quic_logger``; ``H3Stream``'s ``buffer``,
#: ``blocked``, ``blocked_frame_size``, ``frame_type``, ``frame_size``,
#: ``headers_recv_state``,
#: ``headers_send_state``, ``receiving_ended``, ``sending_ended``,
#: ``stream_type``, ``push_id``.
H3_PINS: dict[str, tuple[str, str]] = {
    "qh3.h3.connection:H3Connection.__init__": (
        "c9c77bc12b2c91e6",
        "attributes set before it (our SETTINGS) and after it (decoder limit)",
    ),
    "qh3.h3.connection:H3Connection._init_connection": (
        "80c43caaf2bfb54d",
        "extended: MAX_PUSH_ID only when the application takes pushes",
    ),
    "qh3.h3.connection:H3Connection._get_local_settings": (
        "98b08580917fdfa6",
        "extended: our SETTINGS",
    ),
    "qh3.h3.connection:H3Connection.handle_event": (
        "a23b8d3067676163",
        "Qh3H3Engine._handle_one copies its dispatch, minus its closing",
    ),
    "qh3.h3.connection:H3Connection._receive_stream_data": (
        "6377a77b2f29bea4",
        "called with trioquic's StreamDataReceived (stream_id, data, end_stream)",
    ),
    "qh3.h3.connection:H3Connection._receive_stream_data_uni": (
        "3e5b2fd6336bd872",
        "wrapped: the control stream parsed here; push and QPACK stream checks",
    ),
    "qh3.h3.connection:H3Connection._receive_request_or_push_data": (
        "ff39862d589ee859",
        "wrapped: truncation, early end, frames after trailers (reads its "
        "buffer, frame_type and frame_size after it)",
    ),
    "qh3.h3.connection:H3Connection._handle_request_or_push_frame": (
        "1f7f711069ac40d6",
        "wrapped: reserved frames, push IDs, push promises' fields; HEADERS "
        "taken here as it takes them (its validate_headers not called)",
    ),
    "qh3.h3.connection:H3Connection._handle_control_frame": (
        "e37b7df47bd9ac86",
        "called for SETTINGS only (parse, validate, apply to the QPACK encoder)",
    ),
    "qh3.h3.connection:H3Connection._receive_stream_reset": (
        "47c1c2b54b84782c",
        "called: critical streams, per-stream state dropped",
    ),
    "qh3.h3.connection:H3Connection._receive_stop_sending": (
        "0ba7077a1504d6d2",
        "called: critical streams, per-stream state dropped",
    ),
    "qh3.h3.connection:H3Connection._receive_qpack_data": (
        "278048bed87a278f",
        "resumes blocked streams through the wrapped methods; its QPACK errors",
    ),
    "qh3.h3.connection:H3Connection._decode_headers": (
        "b0184222c36a0f71",
        "its QPACK errors (QPACK_DECOMPRESSION_FAILED, H3_EXCESSIVE_LOAD)",
    ),
    "qh3.h3.connection:H3Connection._encode_headers": (
        "ea5c73e2c97db7ed",
        "extended: a section ls-qpack cannot encode is written as literals",
    ),
    "qh3.h3.connection:H3Connection.send_headers": (
        "37e04b6232a044d1",
        "refusals as FrameUnexpected; interim responses",
    ),
    "qh3.h3.connection:H3Connection.send_data": (
        "2ac413feea8bb6f9",
        "refusals as FrameUnexpected",
    ),
    "qh3.h3.connection:H3Connection.create_webtransport_stream": (
        "edd40217df8571c7",
        "opens our WebTransport streams",
    ),
}
