"""trioquic.masque: the local forwarder (library form), a proxy without
HTTP/3 datagrams (the client falls back to capsules), payloads above the
proxy's limit, and closing a tunnel from the client."""

from __future__ import annotations

import functools
from typing import Any

import attrs
import trio
from test_masque import LOOPBACK, _ca, _server_settings, proxy_and_echo, udp_echo

from trioquic import masque
from trioquic.h3 import Http3Settings, serve_http3

# ruff: noqa: SIM117


async def _peer(port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    await sock.connect(("127.0.0.1", port))
    return sock


async def test_forwarder_gives_each_peer_its_tunnel() -> None:
    settings = masque.MasqueForwarderSettings(max_peers=2, idle_timeout=0.5)
    with trio.fail_after(20):
        async with proxy_and_echo() as (server, echo, url):
            async with masque.open_masque_client(
                url, ca_certs=_ca(), server_name="localhost"
            ) as client:
                async with trio.open_nursery() as nursery:
                    forwarder = await nursery.start(
                        functools.partial(
                            masque.run_udp_forwarder,
                            client,
                            *echo,
                            settings=settings,
                        )
                    )
                    port = forwarder.address[1]
                    a, b, c = await _peer(port), await _peer(port), await _peer(port)
                    with a, b, c:
                        for sock, name in ((a, b"a"), (b, b"b")):
                            await sock.send(name)
                            assert await sock.recv(100) == b"echo:" + name
                        assert forwarder.statistics().peers_open == 2
                        assert server.statistics().tunnels_open == 2
                        # a third peer is beyond max_peers: dropped, counted
                        await c.send(b"c")
                        with trio.move_on_after(0.3):
                            await c.recv(100)
                            raise AssertionError("a third peer was served")
                        assert forwarder.statistics().drops["too_many_peers"] == 1
                        # idle peers' tunnels close; then c gets one
                        with trio.fail_after(5):
                            while forwarder.statistics().peers_open:  # noqa: ASYNC110
                                await trio.sleep(0.05)
                        await c.send(b"c")
                        assert await c.recv(100) == b"echo:c"
                        stats = forwarder.statistics()
                        assert stats.peers_total == 3
                        assert (stats.datagrams_in, stats.datagrams_out) == (4, 3)
                    nursery.cancel_scope.cancel()


async def test_proxy_without_http_datagrams_means_capsules() -> None:
    proxy = masque.MasqueProxy(LOOPBACK)
    http3 = Http3Settings(enable_connect_protocol=True)  # no HTTP datagrams
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            echo = await nursery.start(udp_echo)
            server = await nursery.start(
                functools.partial(
                    serve_http3,
                    proxy,
                    0,
                    host="127.0.0.1",
                    settings=_server_settings(),
                    http3_settings=http3,
                )
            )
            async with masque.open_udp_tunnel(
                f"https://127.0.0.1:{server.port}",
                *echo,
                ca_certs=_ca(),
                server_name="localhost",
            ) as tunnel:
                assert tunnel.transport == "capsule"
                await tunnel.send(b"no datagrams")
                assert await tunnel.receive() == b"echo:no datagrams"
                (stats,) = proxy.tunnels()
                assert stats.transport == "capsule"
            nursery.cancel_scope.cancel()


async def test_proxy_drops_payloads_above_its_limit() -> None:
    limits = masque.MasqueLimits(max_payload_size=100)
    with trio.fail_after(20):
        async with proxy_and_echo(limits=limits) as (server, echo, url):
            async with masque.open_udp_tunnel(
                url, *echo, ca_certs=_ca(), server_name="localhost"
            ) as tunnel:
                await tunnel.send(bytes(101))
                await tunnel.send(b"small")
                assert await tunnel.receive() == b"echo:small"
                (stats,) = server.statistics().tunnels
                assert stats.drops == {"too_large": 1}
                # the echo of 96 bytes is 101 bytes: too large coming back
                await tunnel.send(bytes(96))
                await tunnel.send(b"after")
                assert await tunnel.receive() == b"echo:after"
                (stats,) = server.statistics().tunnels
                assert stats.drops == {"too_large": 2}


async def test_client_closes_a_tunnel() -> None:
    with trio.fail_after(20):
        async with proxy_and_echo() as (server, echo, url):
            async with masque.open_udp_tunnel(
                url, *echo, ca_certs=_ca(), server_name="localhost"
            ) as tunnel:
                await tunnel.send(b"x")
                assert await tunnel.receive() == b"echo:x"
                await tunnel.aclose()
                await tunnel.aclose()  # idempotent
                try:
                    await tunnel.send(b"y")
                except trio.ClosedResourceError:
                    pass
                else:
                    raise AssertionError("send after aclose")
                with trio.fail_after(5):
                    while server.statistics().tunnels_open:  # noqa: ASYNC110
                        await trio.sleep(0.02)
            assert server.statistics().tunnels_total == 1


def test_forwarder_settings_validation() -> None:
    import pytest

    with pytest.raises(ValueError):
        masque.MasqueForwarderSettings(max_peers=0)
    with pytest.raises(ValueError):
        masque.MasqueForwarderSettings(idle_timeout=0)
    assert attrs.asdict(masque.MasqueForwarderSettings())["max_peers"] == 64


async def test_forwarder_needs_a_client() -> None:
    import pytest

    bad: Any = "https://proxy"
    with pytest.raises(TypeError, match="MasqueClient"):
        await masque.run_udp_forwarder(bad, "127.0.0.1", 53)
