"""``serve_asgi``: an ASGI application served over HTTP/3, with its
lifespan around the server."""

from __future__ import annotations

import contextlib
import gc
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import trio

from .._serve_http import HttpServer, serve_http
from .._settings import QuicSettings
from ..h3._settings import Http3Settings
from ..tcp._settings import TcpSettings
from ._adapter import ASGIAdapter
from ._lifespan import Lifespan, LifespanMode
from ._types import ASGIApp


async def serve_asgi(
    app: ASGIApp,
    port: int,
    *,
    host: str | None = None,
    settings: QuicSettings,
    http3_settings: Http3Settings | None = None,
    tcp: bool | TcpSettings = True,
    alt_svc: bool = True,
    root_path: str = "",
    lifespan: LifespanMode = "auto",
    disconnect_grace: float | None = 30.0,
    gc_tuning: bool = True,
    udp_sockets: Sequence[socket.socket] = (),
    tcp_sockets: Sequence[socket.socket] = (),
    task_status: trio.TaskStatus[HttpServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI 3 application ``app`` over HTTP/3 on ``port`` and,
    unless ``tcp`` is false, over HTTP/2 and HTTP/1.1 on TCP ``port`` (the
    TCP front door, see :func:`trioquic.serve_http`)::

        server = await nursery.start(
            functools.partial(serve_asgi, app, 4433, settings=settings)
        )

    Runs the application's lifespan startup first (``lifespan``: see
    :class:`Lifespan`; a ``lifespan.startup.failed`` raises
    :exc:`LifespanFailure` and nothing is served), then the server, and
    reports the :class:`~trioquic.HttpServer` once it listens. Cancelling
    stops gracefully: GOAWAY, requests in flight finish (within
    ``http3_settings.goaway_grace_period``), then the lifespan shutdown.

    ``http3_settings`` defaults to :class:`~trioquic.h3.Http3Settings` with
    extended CONNECT enabled (WebSockets over HTTP/3, RFC 9220); settings
    you pass are used as they are. ``settings`` needs the certificate and
    key; ALPN defaults to ``h3``. With ``alt_svc`` every response, on both
    doors, carries ``alt-svc: h3=":PORT"; ma=86400``, so that browsers
    arriving over TCP move to HTTP/3. ``root_path`` and
    ``disconnect_grace`` are :class:`ASGIAdapter`'s. ``udp_sockets`` and
    ``tcp_sockets``: sockets bound elsewhere, as for :func:`trioquic.serve_http`.

    With ``gc_tuning`` (the default), while the server runs, the cyclic
    garbage collector is set for serving, and set back when it stops:

    - what is alive once the lifespan startup has run (the application,
      its routes, imported modules, what the startup made) is frozen out
      of its way (:func:`gc.freeze`), so that the full collections
      requests trigger no longer walk it all;
    - its youngest generation is collected every 5000 allocations
      (``GC_THRESHOLD``) rather than Python's 700: the objects of requests in
      flight (many of them with a framework) then mostly die before a
      collection instead of being moved up to older generations.

    With Starlette over HTTP/3 (4 connections, 128 requests in flight on
    each) that took the collector's time from about 40 to about 15
    microseconds per request. It is the process's collector: pass
    ``gc_tuning=False`` if other code in the process relies on its settings
    or on collecting cycles among objects made before the server started.
    """
    if not callable(app):
        raise TypeError(
            "app must be an ASGI 3 application (see trioquic.asgi.load_app)"
        )
    if not isinstance(settings, QuicSettings):
        raise TypeError(
            "settings must be a trioquic.QuicSettings with certificate and "
            f"private_key, got {type(settings).__name__}"
        )
    if http3_settings is None:
        http3_settings = Http3Settings(enable_connect_protocol=True)
    state: dict[str, Any] = {}
    adapter = ASGIAdapter(
        app, root_path=root_path, state=state, disconnect_grace=disconnect_grace
    )
    if not isinstance(gc_tuning, bool):
        raise TypeError(f"gc_tuning must be a bool, got {type(gc_tuning).__name__}")
    async with Lifespan(app, state, mode=lifespan):
        with _tuned_gc() if gc_tuning else contextlib.nullcontext():
            await serve_http(
                adapter,
                port,
                host=host,
                settings=settings,
                http3_settings=http3_settings,
                tcp=tcp,
                alt_svc=alt_svc,
                udp_sockets=udp_sockets,
                tcp_sockets=tcp_sockets,
                task_status=task_status,
            )


#: The collector's first threshold while serving (see serve_asgi).
GC_THRESHOLD = 5000

#: Servers running with the collector tuned; what to set back when the last
#: one stops (the thresholds, and whether it was us who froze).
_tuned: dict[str, Any] = {"servers": 0, "thresholds": None, "froze": False}


@contextlib.contextmanager
def _tuned_gc() -> Iterator[None]:
    """The collector set for serving until the block ends: what it tracks
    now is left alone by it (still freed when no longer referenced), and
    its youngest generation is collected less often."""
    if _tuned["servers"] == 0:
        _tuned["froze"] = gc.get_freeze_count() == 0
        thresholds = gc.get_threshold()
        _tuned["thresholds"] = thresholds
        gc.set_threshold(max(thresholds[0], GC_THRESHOLD), *thresholds[1:])
    _tuned["servers"] += 1
    gc.freeze()
    try:
        yield
    finally:
        _tuned["servers"] -= 1
        if _tuned["servers"] == 0:
            gc.set_threshold(*_tuned["thresholds"])
            if _tuned["froze"]:
                gc.unfreeze()
