"""HTTP/2 over one TLS (or prior-knowledge plain) connection, with h2 doing
the protocol.

One task reads the connection and hands h2's events to the requests; each
request's handler runs in its own task in the connection's nursery; one
writer task sends what h2 has queued, so frames of many streams go out in
one write. Flow control: a request body is credited back (WINDOW_UPDATE) as
the handler reads it, so at most ``body_buffer_size`` bytes wait per
stream; a response waits for the client's window, and for the writer when
``send_buffer_size`` bytes are queued.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import trio

from .._engine import Headers
from ._request import HOP_BY_HOP, TcpRequest, gone, logger, run_handler

if TYPE_CHECKING:
    from ._server import ServerState

_CANCEL = h2.errors.ErrorCodes.CANCEL
_INTERNAL_ERROR = h2.errors.ErrorCodes.INTERNAL_ERROR
_REFUSED_STREAM = h2.errors.ErrorCodes.REFUSED_STREAM
_NO_ERROR = h2.errors.ErrorCodes.NO_ERROR
_MAX_STREAM_ID = 2**31 - 1
_STREAM_GONE = (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError)


class H2Request(TcpRequest):
    """A request over HTTP/2."""

    http_version = "2"

    def __init__(self, connection: H2Connection, stream_id: int, *args: Any) -> None:
        super().__init__(*args)
        self._connection = connection
        self.stream_id = stream_id
        self._send_wake: trio.Event | None = None
        self._reset = False

    def _consumed(self, size: int) -> None:
        conn = self._connection
        if not self._reset:
            conn.acknowledge(size, self.stream_id)

    def _wake_sender(self) -> None:
        wake = self._send_wake
        if wake is not None:
            self._send_wake = None
            wake.set()

    def _abort(self) -> None:
        super()._abort()
        self._wake_sender()

    def _check_send(self) -> None:
        if self._aborted or self._reset:
            raise gone()
        if self._connection.broken:
            self._abort()
            raise gone()

    def _head(self, status: int, fields: Headers) -> list[tuple[bytes, bytes]]:
        head = [(b":status", b"%d" % status)]
        head += [(n, v) for n, v in fields if n not in HOP_BY_HOP]
        alt_svc = self._connection.server.alt_svc
        if (
            status >= 200
            and alt_svc is not None
            and not any(n == b"alt-svc" for n, _ in fields)
        ):
            head.append((b"alt-svc", alt_svc))
        return head

    async def _send_informational(self, status: int, fields: Headers) -> None:
        await trio.lowlevel.checkpoint()
        self._check_send()
        self._connection.send_headers(self, self._head(status, fields), False)

    async def _send_response(
        self, status: int, fields: Headers, body: bytes, trailers: Headers | None
    ) -> None:
        await trio.lowlevel.checkpoint()
        self._check_send()
        conn = self._connection
        head = self._head(status, fields)
        if self.method == "HEAD" or status in (204, 304):
            body = b""
        elif not any(n == b"content-length" for n, _ in head):
            head.append((b"content-length", b"%d" % len(body)))
        conn.send_headers(self, head, not body and not trailers)
        if body:
            await conn.send_data(self, body, not trailers)
        if trailers:
            self._check_send()
            conn.send_headers(self, trailers, True)
        self.response_complete = True

    async def _begin_stream(self, status: int, fields: Headers) -> None:
        await trio.lowlevel.checkpoint()
        self._check_send()
        self._connection.send_headers(self, self._head(status, fields), False)

    async def _send_data(self, data: bytes) -> None:
        if self.method == "HEAD":
            await trio.lowlevel.checkpoint()
            return
        await self._connection.send_data(self, data, False)

    async def _end_stream(self, trailers: Headers | None) -> None:
        conn = self._connection
        if trailers:
            await trio.lowlevel.checkpoint()
            self._check_send()
            conn.send_headers(self, trailers, True)
        else:
            await conn.send_data(self, b"", True)
        self.response_complete = True

    async def _fail(self) -> None:
        if not self.headers_sent and not self._reset and not self._connection.broken:
            self.headers_sent = True
            try:
                await self._send_response(
                    self._fail_status, [(b"content-length", b"0")], b"", None
                )
                return
            except trio.BrokenResourceError:
                pass
        self.reset(_INTERNAL_ERROR)

    def reset(self, error_code: int = _CANCEL) -> None:
        """Abandon this request: RST_STREAM with ``error_code`` (an HTTP/2
        error code, default CANCEL). Idempotent."""
        if self._reset:
            return
        self._reset = True
        self.response_complete = True
        self._connection.reset_stream(self.stream_id, error_code)
        self._wake_sender()


class H2Connection:
    """Serves the requests of one HTTP/2 connection."""

    def __init__(
        self,
        server: ServerState,
        stream: trio.abc.Stream,
        scheme: str,
        peer: Any,
        local: Any,
        initial: bytes = b"",
    ) -> None:
        self.server = server
        self.stream = stream
        self.scheme = scheme
        self.peer = peer
        self.local = local
        settings = server.settings
        self._settings = settings
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=True
        )
        h = self.h2 = h2.connection.H2Connection(config=config)
        codes = h2.settings.SettingCodes
        local_settings: dict[h2.settings.SettingCodes, int] = {
            codes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
            codes.INITIAL_WINDOW_SIZE: settings.body_buffer_size,
            codes.MAX_HEADER_LIST_SIZE: settings.max_header_size,
        }
        if settings.enable_connect_protocol:
            local_settings[codes.ENABLE_CONNECT_PROTOCOL] = 1
        h.local_settings = h2.settings.Settings(
            client=False, initial_values=local_settings
        )
        h.initiate_connection()
        # The connection window: room for several streams' buffers.
        h.increment_flow_control_window(4 * settings.body_buffer_size)
        self._decoder_limit = 2 * settings.max_header_size + 4096
        h.decoder.max_header_list_size = self._decoder_limit
        self._initial = initial
        self.requests: dict[int, H2Request] = {}
        self.broken = False
        self.closing = False
        self._goaway_last = _MAX_STREAM_ID
        self._write_wake = trio.Event()
        self._written = trio.Event()
        self._queued = 0
        self._nursery: trio.Nursery | None = None
        self._read_scope: trio.CancelScope | None = None
        self._finishing = False
        self._goaway_queued = False
        #: The socket failed or the client closed it: nothing more is sent.
        self.stream_failed = False

    # -- life ------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Graceful close: requests already received finish, new streams
        are refused (REFUSED_STREAM: the client may retry them elsewhere),
        and once the last request is answered the connection sends GOAWAY
        (NO_ERROR, the last stream it processed) and closes.

        The GOAWAY waits for the requests in flight rather than opening the
        drain as RFC 9113 section 6.8 suggests: httpx's HTTP/2 client
        (httpcore) fails every stream still in flight on any GOAWAY, even
        those the GOAWAY says will be answered."""
        if self.closing:
            return
        self.closing = True
        self._goaway_last = self.h2.highest_inbound_stream_id
        self._on_idle()

    def _on_idle(self) -> None:
        """No request is in progress: the keep-alive timeout runs (or, when
        shutting down, the connection ends)."""
        scope = self._read_scope
        if scope is None or self.requests:
            return
        if self.closing:
            scope.cancel()
        else:
            scope.deadline = trio.current_time() + self._settings.keep_alive_timeout

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._writer)
            try:
                await self._reader()
            finally:
                # Nothing more is read: the handlers still running end (the
                # connection is over for them), the writer sends what is
                # queued and the final GOAWAY, then the nursery is done.
                self.broken = True
                for request in list(self.requests.values()):
                    request._abort()
                    if request._scope is not None:
                        request._scope.cancel()
                self._finishing = True
                self.wake_writer()

    async def _reader(self) -> None:
        h = self.h2
        settings = self._settings
        data = self._initial
        self._initial = b""
        while True:
            if not data:
                if self.closing and not self.requests:
                    return
                with trio.CancelScope() as scope:
                    self._read_scope = scope
                    if not self.requests:
                        scope.deadline = (
                            trio.current_time() + settings.keep_alive_timeout
                        )
                    data = await self._receive()
                self._read_scope = None
                if scope.cancelled_caught:
                    return
                if not data:
                    self.stream_failed = True
                    return
            try:
                events = h.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                # h2 queued a GOAWAY with the error: that one is the last.
                logger.debug("trioquic.tcp: HTTP/2 protocol error: %s", exc)
                self._goaway_queued = True
                return
            data = b""
            for event in events:
                if self._dispatch(event):
                    self.wake_writer()
                    return
            self.wake_writer()

    async def _receive(self) -> bytes:
        try:
            return bytes(await self.stream.receive_some(self._settings.read_size))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    def _dispatch(self, event: h2.events.Event) -> bool:
        """Handle one event; True when the connection is over."""
        if isinstance(event, h2.events.DataReceived):
            sid = event.stream_id
            request = self.requests.get(sid)
            size = event.flow_controlled_length or 0
            data = event.data or b""
            if request is None or request.response_complete or request._aborted:
                self.acknowledge(size, sid)
                return False
            padding = size - len(data)
            if padding:
                self.acknowledge(padding, sid)
            request._feed(data)
            limit = self._settings.max_request_body_size
            if limit is not None and request._body_received > limit:
                request._fail_body(
                    413, trio.BrokenResourceError("the request body is too large")
                )
                if request.headers_sent:
                    request.reset(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            return False
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
            return False
        if isinstance(event, h2.events.StreamEnded):
            request = self.requests.get(event.stream_id)
            if request is not None:
                request._feed_end()
            return False
        if isinstance(event, h2.events.TrailersReceived):
            request = self.requests.get(event.stream_id)
            if request is not None:
                request._trailers = list(event.headers or [])
            return False
        if isinstance(event, h2.events.StreamReset):
            request = self.requests.get(event.stream_id)
            if request is not None:
                request._reset = True
                request._abort()
            return False
        if isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                request = self.requests.get(event.stream_id)
                if request is not None:
                    request._wake_sender()
            else:
                self._wake_all_senders()
            return False
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self._wake_all_senders()
            return False
        if isinstance(event, h2.events.SettingsAcknowledged):
            # h2 sets the decoder's limit to the advertised one: keep room
            # to answer 431 instead of failing the whole connection.
            self.h2.decoder.max_header_list_size = self._decoder_limit
            return False
        return bool(isinstance(event, h2.events.ConnectionTerminated))

    def _wake_all_senders(self) -> None:
        for request in self.requests.values():
            request._wake_sender()

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        assert sid is not None
        raw = event.headers or []
        if self.closing and sid > self._goaway_last:
            self.reset_stream(sid, _REFUSED_STREAM)
            return
        pseudo: dict[bytes, bytes] = {}
        headers: Headers = []
        size = 0
        for name, value in raw:
            name_b = bytes(name)
            value_b = bytes(value)
            size += len(name_b) + len(value_b) + 32
            if name_b.startswith(b":"):
                pseudo[name_b] = value_b
            else:
                headers.append((name_b, value_b))
        if size > self._settings.max_header_size:
            self._simple(sid, 431, event.stream_ended is None)
            return
        protocol = pseudo.get(b":protocol")
        authority = pseudo.get(b":authority")
        if authority is None:
            for name, value in headers:
                if name == b"host":
                    authority = value
                    break
        request = H2Request(
            self,
            sid,
            pseudo.get(b":method", b"").decode("latin-1"),
            pseudo.get(b":scheme", self.scheme.encode()).decode("latin-1"),
            (authority or b"").decode("latin-1"),
            pseudo.get(b":path", b"").decode("latin-1"),
            protocol.decode("latin-1") if protocol is not None else None,
            headers,
            self.peer,
            self.local,
        )
        self.requests[sid] = request
        assert self._nursery is not None
        self._nursery.start_soon(self._serve, request, name=self.server.handler)

    def _simple(self, sid: int, status: int, body_open: bool) -> None:
        try:
            self.h2.send_headers(
                sid, [(b":status", b"%d" % status), (b"content-length", b"0")], True
            )
            if body_open:
                self.h2.reset_stream(sid, _NO_ERROR)
        except _STREAM_GONE:
            pass

    async def _serve(self, request: H2Request) -> None:
        try:
            await run_handler(self.server.handler, request)
        finally:
            sid = request.stream_id
            if not request.response_complete:
                request.reset(_INTERNAL_ERROR)
            elif not request._body_done and not request._reset and not self.broken:
                # The response is complete: the rest of the body is not
                # needed (RFC 9113 section 8.1).
                request._reset = True
                self.reset_stream(sid, _NO_ERROR)
            if request._buffered and not request._reset:
                self.acknowledge(request._buffered, sid)
            request._chunks.clear()
            del self.requests[sid]
            self.wake_writer()
            self._on_idle()

    # -- sending ---------------------------------------------------------------------

    def acknowledge(self, size: int, stream_id: int) -> None:
        if size and not self.broken:
            with contextlib.suppress(*_STREAM_GONE):
                self.h2.acknowledge_received_data(size, stream_id)
            self.wake_writer()

    def reset_stream(self, stream_id: int, code: int) -> None:
        if self.broken:
            return
        with contextlib.suppress(*_STREAM_GONE):
            self.h2.reset_stream(stream_id, code)
        self.wake_writer()

    def send_headers(
        self, request: H2Request, headers: list[tuple[bytes, bytes]], end: bool
    ) -> None:
        try:
            self.h2.send_headers(request.stream_id, headers, end_stream=end)
        except h2.exceptions.StreamClosedError as exc:
            request._abort()
            raise gone() from exc
        except h2.exceptions.ProtocolError as exc:
            raise ValueError(f"cannot send these HTTP/2 headers: {exc}") from exc
        if end:
            request.response_complete = True
        self.wake_writer()

    async def send_data(self, request: H2Request, data: bytes, end: bool) -> None:
        """Send body bytes as the client's window allows; waits while
        ``send_buffer_size`` bytes are queued. Not cancel-safe."""
        await trio.lowlevel.checkpoint_if_cancelled()
        h = self.h2
        sid = request.stream_id
        view = memoryview(data)
        while True:
            request._check_send()
            if not view:
                if end:
                    self._send_frame(request, b"", True)
                break
            try:
                window = h.local_flow_control_window(sid)
            except h2.exceptions.StreamClosedError as exc:
                request._abort()
                raise gone() from exc
            if window <= 0:
                wake = request._send_wake = trio.Event()
                await wake.wait()
                continue
            size = min(window, h.max_outbound_frame_size, len(view))
            chunk = bytes(view[:size])
            view = view[size:]
            self._send_frame(request, chunk, end and not view)
            if self._queued >= self._settings.send_buffer_size:
                await self._written.wait()
            if not view:
                break
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _send_frame(self, request: H2Request, chunk: bytes, end: bool) -> None:
        try:
            self.h2.send_data(request.stream_id, chunk, end_stream=end)
        except h2.exceptions.StreamClosedError as exc:
            request._abort()
            raise gone() from exc
        self._queued += len(chunk)
        if end:
            request.response_complete = True
        self.wake_writer()

    def wake_writer(self) -> None:
        self._write_wake.set()

    async def _writer(self) -> None:
        h = self.h2
        stream = self.stream
        while True:
            await self._write_wake.wait()
            self._write_wake = trio.Event()
            finishing = self._finishing
            if finishing and not self.stream_failed and not self._goaway_queued:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    h.close_connection(
                        last_stream_id=min(
                            self._goaway_last, h.highest_inbound_stream_id
                        )
                    )
            data = h.data_to_send()
            self._queued = 0
            if data and not self.stream_failed:
                try:
                    with trio.move_on_after(1 if finishing else float("inf")):
                        await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.stream_failed = True
                    if not finishing:
                        self.broken = True
                        for request in list(self.requests.values()):
                            request._abort()
                        assert self._nursery is not None
                        self._nursery.cancel_scope.cancel()
            written, self._written = self._written, trio.Event()
            written.set()
            if finishing or self.stream_failed:
                return
