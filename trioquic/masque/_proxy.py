"""The UDP proxy side of CONNECT-UDP (RFC 9298): :class:`MasqueProxy`, a
request handler to mount in any :mod:`trioquic.h3` server, and
:func:`serve_masque_proxy`, a whole proxy server."""

from __future__ import annotations

import collections
import errno
import logging
import socket as _stdlib_socket
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import attrs
import trio

from .._endpoint import QuicServer
from .._errors import ConnectionClosed, DatagramError
from .._settings import QuicSettings
from .._varint import decode_varint
from ..h3 import (
    CapsuleError,
    CapsuleReader,
    CapsuleType,
    H3Error,
    Http3Settings,
    Request,
    encode_capsule,
    serve_http3,
)
from ..h3._server import ResponseWriter
from ._policy import MasqueAccessPolicy, MasqueLimits, MasqueRefusal
from ._statistics import (
    DROP_MALFORMED,
    DROP_QUEUE_FULL,
    DROP_TARGET_UNREACHABLE,
    DROP_TOO_LARGE,
    DROP_UNKNOWN_CONTEXT,
    MasqueProxyStatistics,
    TunnelState,
    TunnelStatistics,
)
from ._template import DEFAULT_PATH_TEMPLATE, UriTemplate, parse_port

logger = logging.getLogger("trioquic.masque")

#: The only context ID RFC 9298 defines: a UDP payload.
UDP_PAYLOAD_CONTEXT = 0
_CONTEXT_ZERO = b"\x00"
#: Datagrams handled per wake-up at most, each way, before others get a turn.
_BATCH = 64
_UNREACHABLE = frozenset((errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH))
_DISCONNECTED = (
    ConnectionClosed,
    H3Error,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)


def _header(request: Request, name: bytes) -> list[bytes]:
    return [value for key, value in request.headers if key == name]


class MasqueProxy:
    """A CONNECT-UDP proxy as an HTTP/3 request handler.

    ``await proxy.handle(request)`` serves the request and returns ``True``
    if it is a ``connect-udp`` extended CONNECT whose path matches the
    template; otherwise it returns ``False`` at once without answering, so
    it mounts beside other routes::

        async def handler(request):
            if await proxy.handle(request):
                return
            await request.respond(404)

    The server must enable extended CONNECT and HTTP datagrams
    (``Http3Settings(enable_connect_protocol=True, enable_datagrams=True)``
    and ``QuicSettings(max_datagram_frame_size=65536)``).
    :func:`serve_masque_proxy` sets them. Calling the object
    (``await proxy(request)``) is ``handle`` with ``404`` for the rest.
    """

    def __init__(
        self,
        policy: MasqueAccessPolicy | None = None,
        limits: MasqueLimits | None = None,
        *,
        template: str | UriTemplate = DEFAULT_PATH_TEMPLATE,
        proxy_name: str = "trioquic",
    ) -> None:
        if policy is None:
            policy = MasqueAccessPolicy()
        if not isinstance(policy, MasqueAccessPolicy):
            raise TypeError("policy must be a trioquic.masque.MasqueAccessPolicy")
        if limits is None:
            limits = MasqueLimits()
        if not isinstance(limits, MasqueLimits):
            raise TypeError("limits must be a trioquic.masque.MasqueLimits")
        self.policy = policy
        self.limits = limits
        self.template = (
            template if isinstance(template, UriTemplate) else UriTemplate(template)
        )
        self.proxy_name = proxy_name
        self._tunnels: set[TunnelState] = set()
        self._per_connection: dict[Hashable, int] = {}
        self._reserved = 0
        self._stopping = False
        self._totals: collections.Counter[str] = collections.Counter()
        self._drops: collections.Counter[str] = collections.Counter()
        self._refused: collections.Counter[int] = collections.Counter()
        self._tunnels_total = 0

    # -- statistics -----------------------------------------------------------------

    def tunnels(self) -> list[TunnelStatistics]:
        """The open tunnels."""
        return [state.snapshot() for state in self._tunnels]

    def statistics(self) -> MasqueProxyStatistics:
        """Totals since the proxy was made, and the open tunnels."""
        totals = collections.Counter(self._totals)
        drops = collections.Counter(self._drops)
        for state in self._tunnels:
            totals["to_target_datagrams"] += state.to_target_datagrams
            totals["to_target_bytes"] += state.to_target_bytes
            totals["from_target_datagrams"] += state.from_target_datagrams
            totals["from_target_bytes"] += state.from_target_bytes
            drops.update(state.drops)
        return MasqueProxyStatistics(
            tunnels_open=len(self._tunnels),
            tunnels_total=self._tunnels_total,
            refused=dict(self._refused),
            to_target_datagrams=totals["to_target_datagrams"],
            to_target_bytes=totals["to_target_bytes"],
            from_target_datagrams=totals["from_target_datagrams"],
            from_target_bytes=totals["from_target_bytes"],
            drops=dict(drops),
            tunnels=tuple(self.tunnels()),
        )

    def close_tunnels(self) -> None:
        """End every tunnel (each stream is finished: the client sees the
        end of its tunnel) and refuse new ones with ``503``; for a graceful
        shutdown (:func:`serve_masque_proxy` calls it when cancelled)."""
        self._stopping = True
        for state in list(self._tunnels):
            state.end("shutdown")
            state.cancel_scope.cancel()

    # -- requests -------------------------------------------------------------------

    async def __call__(self, request: Request) -> None:
        if await self.handle(request):
            return
        if request.method == "CONNECT" and request.protocol not in (
            None,
            "connect-udp",
        ):
            await self._refuse(request, MasqueRefusal(501, None, "unknown :protocol"))
        else:
            await self._refuse(request, MasqueRefusal(404, None, "not a proxy path"))

    async def _refuse(self, request: Request, refusal: MasqueRefusal) -> None:
        self._refused[refusal.status] += 1
        logger.debug(
            "trioquic.masque: refused %s (%d %s %s)",
            request.path,
            refusal.status,
            refusal.error,
            refusal.detail,
        )
        await request.respond(refusal.status, refusal.headers(self.proxy_name))

    def _request_error(self, request: Request) -> MasqueRefusal | tuple[str, int]:
        if request.scheme != "https":
            return MasqueRefusal(400, "http_request_error", ":scheme must be https")
        matched = self.template.match(request.path)
        assert matched is not None
        capsule = _header(request, b"capsule-protocol")
        if capsule != [b"?1"]:
            # RFC 9298 section 3: a UDP proxying request carries one
            # Capsule-Protocol field with the value ?1; one that does not is
            # malformed.
            return MasqueRefusal(
                400, "http_request_error", "capsule-protocol: ?1 is required"
            )
        host, port_text = matched
        port = parse_port(port_text)
        if port is None:
            return MasqueRefusal(
                400, "http_request_error", f"target port {port_text!r} is not 1-65535"
            )
        if not host:
            return MasqueRefusal(400, "http_request_error", "empty target host")
        return host, port

    async def handle(self, request: Request) -> bool:
        """Serve ``request`` if it is a CONNECT-UDP request for this
        template; ``False`` (nothing answered) otherwise."""
        if (
            request.method != "CONNECT"
            or request.protocol != "connect-udp"
            or not isinstance(request, Request)  # HTTP/3 only (datagrams)
        ):
            return False
        try:
            matched = self.template.match(request.path)
        except UnicodeDecodeError:
            matched = None
        if matched is None:
            return False
        checked = self._request_error(request)
        if isinstance(checked, MasqueRefusal):
            await self._refuse(request, checked)
            return True
        host, port = checked
        connection = request.connection
        if self._stopping:
            await self._refuse(request, MasqueRefusal(503, None, "shutting down"))
            return True
        if len(self._tunnels) + self._reserved >= self.limits.max_tunnels:
            await self._refuse(
                request,
                MasqueRefusal(503, "connection_limit_reached", "tunnels per server"),
            )
            return True
        if (
            self._per_connection.get(connection, 0)
            >= self.limits.max_tunnels_per_connection
        ):
            await self._refuse(
                request,
                MasqueRefusal(
                    429, "connection_limit_reached", "tunnels per connection"
                ),
            )
            return True
        self._reserved += 1
        self._per_connection[connection] = self._per_connection.get(connection, 0) + 1
        try:
            await self._open(request, host, port)
        finally:
            left = self._per_connection[connection] - 1
            if left:
                self._per_connection[connection] = left
            else:
                del self._per_connection[connection]
        return True

    async def _open(self, request: Request, host: str, port: int) -> None:
        reserved = True
        try:
            target, refusal = await self.policy.resolve(host, port)
            if refusal is not None:
                await self._refuse(request, refusal)
                return
            assert target is not None
            family, sockaddr = target
            sock = _stdlib_socket.socket(family, _stdlib_socket.SOCK_DGRAM)
            with sock:
                sock.setblocking(False)
                try:
                    # A UDP connect only sets the peer: it never blocks.
                    await trio.lowlevel.checkpoint()
                    sock.connect(sockaddr)
                except OSError as exc:
                    await self._refuse(
                        request,
                        MasqueRefusal(502, "destination_ip_unroutable", str(exc)),
                    )
                    return
                transport = "datagram" if request.peer_datagrams_enabled else "capsule"
                state = TunnelState(host, port, sockaddr, transport)
                self._reserved -= 1
                reserved = False
                self._tunnels.add(state)
                self._tunnels_total += 1
                try:
                    await self._run(request, sock, state)
                finally:
                    state.end("closed")
                    self._tunnels.discard(state)
                    self._totals["to_target_datagrams"] += state.to_target_datagrams
                    self._totals["to_target_bytes"] += state.to_target_bytes
                    self._totals["from_target_datagrams"] += state.from_target_datagrams
                    self._totals["from_target_bytes"] += state.from_target_bytes
                    self._drops.update(state.drops)
        finally:
            if reserved:
                self._reserved -= 1

    async def _run(
        self, request: Request, sock: _stdlib_socket.socket, state: TunnelState
    ) -> None:
        # Datagrams go straight from the HTTP/3 layer to the target's socket
        # and from the socket to the HTTP/3 layer, in batches: no queue and
        # no task switch per datagram. Only capsules (the stream, which has
        # backpressure) pass through a bounded queue to a task of their own.
        capsule_send, capsule_receive = trio.open_memory_channel[bytes](
            self.limits.datagram_queue_size
        )
        if self._stopping:
            state.cancel_scope.cancel()
        async with request.stream_response(
            200, [(b"capsule-protocol", b"?1")]
        ) as writer:
            with state.cancel_scope:
                async with trio.open_nursery() as nursery:
                    done = nursery.cancel_scope
                    # HTTP datagrams may come even if ours can't go (the
                    # client may not have enabled them); with none, it parks.
                    nursery.start_soon(self._datagrams_in, request, sock, state)
                    nursery.start_soon(self._capsules_in, request, sock, state, done)
                    nursery.start_soon(
                        self._from_target, request, sock, state, capsule_send
                    )
                    nursery.start_soon(
                        self._capsules_out, writer, state, capsule_receive
                    )
                    if self.limits.idle_timeout is not None:
                        nursery.start_soon(
                            self._idle, state, done, self.limits.idle_timeout
                        )
            if state.ended == "protocol_error":
                return  # the stream was reset
        # Leaving the writer's block finished the stream: the tunnel is over.

    # -- the tasks of a tunnel ---------------------------------------------------------

    def _to_target(
        self, sock: _stdlib_socket.socket, state: TunnelState, data: bytes
    ) -> None:
        """One HTTP datagram's payload (context ID + UDP payload) from the
        client: sent to the target at once (the socket is non-blocking), or
        dropped and counted."""
        if data[:1] == _CONTEXT_ZERO:  # the usual case: one byte, context 0
            payload = data[1:]
        else:
            parsed = decode_varint(data)
            if parsed is None:
                state.drops[DROP_MALFORMED] += 1
                return
            context, offset = parsed
            if context != UDP_PAYLOAD_CONTEXT:
                state.drops[DROP_UNKNOWN_CONTEXT] += 1
                return
            payload = data[offset:]
        if len(payload) > self.limits.max_payload_size:
            state.drops[DROP_TOO_LARGE] += 1
            return
        try:
            sock.send(payload)
        except BlockingIOError:
            # The socket's send buffer is full: UDP drops.
            state.drops[DROP_QUEUE_FULL + "_to_target"] += 1
            return
        except OSError as exc:
            if exc.errno in _UNREACHABLE:
                state.drops[DROP_TARGET_UNREACHABLE] += 1
                return
            raise
        state.to_target_datagrams += 1
        state.to_target_bytes += len(payload)

    async def _datagrams_in(
        self, request: Request, sock: _stdlib_socket.socket, state: TunnelState
    ) -> None:
        to_target = self._to_target
        try:
            while True:
                to_target(sock, state, await request.receive_datagram())
                # Then what else the same step brought, without waiting.
                for _ in range(_BATCH - 1):
                    try:
                        data = request.receive_datagram_nowait()
                    except trio.WouldBlock:
                        break
                    to_target(sock, state, data)
                state.last_activity = trio.current_time()
        except _DISCONNECTED:
            return

    async def _capsules_in(
        self,
        request: Request,
        sock: _stdlib_socket.socket,
        state: TunnelState,
        done: trio.CancelScope,
    ) -> None:
        reader = CapsuleReader(
            request.receive_chunk,
            types={CapsuleType.DATAGRAM},
            max_capsule_size=self.limits.max_capsule_size,
        )
        try:
            async for capsule in reader:
                state.last_activity = trio.current_time()
                self._to_target(sock, state, capsule.value)
        except CapsuleError as exc:
            # RFC 9297 section 3.3: a malformed capsule makes the stream
            # malformed: reset it; the connection carries on.
            logger.debug("trioquic.masque: %s", exc)
            state.end("protocol_error")
            request.reset(exc.error_code)
        except _DISCONNECTED:
            state.end("client_gone")
        else:
            state.end("client_closed")
        done.cancel()

    async def _from_target(
        self,
        request: Request,
        sock: _stdlib_socket.socket,
        state: TunnelState,
        capsules: trio.MemorySendChannel[bytes],
    ) -> None:
        """Drain the target's socket (up to a batch per wake-up) and queue
        each payload as an HTTP datagram: what is queued together leaves in
        one worker step, several datagrams to a QUIC packet."""
        limit = self.limits.max_payload_size
        recv = sock.recv
        try:
            while True:
                await trio.lowlevel.wait_readable(sock)
                datagrams = request.peer_datagrams_enabled
                for _ in range(_BATCH):
                    try:
                        payload = recv(65536)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        # ICMP port unreachable from an earlier send (a
                        # connected socket reports it on the next call): UDP
                        # goes on.
                        if exc.errno in _UNREACHABLE:
                            state.drops[DROP_TARGET_UNREACHABLE] += 1
                            continue
                        raise
                    if len(payload) > limit:
                        state.drops[DROP_TOO_LARGE] += 1
                        continue
                    data = _CONTEXT_ZERO + payload
                    if datagrams:
                        try:
                            request.send_datagram_nowait(data)
                        except DatagramError:
                            pass  # too large for one QUIC packet: a capsule
                        else:
                            state.from_target_datagrams += 1
                            state.from_target_bytes += len(payload)
                            continue
                    try:
                        capsules.send_nowait(data)
                    except trio.WouldBlock:
                        state.drops[DROP_QUEUE_FULL + "_from_target"] += 1
                state.last_activity = trio.current_time()
        except _DISCONNECTED:
            return

    async def _capsules_out(
        self,
        writer: ResponseWriter,
        state: TunnelState,
        queue: trio.MemoryReceiveChannel[bytes],
    ) -> None:
        try:
            async for data in queue:
                await writer.send(encode_capsule(CapsuleType.DATAGRAM, data))
                state.from_target_datagrams += 1
                state.from_target_bytes += len(data) - 1
        except _DISCONNECTED:
            return

    async def _idle(
        self, state: TunnelState, done: trio.CancelScope, idle: float
    ) -> None:
        while True:
            deadline = state.last_activity + idle
            if trio.current_time() >= deadline:
                state.end("idle_timeout")
                done.cancel()
                return
            await trio.sleep_until(deadline)


@attrs.frozen(eq=False)
class MasqueServer:
    """A running proxy, as :func:`serve_masque_proxy` reports it."""

    #: The QUIC server (addresses, connections, QUIC statistics).
    quic: QuicServer
    #: The request handler (policy, limits, tunnels).
    proxy: MasqueProxy

    @property
    def addresses(self) -> list[Any]:
        return self.quic.addresses

    @property
    def port(self) -> int:
        return self.quic.port

    def statistics(self) -> MasqueProxyStatistics:
        return self.proxy.statistics()


def proxy_settings(
    settings: QuicSettings, http3_settings: Http3Settings | None
) -> tuple[QuicSettings, Http3Settings]:
    """QUIC and HTTP/3 settings with what a proxy needs: QUIC datagrams,
    extended CONNECT, HTTP datagrams."""
    if not isinstance(settings, QuicSettings):
        raise TypeError(
            "settings must be a trioquic.QuicSettings (with the certificate)"
        )
    if settings.max_datagram_frame_size is None:
        settings = attrs.evolve(settings, max_datagram_frame_size=65536)
    http3 = http3_settings if http3_settings is not None else Http3Settings()
    http3 = attrs.evolve(http3, enable_connect_protocol=True, enable_datagrams=True)
    return settings, http3


async def serve_masque_proxy(
    port: int,
    *,
    settings: QuicSettings,
    host: str | None = None,
    policy: MasqueAccessPolicy | None = None,
    limits: MasqueLimits | None = None,
    template: str | UriTemplate = DEFAULT_PATH_TEMPLATE,
    http3_settings: Http3Settings | None = None,
    fallback: Callable[[Request], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[MasqueServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a CONNECT-UDP proxy (RFC 9298) on ``port``::

        server = await nursery.start(functools.partial(
            serve_masque_proxy, 4433, settings=settings,
            policy=MasqueAccessPolicy(targets=["192.0.2.0/24"])))

    ``settings`` holds the certificate; QUIC datagrams
    (``max_datagram_frame_size``, 65536 unless set), extended CONNECT and
    HTTP datagrams are switched on. Requests that are not for the proxy get
    ``fallback(request)`` if given, else ``404``. Cancelling it ends every
    tunnel (each stream finished), then the HTTP/3 server shuts down
    gracefully (GOAWAY, bounded by ``goaway_grace_period``).
    """
    resolved, http3 = proxy_settings(settings, http3_settings)
    proxy = MasqueProxy(policy, limits, template=template)

    async def handler(request: Request) -> None:
        if fallback is not None and await proxy.handle(request):
            return
        if fallback is not None:
            await fallback(request)
        else:
            await proxy(request)

    async with trio.open_nursery() as nursery:
        quic = await nursery.start(_serve, handler, port, host, resolved, http3)
        task_status.started(MasqueServer(quic, proxy))
        try:
            await trio.sleep_forever()
        finally:
            proxy.close_tunnels()


async def _serve(
    handler: Callable[[Request], Awaitable[None]],
    port: int,
    host: str | None,
    settings: QuicSettings,
    http3: Http3Settings,
    task_status: trio.TaskStatus[QuicServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve_http3(
        handler,
        port,
        host=host,
        settings=settings,
        http3_settings=http3,
        task_status=task_status,
    )
