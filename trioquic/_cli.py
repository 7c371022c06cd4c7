"""The ``trioquic`` command line (also ``python -m trioquic``).

Subcommands:

* ``trioquic serve``: an HTTP/3 server (files, ``/bytes/N``, ``/echo``);
* ``trioquic get URL...``: fetch URLs over HTTP/3;
* ``trioquic echo-server``: a raw-QUIC echo server (ALPN ``trioquic-echo``);
* ``trioquic echo-client HOST PORT MESSAGE...``: echo each message on its own
  stream and print the replies;
* ``trioquic cert``: write a self-signed development certificate.

Failures exit with a non-zero status and a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import pathlib
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TextIO, TypeVar

import trio

from ._certs import DEFAULT_NAMES, generate_self_signed_certificate
from ._echo import ECHO_ALPN, echo_handler, echo_messages, spki_sha256
from ._endpoint import QuicServer, serve_quic
from ._engine import decode_session_ticket
from ._errors import ConnectionClosed
from ._http3_get import (
    GetOptions,
    UsageError,
    default_stdout,
    get,
    parse_header,
    plan,
    progress_stream,
)
from ._http3_server import ServerConfig, run_server
from ._settings import QuicSettings

_T = TypeVar("_T")

#: Exit status for failures (argparse uses 2 for usage errors).
EXIT_FAILURE = 1
#: Exit status after an interrupt that came too early for a graceful stop.
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A failure to report as one line, without a traceback."""


# -- helpers -----------------------------------------------------------------


def _self_command(prog: str) -> list[str]:
    """How to invoke this program again, for the commands we print."""
    if prog == "python -m trioquic":
        return [sys.executable, "-m", "trioquic"]
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0).startswith("trioquic"):
        return [argv0]  # as typed: ".venv/bin/trioquic", or a full path
    return ["trioquic"]


def _client_host(host: str) -> str:
    """The address a local client should use to reach a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _leaf(exc: BaseException) -> BaseException:
    """The one interesting exception inside nested single-member groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    exc = _leaf(exc)
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    if isinstance(exc, ConnectionClosed):
        return f"connection failed: {exc.reason}"
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def _check_readable(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise CommandError(f"{what} file not found: {path}")


def _server_certificate(
    args: argparse.Namespace,
) -> tuple[str, str, bool]:
    """(certificate path, key path, generated?) for a server command."""
    if (args.certificate is None) != (args.private_key is None):
        raise CommandError("--certificate and --private-key go together: give both")
    if args.certificate is not None:
        _check_readable(args.certificate, "certificate")
        _check_readable(args.private_key, "private key")
        return (
            os.path.abspath(args.certificate),
            os.path.abspath(args.private_key),
            False,
        )
    cert = generate_self_signed_certificate(DEFAULT_NAMES)
    return str(cert.certificate_path), str(cert.private_key_path), True


def _certificate_spki(certificate_path: str) -> str:
    """The certificate's SPKI SHA-256 (base64), or a one-line failure."""
    try:
        return spki_sha256(certificate_path)
    except ValueError as exc:
        raise CommandError(
            f"cannot read the certificate {certificate_path}: {exc}"
        ) from None


def _print_listening(server: QuicServer, what: str, out: TextIO) -> None:
    """One line per address the server is bound to."""
    for address in server.addresses:
        where = f"[{address[0]}]" if ":" in str(address[0]) else str(address[0])
        print(
            f"trioquic {what} listening on {where}:{address[1]} (UDP)",
            file=out,
        )


def _print_certificate(
    certificate_path: str, key_path: str, generated: bool, spki: str, out: TextIO
) -> None:
    """The server's certificate, key and SPKI hash."""
    kind = "self-signed development certificate" if generated else "certificate"
    print(f"{kind}: {certificate_path}", file=out)
    print(f"private key: {key_path}", file=out)
    print(f"certificate SPKI SHA-256 (base64): {spki}", file=out)


# -- echo-server -----------------------------------------------------------------


async def _serve_until_signalled(
    start: Callable[..., Awaitable[object]],
    on_ready: Callable[[Any], None],
    out: TextIO,
) -> None:
    """Start a server with ``nursery.start(start)``, hand what it reports to
    ``on_ready``, serve until SIGINT or SIGTERM, then cancel it: that closes
    every connection gracefully (GOAWAY for HTTP/3, then CONNECTION_CLOSE,
    bounded by close_grace_period)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            on_ready(await nursery.start(start))
            async for signum in signals:
                name = signal.Signals(signum).name
                print(f"{name} received: closing connections and stopping", file=out)
                out.flush()
                break
            nursery.cancel_scope.cancel()


async def _run_echo_server(
    host: str,
    port: int,
    settings: QuicSettings,
    on_ready: Callable[[QuicServer], None],
    out: TextIO,
) -> None:
    """The echo server, until SIGINT or SIGTERM."""
    start = functools.partial(
        serve_quic, echo_handler, port, host=host, settings=settings
    )
    await _serve_until_signalled(start, on_ready, out)


def _cmd_echo_server(args: argparse.Namespace, prog: str, out: TextIO) -> int:
    certificate_path, key_path, generated = _server_certificate(args)
    spki = _certificate_spki(certificate_path)
    settings = QuicSettings(
        alpn_protocols=[ECHO_ALPN],
        certificate=certificate_path,
        private_key=key_path,
    )

    def on_ready(server: QuicServer) -> None:
        _print_listening(server, "echo server", out)
        _print_certificate(certificate_path, key_path, generated, spki, out)
        client = [
            *_self_command(prog),
            "echo-client",
            _client_host(args.host),
            str(server.port),
            "--ca-certs",
            certificate_path,
            "hello",
            "world",
        ]
        print(f"try it with: {shlex.join(client)}", file=out)
        print("press Ctrl-C to stop", file=out)
        out.flush()

    trio.run(_run_echo_server, args.host, args.port, settings, on_ready, out)
    print("echo server stopped", file=out)
    return 0


# -- serve -------------------------------------------------------------------------


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


async def _run_http3_server(
    config: ServerConfig,
    on_ready: Callable[[QuicServer, int], None],
    out: TextIO,
) -> None:
    """The HTTP/3 server, until SIGINT or SIGTERM."""

    def ready(reported: Any) -> None:
        server, app = reported
        on_ready(server, app.port)

    await _serve_until_signalled(functools.partial(run_server, config), ready, out)


def _cmd_serve(args: argparse.Namespace, prog: str, out: TextIO) -> int:
    root: pathlib.Path | None = None
    if args.root is not None:
        root = pathlib.Path(args.root)
        if not root.is_dir():
            raise CommandError(f"--root is not a directory: {args.root}")
        root = root.resolve()
    certificate_path, key_path, generated = _server_certificate(args)
    spki = _certificate_spki(certificate_path)
    settings = QuicSettings(
        alpn_protocols=["h3"],
        certificate=certificate_path,
        private_key=key_path,
        qlog_dir=args.qlog_dir,
        congestion_control=args.congestion_control,
        retry="always" if args.retry else "never",
    )
    config = ServerConfig(
        host=args.host or None, port=args.port, settings=settings, root=root
    )
    _configure_access_log()

    def on_ready(server: QuicServer, port: int) -> None:
        _print_listening(server, "HTTP/3 server", out)
        url = f"https://{_url_host(args.host)}:{port}/"
        print(f"serving: {root if root is not None else 'the built-in page'}", file=out)
        print(f"URL: {url}", file=out)
        _print_certificate(certificate_path, key_path, generated, spki, out)
        client = [*_self_command(prog), "get", url, "--ca-certs", certificate_path]
        print(f"try it with: {shlex.join(client)}", file=out)
        host = _url_host(args.host)
        print(
            "or in Chromium: chromium "
            f"--origin-to-force-quic-on={host}:{port} "
            f"--ignore-certificate-errors-spki-list={spki} {url}",
            file=out,
        )
        print("press Ctrl-C to stop", file=out)
        out.flush()

    trio.run(_run_http3_server, config, on_ready, out)
    print("HTTP/3 server stopped", file=out)
    return 0


# -- get -----------------------------------------------------------------------------


def _cmd_get(args: argparse.Namespace, prog: str, out: TextIO) -> int:
    if args.zero_rtt and args.session_ticket is None:
        raise CommandError("--zero-rtt needs --session-ticket FILE (the ticket to use)")
    ticket: bytes | None = None
    if args.session_ticket is not None:
        ticket_path = pathlib.Path(args.session_ticket)
        if ticket_path.is_file() and ticket_path.stat().st_size:
            ticket = ticket_path.read_bytes()
            try:
                decode_session_ticket(ticket)
            except ValueError:
                raise CommandError(
                    f"--session-ticket: {args.session_ticket} is not a session "
                    "ticket saved by trioquic get"
                ) from None
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
    settings = QuicSettings(
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


# -- echo-client -------------------------------------------------------------------


def _cmd_echo_client(args: argparse.Namespace, prog: str, out: TextIO) -> int:
    if args.ca_certs is not None:
        _check_readable(args.ca_certs, "CA certificates")
    settings = QuicSettings(
        alpn_protocols=[ECHO_ALPN],
        ca_certs=args.ca_certs,
        verify_peer=not args.insecure,
        server_name=args.server_name,
        handshake_timeout=args.timeout,
    )
    messages = [message.encode() for message in args.message]

    async def run() -> list[bytes]:
        # Bounded: the handshake has its own timeout; this covers the rest.
        with trio.fail_after(args.timeout + 30):
            return await echo_messages(
                args.host, args.port, messages, settings=settings
            )

    try:
        replies = trio.run(run)
    except trio.TooSlowError:
        raise CommandError("the echo server did not answer in time") from None
    for reply in replies:
        print(reply.decode(errors="replace"), file=out)
    out.flush()
    if replies != messages:
        raise CommandError("an echo reply differs from the message sent")
    return 0


# -- cert ------------------------------------------------------------------------------


def _cmd_cert(args: argparse.Namespace, prog: str, out: TextIO) -> int:
    names = args.name or list(DEFAULT_NAMES)
    try:
        cert = generate_self_signed_certificate(names, args.dir, days=args.days)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    print(f"certificate: {cert.certificate_path}", file=out)
    print(f"private key: {cert.private_key_path}", file=out)
    print(f"names: {', '.join(cert.names)}", file=out)
    print(f"valid for: {args.days} days", file=out)
    print(f"certificate SPKI SHA-256 (base64): {cert.spki_sha256}", file=out)
    return 0


# -- parser ----------------------------------------------------------------------------


def _convert(text: str, convert: Callable[[str], _T], what: str) -> _T:
    """``convert(text)``, or a usage error that says what was wanted."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def _port(text: str) -> int:
    value = _convert(text, int, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = _convert(text, float, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = _convert(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_server_arguments(
    parser: argparse.ArgumentParser, *, host: str, host_help: str
) -> None:
    """--host, --port, --certificate and --private-key of a server command."""
    parser.add_argument("--host", default=host, help=host_help)
    parser.add_argument(
        "--port", type=_port, default=4433, help="UDP port (default: 4433; 0 = any)"
    )
    parser.add_argument("--certificate", metavar="PEM", help="certificate chain file")
    parser.add_argument("--private-key", metavar="PEM", help="private key file")


def _add_trust_arguments(parser: argparse.ArgumentParser) -> None:
    """--ca-certs or --insecure: how a client checks the server's certificate."""
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument(
        "--ca-certs",
        metavar="PEM",
        help="trust the certificates in this file (e.g. the server's cert.pem)",
    )
    trust.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's certificate (development only)",
    )


def _add_handshake_arguments(
    parser: argparse.ArgumentParser, *, default_name: str
) -> None:
    """--server-name and --timeout of a client command."""
    parser.add_argument(
        "--server-name",
        help=f"name the server's certificate must carry (default: {default_name})",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        help="handshake timeout in seconds (default: 10)",
    )


def build_parser(prog: str = "trioquic") -> argparse.ArgumentParser:
    """The argument parser of the ``trioquic`` command."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "QUIC and HTTP/3 for trio: HTTP/3 server and client, echo server "
            "and client, development certificates."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser(
        "serve",
        help="run an HTTP/3 server (files, /bytes/N, /echo)",
        description=(
            "Serve HTTP/3: the files under --root (or a built-in page at /), "
            "GET /bytes/N (N bytes) and POST /echo (the body, sent back). "
            "Without --certificate a self-signed development certificate for "
            "localhost, 127.0.0.1 and ::1 is generated. Ctrl-C stops the "
            "server gracefully (GOAWAY, then CONNECTION_CLOSE)."
        ),
    )
    _add_server_arguments(
        serve,
        host="localhost",
        host_help="address to bind (default: localhost, i.e. 127.0.0.1 and ::1)",
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
        default="reno",
        help="congestion controller (default: reno)",
    )
    serve.add_argument(
        "-v", "--verbose", action="store_true", help="log connections and requests"
    )
    serve.set_defaults(handler=_cmd_serve)

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
    fetch.add_argument(
        "-v", "--verbose", action="store_true", help="log what the client does"
    )
    fetch.set_defaults(handler=_cmd_get)

    server = commands.add_parser(
        "echo-server",
        help="run a raw-QUIC echo server (ALPN trioquic-echo)",
        description=(
            "Echo every stream back to its sender. Without --certificate a "
            "self-signed development certificate for localhost, 127.0.0.1 "
            "and ::1 is generated. Ctrl-C stops the server gracefully."
        ),
    )
    _add_server_arguments(
        server,
        host="127.0.0.1",
        host_help="address to bind (default: 127.0.0.1)",
    )
    server.add_argument(
        "-v", "--verbose", action="store_true", help="log connections and streams"
    )
    server.set_defaults(handler=_cmd_echo_server)

    client = commands.add_parser(
        "echo-client",
        help="send messages to an echo server and print the replies",
        description="Send each MESSAGE on its own QUIC stream and print the echo.",
    )
    client.add_argument("host", metavar="HOST")
    client.add_argument("port", metavar="PORT", type=_port)
    client.add_argument("message", metavar="MESSAGE", nargs="+")
    _add_trust_arguments(client)
    _add_handshake_arguments(client, default_name="HOST")
    client.add_argument(
        "-v", "--verbose", action="store_true", help="log what the client does"
    )
    client.set_defaults(handler=_cmd_echo_client)

    cert = commands.add_parser(
        "cert",
        help="write a self-signed development certificate",
        description="Write cert.pem and key.pem (ECDSA P-256, self-signed).",
    )
    cert.add_argument(
        "--dir", help="directory to write into (default: a new temporary directory)"
    )
    cert.add_argument(
        "--name",
        action="append",
        metavar="N",
        help="DNS name or IP address (repeatable; default: localhost 127.0.0.1 ::1)",
    )
    cert.add_argument(
        "--days",
        type=_positive_int,
        default=14,
        help="validity in days (default: 14)",
    )
    cert.set_defaults(handler=_cmd_cert, verbose=False)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def _configure_logging(verbose: bool) -> None:
    if verbose:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s: %(message)s"
        )
    else:
        # The QUIC engine logs every failed handshake as a warning; the
        # command reports failures itself, in one line.
        logging.getLogger("quic").setLevel(logging.ERROR)


def _fail(prog: str, message: str, status: int = EXIT_FAILURE) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(status)


def main(argv: Sequence[str] | None = None, *, prog: str = "trioquic") -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    out = sys.stdout
    try:
        status: int = args.handler(args, prog, out)
    except CommandError as exc:
        _fail(prog, str(exc))
    except KeyboardInterrupt:
        _fail(prog, "interrupted", EXIT_INTERRUPTED)
    except Exception as exc:
        if args.verbose:
            logging.getLogger("trioquic").exception("command failed")
        _fail(prog, _describe(exc))
    return status


def run() -> NoReturn:
    """Entry point of ``python -m trioquic``."""
    raise SystemExit(main(prog="python -m trioquic"))
