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

:func:`bind_udp_sockets` binds a server's sockets: one per address, all on
one port.
"""

from __future__ import annotations

import contextlib
import errno
import socket as _stdlib_socket
import sys
from collections.abc import Sequence
from typing import Any, Protocol

import trio

from ._engine import Address as Address

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
_IGNORED_RECEIVE_ERRORS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}
)
# Linux's extended error reports (linux/in.h, linux/in6.h, linux/errqueue.h):
# with IP_RECVERR / IPV6_RECVERR, ICMP errors for an unconnected UDP socket
# are queued on it, with the destination they answer.
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_MSG_ERRQUEUE = getattr(_stdlib_socket, "MSG_ERRQUEUE", 0x2000)
_SO_EE_ORIGIN_ICMP = 2
_SO_EE_ORIGIN_ICMP6 = 3
#: Error-queue entries read at most per receive call (each is one ICMP
#: error), and kept at most until taken.
_MAX_ERRORS = 64
_CMSG_INT = _stdlib_socket.CMSG_SPACE(4)


class DatagramSocket(Protocol):
    """What trioquic needs from a datagram socket.

    A socket may also have a ``rebind()`` method that moves it to a new local
    address in place and returns that address; a client connection over a
    caller-owned socket needs it for :meth:`trioquic.QuicConnection.rebind`
    (``trioquic.testing.MemorySocket`` has one). A client socket may have a
    ``take_unreachable()`` method returning the destinations the network
    reported unreachable since the last call, with their error numbers (see
    :class:`UdpSocket`); ``receive_batch`` then also returns (possibly with no
    datagram) when there are some.
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

    With ``report_unreachable`` (clients; Linux), the kernel's ICMP error
    reports are collected (``IP_RECVERR``): :meth:`take_unreachable` returns
    the destinations that were reported unreachable, with the error number
    (``ECONNREFUSED`` for a closed port). A server never sets it: it does not
    act on ICMP.
    """

    def __init__(
        self,
        sock: _stdlib_socket.socket,
        buffer_size: int = 0,
        *,
        offload: bool = True,
        report_unreachable: bool = False,
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
        #: Destinations the kernel reported unreachable, not yet taken.
        self._unreachable: list[tuple[Address, int]] = []
        self.report_unreachable = False
        if report_unreachable and _OFFLOAD_PLATFORM:
            level, option = (
                (_stdlib_socket.IPPROTO_IPV6, _IPV6_RECVERR)
                if sock.family == _stdlib_socket.AF_INET6
                else (_stdlib_socket.IPPROTO_IP, _IP_RECVERR)
            )
            try:
                sock.setsockopt(level, option, 1)
                self.report_unreachable = True
            except OSError:
                pass  # the handshake timeout stays the only signal

    @classmethod
    def for_peer(
        cls, family: int, *, buffer_size: int = 0, offload: bool = True
    ) -> UdpSocket:
        """A client socket of the peer's address family on a port the kernel
        picks, which reports ICMP unreachable errors (``report_unreachable``)."""
        sock = _stdlib_socket.socket(family, _stdlib_socket.SOCK_DGRAM)
        if family == _stdlib_socket.AF_INET6:
            sock.bind(("::", 0))
        else:
            sock.bind(("0.0.0.0", 0))
        return cls(sock, buffer_size, offload=offload, report_unreachable=True)

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
            reported = False
            try:
                if self.gro:
                    self._read_coalesced(batch)
                else:
                    self._read(batch)
            except BlockingIOError:
                if not batch and self.report_unreachable:
                    # Woken with nothing to read: an error report may be all
                    # there is (the queue keeps the socket readable).
                    reported = self._read_errors()
            except OSError as exc:
                # ICMP errors reported on the socket (e.g. ECONNREFUSED) are not
                # datagrams: collect them when asked to, else skip them.
                if exc.errno not in _IGNORED_RECEIVE_ERRORS:
                    raise
                if self.report_unreachable:
                    reported = self._read_errors()
            # Return for new reports too (not for old ones nobody took: that
            # would spin), so that the router hands them over at once.
            if batch or reported:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return batch
            await trio.lowlevel.wait_readable(self._sock)

    def _read_errors(self) -> bool:
        """Move the ICMP errors of the socket's error queue to
        :meth:`take_unreachable` (the destinations they answer, with the
        error number); True if there was any. At most :data:`_MAX_ERRORS`
        are kept until taken: the newest beyond that are dropped."""
        sock = self._sock
        reported = False
        for _ in range(_MAX_ERRORS):
            try:
                _, ancillary, _flags, addr = sock.recvmsg(0, 512, _MSG_ERRQUEUE)
            except OSError:  # BlockingIOError: the queue is empty
                return reported
            for level, kind, value in ancillary:
                if (level, kind) not in (
                    (_stdlib_socket.IPPROTO_IP, _IP_RECVERR),
                    (_stdlib_socket.IPPROTO_IPV6, _IPV6_RECVERR),
                ) or len(value) < 8:
                    continue
                ee_errno = int.from_bytes(value[0:4], sys.byteorder)
                origin = value[4]
                if origin in (_SO_EE_ORIGIN_ICMP, _SO_EE_ORIGIN_ICMP6):
                    reported = True
                    if len(self._unreachable) < _MAX_ERRORS:
                        self._unreachable.append((addr, ee_errno))
        return reported

    def take_unreachable(self) -> list[tuple[Address, int]]:
        """The destinations the kernel reported unreachable since the last
        call (ICMP errors), each with its error number; empty unless
        ``report_unreachable``."""
        unreachable, self._unreachable = self._unreachable, []
        return unreachable

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


# -- binding server sockets ------------------------------------------------------

#: A bind that fails with one of these means the machine lacks that address
#: or address family (no IPv6, say): skipped when another address binds.
_MISSING_ADDRESS = frozenset({errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})

#: (family, type, proto, sockaddr), as getaddrinfo reports them.
_BindAddress = tuple[int, int, int, Any]


async def bind_udp_sockets(
    host: str | None,
    port: int,
    *,
    buffer_size: int = 0,
    offload: bool = True,
    attempts: int = 5,
) -> list[UdpSocket]:
    """Bind one UDP socket per address ``host`` stands for, all on the same
    port (port 0: the one the kernel picks for the first address, IPv4 first).

    * ``None``: every interface, ``0.0.0.0`` and ``::``;
    * ``"localhost"``: ``127.0.0.1`` and ``::1``, whatever the hosts file
      says (some map localhost to 127.0.0.1 only, while clients may try
      ``::1`` first);
    * anything else: each address it resolves to.

    IPv6 sockets are ``IPV6_V6ONLY`` (an IPv4 socket beside them takes the
    IPv4 traffic). An address or address family the machine lacks is skipped
    when another address binds. With port 0, a port the kernel picked for
    IPv4 but taken on IPv6 makes it try again, up to ``attempts`` times.
    ``buffer_size`` and ``offload`` are :class:`UdpSocket`'s.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    addresses = await _bind_addresses(host, port)
    for attempt in range(attempts):
        try:
            return _bind_all(addresses, port, buffer_size, offload)
        except OSError as exc:
            if port == 0 and exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


async def _bind_addresses(host: str | None, port: int) -> list[_BindAddress]:
    """The addresses to bind for ``host``, without duplicates, IPv4 first."""
    dgram = _stdlib_socket.SOCK_DGRAM
    if host is None:
        return _wildcards(port)
    if host == "localhost":
        resolved = [
            *await trio.socket.getaddrinfo("127.0.0.1", port, type=dgram),
            *await _loopback6(port),
        ]
    else:
        resolved = list(
            await trio.socket.getaddrinfo(
                host, port, type=dgram, flags=_stdlib_socket.AI_PASSIVE
            )
        )
    return _ordered(host, resolved)


def bind_addresses_blocking(host: str | None, port: int) -> list[_BindAddress]:
    """:func:`_bind_addresses` resolving in this thread (for a process that
    runs no trio loop, such as ``serve_workers``' parent)."""
    if host is None:
        return _wildcards(port)
    names = ["127.0.0.1", "::1"] if host == "localhost" else [host]
    resolved: list[Any] = []
    for name in names:
        try:
            resolved += _stdlib_socket.getaddrinfo(
                name,
                port,
                type=_stdlib_socket.SOCK_DGRAM,
                flags=_stdlib_socket.AI_PASSIVE,
            )
        except OSError:
            if name != "::1":  # a machine without IPv6 has no ::1
                raise
    return _ordered(host, resolved)


def _wildcards(port: int) -> list[_BindAddress]:
    dgram = _stdlib_socket.SOCK_DGRAM
    infos: list[_BindAddress] = [(_stdlib_socket.AF_INET, dgram, 0, ("0.0.0.0", port))]
    if _stdlib_socket.has_ipv6:
        infos.append((_stdlib_socket.AF_INET6, dgram, 0, ("::", port, 0, 0)))
    return infos


def _ordered(host: str, resolved: list[Any]) -> list[_BindAddress]:
    """getaddrinfo's answers as bind addresses, without duplicates, IPv4
    first (its port is the one printed and used for the others)."""
    addresses: list[_BindAddress] = []
    for info in resolved:
        entry = (info[0], info[1], info[2], info[4])
        if entry not in addresses:
            addresses.append(entry)
    addresses.sort(key=lambda entry: entry[0] != _stdlib_socket.AF_INET)
    if not addresses:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host!r}")
    return addresses


async def _loopback6(port: int) -> list[Any]:
    """``::1``'s address info, or nothing on a machine without IPv6."""
    if not _stdlib_socket.has_ipv6:
        return []
    try:
        return list(
            await trio.socket.getaddrinfo("::1", port, type=_stdlib_socket.SOCK_DGRAM)
        )
    except OSError:
        return []


def _bind_all(
    addresses: Sequence[_BindAddress], port: int, buffer_size: int, offload: bool
) -> list[UdpSocket]:
    """One socket per address, all on one port (or none: the error)."""
    sockets: list[UdpSocket] = []
    chosen = port
    missing: OSError | None = None
    try:
        for family, type_, proto, sockaddr in addresses:
            try:
                sock = _stdlib_socket.socket(family, type_, proto)
            except OSError as exc:
                if exc.errno not in _MISSING_ADDRESS:
                    raise
                missing = missing or exc
                continue
            try:
                if family == _stdlib_socket.AF_INET6:
                    sock.setsockopt(
                        _stdlib_socket.IPPROTO_IPV6, _stdlib_socket.IPV6_V6ONLY, 1
                    )
                sock.bind((sockaddr[0], chosen, *sockaddr[2:]))
                bound = UdpSocket(sock, buffer_size, offload=offload)
            except OSError as exc:
                sock.close()
                if exc.errno not in _MISSING_ADDRESS:
                    raise
                missing = missing or exc
                continue
            except BaseException:
                sock.close()
                raise
            if chosen == 0:
                chosen = bound.local_address[1]
            sockets.append(bound)
    except BaseException:
        for bound in sockets:
            bound.close()
        raise
    if not sockets:
        assert missing is not None
        raise missing
    return sockets
