"""What every peer of the HTTP/3 benchmarks (requests and bulk) shares.

The QUIC settings are aioquic's defaults because hypercorn cannot change
them (it builds its ``QuicConfiguration`` from defaults); the other servers
and the Python clients use the same values so that all negotiate the same
transport. qh3 (aioquic's fork with a Rust transport core) is given the same
values too, with path MTU discovery off (its default is on) so that every
peer sends the same 1200-byte datagrams. qh3 has one congestion controller,
CUBIC: a run with a qh3 peer (qh3's asyncio layer, or trioquic on its qh3
engine) gives every peer that can choose CUBIC (:func:`congestion_control`).

Bodies up to :data:`CHUNK` bytes are answered in one piece (cached per size);
larger ones are sent as :data:`CHUNK`-byte pieces of one cached block, so a
50 MB body never exists in one piece in the server (what a stack buffers of
it is its own affair).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

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
MAX_BODY = 1024 * 1024 * 1024
#: Bodies larger than this are sent in pieces of this size.
CHUNK = 64 * 1024
CONTENT_TYPE = b"application/octet-stream"
NOT_FOUND = b"not found\n"

#: The sans-io QUIC libraries a peer can be built on (same module layout).
LIBRARIES = ("aioquic", "qh3")
#: trioquic's engines (``QuicSettings.engine``).
ENGINES = ("aioquic", "qh3")
#: qh3's only congestion controller.
QH3_CONGESTION_CONTROL = "cubic"
#: The DATAGRAM frame size qh3's peers announce (see quic_configuration).
QH3_DATAGRAM_FRAME_SIZE = 65536

_PATH = re.compile(rb"/bytes/(\d{1,10})")
_small: dict[int, bytes] = {}


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


def small_body(size: int) -> bytes:
    """The body of ``size`` <= :data:`CHUNK` bytes, cached."""
    assert size <= CHUNK
    return _small.get(size) or _small.setdefault(size, payload(size))


def body_chunks(size: int) -> Iterator[bytes]:
    """The body of ``size`` bytes as :data:`CHUNK`-byte pieces (the last one
    shorter); joined they equal ``payload(size)``."""
    block = small_body(CHUNK)
    whole, rest = divmod(size, CHUNK)
    for _ in range(whole):
        yield block
    if rest:
        yield block[:rest]


def answer(
    method: bytes, path: bytes
) -> tuple[int, list[tuple[bytes, bytes]], Iterator[tuple[bytes, bool]]]:
    """Status, headers (no pseudo-headers) and body pieces of the response to
    a request, each piece with a flag that says whether it is the last one.
    A body of at most :data:`CHUNK` bytes is one piece."""
    size = body_size(method, path)
    pieces: Iterator[bytes]
    if size is None:
        status, size, pieces = 404, len(NOT_FOUND), iter([NOT_FOUND])
    elif size <= CHUNK:
        status, pieces = 200, iter([small_body(size)])
    else:
        status, pieces = 200, body_chunks(size)
    headers = [
        (b"content-type", CONTENT_TYPE),
        (b"content-length", str(size).encode()),
    ]
    return status, headers, _mark_last(pieces)


def _mark_last(pieces: Iterator[bytes]) -> Iterator[tuple[bytes, bool]]:
    previous = next(pieces)
    for piece in pieces:
        yield previous, False
        previous = piece
    yield previous, True


def on_qh3(peers: Iterable[str]) -> bool:
    """Whether one of ``peers`` (server or client names: ``qh3``,
    ``trioquic-qh3``) runs on qh3."""
    return any(peer == "qh3" or peer.endswith("-qh3") for peer in peers)


def congestion_control(choice: str, peers: Iterable[str]) -> str:
    """The congestion control of a run: ``choice`` ("reno" or "cubic"), or
    for "auto" CUBIC when one of ``peers`` (server or client names) runs on
    qh3, which has nothing else, and Reno otherwise (aioquic's default, which
    hypercorn keeps whatever the run's choice)."""
    if choice != "auto":
        return choice
    return QH3_CONGESTION_CONTROL if on_qh3(peers) else CONGESTION_CONTROL


def add_cc_argument(parser: argparse.ArgumentParser) -> None:
    """``--cc``, the run's congestion control (see :func:`congestion_control`)."""
    parser.add_argument(
        "--cc",
        choices=("auto", "reno", "cubic"),
        default="auto",
        help="congestion control of every peer that can choose (auto: cubic "
        "when a qh3 column runs, qh3 having nothing else; reno otherwise)",
    )


def quic_configuration(
    library: str = "aioquic",
    *,
    is_client: bool,
    congestion_control: str = CONGESTION_CONTROL,
) -> Any:
    """``library``'s ``QuicConfiguration`` (aioquic or qh3) with the shared
    settings (ALPN h3) and ``congestion_control`` ("reno" or "cubic"; qh3
    refuses anything but CUBIC, its only controller)."""
    module = importlib.import_module
    alpn = module(f"{library}.h3.connection").H3_ALPN
    QuicConfiguration = module(f"{library}.quic.configuration").QuicConfiguration
    specific: dict[str, Any]
    if library == "qh3":
        if congestion_control != QH3_CONGESTION_CONTROL:
            raise ValueError(
                f"qh3 has CUBIC only, not {congestion_control!r} (use --cc cubic)"
            )
        specific = {
            "probe_datagram_size": False,
            # qh3's H3Connection always sends SETTINGS_H3_DATAGRAM=1, which an
            # HTTP/3 peer (qh3's own, aioquic's) refuses without this
            # transport parameter (H3_SETTINGS_ERROR).
            "max_datagram_frame_size": QH3_DATAGRAM_FRAME_SIZE,
        }
    else:
        specific = {"congestion_control_algorithm": congestion_control}
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=alpn,
        max_datagram_size=MAX_UDP_PAYLOAD,
        max_data=CONNECTION_WINDOW,
        max_stream_data=STREAM_WINDOW,
        idle_timeout=IDLE_TIMEOUT,
        **specific,
    )


def aioquic_configuration(
    *, is_client: bool, congestion_control: str = CONGESTION_CONTROL
) -> Any:
    """aioquic's ``QuicConfiguration`` with the shared settings (see
    :func:`quic_configuration`)."""
    return quic_configuration(
        "aioquic", is_client=is_client, congestion_control=congestion_control
    )


def qh3_engine_missing() -> str | None:
    """Why trioquic cannot run on its qh3 engine here, or None."""
    import importlib.util

    if importlib.util.find_spec("qh3") is None:
        return "qh3 is not installed (pip install trioquic[qh3])"
    try:
        import attrs

        import trioquic
    except ImportError as exc:
        return f"trioquic is unavailable: {exc}"
    names = {field.name for field in attrs.fields(trioquic.QuicSettings)}
    if "engine" not in names or importlib.util.find_spec("trioquic._qh3") is None:
        return "this trioquic has no qh3 engine (QuicSettings.engine)"
    return None


def trioquic_settings(
    congestion_control: str = CONGESTION_CONTROL,
    *,
    library_defaults: bool = False,
    engine: str = "aioquic",
    **tls: Any,
) -> Any:
    """trioquic's ``QuicSettings`` with the shared settings (ALPN h3) and
    ``congestion_control``, on ``engine`` ("aioquic", trioquic's default, or
    "qh3"), plus ``certificate``/``private_key`` (server) or ``ca_certs``
    (client). ``library_defaults``: trioquic's own defaults instead of the
    shared settings (what ``trioquic serve`` and ``trioquic get`` use:
    1350-byte UDP payload, 4 MiB connection window, 4 MiB socket buffers),
    only ALPN and congestion control set."""
    import trioquic

    if engine != "aioquic":
        # Only named when it is not the default, so that a trioquic without
        # the setting still runs the aioquic columns.
        tls["engine"] = engine
    if library_defaults:
        return trioquic.QuicSettings(
            alpn_protocols=["h3"], congestion_control=congestion_control, **tls
        )
    return trioquic.QuicSettings(
        alpn_protocols=["h3"],
        max_udp_payload_size=MAX_UDP_PAYLOAD,
        congestion_control=congestion_control,
        connection_receive_window=CONNECTION_WINDOW,
        stream_receive_window=STREAM_WINDOW,
        idle_timeout=IDLE_TIMEOUT,
        # The kernel's default socket buffers, as the other servers get.
        udp_buffer_size=0,
        **tls,
    )


def pin_to(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


def server_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every server peer takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--lifetime", type=float, default=600.0)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument(
        "--cc",
        choices=("reno", "cubic"),
        default=CONGESTION_CONTROL,
        help="congestion control",
    )
    parser.add_argument(
        "--library-defaults",
        action="store_true",
        help="trioquic only: the library's default QUIC settings, not the shared ones",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="aioquic",
        help="trioquic only: its QUIC engine (QuicSettings.engine)",
    )
    return parser
