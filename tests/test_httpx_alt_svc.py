"""Alt-Svc (RFC 7838): the header parser, and AltSvcTransport moving an origin
from TCP to HTTP/3 and back, against a TLS TCP server (h11) that advertises
a trioquic.h3 server on another port of 127.0.0.1, and against
trioquic.serve_http (the TCP door and HTTP/3 on one port)."""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trioquic import QuicSettings, h3
from trioquic.h3 import Request
from trioquic.httpx import AltService, AltSvcTransport, HTTP3Transport, parse_alt_svc
from trioquic.testing import development_certificate

# -- the parser ------------------------------------------------------------------


def test_parse_simple() -> None:
    assert parse_alt_svc('h3=":443"') == [AltService("h3", None, 443)]


def test_parse_parameters_and_several_alternatives() -> None:
    assert parse_alt_svc('h3=":8443"; ma=3600; persist=1, h3-29=":443"') == [
        AltService("h3", None, 8443, 3600.0, True),
        AltService("h3-29", None, 443),
    ]


def test_parse_host_and_ipv6_and_escapes() -> None:
    assert parse_alt_svc('h3="alt.example.com:443", h3="[::1]:4433"') == [
        AltService("h3", "alt.example.com", 443),
        AltService("h3", "::1", 4433),
    ]
    assert parse_alt_svc('h3="\\:\\4\\4\\3"') == [AltService("h3", None, 443)]


def test_parse_percent_encoded_protocol() -> None:
    assert parse_alt_svc('w%3Dx%25y=":80"') == [AltService("w=x%y", None, 80)]


def test_parse_clear() -> None:
    assert parse_alt_svc("clear") is None
    assert parse_alt_svc("  clear ") is None


@pytest.mark.parametrize(
    "value",
    [
        'h3=":0"',
        'h3=":99999"',
        'h3=":x"',
        "h3=:443",
        'h3=":443"; ma=soon',
        'h3="443"',
        '="":443',
        "",
    ],
)
def test_parse_skips_malformed_alternatives(value: str) -> None:
    assert parse_alt_svc(value) == []
    # A good alternative after a bad one is kept.
    assert parse_alt_svc(value + ', h3=":4433"') == [AltService("h3", None, 4433)]


def test_parse_unterminated_quote() -> None:
    assert parse_alt_svc('h3=":443') == []


def test_parse_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        parse_alt_svc(b'h3=":443"')  # type: ignore[arg-type]


_protocols = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=10
)
_hosts = st.none() | st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True)


@given(
    st.lists(
        st.tuples(
            _protocols,
            _hosts,
            st.integers(1, 65535),
            st.none() | st.integers(0, 10**7),
            st.booleans(),
        ),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from([",", ", ", " ,  "]),
)
def test_parse_round_trip(
    alternatives: list[tuple[str, str | None, int, int | None, bool]], comma: str
) -> None:
    parts = []
    expected = []
    for protocol, host, port, ma, persist in alternatives:
        text = f'{protocol}="{host or ""}:{port}"'
        if ma is not None:
            text += f"; ma={ma}"
        if persist:
            text += "; persist=1"
        parts.append(text)
        expected.append(
            AltService(
                protocol, host, port, 86400.0 if ma is None else float(ma), persist
            )
        )
    assert parse_alt_svc(comma.join(parts)) == expected


# -- the transport ------------------------------------------------------------------


def ca_path() -> str:
    return str(development_certificate().certificate_path)


class Servers:
    def __init__(self) -> None:
        self.tcp_port = 0
        self.h3_port = 0
        #: What the TCP server advertises (``{h3}`` is the HTTP/3 port).
        self.alt_svc = 'h3=":{h3}"; ma=86400'
        #: What the HTTP/3 server sends as Alt-Svc (None: nothing).
        self.h3_alt_svc: str | None = None
        #: ``(protocol, authority, path)`` of every request served.
        self.seen: list[tuple[str, str, str]] = []

    def url(self, path: str = "/") -> str:
        return f"https://localhost:{self.tcp_port}{path}"


async def _serve_h11(
    stream: trio.SSLStream[trio.SocketStream], servers: Servers
) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request: h11.Request | None = None
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    request = event
                if isinstance(event, h11.EndOfMessage):
                    break
            assert request is not None
            host = dict(request.headers).get(b"host", b"").decode()
            path = request.target.decode()
            servers.seen.append(("tcp", host, path))
            body = f"tcp {path}".encode()
            headers = [("content-length", str(len(body)))]
            if servers.alt_svc:
                headers.append(("alt-svc", servers.alt_svc.format(h3=servers.h3_port)))
            await stream.send_all(
                conn.send(h11.Response(status_code=200, headers=headers))
            )
            await stream.send_all(conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (
        trio.BrokenResourceError,
        trio.ClosedResourceError,
        h11.RemoteProtocolError,
    ):
        return
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def servers() -> AsyncIterator[Servers]:
    cert = development_certificate()
    state = Servers()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.certificate_path, cert.private_key_path)

    async def h3_handler(request: Request) -> None:
        state.seen.append(("h3", request.authority, request.path))
        headers = [(b"alt-svc", state.h3_alt_svc.encode())] if state.h3_alt_svc else []
        await request.respond(200, headers, f"h3 {request.path}".encode())

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(
                trio.serve_ssl_over_tcp,
                functools.partial(_serve_h11, servers=state),
                0,
                context,
                host="127.0.0.1",
            )
        )
        state.tcp_port = listeners[0].transport_listener.socket.getsockname()[1]
        server = await nursery.start(
            lambda task_status: h3.serve_http3(
                h3_handler,
                0,
                host="127.0.0.1",
                settings=QuicSettings(
                    certificate=str(cert.certificate_path),
                    private_key=str(cert.private_key_path),
                ),
                task_status=task_status,
            )
        )
        state.h3_port = server.port
        yield state
        nursery.cancel_scope.cancel()


def alt_svc_client(**options: Any) -> httpx.AsyncClient:
    options.setdefault("verify", ca_path())
    return httpx.AsyncClient(transport=AltSvcTransport(**options), timeout=10)


async def test_moves_to_http3_after_alt_svc() -> None:
    with trio.fail_after(15):
        async with servers() as s, alt_svc_client() as c:
            first = await c.get(s.url("/one"))
            second = await c.get(s.url("/two"))
            third = await c.get(s.url("/three"))
    assert (first.http_version, first.text) == ("HTTP/1.1", "tcp /one")
    assert (second.http_version, second.text) == ("HTTP/3", "h3 /two")
    assert third.http_version == "HTTP/3"
    authority = f"localhost:{s.tcp_port}"
    # The HTTP/3 requests name the origin, not the alternative's port.
    assert s.seen == [
        ("tcp", authority, "/one"),
        ("h3", authority, "/two"),
        ("h3", authority, "/three"),
    ]


async def test_without_alt_svc_stays_on_tcp() -> None:
    with trio.fail_after(15):
        async with servers() as s, alt_svc_client() as c:
            s.alt_svc = ""
            for _ in range(3):
                assert (await c.get(s.url())).http_version == "HTTP/1.1"
    assert [p for p, _, _ in s.seen] == ["tcp"] * 3


async def test_failed_http3_connection_falls_back_to_tcp_and_forgets() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with trio.fail_after(15):
        async with servers() as s, alt_svc_client() as c:
            s.alt_svc = f'h3=":{dead_port}"'
            transport: AltSvcTransport = c._transport  # type: ignore[assignment]
            assert (await c.get(s.url("/1"))).http_version == "HTTP/1.1"
            assert transport.alternative("localhost", s.tcp_port) == dead_port
            s.alt_svc = ""
            # HTTP/3 refused (ICMP): this request goes by TCP...
            response = await c.get(s.url("/2"))
            assert response.http_version == "HTTP/1.1"
            assert response.text == "tcp /2"
            # ... and the alternative is forgotten.
            assert transport.alternative("localhost", s.tcp_port) is None
    assert [p for p, _, _ in s.seen] == ["tcp", "tcp"]


async def test_clear_over_http3_goes_back_to_tcp() -> None:
    with trio.fail_after(15):
        async with servers() as s, alt_svc_client() as c:
            await c.get(s.url())
            s.h3_alt_svc = "clear"
            assert (await c.get(s.url())).http_version == "HTTP/3"
            s.alt_svc = ""
            assert (await c.get(s.url())).http_version == "HTTP/1.1"


async def test_alternative_expires_after_max_age() -> None:
    with trio.fail_after(15):
        async with servers() as s, alt_svc_client() as c:
            s.alt_svc = 'h3=":{h3}"; ma=1'
            await c.get(s.url())
            s.alt_svc = ""
            assert (await c.get(s.url())).http_version == "HTTP/3"
            await trio.sleep(1.1)
            assert (await c.get(s.url())).http_version == "HTTP/1.1"


async def test_alternative_on_another_host_is_ignored() -> None:
    with trio.fail_after(15):
        async with servers() as s, alt_svc_client() as c:
            s.alt_svc = 'h3="other.example:{h3}"'
            await c.get(s.url())
            assert (await c.get(s.url())).http_version == "HTTP/1.1"


async def test_given_transports_are_used() -> None:
    http3 = HTTP3Transport(verify=ca_path(), keepalive_expiry=1.0)
    with trio.fail_after(15):
        async with servers() as s, alt_svc_client(http3=http3) as c:
            await c.get(s.url())
            assert (await c.get(s.url())).http_version == "HTTP/3"
            assert sum(len(v) for v in http3.connections.values()) == 1


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        AltSvcTransport(tcp=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        AltSvcTransport(http3=object())  # type: ignore[arg-type]


# -- against trioquic.serve_http (TCP door + HTTP/3 on one port) ----------------------


async def test_serve_http_tcp_door_then_http3() -> None:
    import trioquic

    cert = development_certificate()
    seen: list[tuple[str, str]] = []

    async def handler(request: Any) -> None:
        seen.append((request.http_version, request.path))
        await request.respond(
            200, [(b"content-type", b"text/plain")], request.http_version.encode()
        )

    settings = QuicSettings(
        certificate=str(cert.certificate_path), private_key=str(cert.private_key_path)
    )
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    trioquic.serve_http, handler, 0, host="127.0.0.1", settings=settings
                )
            )
            url = f"https://localhost:{server.port}"
            async with alt_svc_client() as c:
                first = await c.get(url + "/1")
                second = await c.get(url + "/2")
            nursery.cancel_scope.cancel()
    assert first.http_version in ("HTTP/1.1", "HTTP/2")
    assert first.headers["alt-svc"] == f'h3=":{server.port}"; ma=86400'
    assert second.http_version == "HTTP/3"
    assert second.text == "3"
    assert [path for _, path in seen] == ["/1", "/2"]
    assert seen[1][0] == "3"
