"""Every qh3 internal the qh3 engine relies on, in one place.

qh3's public API does not reach far enough for what trioquic adds (receive
credit on consumption, trioquic's stream limits and initial RTT, a keyed
stateless reset token, the causes of a close, HTTP/3 as the aioquic engine
behaves), so the engine reads some of qh3's private attributes, overrides or
copies some of its private methods, and drives its native core
(``qh3._hazmat``) directly. This module is the whole list; the test suite
keeps it true (``tests/test_qh3_pins.py``):

* every private name of a qh3 class that the ``_qh3`` package uses is in
  :data:`PRIVATE_NAMES`, and every name listed is used and exists in the
  installed qh3; likewise the native core's attributes
  (:data:`CORE_ATTRIBUTES`) and the attributes of qh3's per-stream HTTP/3
  state (:data:`H3_STREAM_ATTRIBUTES`);
* every upstream method trioquic overrides, extends, copies or whose body it
  relies on is in :data:`PINNED_METHODS` (the transport) or in
  :data:`trioquic._qh3._h3.H3_PINS` (HTTP/3) with a hash of its source as it
  was when trioquic's code was written against it: a qh3 release that
  changes one of them fails a test that names the method, whose override
  must then be read against the new upstream code before the hash is
  updated. The native core has no Python source: its pin hashes the class's
  declaration in ``qh3/_hazmat.pyi`` (the constructor's positional
  arguments, the event and path tuples).

The hashes are those of qh3 2.1.0.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import pathlib
import textwrap

#: qh3's private names used by the engine: name -> (the qh3 classes it
#: belongs to, what trioquic uses it for).
PRIVATE_NAMES: dict[str, tuple[tuple[str, ...], str]] = {
    # QuicConnection: attributes
    "_applied_transport_parameters": (("QuicConnection",), "reset in _create_core"),
    "_close_event": (
        ("QuicConnection",),
        "the close and its cause; cleared for INVALID_TOKEN, set on abandon",
    ),
    "_configuration": (("QuicConnection",), "the core's parameters, datagram size"),
    "_core": (("QuicConnection",), "the native core: created, drained, dropped"),
    "_created_local_stream_ids": (("QuicConnection",), "in the copied dispatch"),
    "_early_data_attempted": (("QuicConnection",), "early_data_ready()"),
    "_handshake_complete": (("QuicConnection",), "stream limits, address validated"),
    "_handshake_confirmed": (("QuicConnection",), "in the copied dispatch"),
    "_is_client": (("QuicConnection", "H3Connection"), "the side"),
    "_original_destination_connection_id": (("QuicConnection",), "_create_tls"),
    "_peer_token": (("QuicConnection",), "in the copied dispatch (NEW_TOKEN)"),
    "_pre_handshake_state_replayed": (("QuicConnection",), "reset in _create_core"),
    "_quic_logger": (("QuicConnection",), "qlog of the close; _create_tls"),
    "_remote_addr": (("QuicConnection",), "peer_address() before the core"),
    "_remote_max_datagram_frame_size": (("QuicConnection",), "max_datagram_size()"),
    "_retry_source_connection_id": (("QuicConnection",), "_create_core, _create_tls"),
    "_session_ticket_fetcher": (("QuicConnection",), "_create_tls"),
    "_session_ticket_handler": (("QuicConnection",), "_create_tls"),
    "_state": (("QuicConnection",), "set TERMINATED in the copied dispatch"),
    "_tls": (("QuicConnection",), "the TLS bridge: peer's reset token"),
    "_version": (("QuicConnection",), "_create_core, _create_tls"),
    "_zero_rtt_resolved": (("QuicConnection",), "early_data_ready()"),
    # QuicConnection: methods overridden, copied or called
    "_call_core": (("QuicConnection",), "in the copied dispatch"),
    "_create_core": (("QuicConnection",), "overridden: stream limits, initial RTT"),
    "_create_tls": (("QuicConnection",), "overridden: Qh3TlsBridge, reset token"),
    "_drain_core": (
        ("QuicConnection",),
        "overridden: credit gate, trioquic's events, the close's cause",
    ),
    "_drain_tls": (("QuicConnection",), "in the copied dispatch"),
    "_log_datagram": (("QuicConnection",), "qlog, in the copied datagrams_to_send"),
    "_log_packets": (("QuicConnection",), "qlog, in the copied datagrams_to_send"),
    "_end_trace": (("QuicConnection",), "end_logging(); the copied dispatch"),
    "_open_stream": (("QuicConnection",), "open_stream()"),
    "_learn_remote_source_cid": (
        ("QuicConnection",),
        "overridden: an empty source connection ID is learned too",
    ),
    "_remembered_transport_parameters": (("QuicConnection",), "in _create_core"),
    "_set_version": (("QuicConnection",), "_create_tls"),
    # QuicTlsBridge, tls.Context
    "_on_alpn": (
        ("QuicTlsBridge",),
        "extended: a ClientHello with a legacy session ID refused first",
    ),
    "_on_traffic_secret": (
        ("QuicTlsBridge",),
        "extended: the pinned server certificate checked first",
    ),
    "_ocsp_response": (("Context",), "qh3's verification, done by the bridge"),
    # H3Connection: attributes
    "_blocked_streams": (("H3Connection",), "the QPACK decoder, rebuilt"),
    "_decode_headers": (
        ("H3Connection",),
        "HEADERS decoded by our request-stream path",
    ),
    "_decoder": (("H3Connection",), "rebuilt with our field section limit"),
    "_is_done": (("H3Connection",), "stop after a connection error"),
    "_local_control_stream_id": (("H3Connection",), "GOAWAY, CANCEL_PUSH"),
    "_max_encoded_field_section_size": (("H3Connection",), "our field limit"),
    "_max_field_section_size": (("H3Connection",), "our field limit"),
    "_max_push_id": (("H3Connection",), "the MAX_PUSH_ID we allow (or none)"),
    "_max_table_capacity": (("H3Connection",), "the QPACK decoder, rebuilt"),
    "_peer_control_stream_id": (("H3Connection",), "the control stream parsed here"),
    "_peer_decoder_stream_id": (("H3Connection",), "critical streams"),
    "_peer_encoder_stream_id": (("H3Connection",), "critical streams"),
    "_quic": (("H3Connection",), "reset of an incomplete request"),
    "_settings_received": (("H3Connection",), "control frames before SETTINGS"),
    "_stream": (("H3Connection",), "per-stream parse state (buffered, abandon)"),
    # H3Connection: methods overridden, wrapped or called
    "_encode_headers": (
        ("H3Connection",),
        "extended: a section ls-qpack cannot encode is written as literals",
    ),
    "_get_local_settings": (("H3Connection",), "extended: our SETTINGS"),
    "_handle_control_frame": (("H3Connection",), "called for SETTINGS"),
    "_handle_request_or_push_frame": (("H3Connection",), "wrapped"),
    "_init_connection": (("H3Connection",), "extended: MAX_PUSH_ID when set"),
    "_log_stream_type": (("H3Connection",), "qlog of the peer's control stream"),
    "_receive_request_or_push_data": (("H3Connection",), "wrapped"),
    "_receive_stop_sending": (("H3Connection",), "handle_event without closing"),
    "_receive_stream_data": (("H3Connection",), "handle_event without closing"),
    "_receive_stream_data_uni": (("H3Connection",), "wrapped: the control stream"),
    "_receive_stream_reset": (("H3Connection",), "handle_event without closing"),
}

#: The qh3 classes whose private names the engine may use: name -> module.
OWNERS: dict[str, str] = {
    "QuicConnection": "qh3.quic.connection",
    "QuicTlsBridge": "qh3.quic.tls_bridge",
    "H3Connection": "qh3.h3.connection",
    "H3Stream": "qh3.h3.connection",
    "Context": "qh3.tls",
}

#: Private qh3 modules imported by the engine: module -> what for.
PRIVATE_MODULES: dict[str, str] = {
    "qh3._hazmat": (
        "the native core (QuicConnectionCore), Buffer, the QPACK decoder and "
        "its errors, varint encoding, the packet header parser"
    ),
}

#: Attributes of the native core (``qh3._hazmat.QuicConnectionCore``) the
#: engine reads or calls: name -> what for.
CORE_ATTRIBUTES: dict[str, str] = {
    "active_path": "peer_address(), anti-amplification budget (sent, received)",
    "bytes_in_flight": "sending_held(), has_unacknowledged_stream_data(), statistics",
    "can_send_stream": "send_stream_data() refuses a stream that cannot send",
    "close": "the copied dispatch closes on a TLS error",
    "congestion_window": "sending_held(), statistics",
    "get_timer": "the idle timer (its kind), for the close's cause; the pacer's, "
    "for a FIN written alone (Qh3Engine._follow_fins_in_flight)",
    "handshake_confirmed": "the copied dispatch",
    "latest_rtt": "probe_timeout() (the RTT variation), statistics",
    "loss_total": "a FIN written alone waits for its data sent again after a "
    "loss (Qh3Engine._follow_fins_in_flight)",
    "next_event": "the copied dispatch, behind the credit gate",
    "outstanding_application_packets": "a FIN written alone waits for the "
    "packets in flight (Qh3Engine._outstanding_packets)",
    "poll_transmit": "the copied datagrams_to_send",
    "received_authenticated_packet": "stateless reset detection",
    "smoothed_rtt": "probe_timeout(), statistics",
    "state": "the credit gate holds only while the connection lives",
    "stream_limits": "open_stream() under the peer's limit",
    "version": "the copied dispatch",
}

#: Attributes of qh3's per-stream HTTP/3 state (``H3Stream``, not part of
#: qh3's API) that ``_h3`` reads or sets: name -> what for.
H3_STREAM_ATTRIBUTES: dict[str, str] = {
    "blocked": "QPACK-blocked streams",
    "blocked_frame_size": "a QPACK-blocked HEADERS frame, decoded once unblocked",
    "buffer": "bytes held (buffered, truncation, abandon)",
    "frame_size": "truncated frames",
    "frame_type": "truncated frames",
    "headers_recv_state": "frames after trailers, interim responses",
    "headers_send_state": "send_headers() refusals",
    "push_id": "push streams",
    "receiving_ended": "early end of a request",
    "sending_ended": "send refusals",
    "stream_id": "the stream",
    "stream_type": "push and control streams",
}

#: Upstream methods trioquic overrides, extends or copies (or whose body it
#: relies on): ``module:Class.method`` -> (the hash of its source, see
#: :func:`source_hash`; the code of ours that overrides it or relies on it;
#: how). The HTTP/3 ones are in ``_h3.H3_PINS``.
PINNED_METHODS: dict[str, tuple[str, str, str]] = {
    "qh3.quic.connection:QuicConnection.__init__": (
        "243fade710dfba8d",
        "Qh3Connection.__init__",
        "adds trioquic's state after it",
    ),
    "qh3.quic.connection:QuicConnection._create_core": (
        "ae27056ec5464e35",
        "Qh3Connection._create_core",
        "copied: trioquic's stream limits and initial RTT in the core",
    ),
    "qh3.quic.connection:QuicConnection._create_tls": (
        "90834630e713ec79",
        "Qh3Connection._create_tls",
        "copied: Qh3TlsBridge, the keyed stateless reset token, the pins",
    ),
    "qh3.quic.connection:QuicConnection._drain_core": (
        "eaae4684d0c743e4",
        "Qh3Connection._drain_core",
        "copied: the native events' dispatch, behind the credit gate",
    ),
    "qh3.quic.connection:QuicConnection.datagrams_to_send": (
        "0f1b3db8ec5107ba",
        "Qh3Connection.datagrams_to_send",
        "copied: a flight cut short by the anti-amplification limit is sent; "
        "a poll that lost a stream queued for sending is repeated",
    ),
    "qh3.quic.connection:QuicConnection._learn_remote_source_cid": (
        "d0e70f98d8906e17",
        "Qh3Connection._learn_remote_source_cid",
        "copied: a long header's source ID is the peer's even when empty",
    ),
    "qh3.quic.connection:QuicConnection.receive_datagram": (
        "b037427888a01daf",
        "Qh3Engine.receive_datagram",
        "an unreadable first datagram leaves _core None; the core reports a "
        "stateless reset as connection_terminated",
    ),
    "qh3.quic.connection:QuicConnection.handle_timer": (
        "0c17d5370da4bbcf",
        "Qh3Engine.handle_timer",
        "reads the core's idle timer before it, for the close's cause",
    ),
    "qh3.quic.connection:QuicConnection.close": (
        "a6a8992f477e4207",
        "Qh3Endpoint.invalid_token_packets",
        "clears _close_event so that close() closes anew",
    ),
    "qh3.quic.connection:QuicConnection._open_stream": (
        "daacd878269a4edf",
        "Qh3Engine.open_stream",
        "called after checking the peer's limit",
    ),
    "qh3.quic.connection:QuicConnection._end_trace": (
        "4bd6afc162ee5d2f",
        "Qh3Engine.end_logging",
        "called (and by the copied dispatch)",
    ),
    "qh3.quic.tls_bridge:QuicTlsBridge.__init__": (
        "4f34801f582b4755",
        "Qh3TlsBridge.__init__",
        "sets its limits before it: it serializes the transport parameters",
    ),
    "qh3.quic.tls_bridge:QuicTlsBridge.serialize_transport_parameters": (
        "322f3fd1bc922c54",
        "Qh3TlsBridge.serialize_transport_parameters",
        "extended: trioquic's stream limits, DATAGRAM only when asked",
    ),
    "qh3.quic.tls_bridge:QuicTlsBridge.receive_crypto": (
        "0d9c95b19609fbe7",
        "Qh3TlsBridge.receive_crypto",
        "extended: no common ALPN is no_application_protocol; a message the "
        "TLS parser cannot read is decode_error",
    ),
    "qh3.quic.tls_bridge:QuicTlsBridge._on_alpn": (
        "4a913e45f5104b75",
        "Qh3TlsBridge._on_alpn",
        "extended: a ClientHello with a legacy session ID refused first",
    ),
    "qh3.quic.tls_bridge:QuicTlsBridge._handle_tls": (
        "006d42f36ebd5fe9",
        "Qh3TlsBridge.receive_crypto",
        "raises QuicTlsBridgeError from the TLS alert (its __cause__)",
    ),
    "qh3.tls:Context._server_handle_hello": (
        "30e297ade6926d87",
        "Qh3TlsBridge.receive_crypto",
        "its words when no ALPN protocol is common",
    ),
    "qh3.quic.tls_bridge:QuicTlsBridge._on_traffic_secret": (
        "560313fdb7909349",
        "Qh3TlsBridge._on_traffic_secret",
        "extended: the pinned server certificate checked first",
    ),
    "qh3.tls:Context._client_handle_finished": (
        "d01d256836f53763",
        "Qh3TlsBridge._on_traffic_secret",
        "installs the 1-RTT receive key after the server's Finished is "
        "verified and before the client's Finished is written",
    ),
    "qh3.tls:Context._client_handle_certificate_verify": (
        "33672d21ad0f7188",
        "Qh3TlsBridge._tq_check_server_certificate",
        "qh3's own verification (switched off with pins), done there instead",
    ),
    "qh3._hazmat:QuicConnectionCore": (
        "3ff7c737af5c0180",
        "Qh3Connection._create_core",
        "the native core as its stub declares it: positional constructor "
        "arguments, the event and path tuples the engine reads",
    ),
}


def _stub_source(module_name: str, path: str) -> str:
    """The declaration of ``path`` in the ``.pyi`` stub beside a native
    module."""
    module = importlib.import_module(module_name)
    origin = module.__file__
    assert origin is not None
    stub = pathlib.Path(origin).parent / (module_name.rpartition(".")[2] + ".pyi")
    text = stub.read_text()
    body: list[ast.stmt] = ast.parse(text).body
    node: ast.stmt | None = None
    for part in path.split("."):
        node = next(
            n
            for n in body
            if isinstance(n, ast.ClassDef | ast.FunctionDef) and n.name == part
        )
        body = node.body
    segment = ast.get_source_segment(text, node) if node is not None else None
    if segment is None:
        raise LookupError(f"{path} not declared in {stub}")
    return segment


def source_hash(qualified: str) -> str:
    """The first 16 hex digits of the SHA-256 of a method's dedented source,
    for ``module:Class.method`` (for a native module, its stub's
    declaration)."""
    module_name, _, path = qualified.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in path.split("."):
        obj = getattr(obj, part)
    try:
        source = textwrap.dedent(inspect.getsource(obj))  # type: ignore[arg-type]
    except (OSError, TypeError):
        source = _stub_source(module_name, path)
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def all_pins() -> dict[str, str]:
    """Every pinned qh3 method, the transport's and HTTP/3's: name -> hash."""
    from ._h3 import H3_PINS

    return {name: pin[0] for name, pin in PINNED_METHODS.items()} | {
        name: pin[0] for name, pin in H3_PINS.items()
    }


def changed_methods() -> list[str]:
    """The pinned methods whose installed source differs from the pin."""
    return [
        name for name, expected in all_pins().items() if source_hash(name) != expected
    ]
