"""Datagram sockets: the real UDP one, and the interface fakes implement.

The router and the workers talk only to :class:`DatagramSocket`, so the same
code runs over the kernel's UDP sockets and over ``trioquic.testing``'s
in-memory network.
"""

from __future__ import annotations

import contextlib
import errno
import socket as _stdlib_socket
from collections.abc import Sequence
from typing import Any, Protocol

import trio

Address = Any  # what recvfrom returns: (host, port) or (host, port, flow, scope)
Datagram = tuple[bytes, Address]

#: How many datagrams one receive call drains at most before yielding.
RECEIVE_BATCH = 64
_MAX_UDP_PAYLOAD = 65535


class DatagramSocket(Protocol):
    """What trioquic needs from a datagram socket.

    A socket may also have a ``rebind()`` method that moves it to a new local
    address in place and returns that address; a client connection over a
    caller-owned socket needs it for :meth:`trioquic.QuicConnection.rebind`
    (``trioquic.testing.MemorySocket`` has one).
    """

    @property
    def local_address(self) -> Address: ...

    async def receive_batch(self) -> list[Datagram]:
        """Wait until at least one datagram is ready, then return all that are
        (up to an internal bound). A checkpoint."""
        ...

    async def send_batch(self, datagrams: Sequence[Datagram]) -> None:
        """Send every datagram, waiting for writability when the kernel's
        buffer is full. Datagrams that fail (unreachable, too big) are dropped
        and counted, as UDP would."""
        ...

    def close(self) -> None: ...


class UdpSocket:
    """A non-blocking UDP socket driven by trio's readiness API.

    Sends are attempted synchronously and only wait when the kernel pushes
    back (``EAGAIN``), so a batch of datagrams costs no task switches.
    """

    def __init__(self, sock: _stdlib_socket.socket, buffer_size: int = 0) -> None:
        sock.setblocking(False)
        if buffer_size:
            for option in (_stdlib_socket.SO_RCVBUF, _stdlib_socket.SO_SNDBUF):
                # On failure the kernel's default stays.
                with contextlib.suppress(OSError):
                    sock.setsockopt(_stdlib_socket.SOL_SOCKET, option, buffer_size)
        self._sock = sock
        self.send_errors = 0

    @classmethod
    async def bind(
        cls, host: str | None, port: int, *, buffer_size: int = 0
    ) -> list[UdpSocket]:
        """Bind one socket per address ``host`` resolves to (all interfaces for
        ``None``), like :func:`trio.open_tcp_listeners`."""
        infos = await trio.socket.getaddrinfo(
            host,
            port,
            type=_stdlib_socket.SOCK_DGRAM,
            flags=_stdlib_socket.AI_PASSIVE,
        )
        sockets: list[UdpSocket] = []
        seen: set[tuple[int, Any]] = set()
        try:
            for family, type_, proto, _, sockaddr in infos:
                if (family, sockaddr) in seen:
                    continue
                seen.add((family, sockaddr))
                sock = _stdlib_socket.socket(family, type_, proto)
                try:
                    if family == _stdlib_socket.AF_INET6:
                        sock.setsockopt(
                            _stdlib_socket.IPPROTO_IPV6, _stdlib_socket.IPV6_V6ONLY, 1
                        )
                    sock.bind(sockaddr)
                except OSError:
                    sock.close()
                    raise
                sockets.append(cls(sock, buffer_size))
        except BaseException:
            for s in sockets:
                s.close()
            raise
        if not sockets:
            raise OSError(f"could not bind a UDP socket for {host!r} port {port}")
        return sockets

    @classmethod
    def for_peer(cls, family: int, *, buffer_size: int = 0) -> UdpSocket:
        """An unbound client socket of the peer's address family (the kernel
        picks the local port on first send)."""
        sock = _stdlib_socket.socket(family, _stdlib_socket.SOCK_DGRAM)
        if family == _stdlib_socket.AF_INET6:
            sock.bind(("::", 0))
        else:
            sock.bind(("0.0.0.0", 0))
        return cls(sock, buffer_size)

    @property
    def local_address(self) -> Address:
        return self._sock.getsockname()

    @property
    def family(self) -> int:
        return self._sock.family

    def fileno(self) -> int:
        return self._sock.fileno()

    async def receive_batch(self) -> list[Datagram]:
        sock = self._sock
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            batch: list[Datagram] = []
            try:
                for _ in range(RECEIVE_BATCH):
                    batch.append(sock.recvfrom(_MAX_UDP_PAYLOAD))
            except BlockingIOError:
                pass
            except OSError as exc:
                # ICMP errors reported on the socket (e.g. ECONNREFUSED) are not
                # datagrams; skip them.
                if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                    raise
            if batch:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return batch
            await trio.lowlevel.wait_readable(sock)

    async def send_batch(self, datagrams: Sequence[Datagram]) -> None:
        sock = self._sock
        for data, addr in datagrams:
            while True:
                try:
                    sock.sendto(data, addr)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                    continue
                except OSError:
                    # Unreachable destination, message too long, ...: UDP
                    # semantics, the datagram is lost and QUIC recovers.
                    self.send_errors += 1
                break

    def close(self) -> None:
        self._sock.close()
