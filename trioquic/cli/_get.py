"""``trioquic get``: fetch URLs over HTTP/3.

URLs on the same authority (host and port) share one connection, and every
request runs at once (one task each). Bodies go to standard output in URL
order (later ones are held, in memory up to a bound and then on disk, until
the earlier ones are written), or to files.

Only ``2xx`` responses count as success; anything else, or a failed
connection, is reported as one line per URL and makes the command fail (so
is a connection the client cannot start, such as with a ``--session-ticket``
file that holds no session ticket).
"""

from __future__ import annotations

import argparse
import functools
import http
import logging
import math
import os
import pathlib
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any, TextIO

import attrs
import trio

from .. import QuicSettings
from ..h3 import Http3Client, RequestStream, Response, open_http3_client
from ._common import (
    EXIT_FAILURE,
    CommandError,
    _add_engine_argument,
    _add_handshake_arguments,
    _add_trust_arguments,
    _check_readable,
    _describe,
    _quic_settings,
)

if TYPE_CHECKING:
    from ._common import Commands

logger = logging.getLogger("trioquic.get")

#: Bodies read from a ``--data-file`` are sent in chunks of this size.
UPLOAD_CHUNK = 64 * 1024
#: A download shows a progress bar (on a terminal) from this size on.
PROGRESS_THRESHOLD = 1024 * 1024
#: Held bodies (standard output, waiting for earlier URLs) spill to disk
#: beyond this size.
SPOOL_IN_MEMORY = 1024 * 1024


class UsageError(Exception):
    """Arguments that cannot work together (reported before any request)."""


@attrs.frozen
class Target:
    """One URL to fetch."""

    url: str
    host: str
    port: int
    #: ``host[:port]`` as written in the URL (the ``:authority``).
    authority: str
    #: Path and query (the ``:path``).
    path: str


def parse_url(url: str) -> Target:
    """Split an ``https://`` URL; raises :exc:`UsageError` if it is not one."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"{url}: not a valid URL ({exc})") from None
    if parts.scheme != "https":
        raise UsageError(f"{url}: only https:// URLs can be fetched over HTTP/3")
    if not parts.hostname:
        raise UsageError(f"{url}: no host in the URL")
    if parts.username is not None or parts.password is not None:
        raise UsageError(f"{url}: credentials in URLs are not supported")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    authority = parts.netloc
    return Target(
        url=url,
        host=parts.hostname,
        port=port if port is not None else 443,
        authority=authority,
        path=path,
    )


def output_name(target: Target) -> str:
    """The file name a URL's body is saved as in ``--output DIR``: the last
    segment of its path (``index.html`` when there is none)."""
    path = urllib.parse.urlsplit(target.url).path
    name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        return "index.html"
    return name


def parse_header(text: str) -> tuple[bytes, bytes]:
    """``"Name: value"`` as an HTTP/3 header (the name in lower case)."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n") or name[0] == ":":
        raise UsageError(f"not a header (want 'Name: value'): {text!r}")
    value = value.strip()
    if any(c in value for c in "\r\n\x00"):
        raise UsageError(f"header value with a line break: {text!r}")
    return name.lower().encode(), value.encode()


def status_line(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"  # pragma: no cover


class Progress:
    """One progress line on a terminal for all downloads together, shown
    only once more than :data:`PROGRESS_THRESHOLD` bytes are involved."""

    def __init__(self, stream: IO[str] | None, *, interval: float = 0.1) -> None:
        self._stream = stream
        self._interval = interval
        self._expected = 0
        self._unknown = 0
        self._received = 0
        self._start = time.monotonic()
        self._last = 0.0
        self._shown = False

    def expect(self, length: int | None) -> None:
        if length is None:
            self._unknown += 1
        else:
            self._expected += length

    def advance(self, count: int) -> None:
        self._received += count
        if self._stream is None:
            return
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        if max(self._expected, self._received) < PROGRESS_THRESHOLD:
            return
        self._last = now
        self._draw(now)

    def _draw(self, now: float) -> None:
        assert self._stream is not None
        rate = self._received / max(now - self._start, 1e-6)
        if self._expected and not self._unknown:
            fraction = min(self._received / self._expected, 1.0)
            width = 30
            filled = math.floor(fraction * width)
            bar = "#" * filled + "-" * (width - filled)
            text = (
                f"[{bar}] {fraction * 100:5.1f}% {_size(self._received)} / "
                f"{_size(self._expected)} {_size(rate)}/s"
            )
        else:
            text = f"{_size(self._received)} {_size(rate)}/s"
        self._stream.write("\r" + text + "\x1b[K")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._stream is not None and self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False


class OrderedOutput:
    """Bodies written to one binary stream in URL order while downloads run
    at once: the earliest unfinished body is written through, the others
    are held (in memory, then in a temporary file) until their turn."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._out = trio.wrap_file(stream)
        self._next = 0
        self._held: dict[int, tempfile.SpooledTemporaryFile[bytes]] = {}
        self._finished: set[int] = set()
        self._lock = trio.Lock()

    async def write(self, index: int, data: bytes) -> None:
        async with self._lock:
            if index == self._next:
                await self._out.write(data)
            else:
                held = self._held.get(index)
                if held is None:
                    held = self._held[index] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
                        max_size=SPOOL_IN_MEMORY
                    )
                await trio.to_thread.run_sync(held.write, data)

    async def finish(self, index: int, *, keep: bool = True) -> None:
        """Body ``index`` is complete (``keep=False``: drop what is held)."""
        async with self._lock:
            if not keep and index in self._held:
                self._held.pop(index).close()
            self._finished.add(index)
            while self._next in self._finished:
                self._next += 1
                await self._release(self._next)
            await self._out.flush()

    async def _release(self, index: int) -> None:
        held = self._held.pop(index, None)
        if held is None:
            return
        with held:
            await trio.to_thread.run_sync(held.seek, 0)
            while chunk := await trio.to_thread.run_sync(held.read, UPLOAD_CHUNK):
                await self._out.write(chunk)

    async def aclose(self) -> None:
        for held in self._held.values():
            held.close()
        self._held.clear()
        await self._out.flush()


class FileOutput:
    """A body written to a file, which is opened only once a 2xx response
    arrived (a failure leaves an existing file alone) and removed if the
    download then fails."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._handle: Any = None
        self._created = False

    async def open(self) -> None:
        self._handle = await trio.open_file(self.path, "wb")
        self._created = True

    async def write(self, data: bytes) -> None:
        await self._handle.write(data)

    async def finish(self, *, keep: bool) -> None:
        if self._handle is not None:
            await self._handle.aclose()
            self._handle = None
        if self._created and not keep:
            await trio.Path(self.path).unlink(missing_ok=True)


@attrs.define
class Job:
    index: int
    target: Target
    file: FileOutput | None = None
    failure: str | None = None
    received: int = 0
    status: int | None = None


@attrs.frozen
class GetOptions:
    method: str = "GET"
    headers: tuple[tuple[bytes, bytes], ...] = ()
    data: bytes | None = None
    data_file: str | None = None
    #: Session tickets the servers sent, newest last (for --session-ticket).
    tickets: list[bytes] = attrs.field(factory=list, eq=False)


async def _send_body(
    stream: RequestStream, options: GetOptions, sent: trio.Event
) -> None:
    """Send the request body while the response is read (a server may
    answer as it reads, as ``/echo`` does)."""
    try:
        if options.data is not None:
            if options.data:
                await stream.send(options.data)
        elif options.data_file is not None:
            async with await trio.open_file(options.data_file, "rb") as file:
                while chunk := await file.read(UPLOAD_CHUNK):
                    await stream.send(chunk)
        await stream.finish()
    except Exception as exc:
        # The server stopped reading, or the connection broke: the response
        # (or its absence) tells the story.
        logger.info("request body not sent completely: %s", exc)
        return
    sent.set()


def _content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _receive(
    job: Job, response: Response, stdout: OrderedOutput | None, progress: Progress
) -> bool:
    """Check the status and write the body; ``True`` on success."""
    job.status = response.status
    logger.info("%s: %s", job.target.url, status_line(response.status))
    if not 200 <= response.status < 300:
        job.failure = status_line(response.status)
        return False
    progress.expect(_content_length(response.headers))
    if job.file is not None:
        await job.file.open()
    async for chunk in response:
        if not chunk:
            continue
        if job.file is not None:
            await job.file.write(chunk)
        elif stdout is not None:
            await stdout.write(job.index, chunk)
        job.received += len(chunk)
        progress.advance(len(chunk))
    return True


class _Abandon(Exception):
    """The response is complete but the server did not take the whole body."""


async def _fetch(
    client: Http3Client,
    job: Job,
    options: GetOptions,
    stdout: OrderedOutput | None,
    progress: Progress,
) -> None:
    ok = False
    target = job.target
    try:
        if options.data is None and options.data_file is None:
            response = await client.request(
                options.method,
                target.path,
                headers=list(options.headers),
                authority=target.authority,
            )
            ok = await _receive(job, response, stdout, progress)
        else:
            try:
                async with client.open_request(
                    options.method,
                    target.path,
                    headers=list(options.headers),
                    authority=target.authority,
                ) as stream:
                    sent = trio.Event()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_send_body, stream, options, sent)
                        response = await stream.response()
                        ok = await _receive(job, response, stdout, progress)
                        nursery.cancel_scope.cancel()
                    if not sent.is_set():
                        raise _Abandon  # resets the request stream
            except _Abandon:
                pass
    except Exception as exc:
        if job.failure is None:
            job.failure = _describe(exc)
        logger.info("%s failed", target.url, exc_info=True)
    finally:
        with trio.CancelScope(shield=True):
            if job.file is not None:
                await job.file.finish(keep=ok)
            if stdout is not None:
                await stdout.finish(job.index, keep=ok)


async def _fetch_group(
    jobs: list[Job],
    settings: QuicSettings,
    options: GetOptions,
    stdout: OrderedOutput | None,
    progress: Progress,
) -> None:
    first = jobs[0].target
    try:
        async with (
            open_http3_client(first.host, first.port, settings=settings) as client,
            trio.open_nursery() as nursery,
        ):
            for job in jobs:
                nursery.start_soon(_fetch, client, job, options, stdout, progress)
        ticket = client.session_ticket
        if ticket is not None:
            options.tickets.append(ticket)
    except Exception as exc:
        # The connection failed, or could not start: settings the client
        # refuses raise ValueError as it connects ("not a trioquic session
        # ticket" for a --session-ticket file that holds none).
        reason = _describe(exc)
        for job in jobs:
            if job.failure is None and job.status is None:
                job.failure = reason
    finally:
        # Jobs that never ran (the connection failed first) release their turn.
        if stdout is not None:
            with trio.CancelScope(shield=True):
                for job in jobs:
                    if job.status is None:
                        await stdout.finish(job.index, keep=False)


def plan(
    urls: Sequence[str],
    *,
    output_dir: str | None,
    output_file: str | None,
) -> list[Job]:
    """The jobs for ``urls`` with their outputs; raises :exc:`UsageError`."""
    targets = [parse_url(url) for url in urls]
    jobs = [Job(index, target) for index, target in enumerate(targets)]
    if output_file is not None:
        if len(jobs) != 1:
            raise UsageError("-o/--output-file takes one URL; use --output DIR")
        jobs[0].file = FileOutput(pathlib.Path(output_file))
    elif output_dir is not None:
        directory = pathlib.Path(output_dir)
        if not directory.is_dir():
            raise UsageError(f"output directory not found: {output_dir}")
        seen: dict[str, str] = {}
        for job in jobs:
            name = output_name(job.target)
            if name in seen:
                raise UsageError(
                    f"{seen[name]} and {job.target.url} would both be saved as {name}"
                )
            seen[name] = job.target.url
            job.file = FileOutput(directory / name)
    return jobs


async def get(
    jobs: list[Job],
    *,
    settings: QuicSettings,
    options: GetOptions,
    stdout: IO[bytes] | None,
    progress_stream: IO[str] | None,
) -> None:
    """Run every job; failures are left in ``job.failure``."""
    groups: dict[tuple[str, int], list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.target.host, job.target.port), []).append(job)
    ordered = (
        OrderedOutput(stdout)
        if stdout is not None and any(job.file is None for job in jobs)
        else None
    )
    progress = Progress(progress_stream)
    try:
        async with trio.open_nursery() as nursery:
            for group in groups.values():
                nursery.start_soon(
                    _fetch_group, group, settings, options, ordered, progress
                )
    finally:
        progress.close()
        if ordered is not None:
            with trio.CancelScope(shield=True):
                await ordered.aclose()


def default_stdout() -> IO[bytes]:
    return sys.stdout.buffer


def progress_stream(verbose: bool) -> IO[str] | None:
    """Standard error when it is a terminal (and not busy with logs)."""
    try:
        tty = os.isatty(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        tty = False
    return sys.stderr if tty and not verbose else None


# -- the command ---------------------------------------------------------------------


def _read_ticket(path: str) -> bytes | None:
    """The session ticket saved in ``path`` (checked as the client connects),
    or None when there is none yet."""
    ticket_path = pathlib.Path(path)
    if ticket_path.is_file() and ticket_path.stat().st_size:
        return ticket_path.read_bytes()
    return None


def _cmd_get(args: argparse.Namespace, prog: str, out: TextIO) -> int:
    if args.zero_rtt and args.session_ticket is None:
        raise CommandError("--zero-rtt needs --session-ticket FILE (the ticket to use)")
    ticket = None if args.session_ticket is None else _read_ticket(args.session_ticket)
    if args.ca_certs is not None:
        _check_readable(args.ca_certs, "CA certificates")
    if args.data_file is not None:
        _check_readable(args.data_file, "--data-file")
    try:
        headers = tuple(parse_header(text) for text in args.header)
        jobs = plan(args.url, output_dir=args.output, output_file=args.output_file)
    except UsageError as exc:
        raise CommandError(str(exc)) from None
    method = args.method or (
        "POST" if args.data is not None or args.data_file is not None else "GET"
    )
    options = GetOptions(
        method=method.upper(),
        headers=headers,
        data=args.data.encode() if args.data is not None else None,
        data_file=args.data_file,
    )
    settings = _quic_settings(
        args,
        alpn_protocols=["h3"],
        ca_certs=args.ca_certs,
        verify_peer=not args.insecure,
        server_name=args.server_name,
        handshake_timeout=args.timeout,
        qlog_dir=args.qlog_dir,
        session_ticket=ticket,
        zero_rtt=args.zero_rtt and ticket is not None,
    )
    needs_stdout = any(job.file is None for job in jobs)
    trio.run(
        functools.partial(
            get,
            jobs,
            settings=settings,
            options=options,
            stdout=default_stdout() if needs_stdout else None,
            progress_stream=progress_stream(args.verbose),
        )
    )
    if args.session_ticket is not None and options.tickets:
        # Keep the newest ticket for the next run (it is a secret: 0600).
        ticket_file = pathlib.Path(args.session_ticket)
        ticket_file.touch(mode=0o600)
        ticket_file.write_bytes(options.tickets[-1])
    failed = [job for job in jobs if job.failure is not None]
    for job in failed:
        print(f"{prog} get: {job.target.url}: {job.failure}", file=sys.stderr)
    for job in jobs:
        if job.failure is None and job.file is not None and args.verbose:
            print(
                f"{job.target.url}: saved {job.received} bytes to {job.file.path}",
                file=sys.stderr,
            )
    sys.stderr.flush()
    return EXIT_FAILURE if failed else 0


def add_get_command(commands: Commands) -> None:
    """``trioquic get``."""
    fetch = commands.add_parser(
        "get",
        help="fetch URLs over HTTP/3",
        description=(
            "Fetch each URL over HTTP/3 (URLs on one host and port share a "
            "connection and are fetched at once). Bodies go to standard "
            "output in URL order, or to files. Any failure (including a "
            "status other than 2xx) exits with status 1 and one line per URL."
        ),
    )
    fetch.add_argument("url", metavar="URL", nargs="+", help="https:// URL")
    where = fetch.add_mutually_exclusive_group()
    where.add_argument(
        "--output",
        metavar="DIR",
        help="save each body in DIR, named after the URL path's last segment",
    )
    where.add_argument(
        "-o",
        "--output-file",
        metavar="FILE",
        help="save the body of the (single) URL in FILE",
    )
    _add_trust_arguments(fetch)
    fetch.add_argument(
        "--method", metavar="M", help="request method (default: GET, POST with data)"
    )
    body = fetch.add_mutually_exclusive_group()
    body.add_argument("--data", metavar="BODY", help="request body (text)")
    body.add_argument(
        "--data-file", metavar="F", help="send the contents of file F as the body"
    )
    fetch.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'K: V'",
        help="add a request header (repeatable)",
    )
    _add_handshake_arguments(fetch, default_name="host")
    fetch.add_argument(
        "--session-ticket",
        metavar="FILE",
        help="resume the TLS session saved in FILE, if any, and save the newest "
        "session ticket there afterwards",
    )
    fetch.add_argument(
        "--zero-rtt",
        action="store_true",
        help="with a saved --session-ticket, send the requests as 0-RTT data "
        "(one round trip sooner; 0-RTT can be replayed: idempotent requests only)",
    )
    fetch.add_argument(
        "--qlog-dir", metavar="DIR", help="write the connection's qlog file here"
    )
    _add_engine_argument(fetch)
    fetch.add_argument(
        "-v", "--verbose", action="store_true", help="log what the client does"
    )
    fetch.set_defaults(handler=_cmd_get)
