"""Real ASGI frameworks served by serve_asgi and fetched over HTTP/3:
Starlette (routes, streaming, files, request streams, lifespan,
WebSockets), FastAPI (JSON bodies and response models), Quart-trio, and
Django (an asyncio-only framework, through AsyncioApp)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, TextMessage
from wsproto.events import Message as WsMessage

import trioquic
from trioquic.asgi import serve_asgi
from trioquic.h3 import Http3Client, open_http3_client
from trioquic.testing import development_certificate

TIMEOUT = 30


def _settings(server: bool) -> trioquic.QuicSettings:
    certificate = development_certificate()
    if server:
        return trioquic.QuicSettings(
            alpn_protocols=["h3"],
            certificate=str(certificate.certificate_path),
            private_key=str(certificate.private_key_path),
        )
    return trioquic.QuicSettings(
        alpn_protocols=["h3"],
        ca_certs=str(certificate.certificate_path),
        server_name="localhost",
    )


@asynccontextmanager
async def served(app: Any, **options: Any) -> AsyncIterator[Http3Client]:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    serve_asgi,
                    app,
                    0,
                    host="127.0.0.1",
                    settings=_settings(True),
                    **options,
                )
            )
            async with open_http3_client(
                "127.0.0.1", server.port, settings=_settings(False)
            ) as client:
                yield client
            nursery.cancel_scope.cancel()


# -- Starlette ---------------------------------------------------------------------


def starlette_app(root: pathlib.Path, events: list[str]) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import (
        FileResponse,
        JSONResponse,
        PlainTextResponse,
        StreamingResponse,
    )
    from starlette.routing import Mount, Route, WebSocketRoute
    from starlette.staticfiles import StaticFiles
    from starlette.websockets import WebSocket

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        yield {"greeting": "hello from lifespan"}
        events.append("shutdown")

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x" * 1024)

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(16):
                yield bytes([65 + i]) * 65536

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    async def upload(request: Request) -> JSONResponse:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse({"size": size, "sha256": digest.hexdigest()})

    async def state(request: Request) -> PlainTextResponse:
        return PlainTextResponse(
            f"{request.state.greeting} {request.scope['http_version']} "
            f"{request.url.path} {request.query_params['q']}"
        )

    async def file(request: Request) -> FileResponse:
        return FileResponse(root / "page.html")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(f"echo: {text}")

    return Starlette(
        routes=[
            Route("/", home),
            Route("/stream", stream),
            Route("/upload", upload, methods=["POST"]),
            Route("/state", state),
            Route("/page.html", file),
            WebSocketRoute("/ws", ws),
            Mount("/static", StaticFiles(directory=root)),
        ],
        lifespan=lifespan,
    )


async def test_starlette(tmp_path: pathlib.Path) -> None:
    page = b"<!doctype html><title>t</title>" + b"p" * 300_000
    (tmp_path / "page.html").write_bytes(page)
    events: list[str] = []
    app = starlette_app(tmp_path, events)
    async with served(app) as client:
        assert events == ["startup"]
        response = await client.request("GET", "/")
        assert response.status == 200
        assert dict(response.headers)[b"content-type"] == b"text/plain; charset=utf-8"
        assert await response.read() == b"x" * 1024

        response = await client.request("GET", "/stream")
        body = await response.read()
        assert body == b"".join(bytes([65 + i]) * 65536 for i in range(16))

        upload = bytes(range(256)) * 4096  # 1 MiB

        async def parts() -> AsyncIterator[bytes]:
            for i in range(0, len(upload), 100_000):
                yield upload[i : i + 100_000]

        response = await client.request("POST", "/upload", body=parts())
        assert json.loads(await response.read()) == {
            "size": len(upload),
            "sha256": hashlib.sha256(upload).hexdigest(),
        }

        response = await client.request("GET", "/state?q=caf%C3%A9")
        assert await response.read() == "hello from lifespan 3 /state café".encode()

        # FileResponse goes through http.response.pathsend.
        response = await client.request("GET", "/page.html")
        headers = dict(response.headers)
        assert headers[b"content-type"] == b"text/html; charset=utf-8"
        assert headers[b"content-length"] == str(len(page)).encode()
        assert b"etag" in headers and b"last-modified" in headers
        assert await response.read() == page
        # StaticFiles: conditional requests.
        response = await client.request("GET", "/static/page.html")
        etag = dict(response.headers)[b"etag"]
        assert await response.read() == page
        response = await client.request(
            "GET", "/static/page.html", headers=[("if-none-match", etag)]
        )
        assert response.status == 304
        response = await client.request(
            "GET", "/page.html", headers=[("range", "bytes=10-19")]
        )
        assert response.status == 206
        assert await response.read() == page[10:20]

        response = await client.request("GET", "/missing")
        assert response.status == 404

        async with client.open_request(
            "CONNECT",
            "/ws",
            protocol="websocket",
            headers=[("sec-websocket-version", "13")],
        ) as stream:
            response = await stream.response()
            assert response.status == 200
            ws = Connection(ConnectionType.CLIENT)
            frames = response.__aiter__()
            await stream.send(ws.send(WsMessage(data="ping over h3")))
            received: list[Any] = []
            while not received:
                ws.receive_data(await frames.__anext__())
                received = list(ws.events())
            assert isinstance(received[0], TextMessage)
            assert received[0].data == "echo: ping over h3"
            await stream.send(ws.send(CloseConnection(code=1000)))
            closing: list[Any] = []
            while not closing:
                ws.receive_data(await frames.__anext__())
                closing = list(ws.events())
            assert isinstance(closing[0], CloseConnection)
    assert events == ["startup", "shutdown"]


# -- FastAPI -----------------------------------------------------------------------


try:
    from pydantic import BaseModel
except ImportError:  # pragma: no cover
    BaseModel = object  # type: ignore[assignment,misc]


class ItemIn(BaseModel):
    name: str
    price: float
    quantity: int = 1


class ItemOut(BaseModel):
    name: str
    total: float


async def test_fastapi() -> None:
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/items", response_model=ItemOut)
    async def create(item: ItemIn) -> ItemOut:
        return ItemOut(name=item.name.upper(), total=item.price * item.quantity)

    @app.get("/items/{item_id}")
    async def read(item_id: int, detail: bool = False) -> dict[str, Any]:
        return {"id": item_id, "detail": detail}

    async with served(app) as client:
        response = await client.request(
            "POST",
            "/items",
            headers=[("content-type", "application/json")],
            body=json.dumps({"name": "widget", "price": 2.5, "quantity": 4}).encode(),
        )
        assert response.status == 200
        assert json.loads(await response.read()) == {"name": "WIDGET", "total": 10.0}

        response = await client.request(
            "POST",
            "/items",
            headers=[("content-type", "application/json")],
            body=b'{"name": "no price"}',
        )
        assert response.status == 422
        assert json.loads(await response.read())["detail"][0]["loc"] == [
            "body",
            "price",
        ]

        response = await client.request("GET", "/items/7?detail=true")
        assert json.loads(await response.read()) == {"id": 7, "detail": True}


# -- Quart-trio --------------------------------------------------------------------


async def test_quart_trio() -> None:
    from quart import request
    from quart_trio import QuartTrio

    app = QuartTrio(__name__)
    started: list[bool] = []

    @app.before_serving
    async def startup() -> None:
        started.append(True)

    @app.route("/hello/<name>")
    async def hello(name: str) -> str:
        await trio.lowlevel.checkpoint()  # trio, not asyncio
        return f"hello {name} over HTTP/{request.http_version}"

    @app.route("/echo", methods=["POST"])
    async def echo() -> dict[str, Any]:
        data = await request.get_data()
        return {"length": len(data)}

    async with served(app) as client:
        assert started == [True]
        response = await client.request("GET", "/hello/quart")
        assert response.status == 200
        assert await response.read() == b"hello quart over HTTP/3"
        response = await client.request("POST", "/echo", body=b"z" * 200_000)
        assert json.loads(await response.read()) == {"length": 200_000}


# -- Django --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_app() -> Any:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test-only",
            ROOT_URLCONF="test_asgi_frameworks_django_urls",
            ALLOWED_HOSTS=["*"],
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            DATABASES={},
        )
        django.setup()
    import sys
    import types

    from django.http import HttpRequest, HttpResponse, JsonResponse
    from django.urls import path

    async def hello(request: HttpRequest) -> HttpResponse:
        return HttpResponse(f"hello from django {request.method} {request.path}")

    def sync_view(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"body": len(request.body), "host": request.get_host()})

    urls = types.ModuleType("test_asgi_frameworks_django_urls")
    urls.urlpatterns = [path("hello/", hello), path("sync/", sync_view)]  # type: ignore[attr-defined]
    sys.modules[urls.__name__] = urls
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


async def test_django_directly_needs_asyncio(django_app: Any) -> None:
    """Django's ASGIHandler awaits asyncio primitives (asyncio.gather in
    signals, asyncio.create_task for its disconnect listener, asgiref's
    sync_to_async executor): under trio its requests fail, with a 500."""
    async with served(django_app) as client:
        response = await client.request("GET", "/hello/")
        assert response.status == 500


async def test_django_through_asyncio_app(django_app: Any) -> None:
    from trioquic.asgi import AsyncioApp

    app = AsyncioApp(django_app)
    try:
        async with served(app) as client:
            response = await client.request("GET", "/hello/")
            assert response.status == 200
            assert await response.read() == b"hello from django GET /hello/"
            response = await client.request("POST", "/sync/", body=b"q" * 5000)
            assert response.status == 200
            body = json.loads(await response.read())
            assert body["body"] == 5000
            assert body["host"].startswith("127.0.0.1:")
            response = await client.request("GET", "/nowhere/")
            assert response.status == 404
    finally:
        app.close()


# -- the examples --------------------------------------------------------------------


def _example(name: str) -> Any:
    import importlib.util

    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["asgi_starlette", "asgi_fastapi"])
async def test_examples(name: str) -> None:
    app = _example(name).app
    async with served(app) as client:
        response = await client.request("GET", "/")
        assert response.status == 200
        assert await response.read() == b"x" * 1023 + b"\n"
        response = await client.request("GET", "/stream")
        assert await response.read() == b"y" * (1024 * 1024)
