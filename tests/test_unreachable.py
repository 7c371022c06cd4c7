"""Fast failure: a client to a closed UDP port fails at once with
ConnectionRefused (the kernel's ICMP port unreachable report, Linux), not
after the handshake timeout; ICMP is acted on only during the handshake and
only for the server's address. Real sockets on loopback."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
import time

import pytest
import trio

import trioquic
import trioquic.h3
from trioquic.lowlevel import UdpSocket
from trioquic.testing import client_settings

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="ICMP error reports are Linux's"
)


def closed_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    """A UDP port nothing listens on (bound, then closed)."""
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
async def test_a_closed_port_is_refused_at_once(family: int, host: str) -> None:
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6")
    port = closed_port(family, host)
    settings = client_settings(handshake_timeout=10.0)
    start = trio.current_time()
    with trio.fail_after(5), pytest.raises(trioquic.ConnectionRefused) as info:
        async with trioquic.open_quic_connection(host, port, settings=settings):
            pass  # pragma: no cover - never connects
    assert trio.current_time() - start < 1.0
    reason = info.value.reason
    assert reason.cause is trioquic.CloseCause.CONNECTION_REFUSED
    assert not reason.by_peer
    assert str(port) in str(info.value) and "connection refused" in str(info.value)
    assert isinstance(info.value, trioquic.PeerUnreachable)
    assert isinstance(info.value, trioquic.ConnectionClosed)


async def test_http3_client_to_a_closed_port_is_refused() -> None:
    port = closed_port()
    with trio.fail_after(5), pytest.raises(trioquic.ConnectionRefused):
        async with trioquic.h3.open_http3_client(
            "127.0.0.1", port, settings=client_settings(alpn_protocols=["h3"])
        ):
            pass  # pragma: no cover


async def test_icmp_for_another_address_is_ignored() -> None:
    """An unreachable report for an address the connection does not send to
    changes nothing: the client keeps waiting for its server (which here
    never answers: a bound socket that reads nothing), until its handshake
    timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        other = closed_port()
        sock = UdpSocket.for_peer(socket.AF_INET)
        try:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:

                    async def poke() -> None:
                        # The client's own socket sends to a closed port: the
                        # kernel reports it, for an address that is not the
                        # server's.
                        await trio.sleep(0.05)
                        await sock.send_batch([(b"x" * 30, ("127.0.0.1", other))])

                    nursery.start_soon(poke)
                    with pytest.raises(trioquic.HandshakeTimeout):
                        async with trioquic.open_quic_connection(
                            "127.0.0.1",
                            port,
                            settings=client_settings(handshake_timeout=0.5),
                            socket=sock,
                        ):
                            pass  # pragma: no cover
        finally:
            sock.close()


async def test_udp_socket_reports_unreachable_destinations() -> None:
    port = closed_port()
    sock = UdpSocket.for_peer(socket.AF_INET)
    try:
        assert sock.report_unreachable
        await sock.send_batch([(b"hello", ("127.0.0.1", port))])
        with trio.fail_after(2):
            batch = await sock.receive_batch()
        assert batch == []
        assert sock.take_unreachable() == [(("127.0.0.1", port), errno.ECONNREFUSED)]
        assert sock.take_unreachable() == []
    finally:
        sock.close()


def test_get_to_a_closed_port_fails_in_one_line_at_once() -> None:
    port = closed_port()
    start = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trioquic",
            "get",
            f"https://127.0.0.1:{port}/",
            "--insecure",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "connection refused" in line and str(port) in line
    assert elapsed < 2.0 + 1.0  # the interpreter's start-up included


async def test_reports_are_bounded_and_untaken_ones_do_not_spin() -> None:
    """Reports wait, at most 64 of them, until taken; receive_batch returns
    for new reports only, so a socket whose reports nobody takes (a server
    given a client-made socket) blocks as usual instead of spinning."""
    port = closed_port()
    sock = UdpSocket.for_peer(socket.AF_INET)
    try:
        await sock.send_batch([(b"x" * 20, ("127.0.0.1", port))] * 100)
        with trio.fail_after(2):
            while True:  # until the kernel has reported them all
                await sock.receive_batch()
                with trio.move_on_after(0.2):
                    await sock.receive_batch()
                    continue
                break
        # Nothing new: a further receive blocks (it would return [] at once
        # if it spun on the untaken reports).
        with trio.move_on_after(0.2) as idle:
            await sock.receive_batch()
        assert idle.cancelled_caught
        reports = sock.take_unreachable()
        assert 1 <= len(reports) <= 64
        assert all(error == errno.ECONNREFUSED for _, error in reports)
    finally:
        sock.close()
