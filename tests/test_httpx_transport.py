"""trioquic.httpx.HTTP3Transport against a real trioquic.h3 server on
127.0.0.1: pooling, streaming both ways, timeouts, errors, 0-RTT, GOAWAY."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from helpers import RECEIVE_BOUNDS, receive_windows

import trioquic
from trioquic import QuicSettings, h3
from trioquic.h3 import H3ErrorCode, Http3Settings, Request
from trioquic.httpx import HTTP3Transport
from trioquic.testing import development_certificate

Handler = Callable[[Request], Awaitable[None]]


def ca_path() -> str:
    return str(development_certificate().certificate_path)


class Server:
    def __init__(self, server: trioquic.QuicServer) -> None:
        self.server = server
        self.port = server.port
        #: Client addresses of the requests handled (one per connection).
        self.peers: list[Any] = []
        #: The server side of every connection seen by a handler.
        self.connections: list[Any] = []

    def url(self, path: str = "/") -> str:
        return f"https://localhost:{self.port}{path}"


@asynccontextmanager
async def http3_server(
    handler: Handler, http3_settings: Http3Settings | None = None, **quic: Any
) -> AsyncIterator[Server]:
    cert = development_certificate()
    settings = QuicSettings(
        certificate=str(cert.certificate_path),
        private_key=str(cert.private_key_path),
        **quic,
    )
    holder: list[Server] = []

    async def recording(request: Request) -> None:
        holder[0].peers.append(request.peer_address)
        for io in holder[0].server.connections:
            if io not in holder[0].connections:
                holder[0].connections.append(io)
        await handler(request)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: h3.serve_http3(
                recording,
                0,
                host="127.0.0.1",
                settings=settings,
                http3_settings=http3_settings,
                task_status=task_status,
            )
        )
        holder.append(Server(server))
        yield holder[0]
        nursery.cancel_scope.cancel()


def client(**options: Any) -> httpx.AsyncClient:
    timeout = options.pop("timeout", 10.0)
    options.setdefault("verify", ca_path())
    return httpx.AsyncClient(transport=HTTP3Transport(**options), timeout=timeout)


async def hello(request: Request) -> None:
    await request.respond(
        200, [(b"content-type", b"text/plain")], b"hello " + request.path.encode()
    )


# -- basics ---------------------------------------------------------------------


async def test_get_is_http3() -> None:
    with trio.fail_after(10):
        async with http3_server(hello) as server, client() as c:
            response = await c.get(server.url("/a?b=c"), headers={"x-test": "1"})
    assert response.status_code == 200
    assert response.http_version == "HTTP/3"
    assert response.text == "hello /a?b=c"
    assert response.headers["content-type"] == "text/plain"


async def test_request_headers_and_authority_reach_the_server() -> None:
    seen: list[tuple[str, str, list[tuple[bytes, bytes]]]] = []

    async def handler(request: Request) -> None:
        seen.append((request.method, request.authority, list(request.headers)))
        await request.respond(204)

    with trio.fail_after(10):
        async with http3_server(handler) as server, client() as c:
            response = await c.request(
                "DELETE",
                server.url("/x"),
                headers={"X-Mixed-Case": "v", "Connection": "keep-alive"},
            )
    assert response.status_code == 204
    method, authority, headers = seen[0]
    assert method == "DELETE"
    assert authority == f"localhost:{server.port}"
    names = [name for name, _ in headers]
    assert (b"x-mixed-case", b"v") in headers
    assert b"host" not in names and b"connection" not in names


async def test_post_bytes_body() -> None:
    async def echo(request: Request) -> None:
        body = await request.read()
        await request.respond(200, body=body[::-1])

    with trio.fail_after(10):
        async with http3_server(echo) as server, client() as c:
            response = await c.post(server.url(), content=b"abcdef" * 1000)
    assert response.content == (b"abcdef" * 1000)[::-1]


@pytest.mark.parametrize("bound", RECEIVE_BOUNDS)
async def test_streamed_upload_is_bounded_by_the_slow_server(bound: str) -> None:
    """A generator body is sent as the server reads it: the client never
    runs far ahead of the server's reading (bounded memory)."""
    chunk = b"u" * 16384
    chunks = 64  # 1 MiB
    produced = 0
    consumed = 0
    lead: list[int] = []

    async def slow_reader(request: Request) -> None:
        nonlocal consumed
        async for part in request:
            consumed += len(part)
            await trio.sleep(0.002)
        await request.respond(200, body=str(consumed).encode())

    async def body() -> AsyncIterator[bytes]:
        nonlocal produced
        for _ in range(chunks):
            produced += len(chunk)
            lead.append(produced - consumed)
            yield chunk

    window = 64 * 1024
    with trio.fail_after(30):
        async with (
            http3_server(
                slow_reader,
                Http3Settings(body_buffer_size=16384),
                **receive_windows(bound, window),
            ) as server,
            client(settings=QuicSettings(stream_send_buffer=window)) as c,
        ):
            response = await c.post(server.url("/up"), content=body())
    assert response.status_code == 200
    assert int(response.text) == chunk.__len__() * chunks
    # What the client may hold ahead: its send buffer, the server's window
    # and body buffer, and a chunk or two in flight.
    assert max(lead) <= window * 2 + 16384 + 3 * len(chunk), max(lead)


async def test_streamed_download_arrives_before_the_end() -> None:
    first_seen = trio.Event()

    async def streamer(request: Request) -> None:
        async with request.stream_response(200) as writer:
            await writer.send(b"a" * 1000)
            # The rest only once the client has the first part: the body
            # streams, it is not buffered whole.
            await first_seen.wait()
            for _ in range(20):
                await writer.send(b"b" * 50_000)

    received = 0
    with trio.fail_after(10):
        async with (
            http3_server(streamer) as server,
            client() as c,
            c.stream("GET", server.url()) as response,
        ):
            async for part in response.aiter_bytes():
                received += len(part)
                first_seen.set()
    assert received == 1000 + 20 * 50_000


async def test_closing_an_unread_response_stops_the_server() -> None:
    aborted = trio.Event()

    async def endless(request: Request) -> None:
        if request.path == "/again":
            await hello(request)
            return
        try:
            async with request.stream_response(200) as writer:
                while True:
                    await writer.send(b"z" * 16384)
        finally:
            aborted.set()

    with trio.fail_after(10):
        async with http3_server(endless) as server, client() as c:
            async with c.stream("GET", server.url()) as response:
                async for _ in response.aiter_bytes():
                    break
            await aborted.wait()
            # The connection is still good for the next request.
            assert (await c.get(server.url("/again"))).status_code == 200


async def test_a_response_arrived_whole_frees_its_stream_at_once() -> None:
    """A small response whose body came with its headers is handed to httpx
    whole: the request is over before the body is read; a body still
    arriving holds the connection until it is read."""
    more = trio.Event()

    async def handler(request: Request) -> None:
        if request.path == "/small":
            await hello(request)
            return
        async with request.stream_response(200) as writer:
            await writer.send(b"a" * 100)
            await more.wait()
            await writer.send(b"b" * 100)

    with trio.fail_after(10):
        async with http3_server(handler) as server, client() as c:
            transport = c._transport
            assert isinstance(transport, HTTP3Transport)

            def active() -> int:
                return sum(
                    conn.active
                    for conns in transport.connections.values()
                    for conn in conns
                )

            async with c.stream("GET", server.url("/small")) as response:
                assert active() == 0
                assert await response.aread() == b"hello /small"
            async with c.stream("GET", server.url("/slow")) as response:
                assert active() == 1
                more.set()
                assert await response.aread() == b"a" * 100 + b"b" * 100
            assert active() == 0
            # Many requests, each answered at once, reuse one connection.
            for _ in range(20):
                assert (await c.get(server.url("/small"))).text == "hello /small"
            assert sum(len(v) for v in transport.connections.values()) == 1


async def test_http3_client_read_nowait() -> None:
    more = trio.Event()

    async def handler(request: Request) -> None:
        async with request.stream_response(200) as writer:
            await writer.send(b"a" * 10)
            await more.wait()
            await writer.send(b"b" * 10)

    cert = development_certificate()
    settings = QuicSettings(alpn_protocols=["h3"], ca_certs=str(cert.certificate_path))
    with trio.fail_after(10):
        async with (
            http3_server(handler) as server,
            h3.open_http3_client("localhost", server.port, settings=settings) as hc,
        ):
            response = await hc.request("GET", "/")
            with pytest.raises(trio.WouldBlock):
                response.read_nowait()
            more.set()
            while True:
                try:
                    body = response.read_nowait()
                except trio.WouldBlock:
                    await trio.sleep(0.005)
                else:
                    break
            assert body == b"a" * 10 + b"b" * 10
            assert response.complete
            assert response.read_nowait() == b""
            assert hc.active_requests == 0


async def test_http3_client_receive_chunk_nowait() -> None:
    more = trio.Event()
    reset = trio.Event()

    async def handler(request: Request) -> None:
        async with request.stream_response(200) as writer:
            await writer.send(b"a" * 10)
            await more.wait()
            if request.path == "/reset":
                request.reset(H3ErrorCode.INTERNAL_ERROR)
                reset.set()
                return
            await writer.send(b"b" * 10)

    async def next_piece(response: h3.Response) -> bytes:
        while True:
            try:
                return response.receive_chunk_nowait()
            except trio.WouldBlock:
                await trio.sleep(0.005)

    cert = development_certificate()
    settings = QuicSettings(alpn_protocols=["h3"], ca_certs=str(cert.certificate_path))
    with trio.fail_after(10):
        async with (
            http3_server(handler) as server,
            h3.open_http3_client("localhost", server.port, settings=settings) as hc,
        ):
            response = await hc.request("GET", "/")
            assert await next_piece(response) == b"a" * 10
            with pytest.raises(trio.WouldBlock):
                response.receive_chunk_nowait()
            more.set()
            assert await next_piece(response) == b"b" * 10
            assert await next_piece(response) == b""
            assert response.complete
            assert hc.active_requests == 0

            more = trio.Event()
            response = await hc.request("GET", "/reset")
            assert await next_piece(response) == b"a" * 10
            more.set()
            await reset.wait()
            with pytest.raises(h3.H3Error):
                await next_piece(response)


async def test_request_stream_send_with_end_stream() -> None:
    async def echo(request: Request) -> None:
        await request.respond(200, body=await request.read())

    cert = development_certificate()
    settings = QuicSettings(alpn_protocols=["h3"], ca_certs=str(cert.certificate_path))
    with trio.fail_after(10):
        async with (
            http3_server(echo) as server,
            h3.open_http3_client("localhost", server.port, settings=settings) as hc,
        ):
            stream = hc.start_request_nowait("POST", "/")
            assert stream is not None
            await stream.send(b"first ")
            await stream.send(b"and last", end_stream=True)
            with pytest.raises(trio.ClosedResourceError):
                await stream.send(b"more")
            response = await stream.response()
            assert await response.read() == b"first and last"


async def test_pseudo_header_fields_are_refused() -> None:
    with trio.fail_after(10):
        async with http3_server(hello) as server, client() as c:
            with pytest.raises(ValueError, match="pseudo-header"):
                await c.get(server.url(), headers={":path": "/elsewhere"})
            # The same client carries on.
            assert (await c.get(server.url())).text == "hello /"


# -- pooling ---------------------------------------------------------------------


async def test_hundred_concurrent_gets_share_one_connection() -> None:
    transport_holder: list[HTTP3Transport] = []
    with trio.fail_after(20):
        async with http3_server(hello) as server, client() as c:
            transport_holder.append(c._transport)  # type: ignore[arg-type]
            results: list[httpx.Response] = []

            async def get(i: int) -> None:
                results.append(await c.get(server.url(f"/{i}")))

            async with trio.open_nursery() as nursery:
                for i in range(100):
                    nursery.start_soon(get, i)
            connections = sum(len(v) for v in transport_holder[0].connections.values())
    assert sorted(r.text for r in results) == sorted(f"hello /{i}" for i in range(100))
    assert len(set(server.peers)) == 1
    assert connections == 1


async def test_stream_limit_opens_more_connections() -> None:
    release = trio.Event()
    all_arrived = trio.Event()
    arrived = 0

    async def held(request: Request) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 6:
            all_arrived.set()
        await release.wait()
        await request.respond(200, body=b"ok")

    with trio.fail_after(20):
        async with (
            http3_server(held, Http3Settings(max_concurrent_requests=2)) as server,
            client(max_connections_per_origin=3) as c,
        ):
            statuses: list[int] = []

            async def get() -> None:
                statuses.append((await c.get(server.url())).status_code)

            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(get)
                await all_arrived.wait()
                release.set()
    assert statuses == [200] * 6
    assert len(set(server.peers)) == 3


async def test_beyond_max_connections_requests_wait_then_pool_timeout() -> None:
    release = trio.Event()

    async def held(request: Request) -> None:
        await release.wait()
        await request.respond(200, body=b"ok")

    with trio.fail_after(20):
        async with (
            http3_server(held, Http3Settings(max_concurrent_requests=1)) as server,
            client(max_connections_per_origin=1) as c,
            trio.open_nursery() as nursery,
        ):
            first: list[int] = []

            async def get() -> None:
                first.append((await c.get(server.url())).status_code)

            nursery.start_soon(get)
            await trio.sleep(0.2)
            with pytest.raises(httpx.PoolTimeout):
                await c.get(server.url(), timeout=httpx.Timeout(10.0, pool=0.3))
            # One waiting for the stream gets it when the first ends.
            nursery.start_soon(get)
            await trio.sleep(0.1)
            release.set()
    assert first == [200, 200]
    assert len(set(server.peers)) == 1


async def test_goaway_moves_requests_to_a_new_connection() -> None:
    with trio.fail_after(20):
        async with (
            http3_server(hello, Http3Settings(max_requests_per_connection=5)) as server,
            client() as c,
        ):
            texts = []
            for i in range(12):
                texts.append((await c.get(server.url(f"/{i}"))).text)
            # Concurrent ones too: those beyond the GOAWAY are retried.
            async with trio.open_nursery() as nursery:
                for i in range(12, 30):
                    nursery.start_soon(
                        lambda i=i: c.get(server.url(f"/{i}"))  # type: ignore[misc]
                    )
    assert texts == [f"hello /{i}" for i in range(12)]
    # 30 requests, at most 5 each: at least 6 connections.
    assert len(server.peers) == 30
    assert len(set(server.peers)) >= 6


async def test_idle_connection_is_closed_after_keepalive_expiry() -> None:
    with trio.fail_after(10):
        async with http3_server(hello) as server, client(keepalive_expiry=0.3) as c:
            transport: HTTP3Transport = c._transport  # type: ignore[assignment]
            await c.get(server.url())
            assert sum(len(v) for v in transport.connections.values()) == 1
            await trio.sleep(0.6)
            assert transport.connections == {}
            # A new one is opened for the next request.
            assert (await c.get(server.url("/2"))).text == "hello /2"
    assert len(set(server.peers)) == 2


async def test_closing_the_client_closes_connections_with_h3_no_error() -> None:
    with trio.fail_after(10):
        async with http3_server(hello) as server:
            async with client() as c:
                await c.get(server.url())
            io = server.connections[0]
            with trio.fail_after(5):
                error = await io.wait_closed()
    reason = error.reason
    assert reason.by_peer
    assert reason.error_code == H3ErrorCode.NO_ERROR


async def test_an_exception_in_the_block_propagates_unwrapped() -> None:
    with trio.fail_after(10):
        async with http3_server(hello) as server:
            with pytest.raises(KeyError, match="mine"):
                async with client() as c:
                    await c.get(server.url())
                    raise KeyError("mine")
            error = await server.connections[0].wait_closed()
    assert error.reason.error_code == H3ErrorCode.NO_ERROR


async def test_cancelled_client_block_closes_its_connections() -> None:
    with trio.fail_after(10):
        async with http3_server(hello) as server:
            with trio.move_on_after(0.5) as scope:
                async with client() as c:
                    await c.get(server.url())
                    await c.get(server.url("/slow"), timeout=None)
                    await trio.sleep_forever()
            assert scope.cancelled_caught
            # The server learns at once (CONNECTION_CLOSE), not by its idle
            # timeout.
            with trio.fail_after(2):
                error = await server.connections[0].wait_closed()
    assert error.reason.by_peer
    # Gracefully: GOAWAY, then H3_NO_ERROR, even though it was cancelled.
    assert error.reason.error_code == H3ErrorCode.NO_ERROR


# -- timeouts ----------------------------------------------------------------------


async def test_read_timeout() -> None:
    async def sleepy(request: Request) -> None:
        await trio.sleep(5)
        await request.respond(200)

    with trio.fail_after(10):
        async with http3_server(sleepy) as server, client() as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.get(server.url(), timeout=httpx.Timeout(5.0, read=0.2))


async def test_read_timeout_in_the_body() -> None:
    async def stalls(request: Request) -> None:
        async with request.stream_response(200) as writer:
            await writer.send(b"part")
            await trio.sleep(5)

    with trio.fail_after(10):
        async with (
            http3_server(stalls) as server,
            client() as c,
            c.stream(
                "GET", server.url(), timeout=httpx.Timeout(5.0, read=0.3)
            ) as response,
        ):
            with pytest.raises(httpx.ReadTimeout):
                await response.aread()


async def test_write_timeout() -> None:
    async def never_reads(request: Request) -> None:
        await trio.sleep(5)

    window = 16 * 1024
    with trio.fail_after(10):
        async with (
            http3_server(
                never_reads,
                Http3Settings(body_buffer_size=4096),
                stream_receive_window=window,
                connection_receive_window=window * 4,
            ) as server,
            client(settings=QuicSettings(stream_send_buffer=window)) as c,
        ):
            with pytest.raises(httpx.WriteTimeout):
                await c.post(
                    server.url(),
                    content=b"w" * (1024 * 1024),
                    timeout=httpx.Timeout(5.0, write=0.3),
                )


async def test_connect_timeout_when_nothing_answers() -> None:
    # A bound UDP socket that never reads: no ICMP, no answer.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        with trio.fail_after(10):
            async with client() as c:
                start = trio.current_time()
                with pytest.raises(httpx.ConnectTimeout):
                    await c.get(
                        f"https://localhost:{port}/",
                        timeout=httpx.Timeout(5.0, connect=0.5),
                    )
                assert trio.current_time() - start < 3


async def test_refused_connection_is_connect_error_quickly() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens there now: ICMP port unreachable.
    with trio.fail_after(10):
        async with client() as c:
            start = trio.current_time()
            with pytest.raises(httpx.ConnectError) as info:
                await c.get(f"https://127.0.0.1:{port}/")
            assert trio.current_time() - start < 2
    assert not isinstance(info.value, httpx.ConnectTimeout)


# -- certificates ---------------------------------------------------------------


async def test_untrusted_certificate_is_connect_error() -> None:
    with trio.fail_after(10):
        async with http3_server(hello) as server, client(verify=True) as c:
            with pytest.raises(httpx.ConnectError):
                await c.get(server.url())
    assert server.peers == []


async def test_verify_false_accepts_any_certificate() -> None:
    with trio.fail_after(10):
        async with http3_server(hello) as server, client(verify=False) as c:
            assert (await c.get(server.url())).status_code == 200


async def test_verify_ssl_context_with_the_ca() -> None:
    context = ssl.create_default_context(cafile=ca_path())
    with trio.fail_after(10):
        async with http3_server(hello) as server, client(verify=context) as c:
            assert (await c.get(server.url())).status_code == 200
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    with trio.fail_after(10):
        async with http3_server(hello) as server, client(verify=unverified) as c:
            assert (await c.get(server.url())).status_code == 200


# -- errors -------------------------------------------------------------------------


async def test_server_reset_is_remote_protocol_error() -> None:
    async def resets(request: Request) -> None:
        if request.path == "/reset":
            request.reset(H3ErrorCode.INTERNAL_ERROR)
        else:
            await hello(request)

    with trio.fail_after(10):
        async with http3_server(resets) as server, client() as c:
            with pytest.raises(httpx.RemoteProtocolError, match="H3_INTERNAL_ERROR"):
                await c.get(server.url("/reset"))
            # Other requests carry on.
            assert (await c.get(server.url("/ok"))).text == "hello /ok"


async def test_reset_mid_body_is_remote_protocol_error() -> None:
    async def breaks(request: Request) -> None:
        async with request.stream_response(200) as writer:
            await writer.send(b"x" * 100)
            await trio.sleep(0.1)
            request.reset(H3ErrorCode.INTERNAL_ERROR)

    with trio.fail_after(10):
        async with (
            http3_server(breaks) as server,
            client() as c,
            c.stream("GET", server.url()) as response,
        ):
            with pytest.raises(httpx.RemoteProtocolError):
                await response.aread()


async def test_http_url_is_unsupported_protocol() -> None:
    async with client() as c:
        with pytest.raises(httpx.UnsupportedProtocol, match="https"):
            await c.get("http://localhost:1/")


async def test_without_async_with_a_clear_error() -> None:
    c = client()
    with pytest.raises(RuntimeError, match="async with"):
        await c.get("https://localhost:1/")
    await c.aclose()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"verify": 3}, TypeError),
        ({"verify": "/no/such/ca.pem"}, ValueError),
        ({"settings": {}}, TypeError),
        ({"http3_settings": 1}, TypeError),
        ({"max_connections_per_origin": 0}, ValueError),
        ({"max_connections_per_origin": 1.5}, TypeError),
        ({"keepalive_expiry": -1}, ValueError),
        ({"keepalive_expiry": "1"}, TypeError),
        ({"zero_rtt": 1}, TypeError),
        ({"local_address": 1}, TypeError),
        ({"cert": "client.pem"}, ValueError),
    ],
)
def test_bad_arguments(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        HTTP3Transport(**options)


async def test_local_address() -> None:
    with trio.fail_after(10):
        async with (
            http3_server(hello) as server,
            client(local_address="127.0.0.1") as c,
        ):
            assert (await c.get(server.url())).status_code == 200
    assert server.peers[0][0] == "127.0.0.1"


# -- session tickets and 0-RTT -----------------------------------------------------


async def test_zero_rtt_on_the_next_connection() -> None:
    early: list[tuple[str, str, bool]] = []

    async def handler(request: Request) -> None:
        early.append((request.method, request.path, request.early_data))
        await request.respond(200, body=b"ok")

    with trio.fail_after(20):
        async with (
            http3_server(handler) as server,
            client(zero_rtt=True, keepalive_expiry=0.5) as c,
        ):
            transport: HTTP3Transport = c._transport  # type: ignore[assignment]
            await c.get(server.url("/first"))
            await trio.sleep(1.0)  # the ticket came; the idle connection closed
            assert transport.connections == {}
            assert transport.session_tickets
            assert (await c.get(server.url("/early"))).status_code == 200
            await trio.sleep(1.0)
            # A POST is never sent early, even with a ticket.
            assert (await c.post(server.url("/post"), content=b"x")).status_code == 200
    assert early == [
        ("GET", "/first", False),
        ("GET", "/early", True),
        ("POST", "/post", False),
    ]


async def test_without_zero_rtt_the_ticket_still_resumes() -> None:
    early: list[bool] = []

    async def handler(request: Request) -> None:
        early.append(request.early_data)
        await request.respond(200)

    with trio.fail_after(20):
        async with http3_server(handler) as server, client(keepalive_expiry=0.5) as c:
            transport: HTTP3Transport = c._transport  # type: ignore[assignment]
            await c.get(server.url())
            [first] = transport.connections[("localhost", server.port)]
            assert first.client is not None and first.client.handshake is not None
            assert not first.client.handshake.session_resumed
            await trio.sleep(1.0)
            await c.get(server.url())
            [second] = transport.connections[("localhost", server.port)]
            assert second.client is not None and second.client.handshake is not None
            assert second.client.handshake.session_resumed
    assert early == [False, False]
    assert len(set(server.peers)) == 2


# -- the example ----------------------------------------------------------------------


async def test_example_client(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "examples" / "httpx_client.py"
    spec = importlib.util.spec_from_file_location("httpx_client_example", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    async def echo(request: Request) -> None:
        await request.respond(200, body=await request.read())

    with trio.fail_after(20):
        async with http3_server(echo) as server:
            url = server.url("/echo")
            args = example.parse_args(["--ca-certs", ca_path(), "--repeat", "5", url])
            assert await example.main(args) == 0
            args = example.parse_args(
                ["--ca-certs", ca_path(), "--upload", "100000", url]
            )
            assert await example.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == [f"{url}: 200 HTTP/3, 0 bytes"] * 5
    assert lines[5] == "HTTP/3 connections open: 1"
    assert lines[6] == f"{url}: 200 HTTP/3, 100000 bytes"
