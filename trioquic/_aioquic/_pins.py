"""Every aioquic internal the engine relies on, in one place.

aioquic's public API does not reach far enough for what trioquic adds
(receive credit on consumption, stateless resets, memory release, GOAWAY),
so the engine reads some of its private attributes and overrides or copies
some of its private methods. This module is the whole list; the test suite
keeps it true (``tests/test_aioquic_pins.py``):

* every private name the ``_aioquic`` package uses is in
  :data:`PRIVATE_NAMES`, and every name listed is used and exists in the
  installed aioquic;
* every upstream method trioquic overrides, extends or copies is in
  :data:`PINNED_METHODS` with a hash of its source as it was when trioquic's
  code was written against it: an aioquic release that changes one of them
  fails a test that names the method, whose override must then be read
  against the new upstream code before the hash is updated.

The hashes are those of aioquic 1.7.2, the version ``pyproject.toml``
requires (``aioquic>=1.7.2,<1.8``).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import textwrap

#: aioquic's private names used by the engine: name -> (where it lives in
#: aioquic, what trioquic uses it for).
PRIVATE_NAMES: dict[str, tuple[str, str]] = {
    # QuicConnection: attributes
    "_close_at": ("QuicConnection", "the idle deadline, to tell an idle timeout"),
    "_close_event": ("QuicConnection", "the close cause; cleared for INVALID_TOKEN"),
    "_configuration": ("QuicConnection", "connection ID length of issued IDs"),
    "_crypto_buffers": ("QuicConnection", "released after the handshake"),
    "_crypto_streams": ("QuicConnection", "released after the handshake"),
    "_cryptos": ("QuicConnection", "0-RTT keys ready; no-op qlog key callbacks"),
    "_datagrams_pending": ("QuicConnection", "bounded outgoing datagram queue"),
    "_handshake_complete": ("QuicConnection", "client PING probe before DONE"),
    "_handshake_confirmed": ("QuicConnection", "when to release handshake memory"),
    "_host_cid_seq": ("QuicConnection", "sequence of issued connection IDs"),
    "_host_cids": ("QuicConnection", "issued connection IDs and reset tokens"),
    "_local_active_connection_id_limit": ("QuicConnection", "announced ID limit"),
    "_local_initial_source_connection_id": (
        "QuicConnection",
        "the first issued ID, QUIC-LB layout",
    ),
    "_local_max_data": ("QuicConnection", "MAX_DATA granted on consumption"),
    "_local_max_streams_bidi": ("QuicConnection", "peer's stream limits"),
    "_local_max_streams_uni": ("QuicConnection", "peer's stream limits"),
    "_loss": ("QuicConnection", "RTT, congestion window, PTO, the pacer"),
    "_max_datagram_size": ("QuicConnection", "datagram sizes, pacer bursts"),
    "_network_paths": ("QuicConnection", "anti-amplification budget, reset tokens"),
    "_pacing_at": ("QuicConnection", "whether a write must wake the worker"),
    "_peer_cid": ("QuicConnection", "the peer's reset token in use"),
    "_quic_logger": ("QuicConnection", "qlog frames; writing the trace at the end"),
    "_remote_active_connection_id_limit": ("QuicConnection", "peer's ID limit"),
    "_remote_max_datagram_frame_size": ("QuicConnection", "max_datagram_size()"),
    "_remote_max_streams_bidi": ("QuicConnection", "open_stream() under the limit"),
    "_remote_max_streams_uni": ("QuicConnection", "open_stream() under the limit"),
    "_spaces": ("QuicConnection", "discarded packet spaces"),
    "_state": ("QuicConnection", "draining (closed by peer) and end states"),
    "_streams": ("QuicConnection", "send buffers, credit, final sizes"),
    "_QuicConnection__frame_handlers": ("QuicConnection", "one table per class"),
    # QuicConnection: methods overridden, copied or called
    "_close_end": ("QuicConnection", "ends the connection on a stateless reset"),
    "_initialize": (
        "QuicConnection",
        "extended: no qlog key callbacks; on Retry, the first flight is lost",
    ),
    "_on_connection_limit_delivery": ("QuicConnection", "in the copied writer"),
    "_on_max_stream_data_delivery": ("QuicConnection", "in the copied writer"),
    "_payload_received": ("QuicConnection", "extended: counts packets"),
    "_replenish_connection_ids": ("QuicConnection", "copied: HMAC reset tokens"),
    "_write_connection_limits": ("QuicConnection", "copied: credit on consumption"),
    "_write_stream_limits": ("QuicConnection", "copied: credit on consumption"),
    # loss recovery, streams, crypto
    "_pacer": ("QuicPacketRecovery", "replaced by BurstPacer"),
    "_on_packets_lost": ("QuicPacketRecovery", "first flight lost on Retry"),
    "_rtt_min": ("QuicPacketRecovery", "statistics"),
    "_rtt_smoothed": ("QuicPacketRecovery", "statistics"),
    "_buffer_fin": ("QuicStreamSender", "unacknowledged FIN"),
    "_buffer_start": ("QuicStreamSender", "bytes held by the send buffer"),
    "_buffer_stop": ("QuicStreamSender", "bytes held by the send buffer"),
    "_reset_error_code": ("QuicStreamSender", "unacknowledged reset"),
    "_setup_cb": ("CryptoContext", "no-op qlog key callback"),
    "_teardown_cb": ("CryptoContext", "no-op qlog key callback"),
    # H3Connection
    "_get_local_settings": ("H3Connection", "extended: our SETTINGS"),
    "_init_connection": ("H3Connection", "extended: no MAX_PUSH_ID"),
    "_max_push_id": (
        "H3Connection",
        "the client's MAX_PUSH_ID (None: no push allowed); aioquic's is 8",
    ),
    "_is_done": ("H3Connection", "stop after a connection error"),
    "_local_control_stream_id": (
        "H3Connection",
        "where GOAWAY and CANCEL_PUSH are written",
    ),
    "_receive_datagram": ("H3Connection", "handle_event without its closing"),
    "_receive_stop_sending": ("H3Connection", "handle_event without its closing"),
    "_receive_stream_data": ("H3Connection", "handle_event without its closing"),
    "_receive_stream_reset": ("H3Connection", "handle_event without its closing"),
    "_stream": ("H3Connection", "per-stream parse buffer (credit, abandon)"),
}

#: Private aioquic modules imported by the engine.
PRIVATE_MODULES: dict[str, str] = {
    "aioquic._buffer": "Buffer and BufferReadError (the C buffer behind aioquic)",
}

#: Upstream methods trioquic overrides, extends or copies (or whose body it
#: relies on), with the hash of their source: ``module:Class.method`` ->
#: :func:`source_hash`.
PINNED_METHODS: dict[str, str] = {
    # TrioquicConnection.__init__ sets what this one built
    "aioquic.quic.connection:QuicConnection.__init__": "6e1689d804a0a6fd",
    "aioquic.quic.connection:QuicConnection._initialize": "de8377a6037df73b",
    "aioquic.quic.connection:QuicConnection._replenish_connection_ids": (
        "2a8198ca6646b490"
    ),
    "aioquic.quic.connection:QuicConnection._payload_received": "e57b7b7de2de20e6",
    "aioquic.quic.connection:QuicConnection._write_stream_limits": ("a9949663e121d2ba"),
    "aioquic.quic.connection:QuicConnection._write_connection_limits": (
        "203d34970d685be6"
    ),
    # AioquicEngine.handle_timer reads its idle deadline logic
    "aioquic.quic.connection:QuicConnection.handle_timer": "bbe3663a7300f391",
    "aioquic.quic.recovery:QuicPacketPacer.update_rate": "a6c26d85eda7423d",
    # TrioquicConnection._initialize declares the first flight lost with it,
    # when a Retry (re-initializing through _connect) replaces the spaces
    "aioquic.quic.recovery:QuicPacketRecovery._on_packets_lost": "958ed887b4df56b7",
    "aioquic.quic.connection:QuicConnection._receive_retry_packet": (
        "ff5fd2cb94f32ae5"
    ),
    "aioquic.h3.connection:H3Connection.__init__": "6022930d44bc062a",
    "aioquic.h3.connection:H3Connection._get_local_settings": "478bb64801987e4b",
    # _H3Connection._init_connection: MAX_PUSH_ID is sent only when set
    "aioquic.h3.connection:H3Connection._init_connection": "80c43caaf2bfb54d",
    # AioquicH3Engine._handle_one copies its dispatch, minus its closing
    "aioquic.h3.connection:H3Connection.handle_event": "a3c051e15a525edc",
    # ... and passes trioquic's StreamDataReceived, which has the three
    # attributes this reads
    "aioquic.h3.connection:H3Connection._receive_stream_data": "e200d7c42964916f",
    # _H3Connection._check_content_length skips it for responses to HEAD
    "aioquic.h3.connection:H3Connection._check_content_length": "44e822b7df644287",
}


def source_hash(qualified: str) -> str:
    """The first 16 hex digits of the SHA-256 of a method's dedented source,
    for ``module:Class.method``."""
    module_name, _, path = qualified.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in path.split("."):
        obj = getattr(obj, part)
    source = textwrap.dedent(inspect.getsource(obj))  # type: ignore[arg-type]
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def changed_methods() -> list[str]:
    """The pinned methods whose installed source differs from the pin."""
    return [
        name
        for name, expected in PINNED_METHODS.items()
        if source_hash(name) != expected
    ]
