"""The UDP socket: segmented sends (GSO) and coalesced receives (GRO) where
the kernel offers them, and the fallbacks: offload off, a kernel that refuses
segmentation, a full send buffer. Real loopback sockets."""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from functools import partial
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import trioquic

# private: _udp's GSO batch splitter and its kernel bounds are unit-tested as
# pure functions (only send_batch uses them), and its _bind_all is patched to
# inject a port collision no real setup produces on demand.
from trioquic import QuicSettings, _udp
from trioquic._udp import GSO_MAX_BYTES, GSO_MAX_SEGMENTS, segment_runs
from trioquic.lowlevel import UdpSocket, bind_udp_sockets

HOST = "127.0.0.1"


def loopback_socket(*, offload: bool) -> UdpSocket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    return UdpSocket(sock, 1 << 20, offload=offload)


def mixed_batch(addresses: Sequence[Any]) -> list[tuple[bytes, Any]]:
    """Runs of full-size datagrams with short ones between, alternating
    destinations now and then: every way a run can end."""
    batch: list[tuple[bytes, Any]] = []
    for index in range(150):
        addr = addresses[(index // 40) % len(addresses)]
        size = 1200 if index % 17 else 40 + index
        batch.append((index.to_bytes(2, "big") * (size // 2), addr))
    batch.append((b"x" * 1300, addresses[0]))  # larger than the run before
    batch.append((b"y", addresses[0]))
    return batch


async def receive_all(sock: UdpSocket, count: int) -> list[bytes]:
    received: list[bytes] = []
    with trio.fail_after(10):
        while len(received) < count:
            received.extend(data for data, _ in await sock.receive_batch())
    return received


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
async def test_batches_keep_datagram_boundaries_and_order(offload: bool) -> None:
    sender = loopback_socket(offload=offload)
    receivers = [loopback_socket(offload=offload), loopback_socket(offload=offload)]
    try:
        addresses = [r.local_address for r in receivers]
        batch = mixed_batch(addresses)
        await sender.send_batch(batch)
        for receiver, addr in zip(receivers, addresses, strict=True):
            expected = [data for data, to in batch if to == addr]
            assert await receive_all(receiver, len(expected)) == expected
        assert sender.send_errors == 0
        if not offload:
            assert not sender.gso and not receivers[0].gro
            assert sender.gso_sends == 0 and receivers[0].gro_receives == 0
        elif sender.gso:  # the kernel segments on loopback: it was used
            assert sender.gso_sends > 0
            assert sender.gso_datagrams > sender.gso_sends
    finally:
        sender.close()
        for receiver in receivers:
            receiver.close()


async def test_coalesced_receive_is_split_into_datagrams() -> None:
    """A segmented send arrives coalesced at a GRO socket (one receive call
    for several datagrams), and is split at the segment size."""
    sender = loopback_socket(offload=True)
    receiver = loopback_socket(offload=True)
    try:
        if not (sender.gso and receiver.gro):
            pytest.skip("the kernel offers no UDP GSO/GRO")
        batch = [(bytes([i]) * 1000, receiver.local_address) for i in range(20)]
        batch.append((b"tail", receiver.local_address))
        await sender.send_batch(batch)
        assert await receive_all(receiver, len(batch)) == [d for d, _ in batch]
        assert receiver.gro_receives >= 1
    finally:
        sender.close()
        receiver.close()


class _RefusingSocket:
    """A loopback socket whose segmented sends fail as on a route without
    checksum offload (EIO), or whose sends hit a full buffer once (EAGAIN);
    UdpSocket takes it in place of a socket.socket."""

    def __init__(self, *, refuse: int | None, full_once: bool):
        self._inner = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._inner.bind((HOST, 0))
        self._refuse = refuse
        self._full_once = full_once
        self.segmented_attempts = 0

    def setblocking(self, flag: bool) -> None:
        self._inner.setblocking(flag)

    def setsockopt(self, *args: Any) -> None:
        self._inner.setsockopt(*args)

    def getsockname(self) -> Any:
        return self._inner.getsockname()

    def close(self) -> None:
        self._inner.close()

    def sendmsg(self, buffers: Any, control: Any, flags: int, addr: Any) -> int:
        self.segmented_attempts += 1
        if self._full_once:
            self._full_once = False
            raise BlockingIOError(errno.EAGAIN, "full")
        if self._refuse is not None:
            raise OSError(self._refuse, "refused")
        return self._inner.sendmsg(buffers, control, flags, addr)

    def sendto(self, data: bytes, addr: Any) -> int:
        if self._full_once:
            self._full_once = False
            raise BlockingIOError(errno.EAGAIN, "full")
        return self._inner.sendto(data, addr)

    def fileno(self) -> int:
        return self._inner.fileno()


@pytest.mark.parametrize(
    ("error", "gso_after"),
    [(errno.EIO, False), (errno.EMSGSIZE, True)],
    ids=["no-segmentation-on-route", "datagram-error"],
)
async def test_refused_segmented_send_falls_back(error: int, gso_after: bool) -> None:
    fake = _RefusingSocket(refuse=error, full_once=False)
    sender = UdpSocket(fake, 1 << 20, offload=True)  # type: ignore[arg-type]
    receiver = loopback_socket(offload=False)
    try:
        sender.gso = True  # as where the platform offers it
        batch = [(bytes([i]) * 900, receiver.local_address) for i in range(10)]
        await sender.send_batch(batch)
        # Every datagram still left, one call each.
        assert await receive_all(receiver, len(batch)) == [d for d, _ in batch]
        assert fake.segmented_attempts == 1
        assert sender.gso is gso_after
        assert sender.gso_sends == 0 and sender.send_errors == 0
    finally:
        sender.close()
        receiver.close()


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
async def test_full_send_buffer_waits_for_writability(offload: bool) -> None:
    fake = _RefusingSocket(refuse=None, full_once=True)
    sender = UdpSocket(fake, 1 << 20, offload=offload)  # type: ignore[arg-type]
    receiver = loopback_socket(offload=False)
    try:
        batch = [(bytes([i]) * 700, receiver.local_address) for i in range(5)]
        await sender.send_batch(batch)
        assert await receive_all(receiver, len(batch)) == [d for d, _ in batch]
        assert sender.send_errors == 0
    finally:
        sender.close()
        receiver.close()


def test_segment_runs_examples() -> None:
    a, b = ("10.0.0.1", 1), ("10.0.0.2", 1)
    sizes_and_addresses = [
        (1200, a),
        (1200, a),
        (50, a),  # ends the run
        (1200, a),
        (1200, b),  # another destination
        (1200, b),
        (1300, b),  # larger: a new run
    ]
    batch = [(b"." * size, addr) for size, addr in sizes_and_addresses]
    assert segment_runs(batch) == [(0, 3), (3, 4), (4, 6), (6, 7)]
    assert segment_runs([]) == []
    many = [(b"." * 1000, a)] * 150
    assert segment_runs(many) == [(0, 64), (64, 128), (128, 150)]
    big = [(b"." * 1350, a)] * 64
    runs = segment_runs(big)
    assert all((stop - start) * 1350 <= GSO_MAX_BYTES for start, stop in runs)


@given(
    st.lists(
        st.tuples(st.integers(1, 1500), st.sampled_from(["a", "b", "c"])), max_size=300
    )
)
def test_segment_runs_property(items: list[tuple[int, str]]) -> None:
    batch = [(b"\0" * size, addr) for size, addr in items]
    runs = segment_runs(batch)
    # The runs cover the batch, in order, without gaps.
    assert [i for start, stop in runs for i in range(start, stop)] == list(
        range(len(batch))
    )
    for start, stop in runs:
        run = batch[start:stop]
        assert 1 <= len(run) <= GSO_MAX_SEGMENTS
        assert sum(len(d) for d, _ in run) <= max(GSO_MAX_BYTES, len(run[0][0]))
        assert len({addr for _, addr in run}) == 1
        first = len(run[0][0])
        assert all(len(d) == first for d, _ in run[:-1])
        assert len(run[-1][0]) <= first


# -- bind_udp_sockets ----------------------------------------------------------


def ipv6_available(host: str) -> bool:
    """Whether this machine can bind a UDP socket to IPv6 ``host``."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
    except OSError:
        return False
    return True


def v6only(sock: UdpSocket) -> bool:
    with socket.fromfd(sock.fileno(), socket.AF_INET6, socket.SOCK_DGRAM) as view:
        return bool(view.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))


async def test_bind_udp_sockets_every_interface_on_one_port() -> None:
    sockets = await bind_udp_sockets(None, 0)
    try:
        assert len({sock.local_address[1] for sock in sockets}) == 1
        assert sockets[0].local_address[1] != 0
        hosts = [sock.local_address[0] for sock in sockets]
        assert hosts[0] == "0.0.0.0"  # IPv4 first
        if ipv6_available("::"):
            assert hosts == ["0.0.0.0", "::"]
            assert v6only(sockets[1])
        else:
            assert hosts == ["0.0.0.0"]
    finally:
        for sock in sockets:
            sock.close()


async def test_bind_udp_sockets_localhost_is_both_loopbacks() -> None:
    sockets = await bind_udp_sockets("localhost", 0)
    try:
        assert len({sock.local_address[1] for sock in sockets}) == 1
        hosts = [sock.local_address[0] for sock in sockets]
        if ipv6_available("::1"):
            assert hosts == ["127.0.0.1", "::1"]
            assert v6only(sockets[1])
        else:
            assert hosts == ["127.0.0.1"]
    finally:
        for sock in sockets:
            sock.close()


async def test_bind_udp_sockets_given_port_and_options() -> None:
    sockets = await bind_udp_sockets(HOST, 0, offload=False)
    port = sockets[0].local_address[1]
    for sock in sockets:
        sock.close()
    sockets = await bind_udp_sockets(HOST, port, buffer_size=1 << 20, offload=False)
    try:
        assert [sock.local_address for sock in sockets] == [(HOST, port)]
        assert not sockets[0].gso and not sockets[0].gro
    finally:
        for sock in sockets:
            sock.close()


async def test_bind_udp_sockets_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, 0))
        with pytest.raises(OSError, match="in use"):
            await bind_udp_sockets(HOST, taken.getsockname()[1])


async def test_bind_udp_sockets_address_not_on_this_machine() -> None:
    # 192.0.2.1 (TEST-NET-1) is nobody's address.
    with pytest.raises(OSError) as info:
        await bind_udp_sockets("192.0.2.1", 0)
    assert info.value.errno == errno.EADDRNOTAVAIL


class _TwoAddresses(trio.abc.HostnameResolver):
    """Resolves every name to 127.0.0.1 and 192.0.2.1 (TEST-NET-1: nobody's
    address, so not this machine's)."""

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        dgram = socket.SOCK_DGRAM
        return [
            (socket.AF_INET, dgram, 0, "", (HOST, port)),
            (socket.AF_INET, dgram, 0, "", ("192.0.2.1", port)),
        ]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


async def test_a_missing_address_is_skipped_when_another_binds() -> None:
    previous = trio.socket.set_custom_hostname_resolver(_TwoAddresses())
    try:
        sockets = await bind_udp_sockets("two-addresses.test", 0)
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
    try:
        assert [sock.local_address[0] for sock in sockets] == [HOST]
    finally:
        for sock in sockets:
            sock.close()


async def test_bind_udp_sockets_tries_another_port_when_one_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Port 0: the port the kernel picked for IPv4 may be taken on IPv6."""
    real = _udp._bind_all
    calls: list[int] = []

    def collide_once(*args: Any) -> list[UdpSocket]:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        return real(*args)

    monkeypatch.setattr(_udp, "_bind_all", collide_once)
    sockets = await bind_udp_sockets(HOST, 0)
    for sock in sockets:
        sock.close()
    assert len(calls) == 2
    calls.clear()
    with pytest.raises(OSError, match="in use"):
        await bind_udp_sockets(HOST, 0, attempts=1)
    with pytest.raises(ValueError, match="attempts"):
        await bind_udp_sockets(HOST, 0, attempts=0)


async def _echo(conn: trioquic.QuicConnection) -> None:
    stream = await conn.accept_stream()
    assert isinstance(stream, trioquic.QuicStream)
    while data := await stream.receive_some():
        await stream.send_all(data)
    await stream.send_eof()


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
async def test_transfer_over_loopback_with_and_without_offload(offload: bool) -> None:
    cert = trioquic.generate_self_signed_certificate()
    server_settings = QuicSettings(
        alpn_protocols=["echo"],
        certificate=cert.certificate_path,
        private_key=cert.private_key_path,
        udp_offload=offload,
    )
    client_settings = QuicSettings(
        alpn_protocols=["echo"], ca_certs=cert.certificate_path, udp_offload=offload
    )
    sockets = [loopback_socket(offload=offload)]
    payload = bytes(range(256)) * 8192  # 2 MiB
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(
                        trioquic.serve_quic,
                        _echo,
                        0,
                        settings=server_settings,
                        sockets=sockets,
                    )
                )
                port = sockets[0].local_address[1]
                async with trioquic.open_quic_connection(
                    HOST, port, settings=client_settings
                ) as conn:
                    stream = await conn.open_stream()
                    received = bytearray()

                    async def read() -> None:
                        while data := await stream.receive_some():
                            received.extend(data)

                    async with trio.open_nursery() as inner:
                        inner.start_soon(read)
                        await stream.send_all(payload)
                        await stream.send_eof()
                    assert received == payload
                nursery.cancel_scope.cancel()
    finally:
        sockets[0].close()
    server_socket = sockets[0]
    if offload and server_socket.gso:
        assert server_socket.gso_sends > 0
    if not offload:
        assert server_socket.gso_sends == 0 and server_socket.gro_receives == 0
