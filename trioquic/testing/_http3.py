"""HTTP/3 request handlers and ASGI applications served on a
:class:`MemoryNetwork`, with a client connected to them: an
:class:`~trioquic.h3.Http3Client` (:func:`open_memory_http3`) or an
``httpx.AsyncClient`` (:func:`open_memory_httpx`)."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs

from .._settings import QuicSettings
from ..asgi._adapter import ASGIAdapter
from ..asgi._lifespan import Lifespan, LifespanMode
from ..asgi._types import ASGIApp
from ..h3._client import Http3Client
from ..h3._endpoint import open_http3_client, serve_http3
from ..h3._server import Request, RequestHandler
from ..h3._settings import Http3Settings
from ._network import MemoryNetwork, MemorySocket
from ._server import client_settings as _default_client_settings
from ._server import server_settings as _default_server_settings
from ._server import serving_on

if TYPE_CHECKING:
    import httpx

#: What :func:`open_memory_http3` and :func:`open_memory_httpx` serve: an
#: HTTP/3 request handler or an ASGI 3 application.
HandlerOrApp = Callable[[Request], Awaitable[None]] | ASGIApp

_ACCEPTED = (
    "an HTTP/3 request handler (async def handler(request: trioquic.h3.Request)) "
    "or an ASGI 3 application (async def app(scope, receive, send))"
)

#: httpx's own 5 s is short for a lossy link (under the mock clock a longer
#: one costs no real time).
DEFAULT_HTTPX_TIMEOUT = 30.0


def _binds(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def _serves_asgi(handler_or_app: object, asgi: bool | None = None) -> bool:
    """Whether ``handler_or_app`` is served as an ASGI 3 application (True) or
    as an HTTP/3 request handler (False).

    ``asgi`` decides when given. Otherwise the signature does: a callable
    taking three positional arguments (``scope, receive, send``) is an ASGI
    application, one taking one (``request``) a request handler. Raises
    :exc:`TypeError` for anything else (not callable, a class, a signature
    that fits both or neither, or none to inspect: then pass ``asgi``)."""
    if asgi is not None and not isinstance(asgi, bool):
        raise TypeError(f"asgi must be True, False or None, got {asgi!r}")
    if isinstance(handler_or_app, type):
        raise TypeError(
            f"expected {_ACCEPTED}, got the class {handler_or_app.__name__}: pass "
            "an instance (ASGI 2 applications, classes called with the scope, "
            "are not supported: wrap one with "
            "asgiref.compatibility.guarantee_single_callable)"
        )
    if not callable(handler_or_app):
        raise TypeError(f"expected {_ACCEPTED}, got {type(handler_or_app).__name__}")
    if asgi is not None:
        return asgi
    try:
        signature = inspect.signature(handler_or_app)
    except (TypeError, ValueError):
        raise TypeError(
            f"cannot inspect the signature of {handler_or_app!r} to tell "
            f"{_ACCEPTED}: pass asgi=True or asgi=False"
        ) from None
    one, three = _binds(signature, 1), _binds(signature, 3)
    if one != three:
        return three
    if one:
        raise TypeError(
            f"{handler_or_app!r} can be called with one argument or with three: "
            "pass asgi=True (an ASGI 3 application) or asgi=False (an HTTP/3 "
            "request handler)"
        )
    raise TypeError(
        f"expected {_ACCEPTED}, got {handler_or_app!r} with the signature {signature}"
    )


@attrs.frozen
class _Served:
    network: MemoryNetwork
    address: tuple[str, int]
    client_settings: QuicSettings


@asynccontextmanager
async def _serving(
    handler_or_app: HandlerOrApp,
    *,
    asgi: bool | None,
    network: MemoryNetwork | None,
    host: str,
    port: int,
    http3_settings: Http3Settings | None,
    server_settings: QuicSettings | None,
    client_settings: QuicSettings | None,
    lifespan: LifespanMode,
    root_path: str,
) -> AsyncIterator[_Served]:
    """The server running (and the ASGI lifespan started) for the block;
    cancelled gracefully (GOAWAY, requests in flight finish) when it ends,
    then the lifespan shut down. The block's exception comes out as itself."""
    is_asgi = _serves_asgi(handler_or_app, asgi)
    if network is None:
        network = MemoryNetwork()
    elif not isinstance(network, MemoryNetwork):
        raise TypeError(
            f"network must be a trioquic.testing.MemoryNetwork or None, "
            f"got {type(network).__name__}"
        )
    if server_settings is None:
        server_settings = _default_server_settings(alpn_protocols=["h3"])
    if client_settings is None:
        client_settings = _default_client_settings(alpn_protocols=["h3"])
    for name, value in (
        ("server_settings", server_settings),
        ("client_settings", client_settings),
    ):
        if not isinstance(value, QuicSettings):
            raise TypeError(
                f"{name} must be a trioquic.QuicSettings or None, "
                f"got {type(value).__name__}"
            )
    handler: RequestHandler
    running: AbstractAsyncContextManager[object] = contextlib.nullcontext()
    if is_asgi:
        app: ASGIApp = handler_or_app  # type: ignore[assignment]
        state: dict[str, Any] = {}
        handler = ASGIAdapter(app, root_path=root_path, state=state)
        # Constructed now: a wrong mode is a ValueError before anything runs.
        running = Lifespan(app, state, mode=lifespan)
        if http3_settings is None:
            # As serve_asgi: WebSockets over HTTP/3 (RFC 9220).
            http3_settings = Http3Settings(enable_connect_protocol=True)
    else:
        if lifespan != "auto" or root_path:
            raise ValueError(
                "lifespan and root_path are for ASGI applications, not for an "
                "HTTP/3 request handler (leave them out, or pass asgi=True)"
            )
        handler = handler_or_app  # type: ignore[assignment]

    def start(sock: MemorySocket) -> Callable[..., Awaitable[object]]:
        return functools.partial(
            serve_http3,
            handler,
            port,
            settings=server_settings,
            http3_settings=http3_settings,
            sockets=[sock],
        )

    async with serving_on(network, host, port, start, around=running):
        yield _Served(network, (host, port), client_settings)


@asynccontextmanager
async def open_memory_http3(
    handler_or_app: HandlerOrApp,
    *,
    network: MemoryNetwork | None = None,
    asgi: bool | None = None,
    host: str = "10.0.0.1",
    port: int = 4433,
    client_host: str = "10.0.0.2",
    http3_settings: Http3Settings | None = None,
    client_http3_settings: Http3Settings | None = None,
    server_settings: QuicSettings | None = None,
    client_settings: QuicSettings | None = None,
    lifespan: LifespanMode = "auto",
    root_path: str = "",
) -> AsyncIterator[Http3Client]:
    """Serve an HTTP/3 request handler or an ASGI 3 application on
    ``(host, port)`` of ``network`` and yield an
    :class:`~trioquic.h3.Http3Client` connected to it from ``client_host``::

        async def hello(request):
            await request.respond(200, [(b"content-type", b"text/plain")], b"hi")

        async def test_hello(autojump_clock):
            async with open_memory_http3(hello) as client:
                response = await client.request("GET", "/")
                assert response.status == 200
                assert await response.read() == b"hi"

    A Starlette or FastAPI application is passed the same way
    (``open_memory_http3(app)``).

    - ``handler_or_app``: ``async def handler(request: trioquic.h3.Request)``,
      served with :func:`~trioquic.h3.serve_http3`, or an ASGI 3 application
      (``async def app(scope, receive, send)``), served as
      :func:`~trioquic.asgi.serve_asgi` does (an
      :class:`~trioquic.asgi.ASGIAdapter`, its lifespan around the server).
      Which one it is comes from its signature; ``asgi=True`` or
      ``asgi=False`` says it when the signature cannot (``*args``, a
      builtin). Anything else raises :exc:`TypeError`.
    - ``network``: a :class:`MemoryNetwork` (e.g. lossy, seeded, or pytest's
      ``quic_network`` fixture); a new lossless one by default.
    - ``host``, ``port``: the server's address on it; ``client_host``: the
      client's host (a free port is picked). Give IP address literals: the
      qh3 engine takes nothing else.
    - ``http3_settings`` (the server's) defaults to
      :class:`~trioquic.h3.Http3Settings`, with extended CONNECT enabled for
      an ASGI application (WebSockets); ``client_http3_settings`` is the
      client's.
    - ``server_settings`` / ``client_settings`` default to this module's
      :func:`server_settings` / :func:`client_settings` with ALPN ``h3``
      (the development certificate, trusted by the client whatever the
      address).
    - ``lifespan`` (``"auto"``, ``"on"``, ``"off"``) and ``root_path``:
      as for :func:`~trioquic.asgi.serve_asgi`, for ASGI applications only.
      A startup that fails raises :exc:`~trioquic.asgi.LifespanFailure`.

    Leaving the block closes the client (GOAWAY, then CONNECTION_CLOSE), then
    stops the server gracefully (requests in flight finish, within
    ``http3_settings.goaway_grace_period``) and runs the lifespan shutdown;
    no task started here outlives the block, and an exception raised in it
    comes out as itself.

    Under ``trio.testing.MockClock(autojump_threshold=0)`` (pytest-trio's
    ``autojump_clock``) delays, losses and timeouts take no real time; the
    ASGI adapter and lifespan use trio's clock only. What an application
    runs in a worker thread (a Starlette or FastAPI ``def`` endpoint, a
    synchronous iterator streamed) is not: while it runs, every trio task
    waits, so the autojump clock jumps to the next deadline and the next
    (retransmissions, then the client's read timeout fire) before the thread
    is done. Use ``async def`` endpoints in such tests, or a clock that
    jumps only after more real time than a thread takes
    (``MockClock(autojump_threshold=0.02)``: slower).
    With hypothesis ``@given`` on a pytest-trio test, each example is a
    ``trio.run`` of its own sharing the test's clock, which goes on from
    where the previous example left it (only differences of time matter):
    make the network inside the example.
    """
    async with _serving(
        handler_or_app,
        asgi=asgi,
        network=network,
        host=host,
        port=port,
        http3_settings=http3_settings,
        server_settings=server_settings,
        client_settings=client_settings,
        lifespan=lifespan,
        root_path=root_path,
    ) as served:
        sock = served.network.socket(client_host)
        try:
            async with open_http3_client(
                host,
                port,
                settings=served.client_settings,
                http3_settings=client_http3_settings,
                socket=sock,
            ) as client:
                yield client
        finally:
            sock.close()


@asynccontextmanager
async def open_memory_httpx(
    handler_or_app: HandlerOrApp,
    *,
    network: MemoryNetwork | None = None,
    asgi: bool | None = None,
    host: str = "10.0.0.1",
    port: int = 4433,
    client_host: str = "10.0.0.2",
    http3_settings: Http3Settings | None = None,
    client_http3_settings: Http3Settings | None = None,
    server_settings: QuicSettings | None = None,
    client_settings: QuicSettings | None = None,
    lifespan: LifespanMode = "auto",
    root_path: str = "",
    **client_options: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """As :func:`open_memory_http3`, but yield an ``httpx.AsyncClient`` whose
    requests go over HTTP/3 on the memory network
    (:class:`trioquic.httpx.HTTP3Transport` with memory sockets) and whose
    ``base_url`` is the server (``https://HOST:PORT``)::

        app = FastAPI()

        @app.get("/items/{item_id}")
        async def read_item(item_id: int):
            return {"item_id": item_id}

        async def test_read_item(autojump_clock):
            network = MemoryNetwork(seed=1, conditions=LinkConditions(loss=0.1))
            async with open_memory_httpx(app, network=network) as client:
                response = await client.get("/items/1")
                assert response.json() == {"item_id": 1}

    Every connection the transport opens gets a new socket on
    ``client_host``. ``client_options`` (``timeout``, ``headers``,
    ``follow_redirects``, ...) go to ``httpx.AsyncClient``; ``timeout``
    defaults to 30 seconds (httpx's own 5 s is short for a lossy link); the
    other arguments are :func:`open_memory_http3`'s. Needs httpx
    (``trioquic[httpx]``).
    """
    for reserved in ("transport", "base_url"):
        if reserved in client_options:
            raise TypeError(
                f"open_memory_httpx sets the client's {reserved} itself: "
                f"leave {reserved}= out"
            )
    client_options.setdefault("timeout", DEFAULT_HTTPX_TIMEOUT)
    import httpx

    from ..httpx import HTTP3Transport

    async with _serving(
        handler_or_app,
        asgi=asgi,
        network=network,
        host=host,
        port=port,
        http3_settings=http3_settings,
        server_settings=server_settings,
        client_settings=client_settings,
        lifespan=lifespan,
        root_path=root_path,
    ) as served:
        memory = served.network

        def memory_socket(origin_host: str, origin_port: int) -> MemorySocket:
            return memory.socket(client_host)

        settings = served.client_settings
        transport = HTTP3Transport(
            # The settings' own CA file and verify_peer stand.
            verify=settings.verify_peer,
            settings=settings,
            http3_settings=client_http3_settings,
            socket_factory=memory_socket,
        )
        async with httpx.AsyncClient(
            transport=transport,
            base_url=f"https://{host}:{port}",
            **client_options,
        ) as client:
            yield client
