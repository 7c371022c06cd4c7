"""Anti-amplification (RFC 9000 section 8.1): before a client's address is
validated, a server sends at most three times the bytes it received from it,
so a spoofed Initial cannot turn the server into an amplifier. Counted on the
memory network's links, with a client that sends its first flight (its
ClientHello, in one datagram or more) and then goes silent (as a spoofed
source address would)."""

from __future__ import annotations

import contextlib
import functools

import pytest
import trio
import trio.testing
from helpers import FIRST_FLIGHT_DATAGRAMS

import trioquic
from trioquic.testing import (
    LinkConditions,
    MemoryNetwork,
    client_settings,
    server_settings,
)

SERVER = ("10.0.0.1", 4433)
CLIENT_HOST = "10.0.0.2"


def first_flight_only() -> LinkConditions:
    """A link that delivers the client's first flight (its first
    :data:`FIRST_FLIGHT_DATAGRAMS` datagrams) and loses the rest."""
    sent = 0

    def loss(elapsed: float) -> float:
        nonlocal sent
        sent += 1
        return 0.0 if sent <= FIRST_FLIGHT_DATAGRAMS else 1.0

    return LinkConditions(delay=0.01, loss=loss)


async def wait_forever(connection: trioquic.QuicConnection) -> None:
    await connection.wait_closed()


async def silent_client_run(
    settings: trioquic.QuicSettings,
    client: trioquic.QuicSettings,
) -> tuple[trioquic.testing.LinkStatistics, trioquic.testing.LinkStatistics]:
    """Bytes client -> server and server -> client, once the server gave up."""
    network = MemoryNetwork(conditions=LinkConditions(delay=0.01))
    network.set_link(CLIENT_HOST, SERVER[0], first_flight_only())
    sock = network.socket(*SERVER)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                trioquic.serve_quic,
                wait_forever,
                SERVER[1],
                settings=settings,
                sockets=[sock],
            )
        )
        # With a small certificate the client may complete its side of the
        # handshake (the server's whole flight fits in its budget); its
        # Finished and everything after is lost.
        with contextlib.suppress(trioquic.HandshakeTimeout):
            async with trioquic.open_quic_connection(
                *SERVER, settings=client, socket=network.socket(CLIENT_HOST)
            ):
                pass
        # Let the server retransmit for as long as it wants, then give up.
        await trio.sleep(settings.handshake_timeout + settings.close_grace_period + 1)
        assert server.connection_count == 0
        nursery.cancel_scope.cancel()
    return (
        network.link_statistics(CLIENT_HOST, SERVER[0]),
        network.link_statistics(SERVER[0], CLIENT_HOST),
    )


async def test_server_sends_at_most_three_times_what_it_received(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        inbound, outbound = await silent_client_run(
            server_settings(handshake_timeout=5),
            client_settings(handshake_timeout=2),
        )
    assert inbound.delivered == FIRST_FLIGHT_DATAGRAMS
    # The client retransmitted; the server never heard.
    assert inbound.sent > FIRST_FLIGHT_DATAGRAMS
    assert outbound.sent >= 1
    assert outbound.sent_bytes <= 3 * inbound.delivered_bytes, (inbound, outbound)


def large_certificate() -> trioquic.DevelopmentCertificate:
    # About 8 KB of certificate: the server's first flight cannot fit in
    # three times a client's Initial.
    names = ["localhost"] + [f"host-{i:04d}.example.com" for i in range(300)]
    return trioquic.generate_self_signed_certificate(names)


@pytest.fixture(scope="module")
def big_certificate() -> trioquic.DevelopmentCertificate:
    return large_certificate()


async def test_a_large_certificate_chain_waits_for_address_validation(
    autojump_clock: trio.testing.MockClock,
    big_certificate: trioquic.DevelopmentCertificate,
) -> None:
    assert big_certificate.certificate_path.stat().st_size > 8000
    settings = server_settings(
        handshake_timeout=5,
        certificate=str(big_certificate.certificate_path),
        private_key=str(big_certificate.private_key_path),
    )
    with trio.fail_after(120):
        inbound, outbound = await silent_client_run(
            settings, client_settings(handshake_timeout=2)
        )
    assert inbound.delivered == FIRST_FLIGHT_DATAGRAMS
    # The server had far more to send, and stopped at the limit.
    assert outbound.sent_bytes <= 3 * inbound.delivered_bytes, (inbound, outbound)
    assert outbound.sent_bytes > 2 * inbound.delivered_bytes, (inbound, outbound)


async def test_a_large_certificate_chain_still_reaches_a_real_client(
    autojump_clock: trio.testing.MockClock,
    big_certificate: trioquic.DevelopmentCertificate,
) -> None:
    """Once the client answers (its address is validated) the rest flows."""
    network = MemoryNetwork(conditions=LinkConditions(delay=0.01))
    sock = network.socket(*SERVER)
    settings = server_settings(
        certificate=str(big_certificate.certificate_path),
        private_key=str(big_certificate.private_key_path),
    )
    client = client_settings(ca_certs=str(big_certificate.certificate_path))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    trioquic.serve_quic,
                    wait_forever,
                    SERVER[1],
                    settings=settings,
                    sockets=[sock],
                )
            )
            async with trioquic.open_quic_connection(
                *SERVER, settings=client, socket=network.socket(CLIENT_HOST)
            ) as connection:
                assert connection.handshake is not None
            nursery.cancel_scope.cancel()
    inbound = network.link_statistics(CLIENT_HOST, SERVER[0])
    outbound = network.link_statistics(SERVER[0], CLIENT_HOST)
    # More than a silent client could ever get (3 x its 1350-byte Initial).
    assert outbound.sent_bytes > 3 * 1350
    assert inbound.delivered >= 2
