"""trioquic.testing.open_memory_http3 and open_memory_httpx: HTTP/3 request
handlers, Starlette and FastAPI applications served on the memory network,
perfect and lossy, through Http3Client and through httpx, under the
autojump clock; HTTP3Transport's socket_factory."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import hypothesis
import pytest
import trio
import trio.testing
from fastapi import FastAPI, HTTPException
from helpers import all_tasks
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from test_properties import examples, property_settings

from trioquic import h3
from trioquic.asgi import LifespanFailure
from trioquic.httpx import HTTP3Transport
from trioquic.testing import (
    LinkConditions,
    MemoryNetwork,
    MemorySocket,
    client_settings,
    open_memory_http3,
    open_memory_httpx,
    server_settings,
)
from trioquic.testing.strategies import link_conditions, networks

LOSSY = LinkConditions(delay=0.03, jitter=0.01, loss=0.1)


@pytest.fixture(params=["perfect", "lossy"])
def network(request: pytest.FixtureRequest) -> MemoryNetwork:
    if request.param == "perfect":
        return MemoryNetwork(seed=1)
    return MemoryNetwork(seed=7, conditions=LOSSY)


def assert_lost_some(network: MemoryNetwork) -> None:
    """A lossy network did lose datagrams (else the test tested nothing)."""
    if network.default_conditions.loss:
        assert network.statistics().lost > 0


# -- an HTTP/3 request handler ------------------------------------------------


async def h3_handler(request: h3.Request) -> None:
    if request.path == "/boom":
        raise RuntimeError("the handler failed")
    if request.path == "/stream":
        async with request.stream_response(
            200, [(b"content-type", b"text/plain")]
        ) as writer:
            for i in range(5):
                await writer.send(b"part %d;" % i)
                await trio.sleep(0.05)
        return
    body = await request.read()
    headers = [
        (b"x-method", request.method.encode()),
        (b"x-echo", dict(request.headers).get(b"x-test", b"-")),
    ]
    status = 201 if request.method == "PUT" else 200
    await request.respond(status, headers, body or request.path.encode())


async def test_h3_handler_through_http3_client(
    autojump_clock: trio.testing.MockClock, network: MemoryNetwork
) -> None:
    upload = bytes(range(256)) * 800  # 200 KB, many packets
    before = all_tasks()
    async with open_memory_http3(h3_handler, network=network) as client:
        assert isinstance(client, h3.Http3Client)
        response = await client.request("GET", "/hello", headers=[("x-test", "1")])
        assert response.status == 200
        assert dict(response.headers)[b"x-echo"] == b"1"
        assert await response.read() == b"/hello"

        response = await client.request("PUT", "/upload", body=upload)
        assert response.status == 201
        assert dict(response.headers)[b"x-method"] == b"PUT"
        assert await response.read() == upload

        response = await client.request("GET", "/stream")
        parts = [chunk async for chunk in response]
        assert b"".join(parts) == b"".join(b"part %d;" % i for i in range(5))
        assert len(parts) > 1  # it did arrive as a stream

        response = await client.request("GET", "/boom")
        assert response.status == 500
        await response.read()
    assert all_tasks() == before
    assert_lost_some(network)


async def test_h3_handler_through_httpx(
    autojump_clock: trio.testing.MockClock, network: MemoryNetwork
) -> None:
    before = all_tasks()
    async with open_memory_httpx(h3_handler, network=network) as client:
        assert str(client.base_url) == "https://10.0.0.1:4433"
        response = await client.post("/echo", content=b"x" * 50_000)
        assert response.http_version == "HTTP/3"
        assert response.status_code == 200
        assert response.content == b"x" * 50_000
        assert response.headers["x-method"] == "POST"

        async with client.stream("GET", "/stream") as streamed:
            parts = [chunk async for chunk in streamed.aiter_raw()]
        assert b"".join(parts) == b"".join(b"part %d;" % i for i in range(5))

        assert (await client.get("/boom")).status_code == 500
    assert all_tasks() == before
    assert_lost_some(network)


# -- a Starlette application --------------------------------------------------


def starlette_app(events: list[str]) -> Starlette:
    """Routes for bodies, streams, headers, status codes and errors; the
    lifespan records its startup and shutdown in ``events``."""

    async def item(request: StarletteRequest) -> Response:
        return JSONResponse(
            {
                "item_id": request.path_params["item_id"],
                "q": request.query_params.get("q"),
                "started": request.state.started,
            }
        )

    async def echo(request: StarletteRequest) -> Response:
        return JSONResponse(await request.json())

    async def upload(request: StarletteRequest) -> Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse({"size": size, "sha256": digest.hexdigest()}, 201)

    async def stream(request: StarletteRequest) -> Response:
        count = int(request.query_params["n"])

        async def parts() -> AsyncIterator[bytes]:
            for i in range(count):
                yield b"line %d\n" % i
                await anyio.sleep(0.02)

        return StreamingResponse(parts(), media_type="text/plain")

    async def headers(request: StarletteRequest) -> Response:
        return Response(
            status_code=202,
            headers={"x-reply": request.headers["x-test"].upper()},
        )

    async def boom(request: StarletteRequest) -> Response:
        raise RuntimeError("the application failed")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, bool]]:
        events.append("startup")
        yield {"started": True}
        events.append("shutdown")

    return Starlette(
        routes=[
            Route("/items/{item_id:int}", item),
            Route("/echo", echo, methods=["POST"]),
            Route("/upload", upload, methods=["POST"]),
            Route("/stream", stream),
            Route("/headers", headers),
            Route("/boom", boom),
        ],
        lifespan=lifespan,
    )


async def test_starlette_through_httpx(
    autojump_clock: trio.testing.MockClock, network: MemoryNetwork
) -> None:
    events: list[str] = []
    app = starlette_app(events)
    before = all_tasks()
    upload = bytes(range(256)) * 1000

    async def upload_parts() -> AsyncIterator[bytes]:
        for i in range(0, len(upload), 10_000):
            yield upload[i : i + 10_000]

    async with open_memory_httpx(app, network=network) as client:
        assert events == ["startup"]
        response = await client.get("/items/7", params={"q": "x"})
        assert response.status_code == 200
        assert response.json() == {"item_id": 7, "q": "x", "started": True}

        document = {"name": "é", "values": [1, 2.5, None, True], "nested": {"a": []}}
        assert (await client.post("/echo", json=document)).json() == document

        response = await client.post("/upload", content=upload_parts())
        assert response.status_code == 201
        assert response.json() == {
            "size": len(upload),
            "sha256": hashlib.sha256(upload).hexdigest(),
        }

        async with client.stream("GET", "/stream", params={"n": 20}) as streamed:
            assert streamed.headers["content-type"].startswith("text/plain")
            lines = [line async for line in streamed.aiter_lines()]
        assert lines == [f"line {i}" for i in range(20)]

        response = await client.get("/headers", headers={"x-test": "abc"})
        assert response.status_code == 202
        assert response.headers["x-reply"] == "ABC"

        assert (await client.get("/nowhere")).status_code == 404
        assert (await client.delete("/echo")).status_code == 405
        response = await client.get("/boom")
        assert response.status_code == 500
        assert response.text == "Internal Server Error"
    assert events == ["startup", "shutdown"]
    assert all_tasks() == before
    assert_lost_some(network)


async def test_starlette_through_http3_client(
    autojump_clock: trio.testing.MockClock, network: MemoryNetwork
) -> None:
    events: list[str] = []
    async with open_memory_http3(starlette_app(events), network=network) as client:
        response = await client.request(
            "POST",
            "/echo",
            headers=[("content-type", "application/json")],
            body=json.dumps({"a": [1, 2]}).encode(),
        )
        assert response.status == 200
        assert json.loads(await response.read()) == {"a": [1, 2]}

        response = await client.request("GET", "/stream?n=5")
        assert await response.read() == b"".join(b"line %d\n" % i for i in range(5))

        response = await client.request("GET", "/boom")
        assert response.status == 500
        assert await response.read() == b"Internal Server Error"
    assert events == ["startup", "shutdown"]
    assert_lost_some(network)


async def test_lifespan_off_and_failing(autojump_clock: trio.testing.MockClock) -> None:
    events: list[str] = []
    async with open_memory_httpx(starlette_app(events), lifespan="off") as client:
        assert (await client.get("/headers", headers={"x-test": "a"})).is_success
    assert events == []

    @contextlib.asynccontextmanager
    async def failing_lifespan(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    failing = Starlette(lifespan=failing_lifespan)
    before = all_tasks()
    with pytest.raises(LifespanFailure, match="no database"):
        async with open_memory_http3(failing):
            pytest.fail("served although the startup failed")  # pragma: no cover
    assert all_tasks() == before


# -- a FastAPI application ----------------------------------------------------


class Item(BaseModel):
    name: str
    price: float


def fastapi_app() -> FastAPI:
    app = FastAPI()
    items: dict[int, Item] = {}

    @app.post("/items/{item_id}", status_code=201)
    async def create_item(item_id: int, item: Item) -> Item:
        items[item_id] = item
        return item

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> Item:
        if item_id not in items:
            raise HTTPException(status_code=404, detail="no such item")
        return items[item_id]

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("the endpoint failed")

    return app


async def test_fastapi_through_httpx(
    autojump_clock: trio.testing.MockClock, network: MemoryNetwork
) -> None:
    before = all_tasks()
    async with open_memory_httpx(fastapi_app(), network=network) as client:
        response = await client.post("/items/1", json={"name": "cup", "price": 2.5})
        assert response.status_code == 201
        assert (await client.get("/items/1")).json() == {"name": "cup", "price": 2.5}
        response = await client.get("/items/2")
        assert response.status_code == 404
        assert response.json() == {"detail": "no such item"}
        response = await client.get("/items/not-a-number")
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["path", "item_id"]
        assert (await client.get("/boom")).status_code == 500
        response = await client.get("/openapi.json")
        assert "/items/{item_id}" in response.json()["paths"]
    assert all_tasks() == before
    assert_lost_some(network)


async def test_fastapi_through_http3_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=3, conditions=LOSSY)
    async with open_memory_http3(fastapi_app(), network=network) as client:
        response = await client.request(
            "POST",
            "/items/5",
            headers=[("content-type", "application/json")],
            body=b'{"name": "pen", "price": 1}',
        )
        assert response.status == 201
        assert json.loads(await response.read()) == {"name": "pen", "price": 1.0}
        response = await client.request("GET", "/boom")
        assert response.status == 500
        await response.read()


async def test_lossy_run_takes_virtual_time_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Many seconds of a slow, lossy network pass in a fraction of a second."""
    network = MemoryNetwork(
        seed=11, conditions=LinkConditions(delay=0.2, jitter=0.05, loss=0.15)
    )
    started, real_start = trio.current_time(), time.perf_counter()
    async with open_memory_httpx(starlette_app([]), network=network) as client:
        for i in range(10):
            assert (await client.get(f"/items/{i}")).json()["item_id"] == i
    virtual, real = trio.current_time() - started, time.perf_counter() - real_start
    assert virtual > 4.0  # at least a round trip of 0.4 s per request
    assert real < virtual / 4
    assert_lost_some(network)


# -- what goes in, what comes out ---------------------------------------------


async def test_the_block_s_exception_comes_out_as_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = all_tasks()
    with pytest.raises(KeyError, match="mine"):
        async with open_memory_httpx(starlette_app([])) as client:
            await client.get("/items/1")
            raise KeyError("mine")
    assert all_tasks() == before


async def test_a_quic_network_fixture_and_other_addresses(
    autojump_clock: trio.testing.MockClock, quic_network: MemoryNetwork
) -> None:
    async with open_memory_httpx(
        fastapi_app(),
        network=quic_network,
        host="192.168.1.10",
        port=8443,
        client_host="192.168.1.20",
        headers={"x-default": "1"},
    ) as client:
        assert str(client.base_url) == "https://192.168.1.10:8443"
        assert (await client.get("/items/9")).status_code == 404
    assert quic_network.link_statistics("192.168.1.20", "192.168.1.10").sent > 0


async def sync_looking(request: Any, *rest: Any) -> None:
    await request.respond(200, body=b"as an h3 handler")


def test_wrong_arguments_raise_type_error() -> None:
    async def two(a: object, b: object) -> None: ...

    class App:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...

    cases: list[tuple[Any, dict[str, Any], str]] = [
        (42, {}, "HTTP/3 request handler .* or an ASGI 3 application"),
        (App, {}, "the class App: pass an instance"),
        (two, {}, "with the signature \\(a: 'object', b: 'object'\\)"),
        (sync_looking, {}, "pass asgi=True .* or asgi=False"),
        (print, {"asgi": "yes"}, "asgi must be True, False or None"),
        (h3_handler, {"network": "10.0.0.1"}, "network must be a .*MemoryNetwork"),
        (h3_handler, {"server_settings": {}}, "server_settings must be"),
    ]
    for target, keywords, message in cases:
        for opener in (open_memory_http3, open_memory_httpx):
            with pytest.raises(TypeError, match=message):
                trio.run(_enter, opener, target, keywords)
    with pytest.raises(TypeError, match="sets the client's base_url itself"):
        trio.run(_enter, open_memory_httpx, h3_handler, {"base_url": "https://x"})
    with pytest.raises(ValueError, match="for ASGI applications"):
        trio.run(_enter, open_memory_http3, h3_handler, {"lifespan": "on"})


async def _enter(opener: Any, target: Any, keywords: dict[str, Any]) -> None:
    async with opener(target, **keywords):
        pytest.fail("opened")  # pragma: no cover


async def test_asgi_keyword_decides(autojump_clock: trio.testing.MockClock) -> None:
    """``*rest`` fits both shapes: ``asgi=False`` serves it as a handler."""
    async with open_memory_http3(sync_looking, asgi=False) as client:
        response = await client.request("GET", "/")
        assert await response.read() == b"as an h3 handler"


# -- HTTP3Transport's socket_factory ------------------------------------------


async def test_transport_socket_factory(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(seed=5)
    made: list[tuple[str, int, MemorySocket]] = []

    def factory(host: str, port: int) -> MemorySocket:
        sock = network.socket("10.0.0.9")
        made.append((host, port, sock))
        return sock

    server_socket = network.socket("10.0.0.1", 4433)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                h3.serve_http3,
                h3_handler,
                4433,
                settings=server_settings(alpn_protocols=["h3"]),
                sockets=[server_socket],
            )
        )
        transport = HTTP3Transport(
            settings=client_settings(alpn_protocols=["h3"]), socket_factory=factory
        )
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get("https://10.0.0.1:4433/a")
            assert response.content == b"/a"
            assert (await client.get("https://10.0.0.1:4433/b")).content == b"/b"
        nursery.cancel_scope.cancel()
    server_socket.close()
    assert [(host, port) for host, port, _ in made] == [("10.0.0.1", 4433)]
    assert made[0][2].closed  # the transport closed it with the connection


def test_transport_socket_factory_arguments() -> None:
    with pytest.raises(TypeError, match="socket_factory must be a callable"):
        HTTP3Transport(socket_factory="10.0.0.2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="local_address or socket_factory"):
        HTTP3Transport(
            local_address="127.0.0.1",
            socket_factory=lambda host, port: MemoryNetwork().socket(),
        )


# -- a property over lossy networks -------------------------------------------

json_documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)

#: Lossy, slow, reordering, duplicating, corrupting links, and the client's
#: address rebound (NAT) while it talks.
lossy_networks = networks(
    conditions=link_conditions(delay=(0.0, 0.1), loss=(0.0, 0.25)), rebinding=True
)


@pytest.mark.aioquic_only(
    "the qh3 engine loses a few handshakes in a hundred at 25% loss (the "
    "server closes with 'packet contains no CRYPTO frame' on "
    "MemoryNetwork(seed=21, conditions=LinkConditions(jitter=0.03125, "
    "loss=0.25)); a handshake timeout on MemoryNetwork(seed=44, "
    "conditions=LinkConditions(loss=0.25))), and a client rebound as the "
    "handshake completes (LinkConditions(delay=0.0625), rebinds=[(0.125, "
    "'10.0.0.2')]) ends in an idle timeout"
)
@hypothesis.settings(
    property_settings,
    max_examples=examples(8),
    suppress_health_check=[
        *property_settings.suppress_health_check,
        # autojump_clock serves every example (its time goes on).
        hypothesis.HealthCheck.function_scoped_fixture,
    ],
)
@hypothesis.given(network=lossy_networks, document=json_documents)
async def test_property_starlette_json_echo_round_trips(
    autojump_clock: trio.testing.MockClock, network: MemoryNetwork, document: Any
) -> None:
    """Whatever the link does, a JSON document posted to a Starlette app
    comes back equal (a new network per example: the clock is shared)."""
    async with open_memory_httpx(starlette_app([]), network=network) as client:
        # Wrapped: httpx sends no body at all for json=None.
        response = await client.post("/echo", json={"document": document})
        assert response.status_code == 200
        assert response.json() == {"document": document}
