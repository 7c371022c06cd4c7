"""Stateless reset (RFC 9000 section 10.3), as pure code.

A server that has lost a connection's state (it restarted, or the connection
ended) answers that connection's packets with a *stateless reset*: a datagram
that looks like a short-header packet and ends with the 16-byte token the
server announced for the connection ID the packet was sent to. The client
recognises the token and drops the connection at once instead of waiting for
its idle timeout.

To answer without state, the token is derived from the connection ID with a
static key (RFC 9000 section 10.3.2): ``HMAC-SHA256(key, cid)[:16]``. The key
lives in the endpoint (``QuicSettings.stateless_reset_key``, random per
endpoint by default); an endpoint restarted with the same key can reset the
connections of its previous life.

Nothing here does I/O, keeps a clock or imports aioquic.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable

#: Length of a stateless reset token.
STATELESS_RESET_TOKEN_SIZE = 16
#: The smallest stateless reset: 5 bytes that look like a short header
#: (2 fixed bits and at least 38 unpredictable bits), then the token.
MIN_STATELESS_RESET_SIZE = 5 + STATELESS_RESET_TOKEN_SIZE
#: The largest reset we send: RFC 9000 section 10.3 asks a reset answering a
#: packet of up to 43 bytes to be one byte shorter than it; larger triggers
#: get a 43-byte reset (still smaller than the trigger, so two endpoints can
#: never answer each other's resets forever).
MAX_STATELESS_RESET_SIZE = 43
#: Key length when the endpoint makes its own key.
STATELESS_RESET_KEY_SIZE = 32
#: The shortest key ``QuicSettings.stateless_reset_key`` accepts.
MIN_STATELESS_RESET_KEY_SIZE = 16


class StatelessResetKey:
    """Derives stateless reset tokens from connection IDs (one per endpoint)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | None = None) -> None:
        if key is None:
            key = os.urandom(STATELESS_RESET_KEY_SIZE)
        if len(key) < MIN_STATELESS_RESET_KEY_SIZE:
            raise ValueError(
                f"a stateless reset key must be at least "
                f"{MIN_STATELESS_RESET_KEY_SIZE} bytes, got {len(key)}"
            )
        self._key = bytes(key)

    def token(self, cid: bytes) -> bytes:
        """The stateless reset token of our connection ID ``cid``."""
        return hmac.new(self._key, cid, hashlib.sha256).digest()[
            :STATELESS_RESET_TOKEN_SIZE
        ]

    def __repr__(self) -> str:  # never show the key
        return "<StatelessResetKey>"


def stateless_reset_size(trigger_size: int) -> int | None:
    """How large a reset answering a ``trigger_size``-byte datagram is, or
    None when it must not be answered.

    The reset is always smaller than its trigger (so a reset can never start
    a loop of resets, RFC 9000 section 10.3.3) and at least
    :data:`MIN_STATELESS_RESET_SIZE`; so datagrams of up to
    ``MIN_STATELESS_RESET_SIZE + 1`` bytes, which could only be resets
    themselves, are never answered.
    """
    if trigger_size <= MIN_STATELESS_RESET_SIZE + 1:
        return None
    return min(trigger_size - 1, MAX_STATELESS_RESET_SIZE)


def encode_stateless_reset(
    token: bytes, size: int, random: Callable[[int], bytes] = os.urandom
) -> bytes:
    """A stateless reset of ``size`` bytes ending with ``token``: a first
    byte ``0b01xxxxxx`` (short header form, fixed bit set), unpredictable
    bytes, the token."""
    if len(token) != STATELESS_RESET_TOKEN_SIZE:
        raise ValueError(f"a stateless reset token is 16 bytes, got {len(token)}")
    if size < MIN_STATELESS_RESET_SIZE:
        raise ValueError(
            f"a stateless reset is at least {MIN_STATELESS_RESET_SIZE} bytes, "
            f"got {size}"
        )
    body = random(size - STATELESS_RESET_TOKEN_SIZE)
    return bytes([0x40 | (body[0] & 0x3F)]) + body[1:] + token


def is_stateless_reset(data: bytes, tokens: Iterable[bytes]) -> bool:
    """Whether ``data`` (one UDP payload) looks like a stateless reset carrying
    one of ``tokens`` (RFC 9000 section 10.3.1): short header form, at least
    :data:`MIN_STATELESS_RESET_SIZE` bytes, ending with a token. The tokens
    are compared in constant time. The caller must still check that the
    datagram could not be processed as a packet."""
    if len(data) < MIN_STATELESS_RESET_SIZE or data[0] & 0x80:
        return False
    tail = bytes(data[-STATELESS_RESET_TOKEN_SIZE:])
    found = False
    for token in tokens:
        # no early exit: the time taken does not say which token matched
        found |= hmac.compare_digest(tail, token)
    return found


class TokenBucket:
    """A rate limit: on average ``rate`` events per second, in bursts of at
    most ``burst``. ``rate == 0`` allows nothing."""

    __slots__ = ("_last", "_level", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate < 0:
            raise ValueError(f"rate must be at least 0, got {rate}")
        self.rate = float(rate)
        self.burst = float(max(1.0, rate) if burst is None else burst)
        self._level = self.burst if rate > 0 else 0.0
        self._last: float | None = None

    def take(self, now: float) -> bool:
        """Spend one token at time ``now`` if there is one."""
        if self.rate <= 0:
            return False
        last = self._last
        if last is not None and now > last:
            self._level = min(self.burst, self._level + (now - last) * self.rate)
        if last is None or now > last:
            self._last = now
        if self._level >= 1.0:
            self._level -= 1.0
            return True
        return False
