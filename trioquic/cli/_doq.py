"""The ``trioquic doq-proxy`` command: DNS over QUIC (RFC 9250) in front of a
classic DNS server, with :class:`trioquic.doq.UdpForwarder`.

:mod:`trioquic.doq` needs dnspython (the ``doq`` extra): it is imported only
when the command runs, so the other commands work without it."""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
from typing import TYPE_CHECKING, TextIO

import trio

from ._common import (
    CommandError,
    _add_engine_argument,
    _certificate_spki,
    _convert,
    _port,
    _positive_float,
    _positive_int,
    _print_certificate,
    _print_engine,
    _print_listening,
    _quic_settings,
    _serve_until_signalled,
    _server_certificate,
)

if TYPE_CHECKING:
    from ..doq import DoqServer
    from ._common import Commands

#: The DoQ port (RFC 9250 section 4.1.1).
DEFAULT_PORT = 853


def _split_upstream(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(text)
    port = int(port_text)
    if not 0 < port <= 65535:
        raise ValueError(text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def _upstream(text: str) -> tuple[str, int]:
    return _convert(text, _split_upstream, "HOST:PORT (e.g. 127.0.0.1:53)")


def _client_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def dnspython_command(host: str, port: int, ca_certs: str) -> str:
    """A shell command that asks the proxy one query with dnspython's DoQ
    client."""
    code = (
        "import dns.message, dns.query; "
        "print(dns.query.quic(dns.message.make_query('example.com', 'A'), "
        f"{host!r}, port={port}, verify={ca_certs!r}, "
        "server_hostname='localhost'))"
    )
    return shlex.join([sys.executable, "-c", code])


def _cmd_doq_proxy(args: argparse.Namespace, prog: str, out: TextIO) -> int:
    try:
        from ..doq import DoqSettings, UdpForwarder, serve_doq
    except ImportError as exc:
        raise CommandError(
            f"doq-proxy needs dnspython ({exc}): pip install 'trioquic[doq]'"
        ) from None
    certificate_path, key_path, generated = _server_certificate(args)
    spki = _certificate_spki(certificate_path)
    settings = _quic_settings(args, certificate=certificate_path, private_key=key_path)
    doq_settings = DoqSettings(
        max_concurrent_queries=args.max_concurrent_queries,
        handler_timeout=args.timeout * args.attempts + 1.0,
    )
    forwarder = UdpForwarder(
        args.upstream, timeout=args.timeout, attempts=args.attempts
    )
    upstream_host, upstream_port = args.upstream

    def on_ready(server: DoqServer) -> None:
        _print_listening(server.quic, "doq-proxy", out)
        _print_engine(settings, out)
        print(f"forwarding to {upstream_host}:{upstream_port} (UDP, TCP)", file=out)
        _print_certificate(certificate_path, key_path, generated, spki, out)
        host = _client_host(args.host)
        print(
            "query it with: " + dnspython_command(host, server.port, certificate_path),
            file=out,
        )
        print("press Ctrl-C to stop", file=out)
        out.flush()

    start = functools.partial(
        serve_doq,
        forwarder,
        args.port,
        host=args.host,
        settings=settings,
        doq_settings=doq_settings,
    )
    trio.run(_serve_until_signalled, start, on_ready, out)
    print("doq-proxy stopped", file=out)
    return 0


def add_doq_proxy_command(commands: Commands) -> None:
    """``trioquic doq-proxy``."""
    proxy = commands.add_parser(
        "doq-proxy",
        help="serve DNS over QUIC (RFC 9250), forwarding to a UDP DNS server",
        description=(
            "Answer DNS over QUIC (ALPN doq) by relaying each query to a "
            "classic DNS server over UDP (TCP when the answer is truncated); "
            "SERVFAIL when it does not answer. Without --certificate a "
            "self-signed development certificate for localhost, 127.0.0.1 and "
            "::1 is generated. Ctrl-C stops the proxy gracefully."
        ),
    )
    proxy.add_argument(
        "--upstream",
        type=_upstream,
        required=True,
        metavar="HOST:PORT",
        help="the DNS server to forward to, e.g. 127.0.0.1:53",
    )
    proxy.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)"
    )
    proxy.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"UDP port (default: {DEFAULT_PORT}, the DoQ port; 0 = any)",
    )
    proxy.add_argument("--certificate", metavar="PEM", help="certificate chain file")
    proxy.add_argument("--private-key", metavar="PEM", help="private key file")
    proxy.add_argument(
        "--timeout",
        type=_positive_float,
        default=2.0,
        help="seconds to wait for the upstream, per attempt (default: 2)",
    )
    proxy.add_argument(
        "--attempts",
        type=_positive_int,
        default=2,
        help="attempts per query before SERVFAIL (default: 2)",
    )
    proxy.add_argument(
        "--max-concurrent-queries",
        type=_positive_int,
        default=100,
        metavar="N",
        help="queries one connection may have open at once (default: 100)",
    )
    proxy.add_argument(
        "-v", "--verbose", action="store_true", help="log connections and failures"
    )
    _add_engine_argument(proxy)
    proxy.set_defaults(handler=_cmd_doq_proxy)
