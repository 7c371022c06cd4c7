"""The ``trioquic`` parser and entry points, and the ``cert`` command.

The other commands live in their own modules (:mod:`._serve`, :mod:`._get`,
:mod:`._echo`), which register their parsers here; what they share is in
:mod:`._common`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from .. import generate_self_signed_certificate
from .._certs import DEFAULT_NAMES
from ._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    CommandError,
    _describe,
    _positive_int,
)
from ._doq import add_doq_proxy_command
from ._echo import add_echo_client_command, add_echo_server_command
from ._get import add_get_command
from ._masque import add_masque_commands
from ._serve import add_serve_command

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

    add_serve_command(commands)
    add_get_command(commands)
    add_echo_server_command(commands)
    add_echo_client_command(commands)
    add_doq_proxy_command(commands)
    add_masque_commands(commands)

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
    from .. import __version__

    return __version__


# -- running ---------------------------------------------------------------------------


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
    """Run the command line; returns the exit status (the ``trioquic``
    console script)."""
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
