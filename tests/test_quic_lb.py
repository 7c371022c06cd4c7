"""QUIC-LB connection IDs: the draft's test vectors, the layout, and every
connection ID a server issues carrying its server ID."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from helpers import connected_pair
from hypothesis import given
from hypothesis import strategies as st

import trioquic
from trioquic import QuicLbConfig
from trioquic.testing import MemoryNetwork

# draft-ietf-quic-load-balancers, appendix "Load Balancer Test Vectors" (the
# server encodes the CID length in all of them).
PLAINTEXT_VECTORS = [
    # cr_bits, server ID, nonce, connection ID
    (0, "c4605e", "4504cc4f", "07c4605e4504cc4f"),
]
#: The single-pass block cipher (server ID and nonce are 16 octets).
KEY = bytes.fromhex("8f95f09245765f80256934e50c66207f")
ENCRYPTED_VECTORS = [
    (2, "ed793a51d49b8f5f", "ee080dbf48c0d1e5", "504dd2d05a7b0de9b2b9907afb5ecf8cc3"),
]


@pytest.mark.parametrize(("cr", "sid", "nonce", "cid"), PLAINTEXT_VECTORS)
def test_plaintext_vectors(cr: int, sid: str, nonce: str, cid: str) -> None:
    config = QuicLbConfig(
        server_id=bytes.fromhex(sid), nonce_length=len(nonce) // 2, config_rotation=cr
    )
    assert config.encode(bytes.fromhex(nonce)).hex() == cid
    assert config.decode(bytes.fromhex(cid)) == bytes.fromhex(sid)


@pytest.mark.parametrize(("cr", "sid", "nonce", "cid"), ENCRYPTED_VECTORS)
def test_single_pass_block_cipher_vectors(
    cr: int, sid: str, nonce: str, cid: str
) -> None:
    config = QuicLbConfig(
        server_id=bytes.fromhex(sid),
        nonce_length=len(nonce) // 2,
        config_rotation=cr,
        key=KEY,
    )
    assert config.encode(bytes.fromhex(nonce)).hex() == cid
    assert config.decode(bytes.fromhex(cid)) == bytes.fromhex(sid)
    # Without the key nothing of the server ID shows.
    assert bytes.fromhex(sid) not in bytes.fromhex(cid)


@given(
    server_id=st.binary(min_size=1, max_size=15),
    extra=st.integers(min_value=0, max_value=14),
    rotation=st.integers(min_value=0, max_value=6),
    encode_length=st.booleans(),
)
def test_generated_ids_decode_to_their_server(
    server_id: bytes, extra: int, rotation: int, encode_length: bool
) -> None:
    nonce_length = min(4 + extra, 19 - len(server_id))
    config = QuicLbConfig(
        server_id=server_id,
        nonce_length=nonce_length,
        config_rotation=rotation,
        encode_length=encode_length,
    )
    cid = config.generate()
    assert len(cid) == config.connection_id_length == 1 + len(server_id) + nonce_length
    assert cid[0] >> 5 == rotation
    if encode_length:
        assert cid[0] & 0x1F == len(cid) - 1
    assert config.decode(cid) == server_id
    assert cid[1 : 1 + len(server_id)] == server_id  # plaintext: readable as is
    # Another configuration's IDs are not this one's.
    other = QuicLbConfig(
        server_id=server_id,
        nonce_length=nonce_length,
        config_rotation=(rotation + 1) % 7,
    )
    assert config.decode(other.generate()) is None
    assert config.decode(cid[:-1]) is None


def test_nonces_differ() -> None:
    config = QuicLbConfig(server_id=b"\x07")
    assert len({config.generate() for _ in range(1000)}) == 1000


def test_for_worker_adds_the_index_to_the_last_octet() -> None:
    config = QuicLbConfig(server_id=b"\x0a\x10", nonce_length=5)
    assert config.for_worker(0) == config
    assert config.for_worker(3).server_id == b"\x0a\x13"
    assert config.for_worker(3).decode(config.for_worker(3).generate()) == b"\x0a\x13"
    with pytest.raises(ValueError, match="last octet"):
        QuicLbConfig(server_id=b"\xfe").for_worker(2)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"server_id": "01"}, TypeError, "server_id must be bytes"),
        ({"server_id": b""}, ValueError, "1 to 15 octets"),
        ({"server_id": b"\x01" * 16}, ValueError, "1 to 15 octets"),
        ({"server_id": b"\x01", "nonce_length": 3}, ValueError, "between 4 and 18"),
        ({"server_id": b"\x01" * 15, "nonce_length": 5}, ValueError, "at most 19"),
        ({"server_id": b"\x01", "config_rotation": 7}, ValueError, "between 0 and 6"),
        ({"server_id": b"\x01", "key": b"k"}, ValueError, "16 octets"),
        (
            {"server_id": b"\x01", "nonce_length": 6, "key": KEY},
            ValueError,
            "nonce_length=15",
        ),
    ],
)
def test_bad_configurations(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        QuicLbConfig(**kwargs)


def test_settings_take_the_length_from_the_configuration() -> None:
    config = QuicLbConfig(server_id=b"\x01\x02", nonce_length=9)
    aioquic = trioquic.QuicSettings(engine="aioquic", quic_lb=config)
    assert aioquic.connection_id_length == 12
    with pytest.raises(ValueError, match="leave it out"):
        trioquic.QuicSettings(engine="aioquic", quic_lb=config, connection_id_length=8)
    with pytest.raises(TypeError):
        trioquic.QuicSettings(quic_lb=b"\x01")  # type: ignore[arg-type]


def test_qh3_refuses_quic_lb() -> None:
    with pytest.raises(ValueError, match="engine='aioquic'"):
        trioquic.QuicSettings(
            engine="qh3",
            congestion_control="cubic",
            quic_lb=QuicLbConfig(server_id=b"\x01"),
        )


def _server_cids(network: MemoryNetwork, server: tuple[str, int]) -> list[bytes]:
    """Record the destination CID of every packet sent to ``server``: in
    short headers and in the client's Handshake packets these are IDs the
    server issued."""
    seen: list[bytes] = []
    transmit = network._transmit

    def tap(sender: Any, data: bytes, destination: Any) -> None:
        if tuple(destination) == server and data:
            if data[0] & 0x80:
                packet_type = (data[0] & 0x30) >> 4
                if packet_type == 2:  # Handshake: the server's CID
                    seen.append(bytes(data[6 : 6 + data[5]]))
            else:
                seen.append(bytes(data[1:]))  # trimmed by the caller
        transmit(sender, data, destination)

    network._transmit = tap  # type: ignore[method-assign]
    return seen


@pytest.mark.aioquic_only(
    "qh3's core issues a connection's later connection IDs itself: quic_lb "
    "is refused on qh3"
)
@pytest.mark.parametrize("retry", ["never", "always"])
async def test_every_issued_connection_id_carries_the_server_id(
    autojump_clock: trio.testing.MockClock, retry: str
) -> None:
    config = QuicLbConfig(server_id=b"\x5a\x03", nonce_length=7, config_rotation=1)
    network = MemoryNetwork()
    seen = _server_cids(network, ("10.0.0.1", 4433))
    with trio.fail_after(60):
        async with connected_pair(
            network=network,
            quic_lb=config,
            retry=retry,
            active_connection_id_limit=4,
        ) as pair:
            stream = await pair.client.open_stream()
            await stream.send_all(b"x")
            accepted = await pair.server.accept_stream()
            assert isinstance(accepted, trioquic.QuicStream)
            assert await accepted.receive_some() == b"x"
            for _ in range(3):
                await stream.send_all(b"x" * 1000)
                received = bytearray()
                while len(received) < 1000:
                    received.extend(await accepted.receive_some())
                # A new address: the client moves to the next connection ID
                # the server issued (NEW_CONNECTION_ID).
                await pair.client.rebind()
                await trio.sleep(1)
    cids = {cid[: config.connection_id_length] for cid in seen}
    assert len(cids) >= 3  # the first ID and two issued later
    for cid in cids:
        assert config.decode(cid) == b"\x5a\x03", cid.hex()
        assert cid[0] == (1 << 5) | (config.connection_id_length - 1)
