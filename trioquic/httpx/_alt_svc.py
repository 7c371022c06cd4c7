"""Alt-Svc (RFC 7838): parsing the header, and :class:`AltSvcTransport`,
which starts on TCP and moves an origin to HTTP/3 once that origin has
advertised it, as browsers do."""

from __future__ import annotations

import os
import ssl
from types import TracebackType
from typing import Any, TypeVar

import attrs
import httpx
import trio

from ._transport import HTTP3Transport

T = TypeVar("T", bound="AltSvcTransport")

#: RFC 7838 section 3.1: ``ma`` defaults to 24 hours.
DEFAULT_MAX_AGE = 86400.0
#: Distinct Alt-Svc values an AltSvcTransport keeps parsed.
_PARSED_CACHE_SIZE = 32
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


@attrs.frozen
class AltService:
    """One alternative service of an ``Alt-Svc`` header field."""

    #: The ALPN protocol ID, percent-decoded (``"h3"``).
    protocol: str
    #: The alternative's host, or None for the origin's own host.
    host: str | None
    port: int
    #: Seconds the alternative stays fresh (``ma``).
    max_age: float = DEFAULT_MAX_AGE
    #: ``persist=1``: kept across network changes (informational here).
    persist: bool = False


def _percent_decode(text: str) -> str:
    out = bytearray()
    i = 0
    raw = text.encode("latin-1")
    while i < len(raw):
        if raw[i] == 0x25 and i + 2 < len(raw):
            try:
                out.append(int(raw[i + 1 : i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return out.decode("latin-1")


class _Scanner:
    """A cursor over a header value: tokens, quoted strings, separators."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise ValueError(f"expected {char!r} at {self.pos} in {self.text!r}")
        self.pos += 1

    def token(self) -> str:
        self.skip_space()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TOKEN_CHARS:
            self.pos += 1
        if self.pos == start:
            raise ValueError(f"expected a token at {start} in {self.text!r}")
        return self.text[start : self.pos]

    def quoted(self) -> str:
        self.expect('"')
        out = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\" and self.pos < len(self.text):
                out.append(self.text[self.pos])
                self.pos += 1
            elif char == '"':
                return "".join(out)
            else:
                out.append(char)
        raise ValueError(f"unterminated quoted string in {self.text!r}")

    def value(self) -> str:
        return self.quoted() if self.peek() == '"' else self.token()

    def skip_to_comma(self) -> None:
        """Skip a malformed alternative (quoted strings may hold commas)."""
        while self.pos < len(self.text) and self.text[self.pos] != ",":
            if self.text[self.pos] == '"':
                try:
                    self.quoted()
                except ValueError:
                    self.pos = len(self.text)
            else:
                self.pos += 1


def _authority(text: str) -> tuple[str | None, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad alt-authority {text!r}: want [host]:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host or None), int(port)


def parse_alt_svc(value: str) -> list[AltService] | None:
    """Parse an ``Alt-Svc`` field value (RFC 7838 section 3): the
    alternatives in the order given (malformed ones are skipped), or None
    for ``clear`` (forget every alternative of the origin)::

        >>> [(s.protocol, s.port, s.max_age) for s in parse_alt_svc(
        ...     'h3=":443"; ma=3600, h3-29=":8443"')]
        [('h3', 443, 3600.0), ('h3-29', 8443, 86400.0)]
    """
    if not isinstance(value, str):
        raise TypeError(f"an Alt-Svc value is a str, got {type(value).__name__}")
    if value.strip() == "clear":
        return None
    scanner = _Scanner(value)
    services: list[AltService] = []
    while scanner.peek():
        if scanner.peek() == ",":
            scanner.pos += 1
            continue
        start = scanner.pos
        try:
            protocol = _percent_decode(scanner.token())
            scanner.expect("=")
            host, port = _authority(scanner.quoted())
            max_age = DEFAULT_MAX_AGE
            persist = False
            while scanner.peek() == ";":
                scanner.pos += 1
                name = scanner.token().lower()
                scanner.expect("=")
                param = scanner.value()
                if name == "ma":
                    if not param.isdigit():
                        raise ValueError(f"bad ma={param!r}")
                    max_age = float(int(param))
                elif name == "persist":
                    persist = param == "1"
            if scanner.peek() not in ("", ","):
                raise ValueError(f"unexpected {scanner.peek()!r}")
        except ValueError:
            scanner.pos = start
            scanner.skip_to_comma()
            continue
        services.append(AltService(protocol, host, port, max_age, persist))
    return services


@attrs.define
class _Alternative:
    port: int
    expires: float


def _tcp_verify(verify: bool | str | os.PathLike[str] | ssl.SSLContext) -> Any:
    if isinstance(verify, str | os.PathLike):
        return ssl.create_default_context(cafile=os.fspath(verify))
    return verify


class AltSvcTransport(httpx.AsyncBaseTransport):
    """Start on TCP (httpx's own transport), move to HTTP/3 once the origin
    has said it serves it: an ``Alt-Svc: h3=":PORT"`` header on a response
    makes later requests of that origin go over HTTP/3 (to ``PORT`` on the
    same host), until the alternative's ``ma`` expires, a response says
    ``Alt-Svc: clear``, or an HTTP/3 connection to it fails (then that
    request, and the origin's next ones, go over TCP again)::

        async with httpx.AsyncClient(transport=AltSvcTransport()) as client:
            await client.get("https://example.com/")  # TCP, learns Alt-Svc
            response = await client.get("https://example.com/")  # HTTP/3

    Alternatives on another host are ignored (a browser accepts them when
    the certificate covers the origin; trioquic keeps to the same host).

    :param verify: as for :class:`HTTP3Transport`, for both transports.
    :param tcp: the TCP transport (default ``httpx.AsyncHTTPTransport``,
        HTTP/1.1 and HTTP/2 if ``h2`` is installed).
    :param http3: the HTTP/3 transport (default ``HTTP3Transport(verify)``).
    """

    def __init__(
        self,
        *,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext = True,
        tcp: httpx.AsyncBaseTransport | None = None,
        http3: HTTP3Transport | None = None,
    ) -> None:
        if tcp is not None and not isinstance(tcp, httpx.AsyncBaseTransport):
            raise TypeError(
                f"tcp must be an httpx.AsyncBaseTransport, got {type(tcp).__name__}"
            )
        if http3 is not None and not isinstance(http3, HTTP3Transport):
            raise TypeError(
                f"http3 must be an HTTP3Transport, got {type(http3).__name__}"
            )
        self.http3 = http3 if http3 is not None else HTTP3Transport(verify=verify)
        self.tcp = (
            tcp
            if tcp is not None
            else httpx.AsyncHTTPTransport(verify=_tcp_verify(verify), http2=_has_h2())
        )
        self._alternatives: dict[tuple[str, int], _Alternative] = {}
        #: Alt-Svc values seen, parsed (None: ``clear``).
        self._parsed: dict[str, list[AltService] | None] = {}

    def alternative(self, host: str, port: int = 443) -> int | None:
        """The HTTP/3 port in force for an https origin, if any."""
        alt = self._alternatives.get((host, port))
        if alt is None:
            return None
        if alt.expires <= trio.current_time():
            del self._alternatives[(host, port)]
            return None
        return alt.port

    async def __aenter__(self: T) -> T:
        await self.tcp.__aenter__()
        try:
            await self.http3.__aenter__()
        except BaseException:
            await self.tcp.__aexit__()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        try:
            await self.http3.__aexit__(exc_type, exc_value, traceback)
        finally:
            await self.tcp.__aexit__(exc_type, exc_value, traceback)

    async def aclose(self) -> None:
        try:
            await self.http3.aclose()
        finally:
            await self.tcp.aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.host, url.port or 443)
        port = self.alternative(*origin) if url.scheme == "https" else None
        if port is not None:
            h3_request = request  # the usual case: HTTP/3 on the same port
            if port != origin[1]:
                h3_request = httpx.Request(
                    request.method,
                    url.copy_with(port=port),
                    headers=request.headers,  # Host stays the origin's
                    stream=request.stream,
                    extensions=request.extensions,
                )
            try:
                response = await self.http3.handle_async_request(h3_request)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                # Nothing was sent: forget the alternative, go by TCP.
                self._alternatives.pop(origin, None)
            else:
                self._learn(origin, response)
                return response
        response = await self.tcp.handle_async_request(request)
        if url.scheme == "https":
            self._learn(origin, response)
        return response

    def _learn(self, origin: tuple[str, int], response: httpx.Response) -> None:
        values = response.headers.get_list("alt-svc")
        if not values:
            return
        now = trio.current_time()
        parsed = self._parsed
        for value in values:
            # A server repeats the same value on every response: parsed once.
            if value in parsed:
                services = parsed[value]
            else:
                services = parse_alt_svc(value)
                if len(parsed) >= _PARSED_CACHE_SIZE:
                    parsed.clear()
                parsed[value] = services
            if services is None:
                self._alternatives.pop(origin, None)
                continue
            for service in services:
                if service.protocol != "h3":
                    continue
                if service.host is not None and service.host != origin[0]:
                    continue
                self._alternatives[origin] = _Alternative(
                    service.port, now + service.max_age
                )
                break


def _has_h2() -> bool:
    try:
        import h2  # noqa: F401
    except ImportError:
        return False
    return True
