"""An Initial packet carrying CONNECTION_CLOSE, sealed without a connection
(RFC 9001 section 5: Initial keys come from the client's destination
connection ID). qh3 seals packets only inside its native core, which needs
the client's packet first; a refusal must not read it."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from qh3.tls import CipherSuite, cipher_suite_hash, hkdf_expand_label, hkdf_extract

from .._varint import encode_varint

#: Initial salts (RFC 9001 section 5.2, RFC 9369 section 3.3.1).
_SALTS = {
    0x00000001: bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
    0x6B3343CF: bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
}
_LABELS = {0x00000001: b"quic", 0x6B3343CF: b"quicv2"}
#: Long header packet type bits of an Initial, by version.
_INITIAL_TYPE = {0x00000001: 0x00, 0x6B3343CF: 0x10}
_TRANSPORT_CLOSE = 0x1C
_PADDING_FRAME = 0x00
_PN_LENGTH = 2


def initial_close(
    *,
    version: int,
    destination_cid: bytes,
    source_cid: bytes,
    error_code: int,
    reason: str,
) -> bytes:
    """A server's Initial packet to a client whose first Initial went to
    ``destination_cid`` from ``source_cid``, carrying CONNECTION_CLOSE."""
    if version not in _SALTS:
        raise ValueError(f"no Initial keys for QUIC version 0x{version:08x}")
    algorithm = cipher_suite_hash(CipherSuite.AES_128_GCM_SHA256)
    initial = hkdf_extract(algorithm, _SALTS[version], destination_cid)
    secret = hkdf_expand_label(algorithm, initial, b"server in", b"", 32)
    label = _LABELS[version]
    key = hkdf_expand_label(algorithm, secret, label + b" key", b"", 16)
    iv = hkdf_expand_label(algorithm, secret, label + b" iv", b"", 12)
    hp = hkdf_expand_label(algorithm, secret, label + b" hp", b"", 16)

    reason_bytes = reason.encode()
    payload = (
        encode_varint(_TRANSPORT_CLOSE)
        + encode_varint(error_code)
        + encode_varint(_PADDING_FRAME)
        + encode_varint(len(reason_bytes))
        + reason_bytes
    )
    # Enough payload for the 16-byte header protection sample (RFC 9001
    # section 5.4.2): PADDING frames.
    payload += bytes(max(0, 20 - _PN_LENGTH - len(payload)))
    packet_number = 0
    server_cid = os.urandom(8)
    header = (
        bytes([0xC0 | _INITIAL_TYPE[version] | (_PN_LENGTH - 1)])
        + version.to_bytes(4, "big")
        + bytes([len(source_cid)])
        + source_cid
        + bytes([len(server_cid)])
        + server_cid
        + encode_varint(0)  # no token
        + ((_PN_LENGTH + len(payload) + 16) | 0x4000).to_bytes(2, "big")
    )
    pn_offset = len(header)
    header += packet_number.to_bytes(_PN_LENGTH, "big")
    nonce = iv[:-8] + (int.from_bytes(iv[-8:], "big") ^ packet_number).to_bytes(
        8, "big"
    )
    sealed = AESGCM(key).encrypt(nonce, payload, header)
    sample = sealed[4 - _PN_LENGTH : 20 - _PN_LENGTH]
    encryptor = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = encryptor.update(sample) + encryptor.finalize()
    packet = bytearray(header + sealed)
    packet[0] ^= mask[0] & 0x0F
    for i in range(_PN_LENGTH):
        packet[pn_offset + i] ^= mask[1 + i]
    return bytes(packet)
