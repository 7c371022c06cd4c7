"""Datagram sockets: the real UDP one, and the interface fakes implement.

The router and the workers talk only to :class:`DatagramSocket`, so the same
code runs over the kernel's UDP sockets and over ``trioquic.testing``'s
in-memory network.

:class:`UdpSocket` uses Linux's UDP offloads when the kernel offers them:

* send (GSO, ``UDP_SEGMENT``): consecutive datagrams of a batch to the same
  address and of the same size (the last of a run may be shorter) leave in one
  ``sendmsg`` call, which the kernel splits into datagrams;
* receive (GRO, ``UDP_GRO``): the kernel hands over runs of datagrams of one
  flow coalesced into one buffer, with their size; they are split here.

Either falls back to one system call per datagram: at once when the platform
lacks it or ``offload=False``, and for good when the kernel refuses a
segmented send (no checksum offload on the route, for example).
"""

from __future__ import annotations

import contextlib
import errno
import socket as _stdlib_socket
import sys
from collections.abc import Sequence
from typing import Any, Protocol

import trio

Address = Any  # what recvfrom returns: (host, port) or (host, port, flow, scope)
Datagram = tuple[bytes, Address]

#: How many receive calls one ``receive_batch`` makes at most before yielding.
RECEIVE_BATCH = 64
_MAX_UDP_PAYLOAD = 65535

# Linux's UDP offload socket options (linux/udp.h); Python names neither.
_SOL_UDP = getattr(_stdlib_socket, "SOL_UDP", 17)
_UDP_SEGMENT = 103
_UDP_GRO = 104
_OFFLOAD_PLATFORM = sys.platform.startswith("linux")
#: The kernel's bounds on one segmented send (UDP_MAX_SEGMENTS, and the IP
#: payload limit less headers, kept with room to spare).
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
#: A segmented send the kernel refuses with one of these means no GSO on this
#: socket's route: fall back for good. Other errors are the datagrams' own.
_GSO_UNSUPPORTED = frozenset(
    {errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP}
)
_IGNORED_RECEIVE_ERRORS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH})
_CMSG_INT = _stdlib_socket.CMSG_SPACE(4)


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


def segment_runs(datagrams: Sequence[Datagram]) -> list[tuple[int, int]]:
    """Split a batch into runs a segmented send can carry, as ``(start,
    stop)`` index pairs, in order: same address, every datagram as long as
    the first but the last (which may be shorter), at most
    :data:`GSO_MAX_SEGMENTS` datagrams and :data:`GSO_MAX_BYTES` bytes."""
    runs: list[tuple[int, int]] = []
    count = len(datagrams)
    start = 0
    while start < count:
        first, addr = datagrams[start]
        size = len(first)
        total = size
        stop = start + 1
        limit = min(count, start + GSO_MAX_SEGMENTS)
        while stop < limit:
            data, other = datagrams[stop]
            length = len(data)
            if length > size or other != addr or total + length > GSO_MAX_BYTES:
                break
            total += length
            stop += 1
            if length < size:
                break  # a shorter datagram ends a run
        runs.append((start, stop))
        start = stop
    return runs


class UdpSocket:
    """A non-blocking UDP socket driven by trio's readiness API.

    Sends are attempted synchronously and only wait when the kernel pushes
    back (``EAGAIN``), so a batch of datagrams costs no task switches. With
    ``offload`` (the default) it uses GSO and GRO where the kernel offers them
    (see the module docstring).
    """

    def __init__(
        self,
        sock: _stdlib_socket.socket,
        buffer_size: int = 0,
        *,
        offload: bool = True,
    ) -> None:
        sock.setblocking(False)
        if buffer_size:
            for option in (_stdlib_socket.SO_RCVBUF, _stdlib_socket.SO_SNDBUF):
                # On failure the kernel's default stays.
                with contextlib.suppress(OSError):
                    sock.setsockopt(_stdlib_socket.SOL_SOCKET, option, buffer_size)
        self._sock = sock
        #: Datagrams the kernel refused (dropped, as UDP would).
        self.send_errors = 0
        #: Segmented sends made, and datagrams they carried.
        self.gso_sends = 0
        self.gso_datagrams = 0
        #: Receive calls that returned several coalesced datagrams.
        self.gro_receives = 0
        #: Whether sends are segmented (GSO); turned off for good when the
        #: kernel refuses a segmented send.
        self.gso = offload and _OFFLOAD_PLATFORM
        #: Whether the kernel coalesces received datagrams (GRO).
        self.gro = False
        if offload and _OFFLOAD_PLATFORM:
            try:
                sock.setsockopt(_SOL_UDP, _UDP_GRO, 1)
                self.gro = True
            except OSError:
                pass
        self._buffer = bytearray(_MAX_UDP_PAYLOAD)
        self._view = memoryview(self._buffer)

    @classmethod
    async def bind(
        cls,
        host: str | None,
        port: int,
        *,
        buffer_size: int = 0,
        offload: bool = True,
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
                sockets.append(cls(sock, buffer_size, offload=offload))
        except BaseException:
            for s in sockets:
                s.close()
            raise
        if not sockets:
            raise OSError(f"could not bind a UDP socket for {host!r} port {port}")
        return sockets

    @classmethod
    def for_peer(
        cls, family: int, *, buffer_size: int = 0, offload: bool = True
    ) -> UdpSocket:
        """An unbound client socket of the peer's address family (the kernel
        picks the local port on first send)."""
        sock = _stdlib_socket.socket(family, _stdlib_socket.SOCK_DGRAM)
        if family == _stdlib_socket.AF_INET6:
            sock.bind(("::", 0))
        else:
            sock.bind(("0.0.0.0", 0))
        return cls(sock, buffer_size, offload=offload)

    @property
    def local_address(self) -> Address:
        return self._sock.getsockname()

    @property
    def family(self) -> int:
        return self._sock.family

    def fileno(self) -> int:
        return self._sock.fileno()

    # -- receive --------------------------------------------------------------

    async def receive_batch(self) -> list[Datagram]:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            batch: list[Datagram] = []
            try:
                if self.gro:
                    self._read_coalesced(batch)
                else:
                    self._read(batch)
            except BlockingIOError:
                pass
            except OSError as exc:
                # ICMP errors reported on the socket (e.g. ECONNREFUSED) are not
                # datagrams; skip them.
                if exc.errno not in _IGNORED_RECEIVE_ERRORS:
                    raise
            if batch:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return batch
            await trio.lowlevel.wait_readable(self._sock)

    def _read(self, batch: list[Datagram]) -> None:
        """Up to RECEIVE_BATCH datagrams, one call each, into the reused
        buffer (then copied out at their size)."""
        receive_into = self._sock.recvfrom_into
        buffer = self._buffer
        view = self._view
        append = batch.append
        for _ in range(RECEIVE_BATCH):
            size, addr = receive_into(buffer)
            append((bytes(view[:size]), addr))

    def _read_coalesced(self, batch: list[Datagram]) -> None:
        """Up to RECEIVE_BATCH receive calls, each of which may return a run
        of coalesced datagrams with their segment size in a control message."""
        receive_into = self._sock.recvmsg_into
        buffers = [self._buffer]
        view = self._view
        append = batch.append
        for _ in range(RECEIVE_BATCH):
            size, ancillary, _flags, addr = receive_into(buffers, _CMSG_INT)
            segment = size
            for level, kind, value in ancillary:
                if level == _SOL_UDP and kind == _UDP_GRO:
                    segment = int.from_bytes(value[:4], sys.byteorder)
            if segment >= size or segment <= 0:
                append((bytes(view[:size]), addr))
                continue
            self.gro_receives += 1
            for offset in range(0, size, segment):
                append((bytes(view[offset : min(offset + segment, size)]), addr))

    # -- send -----------------------------------------------------------------

    async def send_batch(self, datagrams: Sequence[Datagram]) -> None:
        if self.gso and len(datagrams) > 1:
            for start, stop in segment_runs(datagrams):
                if stop - start == 1:
                    await self._send_one(*datagrams[start])
                elif not await self._send_segmented(datagrams, start, stop):
                    for index in range(start, stop):
                        await self._send_one(*datagrams[index])
            return
        for data, addr in datagrams:
            await self._send_one(data, addr)

    async def _send_one(self, data: bytes, addr: Address) -> None:
        sock = self._sock
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
            return

    async def _send_segmented(
        self, datagrams: Sequence[Datagram], start: int, stop: int
    ) -> bool:
        """One sendmsg for ``datagrams[start:stop]``; False when the kernel
        refused it: the caller then sends them one by one, which tells a
        datagram's own error from the segmentation's. When the error says the
        route cannot segment at all, GSO is off for good."""
        sock = self._sock
        addr = datagrams[start][1]
        buffers = [datagrams[index][0] for index in range(start, stop)]
        control = [(_SOL_UDP, _UDP_SEGMENT, len(buffers[0]).to_bytes(2, sys.byteorder))]
        while True:
            try:
                sock.sendmsg(buffers, control, 0, addr)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                continue
            except OSError as exc:
                if exc.errno in _GSO_UNSUPPORTED:
                    self.gso = False
                return False
            self.gso_sends += 1
            self.gso_datagrams += stop - start
            return True

    def close(self) -> None:
        self._sock.close()
