"""Address validation tokens for Retry (RFC 9000 section 8.1.2).

A token says "this client address asked to connect, with this original
destination connection ID, and we answered with this Retry source connection
ID, at this time". It is authenticated with HMAC-SHA256 under a key that
lives only in this endpoint's memory, bound to the client's address, and
expires. Nothing in it is secret, so it is not encrypted.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import Any

import attrs

_FORMAT = 1
_MAC_SIZE = 16
_HEADER = struct.Struct("!BQ")  # format, expiry in milliseconds of endpoint time


@attrs.frozen
class ValidatedToken:
    original_destination_cid: bytes
    retry_source_cid: bytes


def _address_bytes(addr: Any) -> bytes:
    host, port = addr[0], addr[1]
    return f"{host}|{port}".encode()


class RetryTokens:
    """Mints and checks Retry tokens for one endpoint."""

    def __init__(self, *, lifetime: float = 10.0, key: bytes | None = None) -> None:
        if lifetime <= 0:
            raise ValueError(f"token lifetime must be positive, got {lifetime}")
        self._key = key if key is not None else os.urandom(32)
        self.lifetime = lifetime

    def _mac(self, addr: Any, body: bytes) -> bytes:
        message = _address_bytes(addr) + b"\x00" + body
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_SIZE]

    def mint(
        self,
        addr: Any,
        original_destination_cid: bytes,
        retry_source_cid: bytes,
        now: float,
    ) -> bytes:
        expiry = int((now + self.lifetime) * 1000)
        body = (
            _HEADER.pack(_FORMAT, max(0, expiry))
            + bytes([len(original_destination_cid)])
            + original_destination_cid
            + bytes([len(retry_source_cid)])
            + retry_source_cid
        )
        return body + self._mac(addr, body)

    def validate(self, token: bytes, addr: Any, now: float) -> ValidatedToken | None:
        """The token's connection IDs if it is ours, for ``addr``, and not
        expired; otherwise None."""
        if len(token) < _HEADER.size + 2 + _MAC_SIZE:
            return None
        body, mac = token[:-_MAC_SIZE], token[-_MAC_SIZE:]
        if not hmac.compare_digest(mac, self._mac(addr, body)):
            return None
        version, expiry = _HEADER.unpack_from(body)
        if version != _FORMAT or now * 1000 > expiry:
            return None
        offset = _HEADER.size
        odcid_length = body[offset]
        odcid = body[offset + 1 : offset + 1 + odcid_length]
        offset += 1 + odcid_length
        if offset >= len(body):
            return None
        rscid_length = body[offset]
        rscid = body[offset + 1 : offset + 1 + rscid_length]
        if offset + 1 + rscid_length != len(body):
            return None
        return ValidatedToken(
            original_destination_cid=bytes(odcid), retry_source_cid=bytes(rscid)
        )
