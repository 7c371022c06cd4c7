"""The routing decisions, on bytes alone (no sockets, no tasks)."""

from __future__ import annotations

import os

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection as AioquicConnection
from hypothesis import given
from hypothesis import strategies as st

from trioquic._retry import RetryTokens
from trioquic._routing import (
    QUIC_VERSION_1,
    QUIC_VERSION_2,
    RESET_SOURCES,
    Accept,
    Deliver,
    Drop,
    DropReason,
    RefuseConnection,
    RejectToken,
    RetryPolicy,
    RoutingTable,
    SendRetry,
    SendStatelessReset,
    SendVersionNegotiation,
    encode_version_negotiation,
    parse_long_header,
)


def long_header(
    *,
    version: int = QUIC_VERSION_1,
    packet_type: int = 0,
    dcid: bytes = b"D" * 8,
    scid: bytes = b"S" * 8,
    size: int = 1200,
    fixed_bit: bool = True,
) -> bytes:
    first = 0x80 | (0x40 if fixed_bit else 0) | (packet_type << 4)
    header = (
        bytes([first])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
    )
    return header + b"\x00" * max(0, size - len(header))


def short_header(dcid: bytes, size: int = 60) -> bytes:
    return bytes([0x40]) + dcid + os.urandom(size - 1 - len(dcid))


def real_initial() -> tuple[bytes, bytes]:
    """A client's first datagram, made by an independent state machine."""
    client = AioquicConnection(configuration=QuicConfiguration(is_client=True))
    client.connect(("127.0.0.1", 4433), now=0.0)
    (data, _addr), *_ = client.datagrams_to_send(now=0.0)
    return data, client._peer_cid.cid


def server_table(**limits: int) -> RoutingTable[str]:
    return RoutingTable(cid_length=8, accept_new=True, **limits)  # type: ignore[arg-type]


def test_real_initial_is_accepted_with_its_connection_ids() -> None:
    data, dcid = real_initial()
    decision = server_table().route(data)
    assert isinstance(decision, Accept)
    assert decision.version == QUIC_VERSION_1
    assert decision.destination_cid == dcid


def test_initial_below_1200_bytes_is_dropped() -> None:
    decision = server_table().route(long_header(size=1199))
    assert decision == Drop(DropReason.INITIAL_TOO_SMALL)


def test_quic_v2_initial_uses_its_own_packet_type() -> None:
    table = server_table()
    assert isinstance(
        table.route(long_header(version=QUIC_VERSION_2, packet_type=1)), Accept
    )
    v2_zero_type = long_header(version=QUIC_VERSION_2, packet_type=0)
    assert table.route(v2_zero_type) == Drop(DropReason.NOT_INITIAL)


def test_handshake_packet_for_unknown_connection_is_not_accepted() -> None:
    decision = server_table().route(long_header(packet_type=2))
    assert decision == Drop(DropReason.NOT_INITIAL)


def test_short_header_routes_by_connection_id() -> None:
    table = server_table()
    table.add(b"A" * 8, "conn-a")
    table.add(b"B" * 8, "conn-b")
    assert table.route(short_header(b"A" * 8)) == Deliver("conn-a")
    assert table.route(short_header(b"B" * 8)) == Deliver("conn-b")
    assert table.route(short_header(b"C" * 8)) == Drop(DropReason.UNKNOWN_CONNECTION_ID)


def test_routing_ignores_the_source_address() -> None:
    """A client whose address changes (NAT rebinding) keeps its connection."""
    table = server_table()
    table.add(b"A" * 8, "conn-a")
    packet = short_header(b"A" * 8)
    assert table.route(packet, ("192.0.2.1", 1000)) == Deliver("conn-a")
    assert table.route(packet, ("192.0.2.1", 2000)) == Deliver("conn-a")


def test_long_header_for_known_cid_is_delivered() -> None:
    table = server_table()
    table.add(b"D" * 8, "conn")
    assert table.route(long_header(packet_type=2)) == Deliver("conn")
    # Even a small one (Handshake packets are not padded).
    assert table.route(long_header(packet_type=2, size=60)) == Deliver("conn")


def test_unsupported_version_gets_version_negotiation() -> None:
    decision = server_table().route(
        long_header(version=0x1A2A3A4A, dcid=b"d" * 9, scid=b"s" * 5)
    )
    assert isinstance(decision, SendVersionNegotiation)
    header = parse_long_header(decision.packet)
    assert header is not None
    assert header.version == 0
    # The client's connection IDs, swapped.
    assert header.destination_cid == b"s" * 5
    assert header.source_cid == b"d" * 9
    offered = decision.packet[len(decision.packet) - 8 :]
    assert offered == QUIC_VERSION_1.to_bytes(4, "big") + QUIC_VERSION_2.to_bytes(
        4, "big"
    )


def test_small_unsupported_version_is_not_answered() -> None:
    decision = server_table().route(long_header(version=0x1A2A3A4A, size=100))
    assert decision == Drop(DropReason.INITIAL_TOO_SMALL)


def test_version_negotiation_is_never_answered() -> None:
    packet = encode_version_negotiation(
        destination_cid=b"x" * 8, source_cid=b"y" * 8, versions=[0x0A0A0A0A]
    )
    assert server_table().route(packet + b"\x00" * 1200) == Drop(
        DropReason.VERSION_NEGOTIATION
    )


def test_client_table_delivers_version_negotiation_to_its_connection() -> None:
    table: RoutingTable[str] = RoutingTable(cid_length=8, accept_new=False)
    table.add(b"x" * 8, "client")
    packet = encode_version_negotiation(
        destination_cid=b"x" * 8, source_cid=b"y" * 8, versions=[QUIC_VERSION_1]
    )
    assert table.route(packet) == Deliver("client")


def test_client_table_never_accepts() -> None:
    table: RoutingTable[str] = RoutingTable(cid_length=8, accept_new=False)
    data, _ = real_initial()
    assert table.route(data) == Drop(DropReason.UNKNOWN_CONNECTION_ID)


def test_malformed_datagrams() -> None:
    table = server_table()
    assert table.route(b"") == Drop(DropReason.MALFORMED)
    assert table.route(b"\x40\x01") == Drop(DropReason.MALFORMED)  # short, truncated
    assert table.route(b"\x00" * 30) == Drop(DropReason.MALFORMED)  # fixed bit clear
    assert table.route(b"\xc0\x00\x00\x00\x01\x15") == Drop(DropReason.MALFORMED)
    # DCID length beyond 20 for a version we know.
    bad = bytearray(long_header())
    bad[5] = 21
    assert table.route(bytes(bad)) == Drop(DropReason.MALFORMED)
    # Initial with a DCID shorter than 8 bytes (RFC 9000 section 7.2).
    assert table.route(long_header(dcid=b"1234")) == Drop(DropReason.MALFORMED)
    # Long header without the fixed bit.
    assert table.route(long_header(fixed_bit=False)) == Drop(DropReason.MALFORMED)


def test_remove_only_forgets_the_owner() -> None:
    table = server_table()
    table.add(b"A" * 8, "new-owner")
    table.remove(b"A" * 8, "old-owner")
    assert table.route(short_header(b"A" * 8)) == Deliver("new-owner")
    table.remove(b"A" * 8, "new-owner")
    assert table.route(short_header(b"A" * 8)) == Drop(DropReason.UNKNOWN_CONNECTION_ID)
    assert len(table) == 0


def test_rejects_bad_cid_length() -> None:
    with pytest.raises(ValueError, match="cid_length"):
        RoutingTable(cid_length=0, accept_new=True)


@given(st.binary(max_size=1500))
def test_random_bytes_never_raise(data: bytes) -> None:
    table = server_table()
    table.add(b"A" * 8, "conn")
    decision = table.route(data)
    assert isinstance(decision, Deliver | Accept | SendVersionNegotiation | Drop)


@given(st.data())
def test_mutated_initials_never_raise(data: st.DataObject) -> None:
    packet = bytearray(long_header())
    for _ in range(data.draw(st.integers(0, 8))):
        index = data.draw(st.integers(0, len(packet) - 1))
        packet[index] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(packet)))
    decision = server_table().route(bytes(packet[:cut]))
    assert isinstance(decision, Deliver | Accept | SendVersionNegotiation | Drop)
    if isinstance(decision, SendVersionNegotiation):
        assert len(packet[:cut]) >= 1200


def retry_table(
    retry: RetryPolicy = "always", **kwargs: int | None
) -> RoutingTable[str]:
    return RoutingTable(
        cid_length=8,
        accept_new=True,
        retry_tokens=RetryTokens(lifetime=10.0),
        retry=retry,
        **kwargs,  # type: ignore[arg-type]
    )


def with_token(token: bytes, dcid: bytes) -> bytes:
    """An Initial carrying ``token`` (a one- or two-byte length varint)."""
    length = (
        bytes([len(token)])
        if len(token) < 64
        else (0x4000 | len(token)).to_bytes(2, "big")
    )
    header = (
        b"\xc0\x00\x00\x00\x01"
        + bytes([len(dcid)])
        + dcid
        + b"\x08"
        + b"S" * 8
        + length
        + token
    )
    return header + b"\x00" * (1200 - len(header))


def test_retry_is_required_only_by_the_policy() -> None:
    client = ("192.0.2.7", 5000)
    assert isinstance(retry_table("never").route(long_header(), client, 1.0), Accept)
    decision = retry_table("always").route(long_header(), client, 1.0)
    assert isinstance(decision, SendRetry)
    assert decision.destination_cid == b"S" * 8  # the client's source ID
    assert decision.original_destination_cid == b"D" * 8
    assert len(decision.source_cid) == 8


def test_a_valid_token_accepts_with_the_original_ids() -> None:
    table = retry_table()
    client = ("192.0.2.7", 5000)
    retry = table.route(long_header(), client, 1.0)
    assert isinstance(retry, SendRetry)
    second = with_token(retry.token, retry.source_cid)
    decision = table.route(second, client, 2.0)
    assert isinstance(decision, Accept)
    assert decision.original_destination_cid == b"D" * 8
    assert decision.retry_source_cid == retry.source_cid
    assert decision.destination_cid == retry.source_cid


def test_tokens_are_bound_to_address_and_time() -> None:
    table = retry_table()
    client = ("192.0.2.7", 5000)
    retry = table.route(long_header(), client, 1.0)
    assert isinstance(retry, SendRetry)
    second = with_token(retry.token, retry.source_cid)
    assert isinstance(table.route(second, ("192.0.2.8", 5000), 2.0), RejectToken)
    assert isinstance(table.route(second, ("192.0.2.7", 5001), 2.0), RejectToken)
    assert isinstance(table.route(second, client, 11.5), RejectToken)  # expired
    forged = bytearray(retry.token)
    forged[10] ^= 1
    assert isinstance(
        table.route(with_token(bytes(forged), retry.source_cid), client, 2.0),
        RejectToken,
    )
    # A token replayed with another destination ID is refused too.
    assert isinstance(
        table.route(with_token(retry.token, b"X" * 8), client, 2.0), RejectToken
    )


def test_retry_under_load_starts_at_the_threshold() -> None:
    table = retry_table("under-load", retry_threshold=2)
    client = ("192.0.2.7", 5000)
    assert isinstance(table.route(long_header(), client, 1.0), Accept)
    table.connection_accepted("a")
    assert isinstance(table.route(long_header(), client, 1.0), Accept)
    table.connection_accepted("b")
    assert table.pending_handshakes == 2
    assert isinstance(table.route(long_header(), client, 1.0), SendRetry)
    table.handshake_finished("a")
    assert isinstance(table.route(long_header(), client, 1.0), Accept)
    assert (table.connections, table.pending_handshakes) == (2, 1)


def test_max_connections_refuses_new_clients() -> None:
    table = server_table(max_connections=2)
    for target in ("a", "b"):
        table.connection_accepted(target)
        table.handshake_finished(target)
    decision = table.route(long_header())
    assert decision == RefuseConnection(QUIC_VERSION_1, b"D" * 8, b"S" * 8)
    table.connection_finished("a")
    assert isinstance(table.route(long_header()), Accept)
    # Behind Retry, a server at its limit refuses at once (no Retry first).
    retrying = retry_table("always", max_connections=1)
    retrying.connection_accepted("a")
    assert isinstance(retrying.route(long_header(), ("h", 1), 1.0), RefuseConnection)


def test_pending_handshakes_beyond_the_backlog_are_dropped() -> None:
    table = server_table(max_pending_handshakes=1)
    table.connection_accepted("a")
    assert table.route(long_header()) == Drop(DropReason.BACKLOG_FULL)
    table.handshake_finished("a")
    assert isinstance(table.route(long_header()), Accept)


def test_stateless_resets_are_rate_limited() -> None:
    table: RoutingTable[str] = RoutingTable(
        cid_length=8, accept_new=True, stateless_reset=True, stateless_reset_rate=2
    )
    unknown = short_header(b"Z" * 8, 100)
    decisions = [table.route(unknown, None, 10.0) for _ in range(4)]
    assert [type(d).__name__ for d in decisions] == [
        "SendStatelessReset",
        "SendStatelessReset",
        "Drop",
        "Drop",
    ]
    assert isinstance(table.route(unknown, None, 11.0), SendStatelessReset)


def test_policies_are_checked() -> None:
    with pytest.raises(ValueError, match="retry must be"):
        RoutingTable(cid_length=8, accept_new=True, retry="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs retry_tokens"):
        RoutingTable(cid_length=8, accept_new=True, retry="always")


def test_retry_token_without_key_is_ignored() -> None:
    """An endpoint that never sends Retry ignores tokens (RFC 9000 8.1.3)."""
    decision = server_table().route(with_token(b"t" * 40, b"D" * 8), ("h", 1), 1.0)
    assert isinstance(decision, Accept)


def test_stateless_resets_are_rate_limited_per_source_address() -> None:
    """One source cannot use up the budget: it gets its own rate, the others
    still get resets; the table of sources is bounded."""
    table: RoutingTable[str] = RoutingTable(
        cid_length=8,
        accept_new=True,
        stateless_reset=True,
        stateless_reset_rate=100,
        stateless_reset_rate_per_address=2,
    )
    unknown = short_header(b"Z" * 8, 100)
    noisy = [table.route(unknown, ("192.0.2.1", port), 5.0) for port in range(10)]
    assert sum(isinstance(d, SendStatelessReset) for d in noisy) == 2
    # Another host still gets its resets, at the same instant.
    other = [table.route(unknown, ("192.0.2.2", 4433), 5.0) for _ in range(3)]
    assert [isinstance(d, SendStatelessReset) for d in other] == [True, True, False]
    # A second later the noisy source has two tokens again.
    assert isinstance(table.route(unknown, ("192.0.2.1", 1), 6.0), SendStatelessReset)
    # The table of sources stays bounded, forgetting the least recent.
    for index in range(RESET_SOURCES + 10):
        table.route(
            unknown, (f"10.{index >> 16}.{index >> 8 & 255}.{index & 255}", 1), 7.0
        )
    assert len(table._reset_sources) == RESET_SOURCES  # private: the bound under test
