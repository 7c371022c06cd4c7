"""The ASGI 3 server over real HTTP/3 on loopback: scopes, streamed bodies
both ways with backpressure, disconnects, failures, extensions, lifespan,
concurrency, WebSockets over extended CONNECT, and load_app."""

from __future__ import annotations

import functools
import gc
import logging
import pathlib
import sys
import textwrap
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import pytest
import trio
from helpers import RECEIVE_BOUNDS, receive_windows
from hypothesis import given
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.events import (
    Message as WsMessage,
)

import trioquic
from trioquic.asgi import (
    ASGIAdapter,
    ClientDisconnected,
    Lifespan,
    LifespanFailure,
    Message,
    Receive,
    Scope,
    Send,
    load_app,
    serve_asgi,
)
from trioquic.asgi._adapter import address_pair, split_target
from trioquic.asgi._serve import GC_THRESHOLD
from trioquic.h3 import H3Error, Http3Client, Http3Settings, open_http3_client
from trioquic.testing import development_certificate

TIMEOUT = 20
KIB = 1024
MIB = 1024 * KIB


def server_settings(**changes: Any) -> trioquic.QuicSettings:
    certificate = development_certificate()
    return trioquic.QuicSettings(
        alpn_protocols=["h3"],
        certificate=str(certificate.certificate_path),
        private_key=str(certificate.private_key_path),
        **changes,
    )


def client_settings(**changes: Any) -> trioquic.QuicSettings:
    certificate = development_certificate()
    return trioquic.QuicSettings(
        alpn_protocols=["h3"],
        ca_certs=str(certificate.certificate_path),
        server_name="localhost",
        **changes,
    )


@asynccontextmanager
async def served(
    app: Any, quic: dict[str, Any] | None = None, **options: Any
) -> AsyncIterator[tuple[Http3Client, int]]:
    """``app`` served by serve_asgi on 127.0.0.1, and a client connected to
    it (and the server's port); ``quic``: settings of both ends."""
    quic = quic or {}
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    serve_asgi,
                    app,
                    0,
                    host="127.0.0.1",
                    settings=server_settings(**quic),
                    **options,
                )
            )
            async with open_http3_client(
                "127.0.0.1", server.port, settings=client_settings(**quic)
            ) as client:
                yield client, server.port
            nursery.cancel_scope.cancel()


async def no_lifespan(scope: Scope) -> bool:
    """For apps that do not take part in lifespan: True for that scope."""
    await trio.lowlevel.checkpoint()
    return scope["type"] == "lifespan"


async def respond(send: Send, status: int = 200, body: bytes = b"") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- the scope ------------------------------------------------------------------


@pytest.mark.parametrize("root_path", ["", "/api"])
async def test_http_scope(root_path: str) -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                scope["state"]["db"] = "connected"
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        scopes.append(scope)
        scope["state"]["db"] = "changed by a request"
        await respond(send, body=b"ok")

    async with served(app, root_path=root_path) as (client, port):
        for _ in range(2):
            response = await client.request(
                "GET",
                "/caf%C3%A9/a%20b?x=1&y=%20",
                headers=[("X-Custom", "Value"), ("accept", "*/*")],
            )
            assert response.status == 200
            assert await response.read() == b"ok"
        local = client.local_address
    scope = scopes[0]
    assert set(scope) == {
        "type",
        "asgi",
        "http_version",
        "method",
        "scheme",
        "path",
        "raw_path",
        "query_string",
        "root_path",
        "headers",
        "client",
        "server",
        "extensions",
        "state",
    }
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "3"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "https"
    assert scope["path"] == root_path + "/café/a b"
    assert scope["raw_path"] == root_path.encode() + b"/caf%C3%A9/a%20b"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["root_path"] == root_path
    headers = scope["headers"]
    # :authority as host, first; no pseudo-headers; lowercase byte names.
    assert headers[0] == (b"host", f"127.0.0.1:{port}".encode())
    assert (b"x-custom", b"Value") in headers
    assert (b"accept", b"*/*") in headers
    assert all(isinstance(n, bytes) and not n.startswith(b":") for n, _ in headers)
    assert all(n == n.lower() for n, _ in headers)
    assert scope["client"] == ("127.0.0.1", local[1])
    assert scope["server"] == ("127.0.0.1", port)
    assert set(scope["extensions"]) == {
        "http.response.trailers",
        "http.response.early_hint",
        "http.response.pathsend",
    }
    # Each request has a shallow copy of the lifespan state.
    assert scope["state"] == {"db": "changed by a request"}
    assert scopes[1]["state"] == {"db": "changed by a request"}
    assert scopes[0]["state"] is not scopes[1]["state"]


async def test_state_is_a_copy_per_request() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["value"] = "initial"
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append(scope["state"]["value"])
        scope["state"]["value"] = "modified"
        await respond(send)

    async with served(app) as (client, _):
        for _ in range(3):
            assert (await client.request("GET", "/")).status == 200
    assert seen == ["initial"] * 3


# -- request bodies -----------------------------------------------------------------


#: The receive window of the backpressure tests (QuicSettings' default).
WINDOW = trioquic.QuicSettings().stream_receive_window


@pytest.mark.parametrize("bound", RECEIVE_BOUNDS)
async def test_streamed_request_body_with_backpressure(bound: str) -> None:
    """The application reads only when it asks: while it does not, the
    client's sends block after a bounded amount (QUIC credit is granted as
    the application consumes)."""
    total = 8 * MIB
    chunk = 64 * KIB
    gate = trio.Event()
    received: list[tuple[int, bool]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        first = await receive()
        received.append((len(first["body"]), first["more_body"]))
        await gate.wait()
        while True:
            message = await receive()
            assert message["type"] == "http.request"
            received.append((len(message["body"]), message["more_body"]))
            if not message["more_body"]:
                break
        await respond(send, body=str(sum(n for n, _ in received)).encode())

    sent = 0
    async with (
        served(app, receive_windows(bound, WINDOW)) as (client, _),
        client.open_request("POST", "/upload") as stream,
    ):

        async def sender() -> None:
            nonlocal sent
            for _ in range(total // chunk):
                await stream.send(b"x" * chunk)
                sent += chunk
            await stream.finish()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            # Wait until the sender has stalled.
            previous = -1
            while sent != previous:
                previous = sent
                await trio.sleep(0.3)
            stalled_at = sent
            gate.set()
        response = await stream.response()
        assert await response.read() == str(total).encode()
    most = (
        WINDOW
        + Http3Settings().body_buffer_size
        + trioquic.QuicSettings().stream_send_buffer
        + 2 * chunk
    )
    assert stalled_at <= most < total
    assert all(more for _, more in received[:-1])
    assert received[-1][1] is False


async def test_empty_body_is_one_message() -> None:
    messages: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        messages.append(await receive())
        await respond(send)

    async with served(app) as (client, _):
        assert (await client.request("GET", "/")).status == 200
    assert messages == [{"type": "http.request", "body": b"", "more_body": False}]


# -- responses ---------------------------------------------------------------------


@pytest.mark.parametrize("bound", RECEIVE_BOUNDS)
async def test_streamed_response_with_backpressure(bound: str) -> None:
    total = 8 * MIB
    chunk = 64 * KIB
    sent = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal sent
        if await no_lifespan(scope):
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(total).encode())],
            }
        )
        for _ in range(total // chunk):
            await send(
                {"type": "http.response.body", "body": b"y" * chunk, "more_body": True}
            )
            sent += chunk
        await send({"type": "http.response.body", "body": b""})

    async with served(app, receive_windows(bound, WINDOW)) as (client, _):
        response = await client.request("GET", "/big")
        assert response.status == 200
        previous = -1
        while sent != previous:
            previous = sent
            await trio.sleep(0.3)
        stalled_at = sent
        body = await response.read()
    assert len(body) == total
    most = (
        WINDOW
        + Http3Settings().body_buffer_size
        + trioquic.QuicSettings().stream_send_buffer
        + 2 * chunk
    )
    assert stalled_at <= most < total


async def test_start_is_held_until_the_body_and_head_has_no_body() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [
                    (b"Content-Type", b"text/plain"),
                    (b"Connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b"def"})

    async with served(app) as (client, _):
        response = await client.request("GET", "/")
        assert response.status == 201
        assert (b"content-type", b"text/plain") in response.headers
        # connection-specific fields are not allowed in HTTP/3: dropped
        assert all(name != b"connection" for name, _ in response.headers)
        assert await response.read() == b"abcdef"
        response = await client.request("HEAD", "/")
        assert response.status == 201
        assert await response.read() == b""


async def test_trailers_extension() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        assert "http.response.trailers" in scope["extensions"]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"trailer", b"x-checksum, x-count")],
                "trailers": True,
            }
        )
        await send({"type": "http.response.body", "body": b"data", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"x-checksum", b"abc")],
                "more_trailers": True,
            }
        )
        await send({"type": "http.response.trailers", "headers": [(b"X-Count", b"1")]})

    async with served(app) as (client, _):
        response = await client.request("GET", "/")
        assert await response.read() == b"data"
        assert response.trailers == [(b"x-checksum", b"abc"), (b"x-count", b"1")]


async def test_early_hint_extension() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        assert "http.response.early_hint" in scope["extensions"]
        await send(
            {
                "type": "http.response.early_hint",
                "links": [
                    b"</style.css>; rel=preload; as=style",
                    b"</app.js>; rel=preload",
                ],
            }
        )
        await respond(send, body=b"page")
        # After the response: dropped, not an error... (complete: raises)

    async with served(app) as (client, _):
        response = await client.request("GET", "/")
        assert response.status == 200
        assert response.informational == [
            (
                103,
                [
                    (b"link", b"</style.css>; rel=preload; as=style"),
                    (b"link", b"</app.js>; rel=preload"),
                ],
            )
        ]
        assert await response.read() == b"page"


@pytest.mark.parametrize("size", [0, 1000, 3 * 256 * KIB + 17])
async def test_pathsend_extension(tmp_path: pathlib.Path, size: int) -> None:
    path = tmp_path / "file.bin"
    content = bytes(i % 251 for i in range(size))
    path.write_bytes(content)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        assert "http.response.pathsend" in scope["extensions"]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(size).encode())],
            }
        )
        await send({"type": "http.response.pathsend", "path": str(path)})

    async with served(app) as (client, _):
        response = await client.request("GET", "/file")
        assert response.status == 200
        assert await response.read() == content


# -- failures ----------------------------------------------------------------------


async def test_exception_before_start_is_500_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        if scope["path"] == "/boom":
            raise ZeroDivisionError("boom")
        if scope["path"] == "/held":
            await send({"type": "http.response.start", "status": 200})
            raise KeyError("after a held start")
        await respond(send, body=b"fine")

    with caplog.at_level(logging.DEBUG, logger="trioquic"):
        async with served(app) as (client, _):
            for path in ("/boom", "/held"):
                response = await client.request("GET", path)
                assert response.status == 500
                assert await response.read() == b"Internal Server Error"
            # Other requests of the connection are not affected.
            response = await client.request("GET", "/ok")
            assert await response.read() == b"fine"
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 2
    assert all(r.name == "trioquic.asgi" for r in errors)
    assert "GET /boom from 127.0.0.1:" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], ZeroDivisionError)
    assert "GET /held" in errors[1].getMessage()


async def test_exception_after_start_resets_the_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        if scope["path"] == "/ok":
            await respond(send)
            return
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise ValueError("failed halfway")

    with caplog.at_level(logging.DEBUG, logger="trioquic"):
        async with served(app) as (client, _):
            with pytest.raises(H3Error):  # reset: before or after the headers
                response = await client.request("GET", "/")
                assert response.status == 200
                await response.read()
            assert (await client.request("GET", "/ok")).status == 200
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1  # once, and nothing from the HTTP/3 layer
    assert all("ASGI application raised" in r.getMessage() for r in errors)


async def test_incomplete_response_is_500_or_reset(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        if scope["path"] == "/streamed":
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"x", "more_body": True})

    with caplog.at_level(logging.ERROR, logger="trioquic"):
        async with served(app) as (client, _):
            response = await client.request("GET", "/nothing")
            assert response.status == 500
            with pytest.raises(H3Error):  # reset: before or after the headers
                response = await client.request("GET", "/streamed")
                await response.read()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert all("without completing the response" in m for m in messages)


async def test_bad_messages_are_errors() -> None:
    outcomes: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        for message in (
            {"type": "http.response.body", "body": b"x"},
            {"type": "websocket.accept"},
            {"type": "http.response.trailers", "headers": []},
        ):
            try:
                await send(message)
            except (RuntimeError, ValueError) as exc:
                outcomes.append(exc)
        await respond(send)

    async with served(app) as (client, _):
        assert (await client.request("GET", "/")).status == 200
    assert [type(e) for e in outcomes] == [RuntimeError, ValueError, RuntimeError]


# -- disconnects ----------------------------------------------------------------------


async def test_disconnect_on_reset_and_send_raises() -> None:
    seen: list[Message] = []
    send_error: list[BaseException] = []
    done = trio.Event()
    first = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        try:
            while True:
                message = await receive()
                seen.append(message)
                first.set()
                if message["type"] == "http.disconnect":
                    break
            try:
                await send({"type": "http.response.start", "status": 200})
                await send({"type": "http.response.body", "body": b"late"})
            except OSError as exc:
                send_error.append(exc)
        finally:
            done.set()

    class Abandon(Exception):
        pass

    async with served(app) as (client, _):
        with pytest.raises(Abandon):
            async with client.open_request("POST", "/") as stream:
                await stream.send(b"hello")
                await first.wait()
                raise Abandon  # resets the stream
        await done.wait()
    assert seen[0] == {"type": "http.request", "body": b"hello", "more_body": True}
    assert seen[-1] == {"type": "http.disconnect"}
    assert len(send_error) == 1
    assert isinstance(send_error[0], ClientDisconnected)
    assert isinstance(send_error[0], OSError)


async def test_disconnect_while_waiting_after_the_body() -> None:
    """receive() after the whole body waits, and says http.disconnect once
    the client stops the response's stream."""
    seen: list[Message] = []
    done = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        seen.append(await receive())  # waits for the client to go
        done.set()

    async with served(app) as (client, _):
        response = await client.request("GET", "/events")
        assert response.status == 200
        await trio.sleep(0.2)
        assert len(seen) == 1
        await response.aclose()  # STOP_SENDING
        await done.wait()
    assert seen == [
        {"type": "http.request", "body": b"", "more_body": False},
        {"type": "http.disconnect"},
    ]


async def test_receive_after_response_is_disconnect_at_once() -> None:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        await respond(send, body=b"done")
        seen.append(await receive())
        with pytest.raises(ClientDisconnected):
            await send({"type": "http.response.body", "body": b"more"})

    async with served(app) as (client, _):
        response = await client.request("GET", "/")
        assert await response.read() == b"done"
        await trio.sleep(0.1)
    assert seen == [{"type": "http.disconnect"}]


async def test_connection_end_ends_the_application() -> None:
    """When the whole connection ends, the application's call ends (told,
    or cancelled): nothing is left running."""
    started = trio.Event()
    ended = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        try:
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            started.set()
            await receive()
            await receive()
        finally:
            ended.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    serve_asgi, app, 0, host="127.0.0.1", settings=server_settings()
                )
            )
            async with open_http3_client(
                "127.0.0.1", server.port, settings=client_settings()
            ) as client:
                response = await client.request("GET", "/")
                await started.wait()
                assert response.status == 200
            # The client closed the connection.
            await ended.wait()
            nursery.cancel_scope.cancel()


async def test_disconnect_grace_cancels_an_application_that_ignores_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancelled = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        assert (await receive())["type"] == "http.request"
        try:
            assert (await receive())["type"] == "http.disconnect"
            await trio.sleep_forever()  # ignores it
        except trio.Cancelled:
            cancelled.set()
            raise

    with caplog.at_level(logging.WARNING, logger="trioquic.asgi"):
        async with served(app, disconnect_grace=0.2) as (client, _):
            async with client.open_request("GET", "/") as stream:
                await stream.finish()
                await trio.sleep(0.1)
            # leaving the block without reading: reset
            with trio.fail_after(5):
                await cancelled.wait()
    assert any("ignored the disconnect" in r.getMessage() for r in caplog.records)


# -- concurrency -------------------------------------------------------------------


async def test_requests_of_one_connection_run_concurrently() -> None:
    n = 20
    inside = 0
    all_inside = trio.Event()
    most = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal inside, most
        if await no_lifespan(scope):
            return
        inside += 1
        most = max(most, inside)
        if inside == n:
            all_inside.set()
        await all_inside.wait()  # deadlocks if requests were serialised
        await respond(send, body=scope["path"].encode())
        inside -= 1

    async with served(app) as (client, _):
        results: dict[int, bytes] = {}

        async def get(i: int) -> None:
            response = await client.request("GET", f"/{i}")
            results[i] = await response.read()

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(get, i)
    assert most == n
    assert results == {i: f"/{i}".encode() for i in range(n)}


# -- lifespan ------------------------------------------------------------------------


async def test_lifespan_startup_and_shutdown_around_the_server() -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            assert scope["asgi"]["version"] == "3.0"
            assert (await receive())["type"] == "lifespan.startup"
            events.append("startup")
            scope["state"]["started"] = True
            await send({"type": "lifespan.startup.complete"})
            assert (await receive())["type"] == "lifespan.shutdown"
            events.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        events.append(f"request {scope['state']['started']}")
        await respond(send)

    async with served(app) as (client, _):
        assert (await client.request("GET", "/")).status == 200
        assert events == ["startup", "request True"]
    assert events == ["startup", "request True", "shutdown"]


async def test_lifespan_startup_failed_stops_the_start() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with trio.fail_after(TIMEOUT), pytest.raises(LifespanFailure, match="no database"):
        await serve_asgi(app, 0, host="127.0.0.1", settings=server_settings())


@pytest.mark.parametrize("how", ["raises", "returns"])
async def test_lifespan_unsupported(how: str, caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if how == "raises":
                raise ValueError(f"unsupported scope {scope['type']}")
            return
        await respond(send, body=b"served")

    with caplog.at_level(logging.INFO, logger="trioquic.asgi"):
        async with served(app) as (client, _):
            assert await (await client.request("GET", "/")).read() == b"served"
    assert any("lifespan unsupported" in r.getMessage() for r in caplog.records)
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)

    with trio.fail_after(TIMEOUT), pytest.raises(LifespanFailure, match="lifespan"):
        async with Lifespan(app, mode="on"):
            pass  # pragma: no cover


async def test_lifespan_off_and_shutdown_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["type"])
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "disk full"})

    with trio.fail_after(TIMEOUT):
        async with Lifespan(app, mode="off") as lifespan:
            assert not lifespan.supported
        assert calls == []
        with caplog.at_level(logging.ERROR, logger="trioquic.asgi"):
            async with Lifespan(app) as lifespan:
                assert lifespan.supported
    assert calls == ["lifespan"]
    assert any("disk full" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="'auto', 'on' or 'off'"):
        Lifespan(app, mode="sometimes")  # type: ignore[arg-type]


# -- websockets over HTTP/3 (RFC 9220) ------------------------------------------------


async def ws_echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    if await no_lifespan(scope):
        return
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    if scope["path"].endswith("/refuse"):
        await send({"type": "websocket.close", "code": 1008})
        return
    if scope["path"].endswith("/deny"):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-length", b"6")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"denied"})
        return
    await send(
        {
            "type": "websocket.accept",
            "subprotocol": scope["subprotocols"][0],
            "headers": [(b"x-accepted", b"yes")],
        }
    )
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            WS_CLOSES.append(message)
            for event in WS_CLOSED:
                event.set()
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"].upper()})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})


WS_CLOSES: list[Message] = []
WS_CLOSED: list[trio.Event] = []


async def test_websocket_echo_over_http3() -> None:
    WS_CLOSES.clear()
    closed = trio.Event()
    WS_CLOSED[:] = [closed]
    async with served(ws_echo_app) as (client, _):
        async with client.open_request(
            "CONNECT",
            "/chat?room=1",
            protocol="websocket",
            headers=[
                ("sec-websocket-version", "13"),
                ("sec-websocket-protocol", "chat, superchat"),
            ],
        ) as stream:
            response = await stream.response()
            assert response.status == 200
            headers = dict(response.headers)
            assert headers[b"sec-websocket-protocol"] == b"chat"
            assert headers[b"x-accepted"] == b"yes"
            ws = Connection(ConnectionType.CLIENT)
            frames = response.__aiter__()

            async def events() -> list[Any]:
                out: list[Any] = []
                while not out:
                    ws.receive_data(await frames.__anext__())
                    out = list(ws.events())
                return out

            await stream.send(ws.send(WsMessage(data="hello")))
            assert [(type(e), e.data) for e in await events()] == [
                (TextMessage, "HELLO")
            ]
            await stream.send(ws.send(WsMessage(data=b"\x01\x02\x03")))
            assert [(type(e), e.data) for e in await events()] == [
                (BytesMessage, b"\x03\x02\x01")
            ]
            await stream.send(ws.send(Ping(payload=b"p")))
            assert [(type(e), e.payload) for e in await events()] == [(Pong, b"p")]
            await stream.send(ws.send(CloseConnection(code=1000, reason="bye")))
            closing = await events()
            assert isinstance(closing[0], CloseConnection)
            assert closing[0].code == 1000
        await closed.wait()
    assert WS_CLOSES == [
        {"type": "websocket.disconnect", "code": 1000, "reason": "bye"}
    ]


async def test_websocket_scope_refusal_and_denial() -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scopes.append(scope)
        await ws_echo_app(scope, receive, send)

    async with served(app, root_path="/root") as (client, port):
        for path, status, body in (("/refuse", 403, b""), ("/deny", 401, b"denied")):
            async with client.open_request(
                "CONNECT",
                path,
                protocol="websocket",
                headers=[
                    ("sec-websocket-version", "13"),
                    ("sec-websocket-protocol", "a"),
                ],
            ) as stream:
                response = await stream.response()
                assert response.status == status
                assert await response.read() == body
    scope = scopes[0]
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "wss"
    assert scope["http_version"] == "3"
    assert scope["path"] == "/root/refuse"
    assert scope["root_path"] == "/root"
    assert scope["subprotocols"] == ["a"]
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert scope["headers"][0] == (b"host", f"127.0.0.1:{port}".encode())
    assert scope["server"] == ("127.0.0.1", port)


# -- the adapter alone, and load_app ---------------------------------------------------


def test_public_names() -> None:
    import trioquic.asgi

    names = {name for name in dir(trioquic.asgi) if not name.startswith("_")}
    assert {
        "ASGIAdapter",
        "AsyncioApp",
        "ClientDisconnected",
        "Lifespan",
        "LifespanFailure",
        "load_app",
        "serve_asgi",
        "ASGIApp",
        "Scope",
        "Message",
        "Receive",
        "Send",
    } <= names
    for name in (
        "ASGIAdapter",
        "AsyncioApp",
        "ClientDisconnected",
        "Lifespan",
        "load_app",
        "serve_asgi",
    ):
        assert getattr(trioquic.asgi, name).__module__ == "trioquic.asgi"
    assert issubclass(ClientDisconnected, OSError)


def test_adapter_arguments() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pass  # pragma: no cover

    with pytest.raises(TypeError, match="ASGI 3 application"):
        ASGIAdapter(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not end with '/'"):
        ASGIAdapter(app, root_path="/api/")
    with pytest.raises(ValueError, match="must start with '/'"):
        ASGIAdapter(app, root_path="api")
    with pytest.raises(ValueError, match="disconnect_grace"):
        ASGIAdapter(app, disconnect_grace=-1)
    with pytest.raises(TypeError, match="state must be a dict"):
        ASGIAdapter(app, state=[])  # type: ignore[arg-type]


@pytest.fixture
def app_dir(tmp_path: pathlib.Path) -> AsyncIterator[pathlib.Path]:
    (tmp_path / "asgi_loader_mod.py").write_text(
        textwrap.dedent(
            """
            class Holder:
                async def app(self, scope, receive, send):
                    await send({"type": "called", "scope": scope["type"]})

            holder = Holder()

            async def app(scope, receive, send):
                await send({"type": "called", "scope": scope["type"]})

            def create_app():
                return app

            not_callable = 42

            class Asgi2:
                def __init__(self, scope):
                    self.scope = scope

                async def __call__(self, receive, send):
                    await send({"type": "asgi2", "scope": self.scope["type"]})
            """
        )
    )
    (tmp_path / "asgi_broken_mod.py").write_text("import no_such_module_here\n")
    yield tmp_path
    for name in ("asgi_loader_mod", "asgi_broken_mod"):
        sys.modules.pop(name, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


async def test_load_app(app_dir: pathlib.Path) -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError  # pragma: no cover

    async def send(message: Message) -> None:
        sent.append(message)

    for spec, factory in (
        ("asgi_loader_mod:app", False),
        ("asgi_loader_mod:holder.app", False),
        ("asgi_loader_mod:create_app", True),
        ("asgi_loader_mod:Asgi2", False),
    ):
        app = load_app(spec, factory=factory, app_dir=app_dir)
        await app({"type": "http"}, receive, send)
    assert sent == [
        {"type": "called", "scope": "http"},
        {"type": "called", "scope": "http"},
        {"type": "called", "scope": "http"},
        {"type": "asgi2", "scope": "http"},
    ]


def test_load_app_errors(app_dir: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="expected MODULE:ATTR"):
        load_app("asgi_loader_mod", app_dir=app_dir)
    with pytest.raises(ValueError, match="expected MODULE:ATTR"):
        load_app("asgi_loader_mod:", app_dir=app_dir)
    with pytest.raises(ImportError, match="could not import module 'nowhere_mod'"):
        load_app("nowhere_mod:app", app_dir=app_dir)
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        load_app("asgi_broken_mod:app", app_dir=app_dir)
    with pytest.raises(
        ValueError, match="module 'asgi_loader_mod' has no attribute 'nope'"
    ):
        load_app("asgi_loader_mod:nope", app_dir=app_dir)
    with pytest.raises(TypeError, match="not callable"):
        load_app("asgi_loader_mod:not_callable", app_dir=app_dir)
    with pytest.raises(TypeError, match="without arguments"):
        load_app("asgi_loader_mod:app", factory=True, app_dir=app_dir)


# -- the TCP front door ------------------------------------------------------------


@pytest.mark.parametrize("http2", [False, True])
async def test_tcp_door_serves_the_same_app_with_alt_svc(http2: bool) -> None:
    import ssl

    import httpx

    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if await no_lifespan(scope):
            return
        scopes.append(scope)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await respond(send, body=b"got " + body)

    context = ssl.create_default_context(
        cafile=str(development_certificate().certificate_path)
    )
    async with served(app) as (client, port):
        response = await client.request("GET", "/h3")
        h3_alt_svc = dict(response.headers)[b"alt-svc"]
        async with httpx.AsyncClient(verify=context, http2=http2) as http:
            reply = await http.post(
                f"https://localhost:{port}/tcp?q=1", content=b"x" * 70_000
            )
    assert reply.status_code == 200
    assert reply.content == b"got " + b"x" * 70_000
    assert reply.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert reply.headers["alt-svc"] == f'h3=":{port}"; ma=86400'
    assert h3_alt_svc == f'h3=":{port}"; ma=86400'.encode()
    assert [s["http_version"] for s in scopes] == ["3", "2" if http2 else "1.1"]
    tcp_scope = scopes[1]
    assert tcp_scope["path"] == "/tcp"
    assert tcp_scope["query_string"] == b"q=1"
    assert (b"host", f"localhost:{port}".encode()) in tcp_scope["headers"]
    assert tcp_scope["server"] == ("127.0.0.1", port)


async def test_websocket_over_the_tcp_door_http11() -> None:
    import ssl

    from wsproto import WSConnection
    from wsproto.events import AcceptConnection, Request

    WS_CLOSES.clear()
    closed = trio.Event()
    WS_CLOSED[:] = [closed]
    context = ssl.create_default_context(
        cafile=str(development_certificate().certificate_path)
    )
    context.set_alpn_protocols(["http/1.1"])
    async with served(ws_echo_app) as (_, port):
        stream = trio.SSLStream(
            await trio.open_tcp_stream("127.0.0.1", port),
            context,
            server_hostname="localhost",
            https_compatible=True,
        )
        ws = WSConnection(ConnectionType.CLIENT)

        async def events() -> list[Any]:
            out: list[Any] = []
            while not out:
                ws.receive_data(await stream.receive_some())
                out = list(ws.events())
            return out

        async with stream:
            await stream.send_all(
                ws.send(
                    Request(host="localhost", target="/chat", subprotocols=["chat"])
                )
            )
            accepted = await events()
            assert isinstance(accepted[0], AcceptConnection)
            assert accepted[0].subprotocol == "chat"
            await stream.send_all(ws.send(WsMessage(data="over tcp")))
            assert [(type(e), e.data) for e in await events()] == [
                (TextMessage, "OVER TCP")
            ]
            await stream.send_all(ws.send(CloseConnection(code=1001, reason="going")))
            assert isinstance((await events())[0], CloseConnection)
        await closed.wait()
    assert WS_CLOSES == [
        {"type": "websocket.disconnect", "code": 1001, "reason": "going"}
    ]


# -- the scope's path, as a property ----------------------------------------------


@given(
    segments=st.lists(st.text(min_size=1, max_size=8), max_size=4),
    query=st.text(alphabet="abc=&%20+", max_size=12),
    root=st.sampled_from(["", "/api", "/a/b"]),
)
def test_split_target_decodes_what_was_encoded(
    segments: list[str], query: str, root: str
) -> None:
    path = "/" + "/".join(segments)
    raw = quote(path, safe="/")
    target = raw + ("?" + query if query else "")
    scope_path, raw_path, query_string = split_target(target, root)
    assert scope_path == root + path
    assert raw_path == (root + raw).encode("latin-1")
    assert query_string == query.encode()


@pytest.mark.parametrize(
    ("address", "pair"),
    [
        (("127.0.0.1", 4433), ("127.0.0.1", 4433)),
        (("::1", 4433, 0, 0), ("::1", 4433)),
        (["10.0.0.1", 80], ("10.0.0.1", 80)),
        (("h", "80"), ("h", 80)),
        (None, None),
        ("/tmp/socket", None),
        (("h",), None),
    ],
)
def test_address_pair(address: object, pair: tuple[str, int] | None) -> None:
    result = address_pair(address)
    assert result == pair
    if result is not None:
        assert type(result) is tuple
        assert type(result[0]) is str and type(result[1]) is int


# -- the garbage collector while serving ---------------------------------------------


class _Startup:
    """Made by the application's lifespan startup; two of them in a cycle."""

    partner: object = None


@pytest.mark.parametrize("gc_tuning", [True, False])
async def test_gc_tuning_while_serving(gc_tuning: bool) -> None:
    """With gc_tuning, what is alive after the lifespan startup is left out
    of collections while serving (a cycle made then and dropped is not
    collected), the youngest generation is collected less often, and both
    are set back once the server stops."""
    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    keep: list[_Startup] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            assert (await receive())["type"] == "lifespan.startup"
            a, b = _Startup(), _Startup()
            a.partner, b.partner = b, a
            keep.append(a)
            del a, b
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await respond(send, 200, str(gc.get_freeze_count() > 0).encode())

    async with served(app, gc_tuning=gc_tuning) as (client, _):
        response = await client.request("GET", "/")
        assert await response.read() == str(gc_tuning).encode()
        assert (gc.get_threshold()[0] == GC_THRESHOLD) is gc_tuning
        assert gc.get_threshold()[1:] == thresholds[1:]
        cycle = weakref.ref(keep.pop())
        gc.collect()
        # frozen: not collected while serving
        assert (cycle() is not None) is gc_tuning
    assert gc.get_freeze_count() == 0  # given back
    assert gc.get_threshold() == thresholds
    gc.collect()
    assert cycle() is None


async def test_gc_tuning_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="gc_tuning"):
        await serve_asgi(
            lambda *_: None,  # type: ignore[arg-type,return-value]
            0,
            settings=server_settings(),
            gc_tuning=1,  # type: ignore[arg-type]
        )


class _ScopelessRequest:
    """A request of a server that offers no ``cancel_scope`` (the adapter
    then runs the application in a scope of its own): its client has gone
    once the body is asked for."""

    method = "POST"
    scheme = "https"
    authority = "example.com"
    path = "/"
    protocol = None
    early_data = False
    http_version = "1.1"
    peer_address = ("127.0.0.1", 5000)
    local_address = ("127.0.0.1", 443)
    cancel_on_abort = True
    aborted = False

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.resets = 0

    async def _body(self) -> AsyncIterator[bytes]:
        await trio.lowlevel.checkpoint()
        self.aborted = True
        raise trio.BrokenResourceError("the client left")
        yield b""  # an async generator

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body()

    def reset(self, error_code: int = 0) -> None:
        self.resets += 1


@pytest.mark.parametrize("grace", [0.0, 0.5])
async def test_disconnect_grace_without_a_server_scope(
    grace: float,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Where the server offers no scope, the grace runs on the adapter's own:
    the application that ignores the disconnect is cancelled after it, the
    stream is reset, and the warning is logged."""
    told_at: list[float] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "http.disconnect"
        told_at.append(trio.current_time())
        await trio.sleep_forever()

    request = _ScopelessRequest()
    with caplog.at_level(logging.WARNING, logger="trioquic.asgi"):
        with trio.fail_after(5):
            await ASGIAdapter(app, disconnect_grace=grace)(request)  # type: ignore[arg-type]
    assert trio.current_time() == pytest.approx(told_at[0] + grace)
    assert request.resets == 1
    assert request.cancel_on_abort is False
    assert any("ignored the disconnect" in r.getMessage() for r in caplog.records)
