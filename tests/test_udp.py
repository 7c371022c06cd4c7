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
from trioquic import QuicSettings
from trioquic._udp import GSO_MAX_BYTES, GSO_MAX_SEGMENTS, UdpSocket, segment_runs

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
    """A socket whose segmented sends fail as on a route without checksum
    offload (EIO), or whose sends hit a full buffer once (EAGAIN)."""

    def __init__(self, inner: socket.socket, *, refuse: int | None, full_once: bool):
        self._inner = inner
        self._refuse = refuse
        self._full_once = full_once
        self.segmented_attempts = 0

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
    sender = loopback_socket(offload=True)
    receiver = loopback_socket(offload=False)
    try:
        sender.gso = True  # as where the platform offers it
        fake = _RefusingSocket(sender._sock, refuse=error, full_once=False)
        sender._sock = fake  # type: ignore[assignment]
        batch = [(bytes([i]) * 900, receiver.local_address) for i in range(10)]
        await sender.send_batch(batch)
        # Every datagram still left, one call each.
        assert await receive_all(receiver, len(batch)) == [d for d, _ in batch]
        assert fake.segmented_attempts == 1
        assert sender.gso is gso_after
        assert sender.gso_sends == 0 and sender.send_errors == 0
    finally:
        sender._sock = fake._inner
        sender.close()
        receiver.close()


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
async def test_full_send_buffer_waits_for_writability(offload: bool) -> None:
    sender = loopback_socket(offload=offload)
    receiver = loopback_socket(offload=False)
    try:
        fake = _RefusingSocket(sender._sock, refuse=None, full_once=True)
        sender._sock = fake  # type: ignore[assignment]
        batch = [(bytes([i]) * 700, receiver.local_address) for i in range(5)]
        await sender.send_batch(batch)
        assert await receive_all(receiver, len(batch)) == [d for d, _ in batch]
        assert sender.send_errors == 0
    finally:
        sender._sock = fake._inner
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
