"""The ``trioquic masque-proxy`` and ``trioquic masque-client`` commands: a
CONNECT-UDP proxy (RFC 9298) and a local UDP port that relays through one,
with :mod:`trioquic.masque`."""

from __future__ import annotations

import argparse
import functools
import shlex
import signal
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, TextIO

import trio

from ..masque import (
    DEFAULT_PATH_TEMPLATE,
    MasqueAccessPolicy,
    MasqueForwarder,
    MasqueForwarderSettings,
    MasqueLimits,
    MasqueServer,
    UriTemplate,
    open_masque_client,
    run_udp_forwarder,
    serve_masque_proxy,
)
from ._common import (
    CommandError,
    _add_engine_argument,
    _add_server_arguments,
    _add_trust_arguments,
    _certificate_spki,
    _check_readable,
    _convert,
    _positive_float,
    _positive_int,
    _print_certificate,
    _print_engine,
    _print_listening,
    _quic_settings,
    _self_command,
    _serve_until_signalled,
    _server_certificate,
)

if TYPE_CHECKING:
    from ._common import Commands


def _split_host_port(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(text)
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def _host_port(text: str) -> tuple[str, int]:
    return _convert(text, _split_host_port, "HOST:PORT (e.g. 127.0.0.1:5353)")


def _target(text: str) -> tuple[str, int]:
    host, port = _host_port(text)
    if port == 0:
        raise argparse.ArgumentTypeError(f"invalid HOST:PORT: {text!r} (port 0)")
    return host, port


def _client_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


# -- masque-proxy ----------------------------------------------------------------------


def _policy(args: argparse.Namespace) -> MasqueAccessPolicy:
    try:
        return MasqueAccessPolicy(
            targets=tuple(args.allow or ()),
            ports=tuple(args.allow_port or ()) or ((1, 65535),),
            allow_private=args.allow_private,
        )
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None


def _limits(args: argparse.Namespace) -> MasqueLimits:
    try:
        return MasqueLimits(
            max_tunnels_per_connection=args.max_tunnels_per_connection,
            max_tunnels=args.max_tunnels,
            datagram_queue_size=args.queue_size,
            idle_timeout=args.idle_timeout,
        )
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None


def _cmd_masque_proxy(args: argparse.Namespace, prog: str, out: TextIO) -> int:
    try:
        template = UriTemplate(args.template)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if template.origin:
        raise CommandError("--template is the path part, e.g. " + DEFAULT_PATH_TEMPLATE)
    policy = _policy(args)
    limits = _limits(args)
    certificate_path, key_path, generated = _server_certificate(args)
    spki = _certificate_spki(certificate_path)
    settings = _quic_settings(args, certificate=certificate_path, private_key=key_path)

    def on_ready(server: MasqueServer) -> None:
        _print_listening(server.quic, "masque-proxy", out)
        _print_engine(settings, out)
        allowed = ", ".join(policy.targets) or "any public address"
        ports = ", ".join(
            str(low) if low == high else f"{low}-{high}" for low, high in policy.ports
        )
        print(f"allowed targets: {allowed}; ports: {ports}", file=out)
        _print_certificate(certificate_path, key_path, generated, spki, out)
        host = _client_host(args.host)
        shown = f"[{host}]" if ":" in host else host
        url = f"https://{shown}:{server.port}"
        print(f"proxy URL: {url}{template.path_template}", file=out)
        command = [
            *_self_command(prog),
            "masque-client",
            "--proxy",
            url if args.template == DEFAULT_PATH_TEMPLATE else url + args.template,
            "--ca-certs",
            certificate_path,
            "--listen",
            "127.0.0.1:5353",
            "--target",
            "HOST:PORT",
        ]
        print("relay a local UDP port through it: " + shlex.join(command), file=out)
        print("press Ctrl-C to stop", file=out)
        out.flush()

    start = functools.partial(
        serve_masque_proxy,
        args.port,
        host=args.host,
        settings=settings,
        policy=policy,
        limits=limits,
        template=template,
    )
    trio.run(_serve_until_signalled, start, on_ready, out)
    print("masque-proxy stopped", file=out)
    return 0


# -- masque-client ---------------------------------------------------------------------


def _cmd_masque_client(args: argparse.Namespace, prog: str, out: TextIO) -> int:
    if args.ca_certs is not None:
        _check_readable(args.ca_certs, "CA certificates")
    listen_host, listen_port = args.listen
    target_host, target_port = args.target
    try:
        forwarder_settings = MasqueForwarderSettings(
            max_peers=args.max_peers, idle_timeout=args.idle_timeout
        )
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    settings = _quic_settings(args, handshake_timeout=args.timeout)

    async def run() -> None:
        async with AsyncExitStack() as stack:
            signals = stack.enter_context(
                trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
            )
            try:
                client = await stack.enter_async_context(
                    open_masque_client(
                        args.proxy,
                        ca_certs=args.ca_certs,
                        insecure=args.insecure,
                        server_name=args.server_name,
                        settings=settings,
                        use_datagrams=not args.no_datagrams,
                    )
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            async with trio.open_nursery() as nursery:
                forwarder: MasqueForwarder = await nursery.start(
                    functools.partial(
                        run_udp_forwarder,
                        client,
                        target_host,
                        target_port,
                        host=listen_host,
                        port=listen_port,
                        settings=forwarder_settings,
                    )
                )
                address = forwarder.address
                where = f"[{address[0]}]" if ":" in address[0] else address[0]
                shown = f"[{target_host}]" if ":" in target_host else target_host
                print(
                    f"trioquic masque-client listening on {where}:{address[1]} "
                    f"(UDP), relaying to {shown}:{target_port} through {args.proxy}",
                    file=out,
                )
                print("press Ctrl-C to stop", file=out)
                out.flush()

                async def watch_closed() -> None:
                    closed = await client.http3.wait_closed()
                    print(f"the proxy connection ended: {closed}", file=out)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch_closed)
                async for signum in signals:
                    name = signal.Signals(signum).name
                    print(f"{name} received: stopping", file=out)
                    break
                nursery.cancel_scope.cancel()

    try:
        trio.run(run)
    except OSError as exc:
        raise CommandError(
            f"cannot listen on {listen_host}:{listen_port}: {exc}"
        ) from None
    print("masque-client stopped", file=out)
    out.flush()
    return 0


# -- parsers ---------------------------------------------------------------------------


def add_masque_commands(commands: Commands) -> None:
    """``trioquic masque-proxy`` and ``trioquic masque-client``."""
    proxy = commands.add_parser(
        "masque-proxy",
        help="serve a MASQUE CONNECT-UDP proxy (RFC 9298) over HTTP/3",
        description=(
            "Relay UDP for HTTP/3 clients (extended CONNECT, :protocol "
            "connect-udp), with HTTP/3 datagrams or DATAGRAM capsules. Loopback "
            "and private addresses are refused unless --allow covers them. "
            "Without --certificate a self-signed development certificate for "
            "localhost, 127.0.0.1 and ::1 is generated. Ctrl-C ends every "
            "tunnel and stops gracefully."
        ),
    )
    _add_server_arguments(
        proxy, host="127.0.0.1", host_help="address to bind (default: 127.0.0.1)"
    )
    proxy.add_argument(
        "--allow",
        action="append",
        metavar="TARGET",
        help=(
            "allowed target: host name (*.example for subdomains), IP address "
            "or CIDR network (repeatable; default: any public address). An "
            "address or network here also lets loopback/private ones through"
        ),
    )
    proxy.add_argument(
        "--allow-port",
        action="append",
        metavar="PORTS",
        help="allowed target port or range: 53, 1000-2000 (repeatable; default: all)",
    )
    proxy.add_argument(
        "--allow-private",
        action="store_true",
        help="allow loopback, private and link-local targets (development only)",
    )
    proxy.add_argument(
        "--template",
        default=DEFAULT_PATH_TEMPLATE,
        help=f"URI template path (default: {DEFAULT_PATH_TEMPLATE})",
    )
    proxy.add_argument(
        "--max-tunnels",
        type=_positive_int,
        default=1024,
        metavar="N",
        help="tunnels open at once, whole proxy (default: 1024)",
    )
    proxy.add_argument(
        "--max-tunnels-per-connection",
        type=_positive_int,
        default=16,
        metavar="N",
        help="tunnels open at once per connection (default: 16)",
    )
    proxy.add_argument(
        "--queue-size",
        type=_positive_int,
        default=64,
        metavar="N",
        help="datagrams queued per tunnel and direction (default: 64)",
    )
    proxy.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="seconds without traffic before a tunnel ends (default: 60)",
    )
    proxy.add_argument(
        "-v", "--verbose", action="store_true", help="log connections and tunnels"
    )
    _add_engine_argument(proxy)
    proxy.set_defaults(handler=_cmd_masque_proxy)

    client = commands.add_parser(
        "masque-client",
        help="relay a local UDP port through a MASQUE CONNECT-UDP proxy",
        description=(
            "Listen on a local UDP port; each local peer gets its own tunnel "
            "through the proxy to --target, so any UDP program can use it."
        ),
    )
    client.add_argument(
        "--listen",
        type=_host_port,
        required=True,
        metavar="HOST:PORT",
        help="local UDP address to listen on (port 0 = any)",
    )
    client.add_argument(
        "--proxy",
        required=True,
        metavar="URL",
        help=(
            "the proxy: https://HOST:PORT, or its URI template "
            "(https://HOST:PORT/masque?h={target_host}&p={target_port})"
        ),
    )
    client.add_argument(
        "--target",
        type=_target,
        required=True,
        metavar="HOST:PORT",
        help="where the tunnels go, e.g. 192.0.2.1:53",
    )
    _add_trust_arguments(client)
    client.add_argument("--server-name", help="name the proxy's certificate must carry")
    client.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        help="seconds to connect to the proxy (default: 10)",
    )
    client.add_argument(
        "--max-peers",
        type=_positive_int,
        default=64,
        metavar="N",
        help="local peers (tunnels) at once (default: 64)",
    )
    client.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="seconds without traffic before a peer's tunnel closes (default: 60)",
    )
    client.add_argument(
        "--no-datagrams",
        action="store_true",
        help="send DATAGRAM capsules on the stream instead of HTTP/3 datagrams",
    )
    client.add_argument(
        "-v", "--verbose", action="store_true", help="log tunnels and failures"
    )
    _add_engine_argument(client)
    client.set_defaults(handler=_cmd_masque_client)
