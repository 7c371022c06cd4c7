"""What several commands share: failures and how they are described, number
and port parsing, option groups, server certificates and the lines servers
print, running a server until a signal.

Imports nothing else of :mod:`trioquic.cli`: every command module may use it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, get_args

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .. import (
    ConnectionClosed,
    QuicServer,
    QuicSettings,
    generate_self_signed_certificate,
)
from .._certs import DEFAULT_NAMES
from .._settings import Engine

if TYPE_CHECKING:
    #: What ``ArgumentParser.add_subparsers`` returns.
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]

_T = TypeVar("_T")

#: Exit status for failures (argparse uses 2 for usage errors).
EXIT_FAILURE = 1
#: Exit status after an interrupt that came too early for a graceful stop.
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A failure to report as one line, without a traceback."""


# -- describing failures ---------------------------------------------------------


def _leaf(exc: BaseException) -> BaseException:
    """The one interesting exception inside nested single-member groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    """``exc`` as one line (the members of a group joined with ``; ``)."""
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


# -- parsing -----------------------------------------------------------------------


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


# -- option groups -----------------------------------------------------------------


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


#: The QUIC engines ``--engine`` offers: QuicSettings.engine's values.
ENGINES: tuple[str, ...] = get_args(Engine)


def _add_engine_argument(parser: argparse.ArgumentParser) -> None:
    """--engine: the QUIC engine under the command's connections."""
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        help="QUIC engine (default: the TRIOQUIC_ENGINE environment variable, "
        "else aioquic; qh3 needs pip install 'trioquic[qh3]')",
    )


def _quic_settings(args: argparse.Namespace, **fields: Any) -> QuicSettings:
    """QuicSettings with ``fields`` and the engine ``--engine`` chose (left to
    the settings' default when not given). A combination the engine cannot
    run is a one-line failure."""
    if args.engine is not None:
        fields["engine"] = args.engine
    try:
        return QuicSettings(**fields)
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None


# -- servers -----------------------------------------------------------------------


def _self_command(prog: str) -> list[str]:
    """How to invoke this program again, for the commands we print."""
    if prog == "python -m trioquic":
        return [sys.executable, "-m", "trioquic"]
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0).startswith("trioquic"):
        return [argv0]  # as typed: ".venv/bin/trioquic", or a full path
    return ["trioquic"]


def spki_sha256(certificate_path: str | os.PathLike[str]) -> str:
    """Base64 SHA-256 of the SubjectPublicKeyInfo of the first certificate in
    a PEM file (what ``--ignore-certificate-errors-spki-list`` wants)."""
    with open(certificate_path, "rb") as fp:
        certificate = x509.load_pem_x509_certificate(fp.read())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


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


def _print_engine(settings: QuicSettings, out: TextIO) -> None:
    """Which QUIC engine the server runs on."""
    print(f"QUIC engine: {settings.engine}", file=out)


def _print_certificate(
    certificate_path: str, key_path: str, generated: bool, spki: str, out: TextIO
) -> None:
    """The server's certificate, key and SPKI hash."""
    kind = "self-signed development certificate" if generated else "certificate"
    print(f"{kind}: {certificate_path}", file=out)
    print(f"private key: {key_path}", file=out)
    print(f"certificate SPKI SHA-256 (base64): {spki}", file=out)


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
