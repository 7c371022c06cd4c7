"""The client side of CONNECT-UDP (RFC 9298): :func:`open_masque_client`
(one proxy connection, many tunnels), :func:`open_udp_tunnel` (one tunnel,
its own connection) and :class:`UdpTunnel`."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from .._errors import ConnectionClosed, DatagramError
from .._settings import QuicSettings
from .._varint import decode_varint
from ..h3 import (
    CapsuleError,
    CapsuleReader,
    CapsuleType,
    H3Error,
    Http3Client,
    Http3Settings,
    RequestStream,
    Response,
    encode_capsule,
    open_http3_client,
)
from ._policy import MasqueLimits
from ._statistics import (
    DROP_MALFORMED,
    DROP_QUEUE_FULL,
    DROP_UNKNOWN_CONTEXT,
    TunnelState,
    TunnelStatistics,
)
from ._template import DEFAULT_PATH_TEMPLATE, UriTemplate

_CONTEXT_ZERO = b"\x00"
#: HTTP datagrams taken per wake-up at most, before others get a turn.
_BATCH = 64
_GONE = (ConnectionClosed, H3Error, trio.BrokenResourceError, trio.ClosedResourceError)


class MasqueTunnelRefused(Exception):
    """The proxy answered the tunnel request with a non-2xx status.

    ``status`` is that status, ``proxy_status`` the raw ``proxy-status``
    field (or None), ``error`` its ``error`` parameter (e.g.
    ``"destination_ip_prohibited"``)."""

    def __init__(self, status: int, proxy_status: str | None, target: str) -> None:
        self.status = status
        self.proxy_status = proxy_status
        self.error = _proxy_status_error(proxy_status)
        self.target = target
        detail = f" ({proxy_status})" if proxy_status else ""
        super().__init__(f"the proxy refused the tunnel to {target}: {status}{detail}")


def _proxy_status_error(value: str | None) -> str | None:
    if not value:
        return None
    for parameter in value.split(";")[1:]:
        name, _, text = parameter.strip().partition("=")
        if name == "error":
            return text.strip().strip('"')
    return None


@attrs.frozen
class ProxyLocation:
    """Where a proxy is: host, port and the URI template of its tunnels."""

    host: str
    port: int
    template: UriTemplate

    @classmethod
    def parse(cls, proxy_url: str) -> ProxyLocation:
        """From ``https://host:port`` (the default template) or a whole
        template (``https://host:port/masque?h={target_host}&p={target_port}``)."""
        if not isinstance(proxy_url, str):
            raise TypeError(f"proxy_url is a str, got {type(proxy_url).__name__}")
        split = urllib.parse.urlsplit(proxy_url.replace("{", "%7B").replace("}", "%7D"))
        if split.scheme != "https" or not split.hostname:
            raise ValueError(
                f"proxy URL {proxy_url!r} must be https://HOST[:PORT][/TEMPLATE]"
            )
        try:
            port = split.port or 443
        except ValueError:
            raise ValueError(f"proxy URL {proxy_url!r} has a bad port") from None
        path = proxy_url[len("https://") + len(split.netloc) :]
        if "{" not in path:
            if path not in ("", "/"):
                raise ValueError(
                    f"proxy URL {proxy_url!r} has a path without {{target_host}} and "
                    f"{{target_port}}: give a template, e.g. "
                    f"https://{split.netloc}{DEFAULT_PATH_TEMPLATE}"
                )
            path = DEFAULT_PATH_TEMPLATE
        return cls(split.hostname, port, UriTemplate(path))


class UdpTunnel:
    """One UDP tunnel through a proxy: :meth:`send` a payload to the target,
    :meth:`receive` one from it. Payloads go as HTTP/3 datagrams when both
    sides enabled them (unreliable, like UDP), as DATAGRAM capsules on the
    stream otherwise. ``async for payload in tunnel`` receives until the
    proxy ends the tunnel."""

    def __init__(
        self,
        stream: RequestStream,
        response: Response,
        state: TunnelState,
        *,
        use_datagrams: bool,
        limits: MasqueLimits,
    ) -> None:
        self._stream = stream
        self._response = response
        self._state = state
        self._datagrams = use_datagrams
        self._limits = limits
        self._send_lock = trio.Lock()
        self._queue_send, self._queue = trio.open_memory_channel[bytes](
            limits.datagram_queue_size
        )
        self._closed = False
        self._failure: BaseException | None = None
        #: The response's status (2xx).
        self.status = response.status
        self.headers = response.headers

    @property
    def transport(self) -> str:
        """``"datagram"`` or ``"capsule"``: how payloads are sent."""
        return self._state.transport

    def statistics(self) -> TunnelStatistics:
        return self._state.snapshot()

    async def send(self, payload: bytes) -> None:
        """Send one UDP payload to the target. Raises :exc:`ValueError` if it
        is larger than ``max_payload_size``, :exc:`trio.ClosedResourceError`
        after :meth:`aclose`, :exc:`trio.BrokenResourceError` once the
        tunnel is over."""
        payload = bytes(payload)
        if len(payload) > self._limits.max_payload_size:
            raise ValueError(
                f"UDP payload of {len(payload)} bytes is larger than "
                f"max_payload_size ({self._limits.max_payload_size})"
            )
        if self._closed:
            raise trio.ClosedResourceError("the tunnel was closed")
        data = _CONTEXT_ZERO + payload
        try:
            if self._datagrams:
                await trio.lowlevel.checkpoint_if_cancelled()
                try:
                    # Queued first, then the schedule point: datagrams sent
                    # back to back share the connection's next step (and
                    # its packets).
                    self._stream.send_datagram_nowait(data)
                except DatagramError:
                    await self._send_capsule(data)
                else:
                    await trio.lowlevel.cancel_shielded_checkpoint()
            else:
                await self._send_capsule(data)
        except (ConnectionClosed, H3Error) as exc:
            raise trio.BrokenResourceError(f"the tunnel is over: {exc}") from exc
        self._state.last_activity = trio.current_time()
        self._state.to_target_datagrams += 1
        self._state.to_target_bytes += len(payload)

    async def _send_capsule(self, data: bytes) -> None:
        async with self._send_lock:
            await self._stream.send(encode_capsule(CapsuleType.DATAGRAM, data))

    async def receive(self) -> bytes:
        """The next UDP payload from the target. Raises
        :exc:`trio.EndOfChannel` when the proxy ended the tunnel,
        :exc:`trio.BrokenResourceError` when it reset it or the connection
        ended. Cancel-safe."""
        if self._closed:
            raise trio.ClosedResourceError("the tunnel was closed")
        try:
            return await self._queue.receive()
        except trio.EndOfChannel:
            if self._failure is not None:
                raise trio.BrokenResourceError(
                    f"the tunnel failed: {self._failure}"
                ) from self._failure
            raise

    def __aiter__(self) -> UdpTunnel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """End the tunnel: the stream is finished (the proxy closes its
        socket). Idempotent."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._state.end("closed")
        try:
            async with self._send_lock:
                await self._stream.finish()
        except (*_GONE, trio.BusyResourceError):
            pass

    close = aclose

    # -- background --------------------------------------------------------------

    def _take(self, data: bytes) -> None:
        if data[:1] == _CONTEXT_ZERO:  # the usual case: one byte, context 0
            payload = data[1:]
        else:
            parsed = decode_varint(data)
            if parsed is None:
                self._state.drops[DROP_MALFORMED] += 1
                return
            context, offset = parsed
            if context != 0:
                self._state.drops[DROP_UNKNOWN_CONTEXT] += 1
                return
            payload = data[offset:]
        try:
            self._queue_send.send_nowait(payload)
        except trio.WouldBlock:
            self._state.drops[DROP_QUEUE_FULL + "_from_target"] += 1
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        self._state.last_activity = trio.current_time()
        self._state.from_target_datagrams += 1
        self._state.from_target_bytes += len(payload)

    async def _pump_datagrams(self) -> None:
        try:
            stream, take = self._stream, self._take
            while True:
                take(await stream.receive_datagram())
                # Then what else the same step brought, without waiting.
                for _ in range(_BATCH - 1):
                    try:
                        data = stream.receive_datagram_nowait()
                    except trio.WouldBlock:
                        break
                    take(data)
        except _GONE:
            return

    async def _pump_capsules(self) -> None:
        reader = CapsuleReader(
            self._response.receive_chunk,
            types={CapsuleType.DATAGRAM},
            max_capsule_size=self._limits.max_capsule_size,
        )
        try:
            async for capsule in reader:
                self._take(capsule.value)
            self._state.end("proxy_closed")
        except CapsuleError as exc:
            self._failure = exc
            self._state.end("protocol_error")
            self._stream.cancel(exc.error_code)
        except _GONE as exc:
            self._failure = exc
            self._state.end("proxy_reset")
        finally:
            self._queue_send.close()


class MasqueClient:
    """One connection to a proxy, for many tunnels
    (:func:`open_masque_client` yields it)."""

    def __init__(
        self,
        http3: Http3Client,
        location: ProxyLocation,
        limits: MasqueLimits,
        use_datagrams: bool,
    ) -> None:
        self.http3 = http3
        self.location = location
        self.limits = limits
        self._use_datagrams = use_datagrams
        self._tunnels: set[TunnelState] = set()

    def tunnels(self) -> list[TunnelStatistics]:
        """The open tunnels of this connection."""
        return [state.snapshot() for state in self._tunnels]

    @property
    def _authority(self) -> str:
        host = self.location.host
        shown = f"[{host}]" if ":" in host else host
        return shown if self.location.port == 443 else f"{shown}:{self.location.port}"

    @asynccontextmanager
    async def open_udp_tunnel(self, host: str, port: int) -> AsyncIterator[UdpTunnel]:
        """A tunnel to ``host``:``port`` (UDP) for the ``async with``.
        Raises :exc:`MasqueTunnelRefused` if the proxy refuses it."""
        path = self.location.template.expand_path(host, port)
        headers = [(b"capsule-protocol", b"?1")]
        async with self.http3.open_request(
            "CONNECT",
            path,
            headers=headers,
            authority=self._authority,
            protocol="connect-udp",
        ) as stream:
            response = await stream.response()
            if not 200 <= response.status < 300:
                fields = [v for k, v in response.headers if k == b"proxy-status"]
                raise MasqueTunnelRefused(
                    response.status,
                    fields[0].decode("latin-1") if fields else None,
                    f"{host}:{port}",
                )
            datagrams = self._use_datagrams and self.http3.peer_datagrams_enabled
            state = TunnelState(
                host, port, None, "datagram" if datagrams else "capsule"
            )
            tunnel = UdpTunnel(
                stream, response, state, use_datagrams=datagrams, limits=self.limits
            )
            self._tunnels.add(state)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(tunnel._pump_capsules)
                    if self._use_datagrams:
                        nursery.start_soon(tunnel._pump_datagrams)
                    try:
                        yield tunnel
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                state.end("closed")
                self._tunnels.discard(state)
                tunnel._closed = True


def client_settings(
    *,
    ca_certs: str | None = None,
    insecure: bool = False,
    server_name: str | None = None,
    settings: QuicSettings | None = None,
    use_datagrams: bool = True,
) -> QuicSettings:
    """QUIC settings for a proxy client."""
    if settings is None:
        settings = QuicSettings()
    if not isinstance(settings, QuicSettings):
        raise TypeError("settings must be a trioquic.QuicSettings")
    changes: dict[str, Any] = {}
    if ca_certs is not None:
        changes["ca_certs"] = ca_certs
    if insecure:
        changes["verify_peer"] = False
    if server_name is not None:
        changes["server_name"] = server_name
    if use_datagrams and settings.max_datagram_frame_size is None:
        changes["max_datagram_frame_size"] = 65536
    return attrs.evolve(settings, **changes) if changes else settings


@asynccontextmanager
async def open_masque_client(
    proxy_url: str,
    *,
    ca_certs: str | None = None,
    insecure: bool = False,
    server_name: str | None = None,
    settings: QuicSettings | None = None,
    limits: MasqueLimits | None = None,
    use_datagrams: bool = True,
) -> AsyncIterator[MasqueClient]:
    """Connect to a UDP proxy; tunnels open over this one connection::

        async with open_masque_client("https://proxy:4433", ca_certs="cert.pem") as c:
            async with c.open_udp_tunnel("192.0.2.1", 53) as tunnel:
                await tunnel.send(query)
                answer = await tunnel.receive()

    ``proxy_url`` is ``https://HOST[:PORT]`` (the default template,
    ``/.well-known/masque/udp/{target_host}/{target_port}/``) or the
    proxy's whole URI template. ``use_datagrams=False`` sends everything as
    DATAGRAM capsules on the streams (no HTTP/3 datagrams).
    ``limits.datagram_queue_size`` bounds each tunnel's receive queue,
    ``limits.max_payload_size`` what :meth:`UdpTunnel.send` accepts."""
    location = ProxyLocation.parse(proxy_url)
    if limits is None:
        limits = MasqueLimits()
    resolved = client_settings(
        ca_certs=ca_certs,
        insecure=insecure,
        server_name=server_name,
        settings=settings,
        use_datagrams=use_datagrams,
    )
    http3 = Http3Settings(enable_datagrams=use_datagrams)
    async with open_http3_client(
        location.host, location.port, settings=resolved, http3_settings=http3
    ) as client:
        yield MasqueClient(client, location, limits, use_datagrams)


@asynccontextmanager
async def open_udp_tunnel(
    proxy_url: str, host: str, port: int, **kwargs: Any
) -> AsyncIterator[UdpTunnel]:
    """One tunnel over its own proxy connection (the keyword arguments are
    :func:`open_masque_client`'s)::

        async with open_udp_tunnel("https://proxy:4433", "192.0.2.1", 53,
                                   ca_certs="cert.pem") as tunnel:
            await tunnel.send(query)
            answer = await tunnel.receive()
    """
    async with (
        open_masque_client(proxy_url, **kwargs) as client,
        client.open_udp_tunnel(host, port) as tunnel,
    ):
        yield tunnel
