"""Settings of a QUIC endpoint, as one frozen, validated value."""

from __future__ import annotations

import os
from typing import Any, Literal

import attrs

from ._quic_lb import QuicLbConfig

CongestionControl = Literal["reno", "cubic"]
Engine = Literal["aioquic", "qh3"]
_ENGINES = ("aioquic", "qh3")


def _default_engine() -> str:
    """``$TRIOQUIC_ENGINE`` if set, else ``"aioquic"``."""
    return os.environ.get("TRIOQUIC_ENGINE") or "aioquic"


def _engine(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in _ENGINES:
        raise ValueError(
            f"QuicSettings.engine must be one of {', '.join(map(repr, _ENGINES))} "
            f"(or the TRIOQUIC_ENGINE environment variable), got {value!r}"
        )


def _default_congestion_control(settings: QuicSettings) -> str:
    # qh3's congestion controller is CUBIC only.
    return "cubic" if settings.engine == "qh3" else "reno"


RetryPolicy = Literal["never", "always", "under-load"]

_KIB = 1024
_MIB = 1024 * 1024


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"QuicSettings.{attribute.name} must be a number, "
            f"got {type(value).__name__}"
        )
    if value <= 0:
        raise ValueError(
            f"QuicSettings.{attribute.name} must be greater than 0, got {value!r}"
        )


def _int_at_least(minimum: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"QuicSettings.{attribute.name} must be an int, "
                f"got {type(value).__name__}"
            )
        if value < minimum:
            raise ValueError(
                f"QuicSettings.{attribute.name} must be at least {minimum}, got {value}"
            )

    return check


def _optional_path(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is not None and not isinstance(value, str | os.PathLike):
        raise TypeError(
            f"QuicSettings.{attribute.name} must be a path (str or os.PathLike) or "
            f"None, got {type(value).__name__}"
        )


def _non_negative(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"QuicSettings.{attribute.name} must be a number, "
            f"got {type(value).__name__}"
        )
    if not 0 <= value < float("inf"):
        raise ValueError(
            f"QuicSettings.{attribute.name} must be finite and at least 0, "
            f"got {value!r}"
        )


def _optional_reset_key(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is None:
        return
    if not isinstance(value, bytes):
        raise TypeError(
            f"QuicSettings.{attribute.name} must be bytes or None, "
            f"got {type(value).__name__}"
        )
    if len(value) < 16:
        raise ValueError(
            f"QuicSettings.{attribute.name} must be at least 16 bytes "
            f"(32 random bytes are best), got {len(value)}"
        )


def _alpn(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(
            "QuicSettings.alpn_protocols must be a sequence of strings, not one "
            f"string: write alpn_protocols=[{value!r}]"
        )
    protocols = tuple(value)
    for protocol in protocols:
        if not isinstance(protocol, str):
            raise TypeError(
                "QuicSettings.alpn_protocols must hold strings, "
                f"got {type(protocol).__name__}"
            )
        if not 0 < len(protocol.encode()) <= 255:
            raise ValueError(
                f"each ALPN protocol must be 1 to 255 bytes long, got {protocol!r}"
            )
    return protocols


def _congestion(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in ("reno", "cubic"):
        raise ValueError(
            f"QuicSettings.congestion_control must be 'reno' or 'cubic', got {value!r}"
        )


def _cid_length(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    _int_at_least(4)(instance, attribute, value)
    if value > 20:
        raise ValueError(
            "QuicSettings.connection_id_length must be between 4 and 20 bytes "
            f"(RFC 9000 allows at most 20), got {value}"
        )


def _udp_payload(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    _int_at_least(1200)(instance, attribute, value)
    if value > 65527:
        raise ValueError(
            f"QuicSettings.max_udp_payload_size must be at most 65527, got {value}"
        )


def _optional_datagram_frame_size(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is not None:
        _int_at_least(1)(instance, attribute, value)


def _optional_positive(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is not None:
        _positive(instance, attribute, value)


def _ticket_lifetime(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    _positive(instance, attribute, value)
    if value > 7 * 86400:
        raise ValueError(
            f"QuicSettings.session_ticket_lifetime is at most 604800 seconds "
            f"(7 days, RFC 8446), got {value!r}"
        )


def _escape_hatch(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is None:
        return
    # Checked without importing aioquic here: only trioquic._aioquic does.
    cls = type(value)
    if cls.__name__ != "QuicConfiguration" or not cls.__module__.startswith("aioquic"):
        raise TypeError(
            "QuicSettings.quic_configuration must be an "
            "aioquic.quic.configuration.QuicConfiguration or None, "
            f"got {cls.__name__}"
        )


def _default_cid_length(settings: QuicSettings) -> int:
    quic_lb = settings.quic_lb
    # (defaults are made before validators run: a wrong type is theirs to report)
    if isinstance(quic_lb, QuicLbConfig):
        return quic_lb.connection_id_length
    return 8


@attrs.frozen(kw_only=True)
class QuicSettings:
    """Everything a QUIC endpoint (client or server) can be told.

    Every field is validated when the object is built; a wrong value raises
    :exc:`TypeError` or :exc:`ValueError` naming the field. Use
    :func:`attrs.evolve` to derive a changed copy::

        settings = QuicSettings(alpn_protocols=["echo"], idle_timeout=10)
        quick = attrs.evolve(settings, handshake_timeout=2)

    The bounds below are what make trioquic's memory use predictable: every
    queue and buffer a peer can fill is limited by one of them.
    """

    #: The QUIC engine: ``"aioquic"`` (pure Python) or ``"qh3"`` (a Rust core;
    #: ``pip install 'trioquic[qh3]'``). Default: the ``TRIOQUIC_ENGINE``
    #: environment variable if set, else ``"aioquic"``. qh3 does not offer
    #: ``congestion_control="reno"`` nor ``quic_configuration``, and loads
    #: the server's certificate and key from PEM files.
    engine: Engine = attrs.field(
        default=attrs.Factory(_default_engine), validator=_engine
    )
    #: ALPN protocols offered (client) or accepted (server), most preferred first.
    alpn_protocols: tuple[str, ...] = attrs.field(default=(), converter=_alpn)
    #: Server certificate chain: a PEM file path, or a
    #: :class:`cryptography.x509.Certificate`.
    certificate: Any = attrs.field(default=None)
    #: Server private key: a PEM file path, or a key object from ``cryptography``.
    #: May be ``None`` when ``certificate`` is a PEM file that holds the key too.
    private_key: Any = attrs.field(default=None)
    #: Client: PEM file of the certificate authorities to trust (the system's
    #: default store when ``None``).
    ca_certs: str | os.PathLike[str] | None = attrs.field(
        default=None, validator=_optional_path
    )
    #: Client: verify the server's certificate. Turn off only for development.
    verify_peer: bool = attrs.field(
        default=True, validator=attrs.validators.instance_of(bool)
    )
    #: Client: the name the certificate must carry (and SNI); defaults to the
    #: host connected to.
    server_name: str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.instance_of(str)),
    )
    #: Seconds without any packet from the peer after which QUIC closes the
    #: connection silently (the smaller of ours and the peer's applies).
    idle_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: Keep-alive: once the handshake is done, send a PING whenever nothing
    #: was heard from the peer for this many seconds, so a connection that
    #: carries nothing stays open (``None``, the default: no keep-alive, an
    #: idle connection ends at ``idle_timeout``). The PING is acknowledged,
    #: and each packet either side receives restarts its idle timer; it must
    #: be shorter than ``idle_timeout``, and than the peer's idle timeout,
    #: since the smaller of the two applies (half of it leaves room for one
    #: lost PING). It also keeps NAT bindings on the path fresh.
    keep_alive_interval: float | None = attrs.field(
        default=None, validator=_optional_positive
    )
    #: Seconds a handshake may take before the connection is abandoned.
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Seconds allowed for sending CONNECTION_CLOSE when shutting down.
    close_grace_period: float = attrs.field(default=1.0, validator=_positive)
    #: Connection IDs in the QUIC-LB layout (draft-ietf-quic-load-balancers):
    #: every connection ID this endpoint issues carries this server's ID, so
    #: a load balancer (or ``serve --workers``) routes a connection's packets
    #: by it whatever their address. See :class:`~trioquic.QuicLbConfig` and
    #: the scaling guide. ``None``: random connection IDs.
    quic_lb: QuicLbConfig | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.instance_of(QuicLbConfig)),
    )
    #: Length of the connection IDs this endpoint issues; the router parses
    #: short-header packets with it. With ``quic_lb``, that configuration's
    #: length (the default).
    connection_id_length: int = attrs.field(
        default=attrs.Factory(_default_cid_length, takes_self=True),
        validator=_cid_length,
    )
    #: How many connection IDs of each side may be in use at once (the
    #: ``active_connection_id_limit`` transport parameter, at least 2): we
    #: accept that many from the peer and issue at most that many. Each spare
    #: ID lets a peer change its address (migration, ``rebind()``) without
    #: being linked; each costs a frame, a stateless reset token and a routing
    #: entry per connection. 2 (one spare), as quiche has it; aioquic uses 8.
    active_connection_id_limit: int = attrs.field(default=2, validator=_int_at_least(2))
    #: Connection-level flow-control window (MAX_DATA): unread bytes the peer
    #: may have in flight across all streams.
    connection_receive_window: int = attrs.field(
        default=4 * _MIB, validator=_int_at_least(1200)
    )
    #: Stream-level flow-control window (MAX_STREAM_DATA), which is also the
    #: bound on unread bytes buffered for one stream.
    stream_receive_window: int = attrs.field(
        default=1 * _MIB, validator=_int_at_least(1200)
    )
    #: ``send_all`` waits while a stream holds more than this many unacknowledged
    #: plus unsent bytes.
    stream_send_buffer: int = attrs.field(
        default=256 * _KIB, validator=_int_at_least(1)
    )
    #: Maximum number of streams of each kind (bidirectional, unidirectional) the
    #: peer may have open at once.
    max_concurrent_streams: int = attrs.field(default=128, validator=_int_at_least(1))
    #: Datagrams queued for one connection before the router drops new ones.
    inbound_queue_size: int = attrs.field(default=256, validator=_int_at_least(1))
    #: Server: connections alive at once (handshaking or established). A new
    #: client's Initial beyond it is answered with CONNECTION_CLOSE
    #: (CONNECTION_REFUSED) and counted as ``refused_max_connections``.
    max_connections: int = attrs.field(default=10_000, validator=_int_at_least(1))
    #: Server: connections still handshaking (accepted by the router, not yet
    #: handed to the handler). This is trioquic's accept backlog: ``serve_*``
    #: starts the handler as soon as a handshake completes, so no other accept
    #: queue exists. New Initial packets beyond it are dropped and counted
    #: (``DropReason.BACKLOG_FULL``); with ``retry="under-load"`` keep
    #: ``retry_under_load_threshold`` below it, so that address-validated
    #: clients still find room while a spoofed flood is answered with Retry.
    max_pending_handshakes: int = attrs.field(default=128, validator=_int_at_least(1))
    #: Streams the peer opened that wait for ``accept_stream``; the next ones are
    #: refused with STOP_SENDING/RESET_STREAM.
    stream_accept_backlog: int = attrs.field(default=64, validator=_int_at_least(1))
    #: Largest DATAGRAM frame (RFC 9221) we accept; ``None`` disables datagrams.
    max_datagram_frame_size: int | None = attrs.field(
        default=None, validator=_optional_datagram_frame_size
    )
    #: Received QUIC datagrams queued for ``receive_datagram`` before the oldest
    #: are dropped.
    datagram_queue_size: int = attrs.field(default=128, validator=_int_at_least(1))
    #: Largest UDP payload we send.
    max_udp_payload_size: int = attrs.field(default=1350, validator=_udp_payload)
    #: Kernel send and receive buffer size requested for UDP sockets trioquic
    #: opens (``SO_SNDBUF`` / ``SO_RCVBUF``; the kernel may cap it). Small
    #: buffers drop datagrams in bursts, which QUIC reads as congestion.
    udp_buffer_size: int = attrs.field(default=4 * _MIB, validator=_int_at_least(0))
    #: Use the kernel's UDP offloads where it offers them (Linux): a batch of
    #: same-size datagrams to one address leaves in one ``sendmsg`` (GSO,
    #: ``UDP_SEGMENT``) and runs of received datagrams arrive coalesced (GRO,
    #: ``UDP_GRO``). ``False`` sends and receives one datagram per system
    #: call. Either way a refused segmented send falls back by itself.
    udp_offload: bool = attrs.field(
        default=True, validator=attrs.validators.instance_of(bool)
    )
    #: Congestion controller: ``"reno"`` or ``"cubic"`` (default: ``"reno"``
    #: on aioquic, ``"cubic"`` on qh3, which has no other).
    congestion_control: CongestionControl = attrs.field(
        default=attrs.Factory(_default_congestion_control, takes_self=True),
        validator=_congestion,
    )
    #: Directory to write one qlog file per connection into.
    qlog_dir: str | os.PathLike[str] | None = attrs.field(
        default=None, validator=_optional_path
    )
    #: File to append TLS secrets to (NSS key-log format, for Wireshark).
    #: When ``None``, the ``SSLKEYLOGFILE`` environment variable is honoured.
    keylog_file: str | os.PathLike[str] | None = attrs.field(
        default=None, validator=_optional_path
    )
    #: Server: when to validate a new client's address with a Retry round trip
    #: first (RFC 9000 section 8.1.2): ``"never"``, ``"always"``, or
    #: ``"under-load"`` (once ``retry_under_load_threshold`` handshakes are
    #: pending). Costs the client one round trip; stops address spoofing.
    retry: RetryPolicy = attrs.field(
        default="never",
        validator=attrs.validators.in_(("never", "always", "under-load")),
    )
    #: Server: pending handshakes from which ``retry="under-load"`` applies.
    retry_under_load_threshold: int = attrs.field(
        default=64, validator=_int_at_least(0)
    )
    #: Server: seconds a Retry token stays valid.
    retry_token_lifetime: float = attrs.field(default=10.0, validator=_positive)
    #: Server: the key Retry tokens are authenticated with (HMAC-SHA256), at
    #: least 16 bytes; ``None`` makes a random key per endpoint. Servers that
    #: share it accept one another's tokens: give the same key to every
    #: worker or machine behind one address (``serve --workers`` derives it
    #: from one secret, see :func:`trioquic.workers.shared_keys`).
    retry_token_key: bytes | None = attrs.field(
        default=None, validator=_optional_reset_key, repr=False
    )
    #: The static key stateless reset tokens are derived from (RFC 9000
    #: section 10.3.2: ``HMAC-SHA256(key, connection_id)[:16]``), at least 16
    #: bytes; ``None`` makes a random key per endpoint. With a fixed key, a
    #: server restarted after a crash can reset the connections of its
    #: previous life, so their clients learn at once that it is gone instead
    #: of waiting for their idle timeout. Keep it as secret as a TLS private
    #: key: whoever knows it can reset your connections. Share it only among
    #: servers that can never receive one another's connections' packets.
    stateless_reset_key: bytes | None = attrs.field(
        default=None, validator=_optional_reset_key, repr=False
    )
    #: Server: stateless resets sent per second at most, on average (bursts
    #: of up to that many); ``0`` never sends one (RFC 9000 section 10.3).
    stateless_reset_rate: float = attrs.field(default=100.0, validator=_non_negative)
    #: Server: stateless resets sent per second at most to one source IP
    #: address (bursts of up to that many), within ``stateless_reset_rate``:
    #: one source cannot use up everyone's budget.
    stateless_reset_rate_per_address: float = attrs.field(
        default=10.0, validator=_non_negative
    )
    #: Client: a session ticket from an earlier connection to the same server
    #: (``QuicConnection.session_ticket``), to resume the TLS session.
    session_ticket: bytes | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.instance_of(bytes)),
    )
    #: Server: seconds a session ticket it issued can be used to resume (and
    #: send 0-RTT data); an older one gets a full handshake, its 0-RTT data
    #: refused (the client sends it again as 1-RTT). At most 7 days (RFC
    #: 8446 section 4.6.1). Each ticket is also usable only once.
    session_ticket_lifetime: float = attrs.field(
        default=86400.0, validator=_ticket_lifetime
    )
    #: Client: with a ``session_ticket`` that allows it, hand the connection
    #: to the application at once and send its first data as 0-RTT, before
    #: the handshake completes. 0-RTT data can be replayed by an attacker:
    #: use it only for idempotent requests.
    zero_rtt: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )
    #: Escape hatch: a ready ``aioquic`` ``QuicConfiguration`` used as the base
    #: of every connection instead of the TLS/QUIC fields above (trioquic's
    #: own bounds and timeouts still apply).
    quic_configuration: Any = attrs.field(default=None, validator=_escape_hatch)

    def __attrs_post_init__(self) -> None:
        if (
            self.quic_lb is not None
            and self.connection_id_length != self.quic_lb.connection_id_length
        ):
            raise ValueError(
                f"QuicSettings.connection_id_length ({self.connection_id_length}) "
                "must be the quic_lb configuration's length "
                f"({self.quic_lb.connection_id_length}): leave it out"
            )
        if self.engine == "qh3":
            if self.quic_lb is not None:
                raise ValueError(
                    "QuicSettings.quic_lb is not available with engine='qh3': "
                    "qh3's core issues a connection's later connection IDs "
                    "itself, at random, so they would not route (use "
                    "engine='aioquic')"
                )
            if self.congestion_control != "cubic":
                raise ValueError(
                    f"QuicSettings.congestion_control={self.congestion_control!r} "
                    "is not available with engine='qh3': qh3's congestion "
                    "controller is CUBIC only (set congestion_control='cubic')"
                )
            if self.quic_configuration is not None:
                raise ValueError(
                    "QuicSettings.quic_configuration (an aioquic "
                    "QuicConfiguration) cannot be used with engine='qh3'"
                )
        if self.stream_receive_window > self.connection_receive_window:
            raise ValueError(
                "QuicSettings.stream_receive_window "
                f"({self.stream_receive_window}) must not exceed "
                f"connection_receive_window ({self.connection_receive_window})"
            )
        if (self.certificate is None) != (self.private_key is None) and not (
            isinstance(self.certificate, str | os.PathLike)
        ):
            raise ValueError(
                "QuicSettings.certificate and private_key go together: give both, "
                "or a PEM certificate file that also holds the key"
            )
        if (
            self.retry == "under-load"
            and self.retry_under_load_threshold >= self.max_pending_handshakes
        ):
            raise ValueError(
                "QuicSettings.retry_under_load_threshold "
                f"({self.retry_under_load_threshold}) must be below "
                f"max_pending_handshakes ({self.max_pending_handshakes}): "
                "otherwise new clients are dropped before Retry applies"
            )
        if (
            self.keep_alive_interval is not None
            and self.keep_alive_interval >= self.idle_timeout
        ):
            raise ValueError(
                f"QuicSettings.keep_alive_interval ({self.keep_alive_interval}) "
                f"must be shorter than idle_timeout ({self.idle_timeout}), or the "
                "connection ends before the first PING (half of it is a good value)"
            )
        if self.private_key is not None and self.certificate is None:
            raise ValueError(
                "QuicSettings.private_key was given without a certificate: "
                "set certificate too"
            )

    def effective_keylog_file(self) -> str | os.PathLike[str] | None:
        """The key-log file in force: ``keylog_file``, else ``$SSLKEYLOGFILE``."""
        if self.keylog_file is not None:
            return self.keylog_file
        return os.environ.get("SSLKEYLOGFILE") or None
