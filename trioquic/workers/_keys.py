"""The keys every server behind one address shares, from one secret."""

from __future__ import annotations

import hashlib
import hmac

import attrs

from .._settings import QuicSettings

__all__ = ["SharedKeys", "shared_keys"]

#: Labels of the derived keys (changing one changes every key made from it).
_RESET_LABEL = b"trioquic stateless reset key v1"
_RETRY_LABEL = b"trioquic retry token key v1"


@attrs.frozen
class SharedKeys:
    """The keys of :class:`~trioquic.QuicSettings` that servers behind one
    address share."""

    stateless_reset_key: bytes = attrs.field(repr=False)
    retry_token_key: bytes = attrs.field(repr=False)

    def apply(self, settings: QuicSettings) -> QuicSettings:
        """``settings`` with these keys."""
        return attrs.evolve(
            settings,
            stateless_reset_key=self.stateless_reset_key,
            retry_token_key=self.retry_token_key,
        )


def shared_keys(secret: bytes) -> SharedKeys:
    """``stateless_reset_key`` and ``retry_token_key`` for
    :class:`~trioquic.QuicSettings`, derived from ``secret`` (HMAC-SHA256
    with a label each)::

        settings = trioquic.workers.shared_keys(secret).apply(settings)

    Give every worker and every machine behind one address the same secret:
    any of them can then reset a connection another one held (so its client
    learns at once that it is gone) and accept the Retry tokens another one
    minted. At least 16 bytes; 32 random bytes are best. Keep it as secret
    as a TLS private key.
    """
    if not isinstance(secret, bytes):
        raise TypeError(f"secret must be bytes, got {type(secret).__name__}")
    if len(secret) < 16:
        raise ValueError(
            f"secret must be at least 16 bytes (32 random bytes are best), "
            f"got {len(secret)}"
        )
    return SharedKeys(
        stateless_reset_key=hmac.digest(secret, _RESET_LABEL, hashlib.sha256),
        retry_token_key=hmac.digest(secret, _RETRY_LABEL, hashlib.sha256),
    )
