"""What every peer of the HTTP/3 request benchmark shares.

The QUIC settings are aioquic's defaults because hypercorn cannot change
them (it builds its ``QuicConfiguration`` from defaults); the other servers
use the same values so that all three negotiate the same transport.
"""

from __future__ import annotations

import contextlib
import os
import re

HOST = "127.0.0.1"
#: aioquic's defaults (``QuicConfiguration``), which hypercorn uses as they are.
MAX_UDP_PAYLOAD = 1200
CONGESTION_CONTROL = "reno"
CONNECTION_WINDOW = 1024 * 1024
STREAM_WINDOW = 1024 * 1024
IDLE_TIMEOUT = 60.0
#: Bidirectional streams a peer may open at once: aioquic's fixed value.
MAX_STREAMS = 128
#: Largest body a server will produce for ``GET /bytes/<n>``.
MAX_BODY = 1024 * 1024
CONTENT_TYPE = b"application/octet-stream"

_PATH = re.compile(rb"/bytes/(\d{1,7})")


def body_size(method: bytes, path: bytes) -> int | None:
    """The size asked for by ``GET /bytes/<n>``, or None (answer 404)."""
    match = _PATH.fullmatch(path)
    if method != b"GET" or match is None:
        return None
    size = int(match.group(1))
    return size if size <= MAX_BODY else None


def payload(size: int) -> bytes:
    # Content does not change the cost (AEAD is content-blind); fixed for
    # reproducibility.
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def pin_to(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})
