"""``trioquic serve``: the command, and the built-in HTTP/3 application it
serves.

Routes, in this order:

* ``GET /bytes/N`` (and ``HEAD``): ``N`` bytes of a fixed pattern
  (:func:`pattern_bytes`), streamed in chunks with backpressure; ``N`` is at
  most :data:`MAX_BYTES`, else 400;
* ``POST /echo``: the request body, streamed back as it arrives;
* with a root directory: the files under it, ``GET`` and ``HEAD`` only (405
  otherwise), never anything outside the root (see :func:`resolve_path`),
  with validators, conditional requests and byte ranges (:mod:`._files`);
  a directory serves its ``index.html``, else a listing;
* without one: a small built-in HTML page at ``/``.

The application answers any :class:`trioquic.HttpRequest` (HTTP/3, and the
TCP door's HTTP/2 and HTTP/1.1); the server layer adds ``alt-svc``. Every
request is logged as one line on the ``trioquic.serve.access`` logger.

The routing and path logic are pure functions, tested without a network.
The server binds its sockets itself (:func:`trioquic.lowlevel.bind_udp_sockets`:
``localhost`` is ``127.0.0.1`` and ``::1``, all on one port) to know its
port before it serves.
"""

from __future__ import annotations

import argparse
import functools
import html
import http
import logging
import os
import pathlib
import shlex
import socket
import stat as stat_module
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import attrs
import trio

from .. import QuicLbConfig, QuicSettings, TcpServer
from .._http import HTTP_DISCONNECTED, HttpHandler, HttpRequest
from .._serve_http import HttpServer, serve_http
from ..asgi import ASGIApp, AsyncioApp, LifespanMode, load_app, serve_asgi
from ..h3 import Http3Settings
from ..tcp import alt_svc_value
from ..workers import WorkerContext, serve_workers, shared_keys
from ..workers._supervisor import with_quic_lb
from ._access import AccessLog, log_request
from ._common import (
    CommandError,
    _add_engine_argument,
    _add_server_arguments,
    _certificate_spki,
    _print_certificate,
    _print_engine,
    _print_listening,
    _quic_settings,
    _self_command,
    _serve_until_signalled,
    _server_certificate,
)
from ._files import (
    FILE_CHUNK_SIZE,
    ByteRange,
    FilePlan,
    content_type,
    list_directory,
    listing_page,
    plan_file_response,
)

if TYPE_CHECKING:
    from ._common import Commands

logger = logging.getLogger("trioquic.serve")

#: Largest ``N`` accepted by ``/bytes/N`` (1 GiB).
MAX_BYTES = 1024**3
#: Size of the chunks ``/bytes`` bodies are sent in.
CHUNK_SIZE = 64 * 1024
#: The repeating pattern ``/bytes/N`` serves: byte ``i`` is ``i % 251``
#: (a prime period, so that misplaced chunks show up in a checksum).
_PERIOD = 251
_PATTERN = bytes(i % _PERIOD for i in range(CHUNK_SIZE + _PERIOD))

Headers = list[tuple[bytes, bytes]]


class HttpError(Exception):
    """A request the application answers with an error status."""

    def __init__(self, status: int, headers: Sequence[tuple[bytes, bytes]] = ()):
        super().__init__(f"{status} {_reason(status)}")
        self.status = status
        self.headers = list(headers)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


# -- pure logic ----------------------------------------------------------------


def split_target(target: str) -> str:
    """The path of a request target, without query or fragment."""
    return target.split("?", 1)[0].split("#", 1)[0]


def resolve_path(root: pathlib.Path, target: str) -> pathlib.Path:
    """The file or directory under ``root`` that request target ``target``
    names (a directory: its ``index.html`` if it has one, else the
    directory itself, to be listed).

    Raises :exc:`HttpError`: 400 for a malformed path or one with ``..``
    segments (also percent-encoded ones such as ``%2e%2e`` or ``..%2f``),
    NUL bytes or backslashes; 403 when the path resolves outside ``root``
    (a symbolic link that escapes it); 404 when there is no such file; 301
    with a ``location`` to add the missing slash of a directory.
    """
    return _resolve(root, target)[0]


def _resolve(root: pathlib.Path, target: str) -> tuple[pathlib.Path, os.stat_result]:
    """:func:`resolve_path`, and the ``stat`` of what it found."""
    path = split_target(target)
    if not path.startswith("/"):
        raise HttpError(400)
    try:
        decoded = urllib.parse.unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400) from None
    if "\x00" in decoded or "\\" in decoded:
        raise HttpError(400)
    segments = decoded.split("/")
    if any(segment in ("..", ".") for segment in segments):
        raise HttpError(400)
    parts = [segment for segment in segments if segment]
    base = root.resolve()
    candidate = base.joinpath(*parts)
    if not candidate.is_absolute() or not candidate.is_relative_to(base):
        raise HttpError(400)  # pragma: no cover - the checks above prevent it
    resolved, info = _inside(base, candidate)
    if stat_module.S_ISDIR(info.st_mode):
        if not path.endswith("/"):
            query = target[len(path) :]
            raise HttpError(301, [(b"location", (path + "/" + query).encode())])
        try:
            index, index_info = _inside(base, resolved / "index.html")
        except HttpError as error:
            if error.status != 404:
                raise
        else:
            if stat_module.S_ISREG(index_info.st_mode):
                return index, index_info
        return resolved, info
    if not stat_module.S_ISREG(info.st_mode):
        raise HttpError(404)
    return resolved, info


def _inside(
    base: pathlib.Path, candidate: pathlib.Path
) -> tuple[pathlib.Path, os.stat_result]:
    try:
        resolved = candidate.resolve(strict=True)
        info = resolved.stat()
    except (OSError, RuntimeError):  # missing, a loop of links, a too-long name
        raise HttpError(404) from None
    if not resolved.is_relative_to(base):
        raise HttpError(403)
    return resolved, info


def parse_byte_count(text: str, maximum: int = MAX_BYTES) -> int:
    """``N`` of ``/bytes/N``: decimal digits, at most ``maximum``; else 400."""
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise HttpError(400)
    value = int(text)
    if value > maximum:
        raise HttpError(400)
    return value


def pattern_bytes(count: int, offset: int = 0) -> bytes:
    """``count`` bytes of the ``/bytes/N`` pattern, from position ``offset``."""
    if count <= CHUNK_SIZE:
        start = offset % _PERIOD
        return _PATTERN[start : start + count]
    return b"".join(pattern_chunks(count, offset=offset))


def pattern_chunks(
    count: int, chunk_size: int = CHUNK_SIZE, *, offset: int = 0
) -> Iterator[bytes]:
    """The ``/bytes/N`` body as chunks of at most ``chunk_size`` bytes, made
    one at a time (the whole body never exists in memory)."""
    chunk_size = min(chunk_size, CHUNK_SIZE)
    position = offset
    end = offset + count
    while position < end:
        size = min(chunk_size, end - position)
        start = position % _PERIOD
        yield _PATTERN[start : start + size]
        position += size


def index_page(port: int) -> bytes:
    """The built-in page served at ``/`` without a root directory."""
    here = html.escape(f"https://localhost:{port}/")
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>trioquic</title></head>
<body>
<h1>trioquic HTTP/3 server</h1>
<p>This page came over HTTP/3 from <code>trioquic serve</code>.</p>
<ul>
<li><a href="/bytes/1024"><code>GET /bytes/N</code></a>: N bytes (at most
{MAX_BYTES} bytes)</li>
<li><code>POST /echo</code>: the request body, sent back</li>
</ul>
<p>Serve a directory instead with <code>trioquic serve --root DIR</code>;
fetch from the command line with <code>trioquic get {here}</code>.</p>
</body>
</html>
""".encode()


@attrs.frozen
class Route:
    """What the application does for one request (the pure decision)."""

    #: ``"bytes"``, ``"echo"``, ``"file"``, ``"listing"``, ``"index"``.
    kind: str
    #: ``/bytes/N``: the byte count.
    count: int = 0
    #: A file to send, or a directory to list.
    path: pathlib.Path | None = None
    #: Its ``stat`` when it was resolved.
    stat: os.stat_result | None = attrs.field(default=None, eq=False, repr=False)


def route(method: str, target: str, root: pathlib.Path | None) -> Route:
    """Decide how to answer ``method target``; raises :exc:`HttpError`."""
    path = split_target(target)
    if path.startswith("/bytes/"):
        _allow(method, ("GET", "HEAD"))
        return Route("bytes", count=parse_byte_count(path[len("/bytes/") :]))
    if path == "/echo":
        _allow(method, ("POST",))
        return Route("echo")
    if root is None:
        if path in ("/", "/index.html"):
            _allow(method, ("GET", "HEAD"))
            return Route("index")
        raise HttpError(404)
    resolved, info = _resolve(root, target)
    _allow(method, ("GET", "HEAD"))
    kind = "listing" if stat_module.S_ISDIR(info.st_mode) else "file"
    return Route(kind, path=resolved, stat=info)


def _allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise HttpError(405, [(b"allow", ", ".join(allowed).encode())])


# -- the application ---------------------------------------------------------------


def _content_length(length: int, head: bool) -> list[tuple[bytes, bytes]]:
    """``content-length``, except on answers to HEAD: RFC 9110 lets a server
    leave it out there, and some HTTP/3 clients (aioquic's among them) check
    it against the empty body and fail the whole connection."""
    return [] if head else [(b"content-length", str(length).encode())]


def _open_file(
    path: pathlib.Path, start: int, size: int
) -> tuple[int, os.stat_result, bytes]:
    """Open a file to send, with its ``stat`` and its first ``size`` bytes
    from ``start`` (blocking: one trip to a thread; a small file needs no
    other). The caller closes the descriptor."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return fd, os.fstat(fd), os.pread(fd, size, start)
    except BaseException:
        os.close(fd)
        raise


_ENDED: tuple[type[Exception], ...] = (trio.ClosedResourceError, *HTTP_DISCONNECTED)


class Http3ServerApp:
    """The request handler of ``trioquic serve`` (pass it to ``serve_http3``,
    or to the TCP door: it answers any :class:`trioquic.HttpRequest`).

    ``port`` is the server's, for the built-in page; ``root`` is the
    directory to serve (``None``: the built-in page).
    """

    def __init__(
        self,
        *,
        port: int,
        root: str | os.PathLike[str] | None = None,
        server_header: str = "trioquic",
    ) -> None:
        self.root = pathlib.Path(root).resolve() if root is not None else None
        self.port = port
        self._common: Headers = [(b"server", server_header.encode())]

    def headers(self, *extra: tuple[bytes, bytes]) -> Headers:
        return [*extra, *self._common]

    async def __call__(self, request: HttpRequest) -> None:
        start = time.monotonic()
        method, target = request.method, request.path
        outcome = {"status": 0, "sent": 0}
        completed = False
        try:
            await self._answer(request, method, target, outcome)
            completed = True
        except _ENDED as exc:
            # The client reset the stream or the connection ended.
            logger.info("%s %s: stream ended early: %s", method, target, exc)
        finally:
            # Also when cancelled: the client reset the stream, or shutdown.
            log_request(
                request.peer_address,
                method,
                target,
                request.http_version,
                outcome["status"],
                outcome["sent"],
                start,
                completed=completed,
            )

    async def _answer(
        self, request: HttpRequest, method: str, target: str, outcome: dict[str, int]
    ) -> None:
        head = method == "HEAD"
        try:
            decision = route(method, target, self.root)
        except HttpError as error:
            await self._error(request, error, outcome, head=head)
            return
        if decision.kind == "bytes":
            await self._send_pattern(request, decision.count, outcome, head=head)
        elif decision.kind == "echo":
            await self._echo(request, outcome)
        elif decision.kind == "index":
            body = index_page(self.port)
            await self._respond(
                request, 200, body, "text/html; charset=utf-8", outcome, head=head
            )
        elif decision.kind == "listing":
            assert decision.path is not None and self.root is not None
            await self._send_listing(request, decision.path, target, outcome, head)
        else:
            assert decision.path is not None and decision.stat is not None
            await self._send_file(
                request, decision.path, decision.stat, outcome, head=head
            )

    async def _respond(
        self,
        request: HttpRequest,
        status: int,
        body: bytes,
        media_type: str,
        outcome: dict[str, int],
        *,
        head: bool = False,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        headers = self.headers(
            (b"content-type", media_type.encode()),
            *_content_length(len(body), head),
            *extra,
        )
        outcome["status"] = status
        await request.respond(status, headers=headers, body=b"" if head else body)
        outcome["sent"] = 0 if head else len(body)

    async def _error(
        self,
        request: HttpRequest,
        error: HttpError,
        outcome: dict[str, int],
        *,
        head: bool = False,
    ) -> None:
        body = f"{error.status} {_reason(error.status)}\n".encode()
        await self._respond(
            request,
            error.status,
            body,
            "text/plain; charset=utf-8",
            outcome,
            head=head,
            extra=error.headers,
        )

    async def _send_pattern(
        self, request: HttpRequest, length: int, outcome: dict[str, int], *, head: bool
    ) -> None:
        headers = self.headers(
            (b"content-type", b"application/octet-stream"),
            *_content_length(length, head),
        )
        outcome["status"] = 200
        if head or length == 0:
            await request.respond(200, headers=headers)
            return
        async with request.stream_response(200, headers) as writer:
            for chunk in pattern_chunks(length):
                await writer.send(chunk)
                outcome["sent"] += len(chunk)

    async def _send_listing(
        self,
        request: HttpRequest,
        directory: pathlib.Path,
        target: str,
        outcome: dict[str, int],
        head: bool,
    ) -> None:
        assert self.root is not None
        try:
            entries = await trio.to_thread.run_sync(
                list_directory, self.root, directory
            )
        except OSError:
            await self._error(request, HttpError(403), outcome, head=head)
            return
        url_path = urllib.parse.unquote(split_target(target))
        body = listing_page(url_path, entries)
        await self._respond(
            request,
            200,
            body,
            "text/html; charset=utf-8",
            outcome,
            head=head,
            extra=[(b"cache-control", b"no-cache")],
        )

    async def _send_file(
        self,
        request: HttpRequest,
        path: pathlib.Path,
        info: os.stat_result,
        outcome: dict[str, int],
        *,
        head: bool,
    ) -> None:
        method, request_headers = request.method, request.headers
        media_type = content_type(path)
        plan = plan_file_response(
            method,
            request_headers,
            size=info.st_size,
            mtime_ns=info.st_mtime_ns,
            media_type=media_type,
        )
        if plan.body is None or head:
            # HEAD, 304, 412, 416: answered from the stat, the file unopened.
            await self._answer_without_file(request, plan.status, plan, outcome, head)
            return
        body = plan.body
        try:
            fd, now, first = await trio.to_thread.run_sync(
                _open_file, path, body.start, min(body.length, FILE_CHUNK_SIZE)
            )
        except PermissionError:
            await self._error(request, HttpError(403), outcome, head=head)
            return
        except OSError:
            await self._error(request, HttpError(404), outcome, head=head)
            return
        try:
            if (now.st_size, now.st_mtime_ns) != (info.st_size, info.st_mtime_ns):
                # Changed since it was looked up: decide on what was opened.
                plan = plan_file_response(
                    method,
                    request_headers,
                    size=now.st_size,
                    mtime_ns=now.st_mtime_ns,
                    media_type=media_type,
                )
                if plan.body is None:
                    await self._answer_without_file(
                        request, plan.status, plan, outcome, head
                    )
                    return
                if plan.body.start != body.start:
                    first = b""
                body = plan.body
            await self._stream_file(request, fd, body, first, plan, outcome, path)
        finally:
            os.close(fd)

    async def _answer_without_file(
        self,
        request: HttpRequest,
        status: int,
        plan: FilePlan,
        outcome: dict[str, int],
        head: bool,
    ) -> None:
        outcome["status"] = status
        if status == 304 or (head and status < 300):
            # No body, and no content-length (see _content_length).
            await request.respond(status, headers=self.headers(*plan.headers))
            return
        if head or status >= 300:
            body = f"{status} {_reason(status)}\n".encode()
            await self._respond(
                request,
                status,
                body,
                "text/plain; charset=utf-8",
                outcome,
                head=head,
                extra=plan.headers,
            )
            return
        raise AssertionError(f"a {status} answer needs the file")  # pragma: no cover

    async def _stream_file(
        self,
        request: HttpRequest,
        fd: int,
        body: ByteRange,
        first: bytes,
        plan: FilePlan,
        outcome: dict[str, int],
        path: pathlib.Path,
    ) -> None:
        """Send ``body`` of the open file ``fd``, whose first bytes
        (``first``, possibly fewer or none) were read already."""
        headers = self.headers(
            *plan.headers, (b"content-length", str(body.length).encode())
        )
        outcome["status"] = plan.status
        first = first[: body.length]
        if len(first) == body.length:
            # All of it (a small file): one response, no streaming.
            await request.respond(plan.status, headers=headers, body=first)
            outcome["sent"] = len(first)
            return
        async with request.stream_response(plan.status, headers) as writer:
            position, stop = body.start, body.stop
            chunk = first
            while position < stop:
                if not chunk:
                    size = min(FILE_CHUNK_SIZE, stop - position)
                    chunk = await trio.to_thread.run_sync(os.pread, fd, size, position)
                    if not chunk:  # the file shrank while being sent
                        raise trio.BrokenResourceError(f"{path} shrank while read")
                await writer.send(chunk)
                position += len(chunk)
                outcome["sent"] += len(chunk)
                chunk = b""

    async def _echo(self, request: HttpRequest, outcome: dict[str, int]) -> None:
        media_type = b"application/octet-stream"
        for name, value in request.headers:
            if name == b"content-type":
                media_type = value
        headers = self.headers((b"content-type", media_type))
        outcome["status"] = 200
        async with request.stream_response(200, headers) as writer:
            async for chunk in request:
                if chunk:
                    await writer.send(chunk)
                    outcome["sent"] += len(chunk)


# -- the server ------------------------------------------------------------------


@attrs.frozen
class ServerConfig:
    """What ``trioquic serve`` was asked for."""

    host: str | None
    port: int
    settings: QuicSettings
    root: pathlib.Path | None = None
    #: HTTP/3 settings; ``None``: for the built-in application, ``/echo``
    #: taking bodies up to :data:`MAX_BYTES`; for an ASGI application,
    #: :func:`trioquic.asgi.serve_asgi`'s default (extended CONNECT on).
    http3_settings: Http3Settings | None = None
    #: The TCP front door (HTTP/2 and HTTP/1.1 on the same port number).
    tcp: bool = True
    #: An ASGI application to serve instead of the built-in one.
    app: ASGIApp | None = None
    root_path: str = ""
    lifespan: LifespanMode = "auto"
    #: Sockets bound elsewhere (``--workers``: by the supervisor).
    udp_sockets: tuple[socket.socket, ...] = ()
    tcp_sockets: tuple[socket.socket, ...] = ()
    #: Headers added to every HTTP/3 response (``--workers``: the worker's
    #: index, so a client can tell who served it).
    response_headers: tuple[tuple[bytes, bytes], ...] = ()


async def run_server(
    config: ServerConfig,
    *,
    task_status: trio.TaskStatus[tuple[HttpServer, HttpHandler | ASGIApp]] = (
        trio.TASK_STATUS_IGNORED
    ),
) -> None:
    """Serve the built-in application (or ``config.app``, an ASGI
    application) over HTTP/3 and, with ``config.tcp``, the TCP front door,
    until cancelled: cancelling sends GOAWAY, lets requests in flight
    finish, then closes every connection. Reports the
    :class:`~trioquic.HttpServer` and what it serves."""
    if config.app is not None:
        asgi_settings = config.http3_settings
        if config.response_headers:
            asgi_settings = _with_headers(
                asgi_settings or Http3Settings(enable_connect_protocol=True),
                config.response_headers,
            )
        async with trio.open_nursery() as nursery:
            asgi_server: HttpServer = await nursery.start(
                functools.partial(
                    serve_asgi,
                    config.app,
                    config.port,
                    host=config.host,
                    settings=config.settings,
                    http3_settings=asgi_settings,
                    tcp=config.tcp,
                    root_path=config.root_path,
                    lifespan=config.lifespan,
                    udp_sockets=config.udp_sockets,
                    tcp_sockets=config.tcp_sockets,
                )
            )
            task_status.started((asgi_server, config.app))
        return
    http3_settings = _with_headers(
        config.http3_settings or Http3Settings(max_request_body_size=MAX_BYTES),
        config.response_headers,
    )
    holder: list[Http3ServerApp] = []

    async def handler(request: HttpRequest) -> None:
        await holder[0](request)

    async with trio.open_nursery() as nursery:
        server: HttpServer = await nursery.start(
            functools.partial(
                serve_http,
                handler,
                config.port,
                host=config.host,
                settings=config.settings,
                http3_settings=http3_settings,
                tcp=config.tcp,
                udp_sockets=config.udp_sockets,
                tcp_sockets=config.tcp_sockets,
            )
        )
        # The built-in page names the port, known only once bound; nothing
        # can have been answered before this (the handler runs on requests).
        holder.append(Http3ServerApp(port=server.port, root=config.root))
        task_status.started((server, holder[0]))


# -- the command -------------------------------------------------------------------


def _with_headers(
    settings: Http3Settings, headers: tuple[tuple[bytes, bytes], ...]
) -> Http3Settings:
    if not headers:
        return settings
    return attrs.evolve(
        settings, extra_response_headers=(*settings.extra_response_headers, *headers)
    )


def _url_host(host: str | None) -> str:
    """The host to put in a URL for a server bound to ``host``."""
    if host in (None, "", "0.0.0.0", "::", "localhost"):
        return "localhost"
    assert host is not None
    return f"[{host}]" if ":" in host else host


def _configure_access_log() -> None:
    """One line per request on standard error, whatever the verbosity."""
    access = logging.getLogger("trioquic.serve.access")
    if not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


async def _run_http_server(
    config: ServerConfig,
    on_ready: Callable[[HttpServer], None],
    out: TextIO,
) -> None:
    """The server, until SIGINT or SIGTERM."""

    def ready(reported: Any) -> None:
        server, _ = reported
        on_ready(server)

    await _serve_until_signalled(functools.partial(run_server, config), ready, out)


def _load_application(args: argparse.Namespace) -> ASGIApp | None:
    """The ASGI application named on the command line, if any."""
    if args.app is None:
        for option, given in (
            ("--factory", args.factory),
            ("--asyncio", args.asyncio),
            ("--root-path", args.root_path),
        ):
            if given:
                raise CommandError(f"{option} needs an application (MODULE:ATTR)")
        return None
    if args.root is not None:
        raise CommandError(
            "--root serves files with the built-in server; it cannot be given "
            "with an application (serve files from the application instead)"
        )
    try:
        app = load_app(args.app, factory=args.factory, app_dir=args.app_dir)
    except (ImportError, ValueError, TypeError) as exc:
        raise CommandError(f"cannot load {args.app}: {exc}") from exc
    return AccessLog(AsyncioApp(app) if args.asyncio else app)


def _cmd_serve(args: argparse.Namespace, prog: str, out: TextIO) -> int:
    app = _load_application(args)
    root: pathlib.Path | None = None
    if args.root is not None:
        root = pathlib.Path(args.root)
        if not root.is_dir():
            raise CommandError(f"--root is not a directory: {args.root}")
        root = root.resolve()
    certificate_path, key_path, generated = _server_certificate(args)
    spki = _certificate_spki(certificate_path)
    fields: dict[str, Any] = {}
    if args.congestion_control is not None:
        fields["congestion_control"] = args.congestion_control
    quic_lb = _quic_lb(args)
    secret = _secret(args)
    if args.stats_file is not None and args.workers is None:
        raise CommandError("--stats-file goes with --workers")
    if args.workers is None:
        # One process: the QUIC-LB layout and the shared keys, if asked for
        # (a machine behind a load balancer); --workers passes them on.
        if quic_lb is not None:
            fields["quic_lb"] = quic_lb
        if secret is not None:
            keys = shared_keys(secret)
            fields["stateless_reset_key"] = keys.stateless_reset_key
            fields["retry_token_key"] = keys.retry_token_key
    settings = _quic_settings(
        args,
        alpn_protocols=["h3"],
        certificate=certificate_path,
        private_key=key_path,
        qlog_dir=args.qlog_dir,
        retry="always" if args.retry else "never",
        **fields,
    )
    config = ServerConfig(
        host=args.host or None,
        port=args.port,
        settings=settings,
        root=root,
        tcp=not args.no_tcp,
        app=app,
        root_path=args.root_path,
        lifespan=args.lifespan,
    )
    _configure_access_log()
    if app is not None:
        serving = f"the ASGI application {args.app}"
    else:
        serving = str(root) if root is not None else "the built-in page"
    announce = functools.partial(
        _announce,
        args=args,
        prog=prog,
        settings=settings,
        serving=serving,
        certificate=(certificate_path, key_path, generated, spki),
        out=out,
    )
    if args.workers is not None:
        return _serve_with_workers(args, config, quic_lb, secret, announce, out)

    def on_ready(server: HttpServer) -> None:
        _print_listening(server.http3, "HTTP/3 server", out)
        if server.tcp is not None:
            _print_tcp_listening(server.tcp, out)
        announce(port=server.port, tcp=server.tcp is not None)

    trio.run(_run_http_server, config, on_ready, out)
    print("HTTP/3 server stopped", file=out)
    return 0


def _quic_lb(args: argparse.Namespace) -> QuicLbConfig | None:
    """--server-id and its companions, as a QUIC-LB configuration."""
    if args.server_id is None:
        for name in ("lb_key", "lb_nonce_length", "lb_config_rotation"):
            if getattr(args, name) is not None:
                option = "--" + name.replace("_", "-")
                raise CommandError(f"{option} goes with --server-id")
        return None
    try:
        server_id = bytes.fromhex(args.server_id)
        key = bytes.fromhex(args.lb_key) if args.lb_key is not None else None
    except ValueError:
        raise CommandError("--server-id and --lb-key are hexadecimal") from None
    options: dict[str, Any] = {"server_id": server_id, "key": key}
    if args.lb_nonce_length is not None:
        options["nonce_length"] = args.lb_nonce_length
    if args.lb_config_rotation is not None:
        options["config_rotation"] = args.lb_config_rotation
    try:
        return QuicLbConfig(**options)
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None


def _secret(args: argparse.Namespace) -> bytes | None:
    """The contents of --secret-file."""
    if args.secret_file is None:
        return None
    try:
        with open(args.secret_file, "rb") as fp:
            secret = fp.read()
    except OSError as exc:
        raise CommandError(f"cannot read --secret-file: {exc}") from None
    if len(secret) < 16:
        raise CommandError(
            f"--secret-file holds {len(secret)} bytes: it needs at least 16 "
            "(e.g. head -c 32 /dev/urandom > secret)"
        )
    return secret


def _serve_with_workers(
    args: argparse.Namespace,
    config: ServerConfig,
    quic_lb: QuicLbConfig | None,
    secret: bytes | None,
    announce: Callable[..., None],
    out: TextIO,
) -> int:
    """``serve --workers N``: the supervisor in this process."""
    try:  # what each worker's settings will be, refused here rather than there
        with_quic_lb(config.settings, quic_lb or QuicLbConfig(server_id=b"\0"))
    except (TypeError, ValueError) as exc:
        raise CommandError(f"--workers: {exc}") from None

    def on_ready(statistics: Mapping[str, Any]) -> None:
        count = len(statistics["workers"])
        for family, address in statistics["addresses"]:
            where = f"[{address[0]}]" if family == "udp6" else str(address[0])
            print(
                f"trioquic HTTP/3 server listening on {where}:{address[1]} (UDP, "
                f"{count} worker{'s' if count != 1 else ''}, SO_REUSEPORT)",
                file=out,
            )
        for address in statistics["tcp_addresses"]:
            where = f"[{address[0]}]" if ":" in str(address[0]) else str(address[0])
            print(
                f"trioquic TCP front door (HTTP/2, HTTP/1.1) listening on "
                f"{where}:{address[1]} (TCP, shared by the workers)",
                file=out,
            )
        announce(port=statistics["port"], tcp=bool(statistics["tcp_addresses"]))
        if args.stats_file is not None:
            print(f"statistics of all workers: {args.stats_file}", file=out)
        out.flush()

    try:
        status = serve_workers(
            functools.partial(_worker, config),
            workers=args.workers,
            port=config.port,
            host=config.host,
            tcp=config.tcp,
            quic_lb=quic_lb,
            secret=secret,
            stats_file=args.stats_file,
            on_ready=on_ready,
            log=out,
        )
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    print(f"HTTP/3 server stopped (exit status {status})", file=out)
    return status


async def _worker(config: ServerConfig, context: WorkerContext) -> None:
    """One worker of ``serve --workers``: the same server on the sockets
    the supervisor bound, with this worker's settings."""
    config = attrs.evolve(
        config,
        settings=context.settings(config.settings),
        udp_sockets=context.udp_sockets,
        tcp_sockets=context.tcp_sockets,
        response_headers=(*config.response_headers, _worker_header(context.index)),
    )
    async with trio.open_nursery() as nursery:
        server, _ = await nursery.start(run_server, config)
        context.serving(server)


def _worker_header(index: int) -> tuple[bytes, bytes]:
    """The response header that names the worker that served it."""
    return (b"trioquic-worker", str(index).encode())


def _announce(
    *,
    port: int,
    tcp: bool,
    args: argparse.Namespace,
    prog: str,
    settings: QuicSettings,
    serving: str,
    certificate: tuple[str, str, bool, str],
    out: TextIO,
) -> None:
    """What a started server prints after where it listens."""
    certificate_path, key_path, generated, spki = certificate
    _print_engine(settings, out)
    url = f"https://{_url_host(args.host)}:{port}/"
    print(f"serving: {serving}", file=out)
    print(f"URL: {url}", file=out)
    print(f"every response carries alt-svc: {alt_svc_value(port)}", file=out)
    _print_certificate(certificate_path, key_path, generated, spki, out)
    client = [*_self_command(prog), "get", url, "--ca-certs", certificate_path]
    print(f"try it with: {shlex.join(client)}", file=out)
    host = _url_host(args.host)
    if tcp:
        curl = ["curl", "--cacert", certificate_path, "-i", url]
        print(f"over TCP: {shlex.join(curl)}", file=out)
        # Chromium reaches HTTP/3 through the TCP door's Alt-Svc. The SPKI
        # flag makes it trust the development certificate; for QUIC,
        # Chromium also wants the host listed in --origin-to-force-quic-on
        # (it matches the host only), so it is listed with a port nothing
        # serves: HTTP/3 is still found through Alt-Svc, not forced.
        print(
            "in Chromium: chromium "
            f"--ignore-certificate-errors-spki-list={spki} "
            f"--origin-to-force-quic-on={host}:1 {url}",
            file=out,
        )
    else:
        print(
            "in Chromium: chromium "
            f"--origin-to-force-quic-on={host}:{port} "
            f"--ignore-certificate-errors-spki-list={spki} {url}",
            file=out,
        )
    print("press Ctrl-C to stop", file=out)
    out.flush()


def _print_tcp_listening(server: TcpServer, out: TextIO) -> None:
    """One line per TCP address of the front door."""
    for address in server.addresses:
        where = f"[{address[0]}]" if ":" in str(address[0]) else str(address[0])
        print(
            f"trioquic TCP front door (HTTP/2, HTTP/1.1) listening on "
            f"{where}:{address[1]} (TCP)",
            file=out,
        )


def add_serve_command(commands: Commands) -> None:
    """``trioquic serve``."""
    serve = commands.add_parser(
        "serve",
        help="run an HTTP/3 server (an ASGI application, or files, /bytes/N, /echo)",
        description=(
            "Serve HTTP/3, and HTTP/2 and HTTP/1.1 over TLS on the same TCP "
            "port (the TCP front door; every response carries Alt-Svc, so "
            "browsers move to HTTP/3). With MODULE:ATTR, the ASGI application "
            "found there (importable from the current directory, as uvicorn "
            "finds it); without, the built-in server: the files under --root "
            "(or a built-in page at /), GET /bytes/N (N bytes) and POST /echo "
            "(the body, sent back). Without --certificate a self-signed "
            "development certificate for localhost, 127.0.0.1 and ::1 is "
            "generated. Ctrl-C stops the server gracefully (GOAWAY, requests "
            "in flight finish, then CONNECTION_CLOSE)."
        ),
    )
    serve.add_argument(
        "app",
        nargs="?",
        metavar="MODULE:ATTR",
        help="an ASGI application, e.g. main:app (default: the built-in server)",
    )
    _add_server_arguments(
        serve,
        host="localhost",
        host_help="address to bind (default: localhost, i.e. 127.0.0.1 and ::1)",
    )
    serve.add_argument(
        "--factory",
        action="store_true",
        help="MODULE:ATTR is a function returning the application",
    )
    serve.add_argument(
        "--app-dir",
        metavar="DIR",
        default=".",
        help="import the application from here (default: the current directory)",
    )
    serve.add_argument(
        "--root-path",
        metavar="PATH",
        default="",
        help="the ASGI root_path: the prefix the application is mounted under",
    )
    serve.add_argument(
        "--lifespan",
        choices=["auto", "on", "off"],
        default="auto",
        help="the ASGI lifespan protocol (default: auto, used if the "
        "application supports it)",
    )
    serve.add_argument(
        "--asyncio",
        action="store_true",
        help="run the application on an asyncio loop in a thread (for "
        "applications that need asyncio, such as Django's)",
    )
    serve.add_argument(
        "--no-tcp",
        action="store_true",
        help="HTTP/3 only: no TCP front door (HTTP/2, HTTP/1.1) on the same port",
    )
    serve.add_argument("--root", metavar="DIR", help="directory to serve files from")
    serve.add_argument(
        "--retry",
        action="store_true",
        help="validate every client's address with a Retry round trip first "
        "(RFC 9000 section 8.1.2)",
    )
    serve.add_argument(
        "--qlog-dir", metavar="DIR", help="write one qlog file per connection here"
    )
    serve.add_argument(
        "--congestion-control",
        choices=["reno", "cubic"],
        help="congestion controller (default: the engine's; qh3 has cubic only)",
    )
    _add_engine_argument(serve)
    scaling = serve.add_argument_group(
        "scaling (see the scaling guide)",
        "Several processes on one port, and connection IDs a load balancer routes by.",
    )
    scaling.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="serve from N worker processes on the same port (SO_REUSEPORT; "
        "each connection stays on its worker, whatever its address); 'auto': "
        "one per CPU. A worker that dies is restarted",
    )
    scaling.add_argument(
        "--server-id",
        metavar="HEX",
        help="QUIC-LB server ID (1-15 octets, hexadecimal): every connection ID "
        "carries it, so a load balancer routes by it. With --workers, worker i "
        "adds i to its last octet (default with --workers: 00)",
    )
    scaling.add_argument(
        "--lb-nonce-length",
        type=int,
        metavar="N",
        help="QUIC-LB nonce length, 4-18 octets (default: 6)",
    )
    scaling.add_argument(
        "--lb-config-rotation",
        type=int,
        metavar="N",
        help="QUIC-LB config rotation, 0-6 (default: 0)",
    )
    scaling.add_argument(
        "--lb-key",
        metavar="HEX",
        help="QUIC-LB AES-128 key: encrypted server IDs (server ID and nonce "
        "of 16 octets together; not with --workers, whose kernel routing "
        "reads server IDs as they are)",
    )
    scaling.add_argument(
        "--secret-file",
        metavar="PATH",
        help="a file of at least 16 secret bytes the stateless reset and Retry "
        "keys derive from: the same on every machine behind one balancer "
        "(--workers shares one among its workers by itself)",
    )
    scaling.add_argument(
        "--stats-file",
        metavar="PATH",
        help="with --workers: write every worker's statistics and their "
        "totals here (JSON, every second)",
    )
    serve.add_argument(
        "-v", "--verbose", action="store_true", help="log connections and requests"
    )
    serve.set_defaults(handler=_cmd_serve)


def _workers(text: str) -> int | str:
    """--workers: a count, or auto."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of workers or 'auto', got {text!r}"
        ) from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"must be 1 to 256, got {value}")
    return value
