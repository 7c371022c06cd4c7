"""Connection IDs that say where a connection lives: the QUIC-LB layout.

draft-ietf-quic-load-balancers ("QUIC-LB: Generating Routable QUIC
Connection IDs") has servers issue connection IDs from which a load balancer
that shares a little configuration, but no per-connection state, reads the
*server ID* of the server that holds the connection. Every packet of a
connection then reaches the same server, whatever its address (NAT
rebinding, migration, :meth:`~trioquic.QuicConnection.rebind`), and whichever
of the connection's IDs it carries.

Layout of one connection ID (``cr`` config rotation, ``len`` the length of
what follows the first octet)::

    +----------+----------+------------------+---------------------+
    | cr (3)   | len (5)  | server ID (1-15) | nonce (4-18)        |
    +----------+----------+------------------+---------------------+
      first octet

The *plaintext* algorithm puts the server ID in the clear; the *block
cipher* algorithm (a ``key``) encrypts server ID and nonce together. trioquic
implements the block cipher's single-pass case only: server ID and nonce of
16 octets together, one AES-128-ECB block. Config rotation ``0b111`` (7)
means "not routable by ID" in the draft and is not a configuration.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["QuicLbConfig"]

#: The draft's bounds: a server ID of 1 to 15 octets, a nonce of 4 to 18,
#: together at most 19 (a connection ID is at most 20 octets).
MAX_SERVER_ID_LENGTH = 15
MIN_NONCE_LENGTH = 4
MAX_NONCE_LENGTH = 18
MAX_PLAINTEXT_LENGTH = 19
#: AES-128: the single-pass block cipher encrypts exactly one block.
BLOCK_LENGTH = 16


def _server_id(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, bytes):
        raise TypeError(
            f"QuicLbConfig.server_id must be bytes, got {type(value).__name__}"
        )
    if not 1 <= len(value) <= MAX_SERVER_ID_LENGTH:
        raise ValueError(
            f"QuicLbConfig.server_id must be 1 to {MAX_SERVER_ID_LENGTH} octets, "
            f"got {len(value)}"
        )


def _int_in(low: int, high: int) -> Any:
    def check(instance: Any, attribute: Any, value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(
                f"QuicLbConfig.{attribute.name} must be an int, "
                f"got {type(value).__name__}"
            )
        if not low <= value <= high:
            raise ValueError(
                f"QuicLbConfig.{attribute.name} must be between {low} and "
                f"{high}, got {value}"
            )

    return check


def _key(instance: Any, attribute: Any, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, bytes):
        raise TypeError(f"QuicLbConfig.key must be bytes, got {type(value).__name__}")
    if len(value) != 16:
        raise ValueError(
            f"QuicLbConfig.key must be 16 octets (AES-128), got {len(value)}"
        )


@attrs.frozen(kw_only=True)
class QuicLbConfig:
    """How this server's connection IDs encode its server ID (QUIC-LB).

    Give it to :class:`~trioquic.QuicSettings` as ``quic_lb``; every
    connection ID the endpoint issues then has this layout, and its
    ``connection_id_length`` is :attr:`connection_id_length`.

    Every server behind one load balancer gets the same ``config_rotation``,
    server-ID length, ``nonce_length`` and ``key``, and its own
    ``server_id``. ``serve --workers N`` adds the worker's index to the last
    octet of the server ID (see :meth:`for_worker`).
    """

    #: This server's ID, 1 to 15 octets.
    server_id: bytes = attrs.field(validator=_server_id)
    #: Random octets after the server ID, 4 to 18 (server ID and nonce are at
    #: most 19 octets together).
    nonce_length: int = attrs.field(
        default=6, validator=_int_in(MIN_NONCE_LENGTH, MAX_NONCE_LENGTH)
    )
    #: The configuration's number, 0 to 6, in the first octet's top three
    #: bits: a load balancer uses it to tell old configurations from new
    #: ones while they change.
    config_rotation: int = attrs.field(default=0, validator=_int_in(0, 6))
    #: An AES-128 key: server ID and nonce are then encrypted (the draft's
    #: block cipher, single pass: together they must be 16 octets), so only
    #: who holds the key can read the server ID. ``None``: plaintext, which
    #: a load balancer (or the kernel, for ``--workers``) reads as it is.
    key: bytes | None = attrs.field(default=None, validator=_key, repr=False)
    #: Whether the first octet's low five bits give the length of what
    #: follows (length self-description); else they are random.
    encode_length: bool = attrs.field(
        default=True, validator=attrs.validators.instance_of(bool)
    )

    def __attrs_post_init__(self) -> None:
        plaintext = len(self.server_id) + self.nonce_length
        if plaintext > MAX_PLAINTEXT_LENGTH:
            raise ValueError(
                "QuicLbConfig: server_id and nonce_length together must be at "
                f"most {MAX_PLAINTEXT_LENGTH} octets, got {plaintext}"
            )
        if self.key is not None and plaintext != BLOCK_LENGTH:
            raise ValueError(
                "QuicLbConfig: with a key, server_id and nonce_length must be "
                f"{BLOCK_LENGTH} octets together (one AES block; got "
                f"{plaintext}): set nonce_length={BLOCK_LENGTH - len(self.server_id)}"
            )

    @property
    def connection_id_length(self) -> int:
        """The length of every connection ID this configuration makes."""
        return 1 + len(self.server_id) + self.nonce_length

    @property
    def server_id_length(self) -> int:
        return len(self.server_id)

    def first_octet(self, random_bits: int = 0) -> int:
        """The first octet: config rotation, then the length (or random bits)."""
        low = (
            self.connection_id_length - 1 if self.encode_length else random_bits & 0x1F
        )
        return (self.config_rotation << 5) | low

    def generate(self) -> bytes:
        """A new connection ID carrying this server ID and a random nonce."""
        random = os.urandom(1 + self.nonce_length)
        plaintext = self.server_id + random[1:]
        return bytes([self.first_octet(random[0])]) + self._encrypt(plaintext)

    def encode(self, nonce: bytes, random_bits: int = 0) -> bytes:
        """The connection ID for this server ID and ``nonce`` (for tests and
        tools: :meth:`generate` draws the nonce itself)."""
        if len(nonce) != self.nonce_length:
            raise ValueError(
                f"the nonce must be {self.nonce_length} octets, got {len(nonce)}"
            )
        return bytes([self.first_octet(random_bits)]) + self._encrypt(
            self.server_id + nonce
        )

    def decode(self, connection_id: bytes) -> bytes | None:
        """The server ID in ``connection_id``, or None when it is not one of
        this configuration's (another config rotation, too short)."""
        if len(connection_id) < self.connection_id_length:
            return None
        if connection_id[0] >> 5 != self.config_rotation:
            return None
        body = connection_id[1 : self.connection_id_length]
        if self.key is not None:
            body = self._decrypt(body)
        return body[: len(self.server_id)]

    def for_worker(self, index: int) -> QuicLbConfig:
        """The configuration of worker ``index`` of a ``--workers`` server:
        ``index`` added to the server ID's last octet (which must not
        overflow), the rest unchanged."""
        last = self.server_id[-1] + index
        if not 0 <= last <= 0xFF:
            raise ValueError(
                f"worker {index} does not fit in the server ID's last octet "
                f"(0x{self.server_id[-1]:02x} + {index} > 0xff): give a server ID "
                "whose last octet leaves room for every worker"
            )
        return attrs.evolve(self, server_id=self.server_id[:-1] + bytes([last]))

    def _encrypt(self, plaintext: bytes) -> bytes:
        if self.key is None:
            return plaintext
        encryptor = Cipher(algorithms.AES(self.key), modes.ECB()).encryptor()
        return encryptor.update(plaintext) + encryptor.finalize()

    def _decrypt(self, ciphertext: bytes) -> bytes:
        assert self.key is not None
        decryptor = Cipher(algorithms.AES(self.key), modes.ECB()).decryptor()
        return decryptor.update(ciphertext) + decryptor.finalize()
