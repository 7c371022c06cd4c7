"""A local UDP port that relays through a proxy
(:func:`run_udp_forwarder`): each local peer address gets its own tunnel,
so any UDP program can use one."""

from __future__ import annotations

import collections
import logging
import socket as _stdlib_socket
from typing import Any

import attrs
import trio

from .._validators import int_at_least, seconds
from ._client import MasqueClient, MasqueTunnelRefused, UdpTunnel

logger = logging.getLogger("trioquic.masque")


@attrs.frozen(kw_only=True)
class MasqueForwarderSettings:
    """Limits of a :func:`run_udp_forwarder`."""

    #: Local peers (each with its own tunnel) at once; datagrams from more
    #: are dropped (and counted).
    max_peers: int = attrs.field(default=64, validator=int_at_least(1))
    #: Seconds without a datagram either way after which a peer's tunnel
    #: is closed.
    idle_timeout: float = attrs.field(default=60.0, validator=seconds(optional=False))
    #: Datagrams from a peer queued while its tunnel opens or sends.
    queue_size: int = attrs.field(default=64, validator=int_at_least(1))


@attrs.frozen
class MasqueForwarderStatistics:
    peers_open: int
    peers_total: int
    datagrams_in: int
    datagrams_out: int
    drops: dict[str, int]


class _Peer:
    def __init__(self, address: Any, queue_size: int) -> None:
        self.address = address
        self.send, self.receive = trio.open_memory_channel[bytes](queue_size)
        self.last_activity = trio.current_time()


class MasqueForwarder:
    """A running forwarder: its local ``address`` and statistics."""

    def __init__(self, sock: trio.socket.SocketType, target: tuple[str, int]) -> None:
        self.socket = sock
        self.address: Any = sock.getsockname()
        self.target = target
        self._peers: dict[Any, _Peer] = {}
        self._peers_total = 0
        self._counts: collections.Counter[str] = collections.Counter()

    def statistics(self) -> MasqueForwarderStatistics:
        return MasqueForwarderStatistics(
            peers_open=len(self._peers),
            peers_total=self._peers_total,
            datagrams_in=self._counts["in"],
            datagrams_out=self._counts["out"],
            drops={k: v for k, v in self._counts.items() if k not in ("in", "out")},
        )


async def run_udp_forwarder(
    client: MasqueClient,
    target_host: str,
    target_port: int,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    settings: MasqueForwarderSettings | None = None,
    task_status: trio.TaskStatus[MasqueForwarder] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host``:``port`` (UDP) and relay through ``client``'s proxy
    to ``target_host``:``target_port``: each local peer address gets its
    own tunnel (at most ``settings.max_peers``, closed after
    ``settings.idle_timeout`` seconds without traffic). Use
    ``await nursery.start(run_udp_forwarder, client, host, port)`` to get
    the :class:`MasqueForwarder` (its ``address``) once it listens."""
    if not isinstance(client, MasqueClient):
        raise TypeError("client must be a trioquic.masque.MasqueClient")
    settings = settings if settings is not None else MasqueForwarderSettings()
    if not isinstance(settings, MasqueForwarderSettings):
        raise TypeError("settings must be a trioquic.masque.MasqueForwarderSettings")
    infos = await trio.socket.getaddrinfo(host, port, type=_stdlib_socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    sock = trio.socket.socket(family, _stdlib_socket.SOCK_DGRAM)
    with sock:
        await sock.bind(sockaddr)
        forwarder = MasqueForwarder(sock, (target_host, target_port))
        async with trio.open_nursery() as nursery:
            task_status.started(forwarder)
            while True:
                data, address = await sock.recvfrom(65536)
                forwarder._counts["in"] += 1
                peer = forwarder._peers.get(address)
                if peer is None:
                    if len(forwarder._peers) >= settings.max_peers:
                        forwarder._counts["too_many_peers"] += 1
                        continue
                    peer = _Peer(address, settings.queue_size)
                    forwarder._peers[address] = peer
                    forwarder._peers_total += 1
                    nursery.start_soon(_serve_peer, client, forwarder, peer, settings)
                peer.last_activity = trio.current_time()
                try:
                    peer.send.send_nowait(data)
                except trio.WouldBlock:
                    forwarder._counts["queue_full"] += 1
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    forwarder._counts["peer_closing"] += 1


async def _serve_peer(
    client: MasqueClient,
    forwarder: MasqueForwarder,
    peer: _Peer,
    settings: MasqueForwarderSettings,
) -> None:
    host, port = forwarder.target
    try:
        async with client.open_udp_tunnel(host, port) as tunnel:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_upward, tunnel, peer)
                nursery.start_soon(
                    _downward, tunnel, forwarder, peer, nursery.cancel_scope
                )
                while True:
                    deadline = peer.last_activity + settings.idle_timeout
                    if trio.current_time() >= deadline:
                        break
                    await trio.sleep_until(deadline)
                nursery.cancel_scope.cancel()
            await tunnel.aclose()
    except MasqueTunnelRefused as exc:
        forwarder._counts["refused"] += 1
        logger.warning("trioquic.masque: %s", exc)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        forwarder._counts["tunnel_failed"] += 1
        logger.warning("trioquic.masque: tunnel for %s failed: %s", peer.address, exc)
    except Exception as exc:  # the connection to the proxy ended, ...
        forwarder._counts["tunnel_failed"] += 1
        logger.warning("trioquic.masque: tunnel for %s failed: %r", peer.address, exc)
    finally:
        peer.send.close()
        forwarder._peers.pop(peer.address, None)


async def _upward(tunnel: UdpTunnel, peer: _Peer) -> None:
    async for data in peer.receive:
        try:
            await tunnel.send(data)
        except ValueError:
            continue  # too large: dropped, as a network would


async def _downward(
    tunnel: UdpTunnel, forwarder: MasqueForwarder, peer: _Peer, done: trio.CancelScope
) -> None:
    async for payload in tunnel:
        peer.last_activity = trio.current_time()
        forwarder._counts["out"] += 1
        await forwarder.socket.sendto(payload, peer.address)
    done.cancel()  # the proxy ended the tunnel
