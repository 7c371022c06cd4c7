"""trioquic.masque: URI templates, the access policy, limits, and the proxy
and client end to end over loopback (the relay needs real UDP sockets)."""

# ruff: noqa: SIM117

from __future__ import annotations

import functools
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trioquic import QuicSettings, masque
from trioquic.h3 import H3Error, H3ErrorCode, Http3Settings, encode_capsule
from trioquic.masque import (
    MasqueAccessPolicy,
    MasqueLimits,
    MasqueTunnelRefused,
    UriTemplate,
)
from trioquic.testing import development_certificate

LOOPBACK = MasqueAccessPolicy(targets=("127.0.0.0/8",))


# -- URI templates ---------------------------------------------------------------------


def test_default_template() -> None:
    template = UriTemplate(masque.DEFAULT_TEMPLATE)
    assert template.expand("192.0.2.6", 443, host="proxy.example", port=4433) == (
        "https://proxy.example:4433/.well-known/masque/udp/192.0.2.6/443/"
    )
    # IPv6 literals: the colons are percent-encoded (RFC 9298 section 2).
    assert template.expand_path("2001:db8::42", 53) == (
        "/.well-known/masque/udp/2001%3Adb8%3A%3A42/53/"
    )
    assert template.expand_path("[::1]", 53) == "/.well-known/masque/udp/%3A%3A1/53/"
    assert template.match("/.well-known/masque/udp/2001%3Adb8%3A%3A42/53/") == (
        "2001:db8::42",
        "53",
    )
    assert template.match("/.well-known/masque/udp/a/b/c/") is None
    assert template.match("/other") is None


def test_query_templates() -> None:
    template = UriTemplate(
        "https://proxy.example/masque?h={target_host}&p={target_port}"
    )
    assert template.expand("dns.example", 53) == (
        "https://proxy.example/masque?h=dns.example&p=53"
    )
    assert template.match("/masque?h=dns.example&p=53") == ("dns.example", "53")
    assert template.match("/masque?h=x&p=53&more=1") is None
    form = UriTemplate("/masque{?target_host,target_port}")
    assert form.expand_path("::1", 53) == "/masque?target_host=%3A%3A1&target_port=53"
    assert form.match("/masque?target_host=%3A%3A1&target_port=53") == ("::1", "53")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("/masque/{target_host}", "target_port"),
        ("/masque/{target_port}", "target_host"),
        ("/m/{target_host}/{target_host}/{target_port}", "exactly once"),
        ("/m/{target_host}/{port}/{target_port}", "not allowed"),
        ("http://x/{target_host}/{target_port}", "https"),
        ("masque/{target_host}/{target_port}", "https"),
        ("https://x", "no path"),
        ("/m/{target_host/{target_port}", "malformed|not allowed"),
        ("/m/{target_host}/{target_port}#f", "fragment"),
    ],
)
def test_template_validation(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UriTemplate(template)


@given(
    host=st.one_of(
        st.text(min_size=1, max_size=40).filter(lambda h: not h.startswith("[")),
        st.ip_addresses().map(str),
    ),
    port=st.integers(1, 65535),
    template=st.sampled_from(
        [
            masque.DEFAULT_PATH_TEMPLATE,
            "/masque?h={target_host}&p={target_port}",
            "/masque{?target_host,target_port}",
            "/p/{target_port}/h/{target_host}",
        ]
    ),
)
def test_template_round_trip(host: str, port: int, template: str) -> None:
    uri = UriTemplate(template)
    path = uri.expand_path(host, port)
    assert path.isascii()
    assert uri.match(path) == (host, str(port))


# -- policy and limits ----------------------------------------------------------------


POLICY_CASES: list[tuple[MasqueAccessPolicy, str, int, int | None, str | None]] = [
    # (policy, host, port, status or None if allowed, proxy-status error)
    (MasqueAccessPolicy(), "127.0.0.1", 53, 502, "destination_ip_prohibited"),
    (MasqueAccessPolicy(), "::1", 53, 502, "destination_ip_prohibited"),
    (MasqueAccessPolicy(), "10.1.2.3", 53, 502, "destination_ip_prohibited"),
    (MasqueAccessPolicy(), "169.254.1.1", 53, 502, "destination_ip_prohibited"),
    (MasqueAccessPolicy(), "224.0.0.1", 53, 502, "destination_ip_prohibited"),
    (MasqueAccessPolicy(), "0.0.0.0", 53, 502, "destination_ip_prohibited"),
    (MasqueAccessPolicy(), "fe80::1", 53, 502, "destination_ip_prohibited"),
    (MasqueAccessPolicy(), "::ffff:127.0.0.1", 53, 502, "destination_ip_prohibited"),
    (MasqueAccessPolicy(), "8.8.8.8", 53, None, None),
    (MasqueAccessPolicy(), "2001:4860:4860::8888", 53, None, None),
    # a name resolving to loopback is refused even when the name is listed
    (MasqueAccessPolicy(), "localhost", 53, 502, "destination_ip_prohibited"),
    (
        MasqueAccessPolicy(targets=("localhost",)),
        "localhost",
        53,
        502,
        "destination_ip_prohibited",
    ),
    (LOOPBACK, "localhost", 53, None, None),
    (LOOPBACK, "127.0.0.1", 53, None, None),
    (LOOPBACK, "8.8.8.8", 53, 403, "destination_ip_prohibited"),
    (MasqueAccessPolicy(allow_private=True), "10.0.0.1", 53, None, None),
    (MasqueAccessPolicy(ports=(53,)), "8.8.8.8", 54, 403, "http_request_denied"),
    (MasqueAccessPolicy(ports=("1000-2000",)), "8.8.8.8", 1500, None, None),
    (
        MasqueAccessPolicy(targets=("dns.example",)),
        "other.example",
        53,
        403,
        "http_request_denied",
    ),
    (MasqueAccessPolicy(), "name.invalid", 53, 502, "dns_error"),
]


@pytest.mark.parametrize(("policy", "host", "port", "status", "error"), POLICY_CASES)
async def test_policy_decisions(
    policy: MasqueAccessPolicy,
    host: str,
    port: int,
    status: int | None,
    error: str | None,
) -> None:
    target, refusal = await policy.resolve(host, port)
    if status is None:
        assert refusal is None
        assert target is not None
        assert target[1][1] == port
    else:
        assert refusal is not None, target
        assert (refusal.status, refusal.error) == (status, error)
        assert refusal.headers()[0][1].startswith(b"trioquic; error=" + error.encode())


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="not a host name"):
        MasqueAccessPolicy(targets=("no such/thing",))
    with pytest.raises(ValueError, match="1-65535"):
        MasqueAccessPolicy(ports=(0,))
    with pytest.raises(ValueError, match="1-65535"):
        MasqueAccessPolicy(ports=("2000-1000",))
    with pytest.raises(ValueError, match="range"):
        MasqueAccessPolicy(ports=("fifty",))
    with pytest.raises(TypeError):
        MasqueAccessPolicy(targets=(5,))  # type: ignore[arg-type]
    assert MasqueAccessPolicy(targets="192.0.2.0/24").targets == ("192.0.2.0/24",)


def test_limits_validation() -> None:
    assert MasqueLimits().max_payload_size == 65527
    with pytest.raises(ValueError, match="max_payload_size"):
        MasqueLimits(max_payload_size=70000)
    with pytest.raises(ValueError, match="max_tunnels_per_connection"):
        MasqueLimits(max_tunnels=2, max_tunnels_per_connection=3)
    with pytest.raises(ValueError):
        MasqueLimits(datagram_queue_size=0)
    with pytest.raises(ValueError):
        MasqueLimits(idle_timeout=-1)
    with pytest.raises(TypeError):
        MasqueLimits(max_tunnels="many")  # type: ignore[arg-type]


def test_proxy_url() -> None:
    location = masque.ProxyLocation.parse("https://proxy.example:4433")
    assert (location.host, location.port) == ("proxy.example", 4433)
    assert location.template.path_template == masque.DEFAULT_PATH_TEMPLATE
    custom = masque.ProxyLocation.parse("https://p/m?h={target_host}&p={target_port}")
    assert custom.port == 443
    assert custom.template.expand_path("a", 1) == "/m?h=a&p=1"
    for bad in ("http://p", "https://p/other", "p:443", "https://:5"):
        with pytest.raises(ValueError):
            masque.ProxyLocation.parse(bad)


# -- end to end -----------------------------------------------------------------------


def _server_settings() -> QuicSettings:
    cert = development_certificate()
    return QuicSettings(
        certificate=str(cert.certificate_path), private_key=str(cert.private_key_path)
    )


def _ca() -> str:
    return str(development_certificate().certificate_path)


async def udp_echo(
    *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
) -> None:
    """A UDP echo server on loopback: echoes b"echo:" + payload."""
    with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        task_status.started(sock.getsockname())
        while True:
            data, address = await sock.recvfrom(65536)
            await sock.sendto(b"echo:" + data, address)


@asynccontextmanager
async def proxy_and_echo(
    **kwargs: Any,
) -> AsyncIterator[tuple[masque.MasqueServer, tuple[str, int], str]]:
    kwargs.setdefault("policy", LOOPBACK)
    async with trio.open_nursery() as nursery:
        echo = await nursery.start(udp_echo)
        server = await nursery.start(
            functools.partial(
                masque.serve_masque_proxy,
                0,
                host="127.0.0.1",
                settings=_server_settings(),
                **kwargs,
            )
        )
        yield server, echo, f"https://127.0.0.1:{server.port}"
        nursery.cancel_scope.cancel()


async def test_tunnel_to_udp_echo() -> None:
    with trio.fail_after(20):
        async with proxy_and_echo() as (server, echo, url):
            async with masque.open_udp_tunnel(
                url, *echo, ca_certs=_ca(), server_name="localhost"
            ) as tunnel:
                assert tunnel.transport == "datagram"
                for i in range(5):
                    await tunnel.send(b"ping%d" % i)
                    assert await tunnel.receive() == b"echo:ping%d" % i
                stats = server.statistics()
                assert stats.tunnels_open == 1
                (tunnel_stats,) = stats.tunnels
                assert tunnel_stats.to_target_datagrams == 5
                assert tunnel_stats.from_target_datagrams == 5
                assert tunnel_stats.from_target_bytes == sum(
                    len(b"echo:ping%d" % i) for i in range(5)
                )
                assert tunnel_stats.target_address[0] == "127.0.0.1"
                assert tunnel_stats.transport == "datagram"
                mine = tunnel.statistics()
                assert (mine.to_target_datagrams, mine.from_target_datagrams) == (5, 5)
            # The client's FIN ends the tunnel on the proxy.
            while server.statistics().tunnels_open:  # noqa: ASYNC110
                await trio.sleep(0.01)
            totals = server.statistics()
            assert totals.tunnels_total == 1
            assert totals.to_target_datagrams == 5


async def test_many_tunnels_over_one_connection() -> None:
    with trio.fail_after(20):
        async with (
            proxy_and_echo() as (server, echo, url),
            masque.open_masque_client(
                url, ca_certs=_ca(), server_name="localhost"
            ) as c,
        ):

            async def one(i: int) -> None:
                async with c.open_udp_tunnel(*echo) as tunnel:
                    for j in range(3):
                        await tunnel.send(b"%d-%d" % (i, j))
                        assert await tunnel.receive() == b"echo:%d-%d" % (i, j)

            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(one, i)
            assert server.statistics().tunnels_total == 8
            assert len(server.quic.connections) == 1


async def test_capsule_fallback_without_http_datagrams() -> None:
    with trio.fail_after(20):
        async with proxy_and_echo() as (server, echo, url):
            async with masque.open_udp_tunnel(
                url, *echo, ca_certs=_ca(), server_name="localhost", use_datagrams=False
            ) as tunnel:
                assert tunnel.transport == "capsule"
                await tunnel.send(b"over the stream")
                assert await tunnel.receive() == b"echo:over the stream"
                # a large payload: not one QUIC packet, fine as a capsule
                await tunnel.send(bytes(5000))
                assert await tunnel.receive() == b"echo:" + bytes(5000)
                assert server.statistics().tunnels[0].transport == "capsule"


async def test_large_payload_falls_back_to_a_capsule() -> None:
    with trio.fail_after(20):
        async with proxy_and_echo() as (_server, echo, url):
            async with masque.open_udp_tunnel(
                url, *echo, ca_certs=_ca(), server_name="localhost"
            ) as tunnel:
                await tunnel.send(bytes(3000))
                assert await tunnel.receive() == b"echo:" + bytes(3000)
                with pytest.raises(ValueError, match="max_payload_size"):
                    await tunnel.send(bytes(65528))


@asynccontextmanager
async def raw_tunnel(
    url: str, path: str, *, headers: Any = None, protocol: str = "connect-udp"
) -> AsyncIterator[Any]:
    async with masque.open_masque_client(
        url, ca_certs=_ca(), server_name="localhost"
    ) as c:
        fields = [(b"capsule-protocol", b"?1")] if headers is None else headers
        async with c.http3.open_request(
            "CONNECT", path, headers=fields, protocol=protocol
        ) as stream:
            yield c, stream


def _echo_path(echo: tuple[str, int]) -> str:
    return UriTemplate(masque.DEFAULT_PATH_TEMPLATE).expand_path(*echo)


async def test_unknown_context_id_dropped_and_capsules_accepted() -> None:
    with trio.fail_after(20):
        async with proxy_and_echo() as (server, echo, url):
            async with raw_tunnel(url, _echo_path(echo)) as (_, stream):
                response = await stream.response()
                assert response.status == 200
                assert (b"capsule-protocol", b"?1") in response.headers
                await stream.send_datagram(b"\x05not a payload")  # context 5
                await stream.send_datagram(b"\x40\x00x")  # context 0, 2-byte varint
                assert await stream.receive_datagram() == b"\x00echo:x"
                # a DATAGRAM capsule from a client that has datagrams too
                await stream.send(encode_capsule(0, b"\x00cap"))
                assert await stream.receive_datagram() == b"\x00echo:cap"
                (stats,) = server.statistics().tunnels
                assert stats.drops == {"unknown_context": 1}
                assert stats.to_target_datagrams == 2


async def test_malformed_capsule_resets_the_stream() -> None:
    limits = MasqueLimits(max_capsule_size=100)
    with trio.fail_after(20):
        async with proxy_and_echo(limits=limits) as (_server, echo, url):
            async with raw_tunnel(url, _echo_path(echo)) as (client, stream):
                response = await stream.response()
                assert response.status == 200
                await stream.send(encode_capsule(0, bytes(200)))
                with pytest.raises(H3Error) as info:
                    await response.read()
                assert info.value.error_code == H3ErrorCode.GENERAL_PROTOCOL_ERROR
                # the connection carries on
                async with client.open_udp_tunnel(*echo) as tunnel:
                    await tunnel.send(b"still")
                    assert await tunnel.receive() == b"echo:still"
                assert not client.http3.is_closed


async def test_truncated_capsule_at_the_end_resets_the_stream() -> None:
    with trio.fail_after(20):
        async with proxy_and_echo() as (_server, echo, url):
            async with raw_tunnel(url, _echo_path(echo)) as (_client, stream):
                response = await stream.response()
                await stream.send(encode_capsule(0, b"\x00abcdef")[:4], end_stream=True)
                with pytest.raises(H3Error) as info:
                    await response.read()
                assert info.value.error_code == H3ErrorCode.GENERAL_PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("path", "headers", "protocol", "status", "error"),
    [
        ("/elsewhere", None, "connect-udp", 404, None),
        ("ECHO", [], "connect-udp", 400, "http_request_error"),
        (
            "ECHO",
            [(b"capsule-protocol", b"?0")],
            "connect-udp",
            400,
            "http_request_error",
        ),
        ("ECHO", None, "websocket", 501, None),
        (
            "/.well-known/masque/udp/127.0.0.1/0/",
            None,
            "connect-udp",
            400,
            "http_request_error",
        ),
        (
            "/.well-known/masque/udp/127.0.0.1/65536/",
            None,
            "connect-udp",
            400,
            "http_request_error",
        ),
        (
            "/.well-known/masque/udp/127.0.0.1/x/",
            None,
            "connect-udp",
            400,
            "http_request_error",
        ),
        ("/.well-known/masque/udp/%ff/53/", None, "connect-udp", 404, None),
        (
            "/.well-known/masque/udp/8.8.8.8/53/",
            None,
            "connect-udp",
            403,
            "destination_ip_prohibited",
        ),
        (
            "/.well-known/masque/udp/10.0.0.1/53/",
            None,
            "connect-udp",
            403,
            "destination_ip_prohibited",
        ),
        (
            "/.well-known/masque/udp/name.invalid/53/",
            None,
            "connect-udp",
            502,
            "dns_error",
        ),
    ],
)
async def test_refusals(
    path: str, headers: Any, protocol: str, status: int, error: str | None
) -> None:
    with trio.fail_after(20):
        async with proxy_and_echo() as (server, echo, url):
            if path == "ECHO":
                path = _echo_path(echo)
            async with raw_tunnel(url, path, headers=headers, protocol=protocol) as (
                _client,
                stream,
            ):
                response = await stream.response()
                assert response.status == status
                proxy_status = [v for k, v in response.headers if k == b"proxy-status"]
                if error is None:
                    assert proxy_status == []
                else:
                    assert proxy_status[0].startswith(
                        b"trioquic; error=" + error.encode()
                    )
                assert (b"capsule-protocol", b"?1") not in response.headers
            assert server.statistics().refused == {status: 1}
            assert server.statistics().tunnels_total == 0


async def test_refused_tunnel_raises_with_status_and_proxy_status() -> None:
    with trio.fail_after(20):
        async with proxy_and_echo(policy=MasqueAccessPolicy()) as (_, echo, url):
            with pytest.raises(MasqueTunnelRefused) as info:
                async with masque.open_udp_tunnel(
                    url, *echo, ca_certs=_ca(), server_name="localhost"
                ):
                    pass
            assert info.value.status == 502
            assert info.value.error == "destination_ip_prohibited"
            assert "127.0.0.1" in (info.value.proxy_status or "")


async def test_tunnel_limits() -> None:
    limits = MasqueLimits(max_tunnels_per_connection=2, max_tunnels=3)
    with trio.fail_after(20):
        async with (
            proxy_and_echo(limits=limits) as (server, echo, url),
            masque.open_masque_client(
                url, ca_certs=_ca(), server_name="localhost"
            ) as a,
            masque.open_masque_client(
                url, ca_certs=_ca(), server_name="localhost"
            ) as b,
            a.open_udp_tunnel(*echo),
            a.open_udp_tunnel(*echo),
        ):
            with pytest.raises(MasqueTunnelRefused) as info:
                async with a.open_udp_tunnel(*echo):
                    pass
            assert (info.value.status, info.value.error) == (
                429,
                "connection_limit_reached",
            )
            async with b.open_udp_tunnel(*echo) as third:
                await third.send(b"3")
                assert await third.receive() == b"echo:3"
                with pytest.raises(MasqueTunnelRefused) as info:
                    async with b.open_udp_tunnel(*echo):
                        pass
                assert (info.value.status, info.value.error) == (
                    503,
                    "connection_limit_reached",
                )
            assert server.statistics().refused == {429: 1, 503: 1}


async def test_idle_timeout_ends_the_tunnel() -> None:
    limits = MasqueLimits(idle_timeout=0.3)
    with trio.fail_after(20):
        async with proxy_and_echo(limits=limits) as (server, echo, url):
            async with masque.open_udp_tunnel(
                url, *echo, ca_certs=_ca(), server_name="localhost"
            ) as tunnel:
                await tunnel.send(b"a")
                assert await tunnel.receive() == b"echo:a"
                start = trio.current_time()
                with pytest.raises(trio.EndOfChannel):
                    await tunnel.receive()
                assert 0.2 < trio.current_time() - start < 3
                assert tunnel.statistics().ended == "proxy_closed"
            assert server.statistics().tunnels_open == 0


async def test_queue_full_drops_and_counts() -> None:
    limits = MasqueLimits(datagram_queue_size=1)
    with trio.fail_after(20):
        async with proxy_and_echo() as (_server, echo, url):
            async with masque.open_masque_client(
                url, ca_certs=_ca(), server_name="localhost", limits=limits
            ) as client:
                async with client.open_udp_tunnel(*echo) as tunnel:
                    for i in range(20):
                        await tunnel.send(b"%d" % i)
                    await trio.sleep(0.3)
                    received = [await tunnel.receive()]
                    with trio.move_on_after(0.2):
                        while True:
                            received.append(await tunnel.receive())
                    stats = tunnel.statistics()
                    assert len(received) == stats.from_target_datagrams
                    assert stats.drops.get("queue_full_from_target", 0) == 20 - len(
                        received
                    )
                    assert len(received) < 20


async def test_graceful_shutdown_ends_tunnels() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as outer:
            echo = await outer.start(udp_echo)
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    functools.partial(
                        masque.serve_masque_proxy,
                        0,
                        host="127.0.0.1",
                        settings=_server_settings(),
                        policy=LOOPBACK,
                    )
                )
                url = f"https://127.0.0.1:{server.port}"
                async with masque.open_udp_tunnel(
                    url, *echo, ca_certs=_ca(), server_name="localhost"
                ) as tunnel:
                    await tunnel.send(b"x")
                    assert await tunnel.receive() == b"echo:x"
                    start = trio.current_time()
                    nursery.cancel_scope.cancel()
                    with pytest.raises((trio.EndOfChannel, trio.BrokenResourceError)):
                        await tunnel.receive()
                    assert trio.current_time() - start < 2
                    assert tunnel.statistics().ended == "proxy_closed"
            assert server.statistics().tunnels_open == 0
            outer.cancel_scope.cancel()


async def test_mounted_beside_other_routes() -> None:
    proxy = masque.MasqueProxy(LOOPBACK, template="/udp/{target_host}/{target_port}")

    async def handler(request: Any) -> None:
        if await proxy.handle(request):
            return
        await request.respond(200, body=b"other route " + request.path.encode())

    from trioquic.h3 import serve_http3

    settings = attrs.evolve(_server_settings(), max_datagram_frame_size=65536)
    http3 = Http3Settings(enable_connect_protocol=True, enable_datagrams=True)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            echo = await nursery.start(udp_echo)
            server = await nursery.start(
                functools.partial(
                    serve_http3,
                    handler,
                    0,
                    host="127.0.0.1",
                    settings=settings,
                    http3_settings=http3,
                )
            )
            url = f"https://127.0.0.1:{server.port}/udp/{{target_host}}/{{target_port}}"
            async with masque.open_masque_client(
                url, ca_certs=_ca(), server_name="localhost"
            ) as client:
                response = await client.http3.request("GET", "/hello")
                assert await response.read() == b"other route /hello"
                async with client.open_udp_tunnel(*echo) as tunnel:
                    await tunnel.send(b"mounted")
                    assert await tunnel.receive() == b"echo:mounted"
                assert proxy.statistics().tunnels_total == 1
            nursery.cancel_scope.cancel()


def test_public_addresses_are_allowed() -> None:
    policy = MasqueAccessPolicy()
    assert policy.check_address("x", ipaddress.ip_address("192.0.2.1")) is not None
    assert policy.check_address("x", ipaddress.ip_address("1.1.1.1")) is None
