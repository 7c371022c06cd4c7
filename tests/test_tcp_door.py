"""The TCP front door (trioquic.tcp, serve_tcp, serve_http): HTTP/1.1 and
HTTP/2 on real sockets, with httpx, curl, and raw h11 / h2 / wsproto clients."""

from __future__ import annotations

import functools
import http
import logging
import shutil
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import h11
import httpx
import hypothesis
import hypothesis.strategies as st
import pytest
import trio
import wsproto
import wsproto.events
import wsproto.frame_protocol
from test_properties import examples
from wsproto.connection import Connection, ConnectionType

import trioquic
from trioquic import HttpRequest, QuicSettings, TcpSettings, serve_http, serve_tcp
from trioquic.h3 import Http3Settings, open_http3_client
from trioquic.tcp import alt_svc_value
from trioquic.testing import development_certificate

Handler = Callable[[HttpRequest], Awaitable[None]]


def tls_settings(**changes: Any) -> TcpSettings:
    cert = development_certificate()
    return TcpSettings(
        certificate=str(cert.certificate_path),
        private_key=str(cert.private_key_path),
        **changes,
    )


def client_context(alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(development_certificate().certificate_path)
    )
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


@asynccontextmanager
async def running(
    handler: Handler, settings: TcpSettings | None = None
) -> AsyncIterator[trioquic.TcpServer]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                serve_tcp,
                handler,
                0,
                host="127.0.0.1",
                settings=settings if settings is not None else tls_settings(),
            )
        )
        yield server
        nursery.cancel_scope.cancel()


class Stoppable:
    """A server run in a cancel scope of its own: ``stop()`` cancels it (a
    graceful shutdown) while the test goes on; ``stopped`` is set when
    ``serve_tcp`` has returned."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()
        self.stop_time: float | None = None

    def stop(self) -> None:
        self.stop_time = trio.current_time()
        self.scope.cancel()

    async def run(
        self,
        handler: Handler,
        settings: TcpSettings,
        *,
        task_status: trio.TaskStatus[trioquic.TcpServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with self.scope:
                await serve_tcp(
                    handler,
                    0,
                    host="127.0.0.1",
                    settings=settings,
                    task_status=task_status,
                )
        finally:
            self.stopped.set()


async def echo(request: HttpRequest) -> None:
    body = await request.read()
    names = b",".join(name for name, _ in request.headers)
    await request.respond(
        200,
        [
            ("content-type", "text/plain"),
            ("x-version", request.http_version),
            ("x-method", request.method),
            ("x-path", request.path),
            ("x-scheme", request.scheme),
            ("x-authority", request.authority),
            ("x-header-names", names),
        ],
        b"echo:" + body,
    )


# -- raw clients -------------------------------------------------------------------


async def open_raw(port: int, *, tls: bool, alpn: str = "http/1.1") -> trio.abc.Stream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    if not tls:
        return stream
    ssl_stream = trio.SSLStream(
        stream, client_context([alpn]), server_hostname="localhost"
    )
    await ssl_stream.do_handshake()
    return ssl_stream


async def receive_until_closed(stream: trio.abc.Stream, limit: float = 5) -> bytes:
    data = b""
    with trio.fail_after(limit):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


class H11Client:
    """A raw HTTP/1.1 client: h11 on one connection."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def send(self, *events: Any) -> None:
        data = b"".join(self.conn.send(event) or b"" for event in events)
        await self.stream.send_all(data)

    async def next_event(self) -> Any:
        with trio.fail_after(5):
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA:
                    self.conn.receive_data(await self.stream.receive_some(65536))
                    continue
                return event

    async def response(self) -> tuple[Any, bytes, list[Any]]:
        """(the final Response, its body, the 1xx responses before it)"""
        informational = []
        while True:
            event = await self.next_event()
            if isinstance(event, h11.InformationalResponse):
                informational.append(event)
                continue
            assert isinstance(event, h11.Response), event
            break
        body = b""
        while True:
            part = await self.next_event()
            if isinstance(part, h11.Data):
                body += part.data
            else:
                assert isinstance(part, h11.EndOfMessage), part
                self.trailers = list(part.headers)
                return event, body, informational


class H2Client:
    """A raw HTTP/2 client over one connection (h2)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.events: list[Any] = []
        self.closed = False

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def pump(self) -> list[Any]:
        data = await self.stream.receive_some(65536)
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        self.events.extend(events)
        await self.flush()
        return events

    async def wait_for(self, predicate: Callable[[Any], bool], limit: float = 5) -> Any:
        with trio.fail_after(limit):
            while True:
                for event in self.events:
                    if predicate(event):
                        self.events.remove(event)
                        return event
                if self.closed:
                    raise EOFError("connection closed")
                await self.pump()

    async def wait_settings(self) -> None:
        await self.flush()
        await self.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))

    async def request(
        self,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        *,
        end: bool = True,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers, end_stream=end and not body)
        if body:
            self.conn.send_data(sid, body, end_stream=end)
        await self.flush()
        return sid

    async def response(self, sid: int) -> tuple[dict[bytes, bytes], bytes]:
        event = await self.wait_for(
            lambda e: (
                isinstance(e, h2.events.ResponseReceived | h2.events.StreamReset)
                and e.stream_id == sid
            )
        )
        if isinstance(event, h2.events.StreamReset):
            raise ConnectionResetError(event.error_code)
        headers = dict(event.headers)
        body = b""
        while True:
            part = await self.wait_for(
                lambda e: (
                    isinstance(e, h2.events.DataReceived | h2.events.StreamEnded)
                    and e.stream_id == sid
                )
            )
            if isinstance(part, h2.events.StreamEnded):
                return headers, body
            body += part.data
            self.conn.acknowledge_received_data(part.flow_controlled_length, sid)
            await self.flush()


def get_headers(
    path: bytes, port: int, method: bytes = b"GET"
) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method),
        (b":scheme", b"https"),
        (b":authority", b"localhost:%d" % port),
        (b":path", path),
    ]


# -- basics ------------------------------------------------------------------------


@pytest.mark.parametrize("http2", [False, True])
async def test_httpx_over_tls_alt_svc_and_request_shape(http2: bool) -> None:
    settings = tls_settings(alt_svc=alt_svc_value(4433))
    async with running(echo, settings) as server:
        assert server.tls and server.port == server.addresses[0][1]
        async with httpx.AsyncClient(verify=client_context(), http2=http2) as client:
            url = f"https://127.0.0.1:{server.port}/a/b?c=d"
            for _ in range(3):  # one connection, several requests
                response = await client.post(url, content=b"payload")
                assert response.status_code == 200
                assert response.text == "echo:payload"
                assert response.headers["alt-svc"] == 'h3=":4433"; ma=86400'
                assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
                assert response.headers["x-version"] == ("2" if http2 else "1.1")
                assert response.headers["x-method"] == "POST"
                assert response.headers["x-path"] == "/a/b?c=d"
                assert response.headers["x-scheme"] == "https"
                assert response.headers["x-authority"] == f"127.0.0.1:{server.port}"
                # host is the authority, not a header; no pseudo-headers.
                names = response.headers["x-header-names"].split(",")
                assert "host" not in names and not any(n.startswith(":") for n in names)
            assert server.connection_count == 1


async def test_handler_sets_its_own_alt_svc() -> None:
    async def handler(request: HttpRequest) -> None:
        await request.respond(200, [("alt-svc", "clear")])

    async with (
        running(handler, tls_settings(alt_svc=alt_svc_value(443))) as server,
        httpx.AsyncClient(verify=client_context(), http2=True) as client,
    ):
        response = await client.get(f"https://127.0.0.1:{server.port}/")
        assert response.headers.get_list("alt-svc") == ["clear"]


async def test_plain_text_http11_and_h2_prior_knowledge() -> None:
    async with running(echo, TcpSettings(alt_svc=alt_svc_value(8443))) as server:
        assert not server.tls
        url = f"http://127.0.0.1:{server.port}/plain"
        async with httpx.AsyncClient() as client:
            response = await client.post(url, content=b"x")
            assert response.http_version == "HTTP/1.1"
            assert response.headers["x-scheme"] == "http"
            assert response.text == "echo:x"
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            response = await client.post(url, content=b"y")
            assert response.http_version == "HTTP/2"
            assert response.headers["x-version"] == "2"
            assert response.text == "echo:y"
            assert response.headers["alt-svc"] == 'h3=":8443"; ma=86400'


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("flag", ["--http1.1", "--http2"])
async def test_curl(flag: str) -> None:
    async with running(echo, tls_settings(alt_svc=alt_svc_value(4433))) as server:
        result = await trio.run_process(
            [
                "curl",
                "-sS",
                "-i",
                flag,
                "--cacert",
                str(development_certificate().certificate_path),
                "--resolve",
                f"localhost:{server.port}:127.0.0.1",
                "--data-binary",
                "from curl",
                f"https://localhost:{server.port}/curl",
            ],
            capture_stdout=True,
            capture_stderr=True,
        )
    out = result.stdout.decode()
    status_line = out.splitlines()[0]
    assert status_line.startswith("HTTP/2 200" if flag == "--http2" else "HTTP/1.1 200")
    assert 'alt-svc: h3=":4433"; ma=86400' in out.lower()
    assert out.endswith("echo:from curl")


# -- HTTP/1.1 details ----------------------------------------------------------------


async def test_http11_pipelining_and_keep_alive() -> None:
    seen: list[str] = []

    async def handler(request: HttpRequest) -> None:
        seen.append(request.path)
        await request.respond(200, body=request.path.encode())

    async with running(handler, TcpSettings()) as server:
        stream = await open_raw(server.port, tls=False)
        # Three requests in one write: answered in order, on one connection.
        await stream.send_all(
            b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3))
        )
        client = H11Client(stream)
        for i in range(3):
            # (the bytes went out above; this only moves h11's state along)
            client.conn.send(
                h11.Request(method="GET", target=f"/{i}", headers=[("host", "x")])
            )
            client.conn.send(h11.EndOfMessage())
            response, body, _ = await client.response()
            assert response.status_code == 200 and body == b"/%d" % i
            client.conn.start_next_cycle()
        # Still open for more.
        await client.send(
            h11.Request(method="GET", target="/again", headers=[("host", "x")]),
            h11.EndOfMessage(),
        )
        response, body, _ = await client.response()
        assert body == b"/again"
        assert seen == ["/0", "/1", "/2", "/again"]
        await stream.aclose()


async def test_http11_handler_may_close_the_connection() -> None:
    async def handler(request: HttpRequest) -> None:
        await request.respond(200, [("connection", "close")], b"bye")

    async with running(handler) as server:
        client = H11Client(await open_raw(server.port, tls=True))
        await client.send(
            h11.Request(method="GET", target="/", headers=[("host", "x")]),
            h11.EndOfMessage(),
        )
        response, body, _ = await client.response()
        assert body == b"bye" and (b"connection", b"close") in list(response.headers)
        assert await receive_until_closed(client.stream) == b""


async def test_http11_chunked_body_trailers_both_ways() -> None:
    async def handler(request: HttpRequest) -> None:
        chunks = [chunk async for chunk in request]
        assert request.trailers == [(b"x-sum", b"abc")]
        async with request.stream_response(200, [("x-kind", "streamed")]) as writer:
            for chunk in chunks:
                await writer.send(chunk.upper())
            writer.trailers = [("x-count", str(len(chunks)))]

    async with running(handler) as server:
        client = H11Client(await open_raw(server.port, tls=True))
        await client.send(
            h11.Request(
                method="POST",
                target="/up",
                headers=[
                    ("host", "x"),
                    ("transfer-encoding", "chunked"),
                    ("te", "trailers"),
                ],
            ),
            h11.Data(data=b"a"),
            h11.Data(data=b"b"),
            h11.Data(data=b"c"),
            h11.EndOfMessage(headers=[("x-sum", "abc")]),
        )
        response, body, _ = await client.response()
        assert response.status_code == 200
        assert (b"transfer-encoding", b"chunked") in list(response.headers)
        assert body == b"ABC"
        assert client.trailers == [(b"x-count", b"3")]


async def test_http11_100_continue_head_and_early_hints() -> None:
    async def handler(request: HttpRequest) -> None:
        await request.send_informational(103, [("link", "</style.css>; rel=preload")])
        body = await request.read()
        await request.respond(200, [("content-type", "text/plain")], b"got " + body)

    async with running(handler) as server:
        client = H11Client(await open_raw(server.port, tls=True))
        await client.send(
            h11.Request(
                method="POST",
                target="/",
                headers=[
                    ("host", "x"),
                    ("content-length", "4"),
                    ("expect", "100-continue"),
                ],
            )
        )
        # The body is held back until the server asks for it.
        first = await client.next_event()
        assert isinstance(first, h11.InformationalResponse)
        assert first.status_code == 103 and first.reason == b"Early Hints"
        second = await client.next_event()
        assert isinstance(second, h11.InformationalResponse)
        assert second.status_code == 100 and second.reason == b"Continue"
        await client.send(h11.Data(data=b"body"), h11.EndOfMessage())
        response, body, _ = await client.response()
        assert response.status_code == 200 and body == b"got body"
        client.conn.start_next_cycle()
        await client.send(
            h11.Request(method="HEAD", target="/", headers=[("host", "x")]),
            h11.EndOfMessage(),
        )
        response, body, informational = await client.response()
        assert [i.status_code for i in informational] == [103]
        assert response.status_code == 200 and body == b""
        assert dict(response.headers)[b"content-length"] == b"4"  # "got " + b""


# -- HTTP/2 details --------------------------------------------------------------------


async def test_h2_concurrent_streams_trailers_and_early_hints() -> None:
    release = trio.Event()
    all_in = trio.Event()
    active = 0

    async def handler(request: HttpRequest) -> None:
        nonlocal active
        active += 1
        if active == 11:
            all_in.set()
        if request.path == "/hint":
            await request.send_informational(103, [("link", "</a.js>; rel=preload")])
        await release.wait()
        body = await request.read()
        await request.respond(200, body=body, trailers=[("x-trailer", request.path)])
        active -= 1

    async with running(handler) as server:
        client = H2Client(await open_raw(server.port, tls=True, alpn="h2"))
        await client.wait_settings()
        sids = [
            await client.request(
                get_headers(b"/%d" % i, server.port, b"POST"), b"%d" % i
            )
            for i in range(10)
        ]
        hint = await client.request(get_headers(b"/hint", server.port))
        informational = await client.wait_for(
            lambda e: isinstance(e, h2.events.InformationalResponseReceived)
        )
        assert informational.stream_id == hint
        assert dict(informational.headers)[b":status"] == b"103"
        with trio.fail_after(5):
            await all_in.wait()  # all eleven handlers run at once
        release.set()
        for i, sid in enumerate(sids):
            headers, body = await client.response(sid)
            assert headers[b":status"] == b"200" and body == b"%d" % i
        trailers = [
            e for e in client.events if isinstance(e, h2.events.TrailersReceived)
        ]
        assert {dict(t.headers)[b"x-trailer"] for t in trailers} >= {b"/0", b"/9"}


async def test_h2_request_body_flow_control_follows_the_reader() -> None:
    buffer = 16 * 1024
    may_read = trio.Event()
    received = 0

    async def handler(request: HttpRequest) -> None:
        nonlocal received
        await may_read.wait()
        async for chunk in request:
            received += len(chunk)
        await request.respond(200, body=b"%d" % received)

    settings = tls_settings(body_buffer_size=buffer)
    async with running(handler, settings) as server:
        client = H2Client(await open_raw(server.port, tls=True, alpn="h2"))
        await client.wait_settings()
        sid = await client.request(get_headers(b"/up", server.port, b"POST"), end=False)
        assert client.conn.local_flow_control_window(sid) == buffer
        client.conn.send_data(sid, b"x" * buffer)
        await client.flush()
        # The handler does not read: no credit comes back.
        with trio.move_on_after(0.3):
            while True:
                await client.pump()
        assert client.conn.local_flow_control_window(sid) == 0
        may_read.set()
        await client.wait_for(
            lambda e: isinstance(e, h2.events.WindowUpdated) and e.stream_id == sid
        )
        assert client.conn.local_flow_control_window(sid) > 0
        client.conn.send_data(sid, b"y" * 100, end_stream=True)
        await client.flush()
        _, body = await client.response(sid)
        assert body == b"%d" % (buffer + 100)


async def test_h2_response_waits_for_the_clients_window() -> None:
    size = 200_000

    async def handler(request: HttpRequest) -> None:
        async with request.stream_response(200) as writer:
            await writer.send(b"z" * size)

    async with running(handler) as server:
        client = H2Client(await open_raw(server.port, tls=True, alpn="h2"))
        await client.wait_settings()
        sid = await client.request(get_headers(b"/big", server.port))
        # Without acknowledging, at most the initial window (65535) arrives.
        got = 0
        with trio.move_on_after(0.3):
            while True:
                for event in await client.pump():
                    if isinstance(event, h2.events.DataReceived):
                        got += len(event.data)
        assert 0 < got <= 65535
        total = got
        assert client.conn.remote_flow_control_window(sid) == 65535 - got
        # Credit given back: the rest comes.
        ended = False
        with trio.fail_after(5):
            while not ended:
                client.conn.acknowledge_received_data(got, sid)
                await client.flush()
                got = 0
                for event in await client.pump():
                    if isinstance(event, h2.events.DataReceived):
                        got += len(event.data)
                        total += len(event.data)
                    ended = ended or isinstance(event, h2.events.StreamEnded)
        assert total == size


# -- WebSockets ------------------------------------------------------------------------


async def websocket_echo(request: HttpRequest) -> None:
    assert request.method == "CONNECT" and request.protocol == "websocket"
    offered = dict(request.headers).get(b"sec-websocket-protocol")
    assert b"sec-websocket-key" not in dict(request.headers)
    ws = Connection(ConnectionType.SERVER)
    headers = [("sec-websocket-protocol", "chat")] if offered else []
    async with request.stream_response(200, headers) as writer:
        async for chunk in request:
            ws.receive_data(chunk)
            for event in ws.events():
                if isinstance(event, wsproto.events.Message):
                    await writer.send(ws.send(wsproto.events.Message(data=event.data)))
                elif isinstance(event, wsproto.events.CloseConnection):
                    await writer.send(ws.send(event.response()))
                    return


async def test_websocket_over_http11() -> None:
    async with running(websocket_echo) as server:
        stream = await open_raw(server.port, tls=True)
        ws = wsproto.WSConnection(ConnectionType.CLIENT)
        opening = ws.send(
            wsproto.events.Request(
                host="localhost", target="/ws", subprotocols=["chat"]
            )
        )
        # A first frame in the same write as the opening: the server must
        # deliver it after the 101 (h11's trailing data).
        early = wsproto.frame_protocol.FrameProtocol(True, []).send_data("early", True)
        await stream.send_all(opening + early)
        messages: list[Any] = []
        accepted = None
        with trio.fail_after(5):
            while len(messages) < 2:
                ws.receive_data(await stream.receive_some(65536))
                for event in ws.events():
                    if isinstance(event, wsproto.events.AcceptConnection):
                        accepted = event
                        await stream.send_all(
                            ws.send(wsproto.events.TextMessage(data="hello"))
                        )
                    elif isinstance(event, wsproto.events.TextMessage):
                        messages.append(event.data)
        assert accepted is not None and accepted.subprotocol == "chat"
        assert messages == ["early", "hello"]
        await stream.send_all(ws.send(wsproto.events.CloseConnection(code=1000)))
        with trio.fail_after(5):
            while ws.state is not wsproto.connection.ConnectionState.CLOSED:
                ws.receive_data(await stream.receive_some(65536) or None)
                list(ws.events())


async def test_websocket_bad_opening_gets_400() -> None:
    async with running(websocket_echo) as server:
        stream = await open_raw(server.port, tls=True)
        await stream.send_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        data = await receive_until_closed(stream)
        assert data.startswith(b"HTTP/1.1 400 ")


async def test_websocket_over_h2_extended_connect() -> None:
    async with running(websocket_echo) as server:
        client = H2Client(await open_raw(server.port, tls=True, alpn="h2"))
        await client.wait_settings()
        assert client.conn.remote_settings.enable_connect_protocol == 1
        sid = await client.request(
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":scheme", b"https"),
                (b":path", b"/ws"),
                (b":authority", b"localhost"),
                (b"sec-websocket-version", b"13"),
            ],
            end=False,
        )
        response = await client.wait_for(
            lambda e: isinstance(e, h2.events.ResponseReceived)
        )
        assert dict(response.headers)[b":status"] == b"200"
        frames = wsproto.frame_protocol.FrameProtocol(True, [])
        client.conn.send_data(sid, frames.send_data("over h2", True))
        await client.flush()
        data = await client.wait_for(lambda e: isinstance(e, h2.events.DataReceived))
        parser = wsproto.frame_protocol.FrameProtocol(True, [])
        parser.receive_bytes(data.data)
        frame = next(iter(parser.received_frames()))
        assert frame.payload == "over h2"
        # A close frame and the end of the stream: the server closes too.
        client.conn.acknowledge_received_data(data.flow_controlled_length, sid)
        client.conn.send_data(sid, frames.close(1000, "bye"), end_stream=True)
        await client.flush()
        ended = await client.wait_for(
            lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid
        )
        assert ended is not None
        closing = [e for e in client.events if isinstance(e, h2.events.DataReceived)]
        parser.receive_bytes(b"".join(e.data for e in closing))
        frame = next(iter(parser.received_frames()))
        assert frame.opcode == wsproto.frame_protocol.Opcode.CLOSE


# -- aborts, failures, bad input ---------------------------------------------------


@pytest.mark.parametrize("http2", [False, True])
@pytest.mark.parametrize("cancel_on_abort", [True, False])
async def test_client_going_away_aborts_the_handler(
    http2: bool, cancel_on_abort: bool
) -> None:
    started = trio.Event()
    outcome: list[str] = []
    done = trio.Event()

    async def handler(request: HttpRequest) -> None:
        request.cancel_on_abort = cancel_on_abort
        try:
            started.set()
            if cancel_on_abort:
                await trio.sleep_forever()
            await request.wait_aborted()
            assert request.aborted
            with pytest.raises(trio.BrokenResourceError):
                await request.read()
            outcome.append("told")
        except trio.Cancelled:
            outcome.append("cancelled")
            raise
        finally:
            done.set()

    async with running(handler) as server:
        if http2:
            client = H2Client(await open_raw(server.port, tls=True, alpn="h2"))
            await client.wait_settings()
            sid = await client.request(
                get_headers(b"/", server.port, b"POST"), end=False
            )
            with trio.fail_after(5):
                await started.wait()
            client.conn.reset_stream(sid, 8)
            await client.flush()
        else:
            stream = await open_raw(server.port, tls=True)
            await stream.send_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
            )
            with trio.fail_after(5):
                await started.wait()
            await stream.aclose()
        with trio.fail_after(5):
            await done.wait()
    assert outcome == ["cancelled" if cancel_on_abort else "told"]


@pytest.mark.parametrize("http2", [False, True])
async def test_handler_exception_gives_500_and_is_logged(
    http2: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(request: HttpRequest) -> None:
        if request.path == "/boom":
            raise ValueError("boom")
        if request.path == "/late":
            async with request.stream_response(200) as writer:
                await writer.send(b"partial")
                raise ValueError("late boom")
        await request.respond(200, body=b"fine")

    async with (
        running(handler) as server,
        httpx.AsyncClient(verify=client_context(), http2=http2) as client,
    ):
        base = f"https://127.0.0.1:{server.port}"
        response = await client.get(base + "/boom")
        assert response.status_code == 500
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(base + "/late")
        response = await client.get(base + "/ok")
        assert response.status_code == 200 and response.text == "fine"
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("request handler raised" in m and "/boom" in m for m in messages)
    assert any("/late" in m for m in messages)


async def test_handler_returning_without_response_gives_500() -> None:
    async def handler(request: HttpRequest) -> None:
        return None

    async with (
        running(handler) as server,
        httpx.AsyncClient(verify=client_context()) as client,
    ):
        response = await client.get(f"https://127.0.0.1:{server.port}/")
        assert response.status_code == 500


async def test_garbage_and_oversized_heads_are_refused_others_served() -> None:
    settings = tls_settings(max_header_size=1024)
    async with running(echo, settings) as server:
        stream = await open_raw(server.port, tls=True)
        await stream.send_all(b"\x00\x01 not http at all\r\n\r\n")
        assert (await receive_until_closed(stream)).startswith(b"HTTP/1.1 400 ")

        stream = await open_raw(server.port, tls=True)
        await stream.send_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n"
        )
        assert (await receive_until_closed(stream)).startswith(b"HTTP/1.1 431 ")

        client = H2Client(await open_raw(server.port, tls=True, alpn="h2"))
        await client.wait_settings()
        sid = await client.request(
            [*get_headers(b"/", server.port), (b"x-big", b"a" * 2000)]
        )
        headers, _ = await client.response(sid)
        assert headers[b":status"] == b"431"
        # The same HTTP/2 connection still serves.
        sid = await client.request(get_headers(b"/fine", server.port))
        headers, body = await client.response(sid)
        assert headers[b":status"] == b"200" and body == b"echo:"

        async with httpx.AsyncClient(verify=client_context()) as http:
            response = await http.get(f"https://127.0.0.1:{server.port}/")
            assert response.status_code == 200


async def test_http11_answer_before_the_body_closes_the_connection() -> None:
    async def handler(request: HttpRequest) -> None:
        if request.path == "/deny":
            await request.respond(401, body=b"no")  # the body is not read
        else:
            await request.respond(200, body=await request.read())

    async with (
        running(handler) as server,
        httpx.AsyncClient(verify=client_context()) as client,
    ):
        url = f"https://127.0.0.1:{server.port}"
        response = await client.post(url + "/deny", content=b"u" * 100_000)
        assert response.status_code == 401 and response.text == "no"
        assert response.headers["connection"] == "close"
        response = await client.post(url + "/ok", content=b"v" * 100_000)
        assert response.status_code == 200 and len(response.content) == 100_000
        assert "connection" not in response.headers


async def test_h2_protocol_error_ends_the_connection_with_one_goaway() -> None:
    async with running(echo) as server:
        client = H2Client(await open_raw(server.port, tls=True, alpn="h2"))
        await client.wait_settings()
        # A DATA frame on stream 0: a connection error (RFC 9113 section 6.1).
        await client.stream.send_all(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
        with trio.fail_after(5):
            while not client.closed:
                try:
                    await client.pump()
                except trio.BrokenResourceError:
                    break
        goaways = [
            e for e in client.events if isinstance(e, h2.events.ConnectionTerminated)
        ]
        assert [g.error_code for g in goaways] == [h2.errors.ErrorCodes.PROTOCOL_ERROR]
        # The server goes on.
        async with httpx.AsyncClient(verify=client_context(), http2=True) as http:
            response = await http.get(f"https://127.0.0.1:{server.port}/")
            assert response.status_code == 200


@pytest.mark.parametrize("http2", [False, True])
async def test_request_body_too_large_gets_413(http2: bool) -> None:
    async with (
        running(echo, tls_settings(max_request_body_size=1000)) as server,
        httpx.AsyncClient(verify=client_context(), http2=http2) as client,
    ):
        url = f"https://127.0.0.1:{server.port}/"
        response = await client.post(url, content=b"x" * 5000)
        assert response.status_code == 413
        if not http2:
            # The rest of the body was not read: the connection ends.
            assert response.headers["connection"] == "close"
        response = await client.post(url, content=b"x" * 10)
        assert response.status_code == 200 and response.text == "echo:" + "x" * 10


async def test_h2_request_trailers_and_goaway_on_shutdown() -> None:
    started = trio.Event()
    finish = trio.Event()

    async def handler(request: HttpRequest) -> None:
        body = await request.read()
        started.set()
        await finish.wait()
        await request.respond(
            200, body=body + b"|" + dict(request.trailers or [])[b"x-t"]
        )

    stoppable = Stoppable()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(stoppable.run, handler, tls_settings())
        )
        client = H2Client(await open_raw(server.port, tls=True, alpn="h2"))
        await client.wait_settings()
        sid = await client.request(
            get_headers(b"/t", server.port, b"POST"), b"body", end=False
        )
        client.conn.send_headers(sid, [(b"x-t", b"trailer")], end_stream=True)
        await client.flush()
        with trio.fail_after(5):
            await started.wait()
        stoppable.stop()
        with trio.fail_after(3):  # the listener closes, then the drain starts
            while True:
                try:
                    probe = await trio.open_tcp_stream("127.0.0.1", server.port)
                except OSError:
                    break
                await probe.aclose()
                await trio.sleep(0.01)
        await trio.sleep(0.05)
        # While the request in flight is answered, new ones are refused.
        late = await client.request(get_headers(b"/late", server.port))
        reset = await client.wait_for(
            lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == late
        )
        assert reset.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        finish.set()
        headers, body = await client.response(sid)
        assert headers[b":status"] == b"200" and body == b"body|trailer"
        # Then GOAWAY names the last request processed, and the connection
        # and the server end, well within the grace period.
        goaway = await client.wait_for(
            lambda e: isinstance(e, h2.events.ConnectionTerminated)
        )
        assert goaway.error_code == 0 and goaway.last_stream_id == sid
        with trio.fail_after(3):
            await stoppable.stopped.wait()
        with trio.fail_after(3):
            while not client.closed:
                await client.pump()


@pytest.mark.aioquic_only(
    "qh3 loads the certificate and key from PEM files only: the qh3 engine "
    "refuses certificate objects"
)
async def test_serve_http_with_certificate_objects() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = development_certificate()
    settings = QuicSettings(
        certificate=x509.load_pem_x509_certificate(cert.certificate_path.read_bytes()),
        private_key=serialization.load_pem_private_key(
            cert.private_key_path.read_bytes(), None
        ),
    )

    async def handler(request: HttpRequest) -> None:
        await request.respond(200, body=b"objects")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                serve_http, handler, 0, host="127.0.0.1", settings=settings
            )
        )
        async with httpx.AsyncClient(verify=client_context()) as client:
            response = await client.get(f"https://127.0.0.1:{server.port}/")
            assert response.text == "objects"
        nursery.cancel_scope.cancel()


async def test_tls_handshake_timeout_and_idle_keep_alive() -> None:
    settings = tls_settings(handshake_timeout=0.2, keep_alive_timeout=0.3)
    async with running(echo, settings) as server:
        # Silent after connecting: closed after the handshake timeout.
        raw = await trio.open_tcp_stream("127.0.0.1", server.port)
        assert await receive_until_closed(raw, limit=3) == b""
        # Idle after a response: closed after the keep-alive timeout.
        client = H11Client(await open_raw(server.port, tls=True))
        await client.send(
            h11.Request(method="GET", target="/", headers=[("host", "x")]),
            h11.EndOfMessage(),
        )
        await client.response()
        assert await receive_until_closed(client.stream, limit=3) == b""


async def test_connections_beyond_the_limit_wait_their_turn() -> None:
    async with running(echo, TcpSettings(max_connections=1)) as server:
        first = H11Client(await open_raw(server.port, tls=False))
        await first.send(
            h11.Request(method="GET", target="/1", headers=[("host", "x")]),
            h11.EndOfMessage(),
        )
        await first.response()
        # Accepted by the kernel, not served while the first is open.
        second = H11Client(await open_raw(server.port, tls=False))
        await second.send(
            h11.Request(method="GET", target="/2", headers=[("host", "x")]),
            h11.EndOfMessage(),
        )
        with trio.move_on_after(0.3) as waited:
            await second.response()
        assert waited.cancelled_caught
        assert server.connection_count == 1
        await first.stream.aclose()
        response, body, _ = await second.response()
        assert response.status_code == 200 and body == b"echo:"


async def test_h2_idle_connection_closes_after_keep_alive_timeout() -> None:
    async with running(echo, tls_settings(keep_alive_timeout=0.3)) as server:
        client = H2Client(await open_raw(server.port, tls=True, alpn="h2"))
        await client.wait_settings()
        sid = await client.request(get_headers(b"/", server.port))
        await client.response(sid)
        start = trio.current_time()
        goaway = await client.wait_for(
            lambda e: isinstance(e, h2.events.ConnectionTerminated), limit=3
        )
        assert goaway.error_code == 0 and goaway.last_stream_id == sid
        assert trio.current_time() - start >= 0.25


# -- graceful shutdown ----------------------------------------------------------------


@pytest.mark.parametrize("http2", [False, True])
async def test_shutdown_completes_the_response_in_flight(http2: bool) -> None:
    started = trio.Event()

    async def handler(request: HttpRequest) -> None:
        async with request.stream_response(200) as writer:
            await writer.send(b"first,")
            started.set()
            await trio.sleep(0.3)
            await writer.send(b"second")

    stoppable = Stoppable()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(stoppable.run, handler, tls_settings())
        )
        async with httpx.AsyncClient(verify=client_context(), http2=http2) as client:
            result: list[httpx.Response] = []

            async def fetch() -> None:
                result.append(await client.get(f"https://127.0.0.1:{server.port}/"))

            async with trio.open_nursery() as inner:
                inner.start_soon(fetch)
                await started.wait()
                stoppable.stop()
            assert result[0].text == "first,second"
            if not http2:
                assert result[0].headers.get("connection") is None  # head went first
            with trio.fail_after(3):
                await stoppable.stopped.wait()
            # Stopped: nothing listens any more.
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", server.port)


async def test_shutdown_is_bounded_by_the_grace_period() -> None:
    cancelled = trio.Event()

    async def handler(request: HttpRequest) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    stoppable = Stoppable()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(stoppable.run, handler, tls_settings(grace_period=0.3))
        )
        client = H11Client(await open_raw(server.port, tls=True))
        await client.send(
            h11.Request(method="GET", target="/", headers=[("host", "x")]),
            h11.EndOfMessage(),
        )
        await trio.sleep(0.05)
        stoppable.stop()
        with trio.fail_after(3):
            await stoppable.stopped.wait()
        assert stoppable.stop_time is not None
        elapsed = trio.current_time() - stoppable.stop_time
        assert 0.3 <= elapsed < 2
        assert cancelled.is_set()
        # The client sees the connection end.
        assert await receive_until_closed(client.stream) == b""


# -- serve_http: both doors on one port -----------------------------------------------


async def test_serve_http_one_port_alt_svc_on_both_doors() -> None:
    cert = development_certificate()
    settings = QuicSettings(
        certificate=str(cert.certificate_path), private_key=str(cert.private_key_path)
    )

    async def handler(request: HttpRequest) -> None:
        await request.respond(200, body=f"v{request.http_version}".encode())

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                serve_http, handler, 0, host="127.0.0.1", settings=settings
            )
        )
        assert isinstance(server, trioquic.HttpServer)
        assert server.tcp is not None
        assert server.port == server.http3.port == server.tcp.port
        expected = f'h3=":{server.port}"; ma=86400'
        async with httpx.AsyncClient(verify=client_context(), http2=True) as client:
            response = await client.get(f"https://127.0.0.1:{server.port}/")
            assert response.text == "v2" and response.headers["alt-svc"] == expected
        client_settings = QuicSettings(
            ca_certs=str(cert.certificate_path), server_name="localhost"
        )
        async with open_http3_client(
            "127.0.0.1", server.port, settings=client_settings
        ) as h3:
            response3 = await h3.request("GET", "/")
            assert await response3.read() == b"v3"
            assert dict(response3.headers)[b"alt-svc"] == expected.encode()
        nursery.cancel_scope.cancel()


async def test_serve_http_without_tcp() -> None:
    cert = development_certificate()
    settings = QuicSettings(
        certificate=str(cert.certificate_path), private_key=str(cert.private_key_path)
    )

    async def handler(request: HttpRequest) -> None:
        await request.respond(200)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                serve_http, handler, 0, host="127.0.0.1", settings=settings, tcp=False
            )
        )
        assert server.tcp is None
        probe = socket.socket()
        try:
            # Nothing of ours on TCP there.
            with pytest.raises(OSError):
                probe.connect(("127.0.0.1", server.port))
        finally:
            probe.close()
        nursery.cancel_scope.cancel()


async def test_serve_http_binds_tcp_where_udp_is_bound() -> None:
    """``localhost`` is 127.0.0.1 and ::1 for both doors (bind_udp_sockets
    resolves it so; the system resolver may give TCP only one of them)."""
    cert = development_certificate()
    settings = QuicSettings(
        certificate=str(cert.certificate_path), private_key=str(cert.private_key_path)
    )

    async def handler(request: HttpRequest) -> None:
        await request.respond(200)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                serve_http, handler, 0, host="localhost", settings=settings
            )
        )
        assert server.tcp is not None
        udp_hosts = sorted(address[0] for address in server.http3.addresses)
        tcp_hosts = sorted(address[0] for address in server.tcp.addresses)
        assert tcp_hosts == udp_hosts
        assert {address[1] for address in server.tcp.addresses} == {server.port}
        nursery.cancel_scope.cancel()


async def test_h3_extra_response_headers_hook() -> None:
    cert = development_certificate()
    settings = QuicSettings(
        certificate=str(cert.certificate_path), private_key=str(cert.private_key_path)
    )
    http3 = Http3Settings(extra_response_headers=[("x-extra", "1"), ("x-own", "door")])

    async def handler(request: HttpRequest) -> None:
        if request.path == "/own":
            await request.respond(200, [("x-own", "handler")])
        elif request.path == "/stream":
            async with request.stream_response(201) as writer:
                await writer.send(b"s")
        else:
            raise RuntimeError("500 carries them too")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                trioquic.h3.serve_http3,
                handler,
                0,
                host="127.0.0.1",
                settings=settings,
                http3_settings=http3,
            )
        )
        client_settings = QuicSettings(
            ca_certs=str(cert.certificate_path), server_name="localhost"
        )
        async with open_http3_client(
            "127.0.0.1", server.port, settings=client_settings
        ) as client:
            own = await client.request("GET", "/own")
            assert [v for n, v in own.headers if n == b"x-own"] == [b"handler"]
            assert (b"x-extra", b"1") in own.headers
            streamed = await client.request("GET", "/stream")
            assert (b"x-own", b"door") in streamed.headers
            failed = await client.request("GET", "/fail")
            assert failed.status == 500 and (b"x-extra", b"1") in failed.headers
        nursery.cancel_scope.cancel()


# -- settings -------------------------------------------------------------------


def test_settings_validation() -> None:
    assert alt_svc_value(443) == 'h3=":443"; ma=86400'
    assert alt_svc_value(8443, max_age=60) == 'h3=":8443"; ma=60'
    with pytest.raises(ValueError, match="port"):
        alt_svc_value(0)
    with pytest.raises(ValueError, match="max_connections"):
        TcpSettings(max_connections=0)
    with pytest.raises(TypeError, match="keep_alive_timeout"):
        TcpSettings(keep_alive_timeout="soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpn"):
        TcpSettings(alpn_protocols=("h3",))
    with pytest.raises(TypeError, match="one string"):
        TcpSettings(alpn_protocols="h2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="without a certificate"):
        TcpSettings(private_key="key.pem")
    with pytest.raises(ValueError, match="header value"):
        TcpSettings(alt_svc="a\r\nb")
    with pytest.raises(ValueError, match="lowercase"):
        Http3Settings(extra_response_headers=[("X-Upper", "1")])
    assert not TcpSettings().tls and tls_settings().tls
    assert attrs.evolve(TcpSettings(), grace_period=1).grace_period == 1


async def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="handler"):
        await serve_tcp("nope", 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TcpSettings"):
        await serve_tcp(echo, 0, settings=QuicSettings())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="certificate"):
        await serve_http(echo, 0, settings=QuicSettings())


# -- property: whatever bytes arrive, the door answers or closes, logs no
# error, and keeps serving --------------------------------------------------------

_request_heads = st.builds(
    lambda method, target, headers, body: (
        method
        + b" "
        + target
        + b" HTTP/1.1\r\nHost: x\r\n"
        + b"".join(headers)
        + b"\r\n"
        + body
    ),
    st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"G\x00T", b""]),
    st.binary(max_size=20).map(lambda b: b"/" + b),
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    b"Content-Length: 5\r\n",
                    b"Content-Length: -1\r\n",
                    b"Content-Length: 99999999999999999999\r\n",
                    b"Transfer-Encoding: chunked\r\n",
                    b"Expect: 100-continue\r\n",
                    b"Upgrade: websocket\r\n",
                    b"Connection: Upgrade\r\n",
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                    b"Sec-WebSocket-Version: 13\r\n",
                ]
            ),
            st.binary(max_size=40).map(lambda b: b + b"\r\n"),
        ),
        max_size=6,
    ),
    st.binary(max_size=60),
)


@hypothesis.settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
@hypothesis.given(
    data=st.one_of(
        st.binary(max_size=200),
        _request_heads,
        # HTTP/2 with prior knowledge, then anything
        st.binary(max_size=200).map(lambda b: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b),
    )
)
def test_property_any_bytes_answered_or_closed_and_the_door_keeps_serving(
    data: bytes,
) -> None:
    errors: list[logging.LogRecord] = []

    class Errors(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record)

    async def handler(request: HttpRequest) -> None:
        body = await request.read()
        await request.respond(200, body=body[:10])

    async def main() -> None:
        async with running(handler, TcpSettings(keep_alive_timeout=0.1)) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(data)
            received = b""
            with trio.move_on_after(0.5):
                while chunk := await stream.receive_some(65536):
                    received += chunk
            await stream.aclose()
            if not data.startswith(b"PRI * HTTP/2.0"):
                assert not received or received.startswith(b"HTTP/1.1 ")
            if received.startswith(b"HTTP/"):
                status = int(received.split(b" ", 2)[1])
                assert status in (100, 101, 200, 400, 413, 431, 501), received[:80]
                reason = received.split(b"\r\n", 1)[0].split(b" ", 2)[2]
                assert reason == http.HTTPStatus(status).phrase.encode()
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    f"http://127.0.0.1:{server.port}/after", content=b"ok"
                )
                assert response.status_code == 200 and response.text == "ok"

    handler_ = Errors(logging.ERROR)
    logging.getLogger("trioquic").addHandler(handler_)
    try:
        trio.run(main)
    finally:
        logging.getLogger("trioquic").removeHandler(handler_)
    assert not errors, [r.getMessage() for r in errors]
