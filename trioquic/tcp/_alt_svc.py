"""``Alt-Svc`` (RFC 7838): how a TCP response tells a client that the same
origin speaks HTTP/3 on a UDP port."""

from __future__ import annotations

import operator


def alt_svc_value(port: int, max_age: int = 86400) -> str:
    """The ``Alt-Svc`` value that advertises HTTP/3 on ``port`` of the same
    host for ``max_age`` seconds: ``alt_svc_value(443)`` is
    ``'h3=":443"; ma=86400'``."""
    port = operator.index(port)
    max_age = operator.index(max_age)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1 to 65535, got {port}")
    if max_age < 0:
        raise ValueError(f"max_age must be 0 or more seconds, got {max_age}")
    return f'h3=":{port}"; ma={max_age}'
