"""The qh3 engine's endpoint: configuration built once from
:class:`~trioquic.QuicSettings`, the connection factory, and the stateless
packets the router sends (Retry, refusals, INVALID_TOKEN closes)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import ssl
from typing import IO

import attrs
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.logger import QuicFileLogger
from qh3.quic.packet import QuicErrorCode, encode_quic_retry

from .._engine import Address, EndpointEngine, QuicEngine
from .._settings import QuicSettings
from .._stateless_reset import StatelessResetKey
from ._certificates import pinned_certificates
from ._connection import Qh3Connection, core_window
from ._engine import Qh3Engine
from ._initial import initial_close
from ._tickets import TicketStore, decode_session_ticket

#: The initial RTT before a sample (RFC 9002 section 6.2.2), as the aioquic
#: engine has it (qh3's default is RFC 9002's 333 ms).
INITIAL_RTT = 0.1
#: The QUIC frame type of PADDING, named in a transport CONNECTION_CLOSE.
_PADDING = 0


def check_settings(settings: QuicSettings) -> None:
    """Refuse what the qh3 engine cannot do, saying so."""
    if settings.congestion_control != "cubic":
        raise ValueError(
            f"QuicSettings.congestion_control={settings.congestion_control!r} is "
            "not available with engine='qh3': qh3's congestion controller is "
            "CUBIC only (set congestion_control='cubic')"
        )
    if settings.quic_configuration is not None:
        raise ValueError(
            "QuicSettings.quic_configuration (an aioquic QuicConfiguration) "
            "cannot be used with engine='qh3'"
        )


class Qh3Endpoint:
    """The qh3 engine of one endpoint (a :class:`~trioquic._engine.EndpointEngine`).

    Builds qh3's configuration once from the settings, and owns the
    endpoint-wide resources it references (the key-log file, the qlog
    writer, the server's ticket store); :meth:`close` releases them.
    """

    def __init__(self, settings: QuicSettings, *, is_client: bool) -> None:
        check_settings(settings)
        self.settings = settings
        self.is_client = is_client
        self._keylog: IO[str] | None = None
        self._pins: tuple[bytes, ...] = ()
        config = QuicConfiguration(is_client=is_client)
        if settings.alpn_protocols:
            config.alpn_protocols = list(settings.alpn_protocols)
        config.max_datagram_size = settings.max_udp_payload_size
        config.max_datagram_frame_size = settings.max_datagram_frame_size
        config.initial_rtt = INITIAL_RTT
        config.idle_timeout = settings.idle_timeout
        config.connection_id_length = settings.connection_id_length
        config.active_connection_id_limit = settings.active_connection_id_limit
        # The core's share of each window (see _connection).
        config.max_data = core_window(settings.connection_receive_window)
        config.max_stream_data = core_window(settings.stream_receive_window)
        if is_client:
            if settings.ca_certs is not None:
                config.load_verify_locations(os.fspath(settings.ca_certs))
            if not settings.verify_peer:
                config.verify_mode = ssl.CERT_NONE
            elif settings.ca_certs is not None:
                # Self-signed server certificates webpki refuses as their own
                # root: the TLS bridge checks the server's certificate itself
                # (see _certificates).
                self._pins = pinned_certificates(settings.ca_certs)
                if self._pins:
                    config.verify_mode = ssl.CERT_NONE
            if settings.session_ticket is not None:
                config.session_ticket = decode_session_ticket(settings.session_ticket)
        elif settings.certificate is not None:
            _load_certificate(config, settings)
        else:
            raise ValueError(
                "a QUIC server needs a certificate: set QuicSettings.certificate and "
                "private_key (trioquic.generate_self_signed_certificate() makes a "
                "development one)"
            )
        if settings.qlog_dir is not None:
            pathlib.Path(settings.qlog_dir).mkdir(parents=True, exist_ok=True)
            config.quic_logger = QuicFileLogger(os.fspath(settings.qlog_dir))
        keylog = settings.effective_keylog_file()
        if keylog is not None:
            self._keylog = open(keylog, "a")  # noqa: SIM115 - closed in close()
            config.secrets_log_file = self._keylog
        self._base = config
        #: Derives the stateless reset token of the server's first connection
        #: ID (and the router's resets).
        self.stateless_reset_key = StatelessResetKey(settings.stateless_reset_key)
        self._tickets = TicketStore(lifetime=settings.session_ticket_lifetime)
        self._empty_cid: EndpointEngine | None = None

    def client_connection(self, server_name: str) -> Qh3Engine:
        config = dataclasses.replace(self._base)
        if config.server_name is None:
            config.server_name = self.settings.server_name or server_name
        return Qh3Engine(config, self.settings, reset_key=None, pins=self._pins)

    def server_connection(
        self,
        *,
        original_destination_cid: bytes,
        retry_source_cid: bytes | None,
        source_cid: bytes | None = None,
    ) -> QuicEngine:
        if source_cid == b"":
            # qh3's core cannot address a client whose connection ID is
            # empty (Chromium's): it keeps sending to the client's first
            # destination ID, which such a client drops. That connection runs
            # on the aioquic engine instead; see _empty_cid_endpoint.
            return self._empty_cid_endpoint().server_connection(
                original_destination_cid=original_destination_cid,
                retry_source_cid=retry_source_cid,
            )
        return Qh3Engine(
            self._base,
            self.settings,
            original_destination_cid=original_destination_cid,
            retry_source_cid=retry_source_cid,
            reset_key=self.stateless_reset_key,
            tickets=self._tickets,
        )

    # -- packets the router sends without a connection ------------------------

    def retry_packet(
        self,
        *,
        version: int,
        destination_cid: bytes,
        source_cid: bytes,
        original_destination_cid: bytes,
        token: bytes,
    ) -> bytes:
        """A Retry packet with its integrity tag (RFC 9001 section 5.8)."""
        return bytes(
            encode_quic_retry(
                version=version,
                source_cid=source_cid,
                destination_cid=destination_cid,
                original_destination_cid=original_destination_cid,
                retry_token=token,
            )
        )

    def invalid_token_packets(
        self, data: bytes, addr: Address, now: float
    ) -> list[bytes]:
        """The datagrams that close a connection attempt whose Initial carried
        an invalid or expired token with INVALID_TOKEN (RFC 9000 section
        8.1.3): a throwaway qh3 connection reads the Initial (to learn the
        client's connection IDs and derive the keys) and closes."""
        if len(data) < 7 or len(data) < 6 + data[5]:
            return []
        dcid = bytes(data[6 : 6 + data[5]])
        try:
            quic = Qh3Connection(
                configuration=self._base,
                original_destination_connection_id=dcid,
                connection_window=self.settings.connection_receive_window,
                max_streams_bidi=self.settings.max_concurrent_streams,
                max_streams_uni=self.settings.max_concurrent_streams,
                initial_rtt=INITIAL_RTT,
            )
            # The ClientHello is not read: whatever it says (a protocol we do
            # not offer, say), the answer is INVALID_TOKEN.
            quic.tq_read_handshake = False
            quic.receive_datagram(data, addr, now)
            if quic._core is None:
                return []  # not even parsed: no path to answer on
            quic._close_event = None
            quic.close(
                error_code=QuicErrorCode.INVALID_TOKEN,
                frame_type=_PADDING,
                reason_phrase="invalid address validation token",
            )
            return [datagram for datagram, _ in quic.datagrams_to_send(now)]
        except (ValueError, AssertionError, RuntimeError, OSError):
            return []  # qh3 refused the input: answer nothing

    def refusal_packets(
        self,
        *,
        version: int,
        destination_cid: bytes,
        source_cid: bytes,
        error_code: int = QuicErrorCode.CONNECTION_REFUSED,
        reason: str = "server busy",
    ) -> list[bytes]:
        """An Initial packet carrying CONNECTION_CLOSE that refuses a new
        client (RFC 9000 section 5.2.2) without reading its ClientHello:
        stateless and cheap, and smaller than the Initial it answers."""
        try:
            packet = initial_close(
                version=version,
                destination_cid=destination_cid,
                source_cid=source_cid,
                error_code=error_code,
                reason=reason,
            )
        except ValueError:
            return []
        return [packet]

    def _empty_cid_endpoint(self) -> EndpointEngine:
        """The aioquic engine of this endpoint, made on first use, for the
        clients qh3 cannot serve (an empty source connection ID). It has the
        same settings and answers for the same stateless reset key, so the
        router's resets and the connection IDs it issues agree; session
        tickets issued by one engine do not resume on the other (a full
        handshake follows)."""
        if self._empty_cid is None:
            from .._aioquic import AioquicEndpoint

            endpoint = AioquicEndpoint(
                attrs.evolve(self.settings, engine="aioquic"), is_client=False
            )
            endpoint.stateless_reset_key = self.stateless_reset_key
            self._empty_cid = endpoint
        return self._empty_cid

    def close(self) -> None:
        if self._keylog is not None:
            self._keylog.close()
            self._keylog = None
        if self._empty_cid is not None:
            self._empty_cid.close()


def _load_certificate(config: QuicConfiguration, settings: QuicSettings) -> None:
    """The server's certificate and key: PEM files, or PEM bytes."""
    certificate = settings.certificate
    private_key = settings.private_key
    if not isinstance(certificate, str | os.PathLike):
        raise ValueError(
            "engine='qh3' loads the certificate from a PEM file: set "
            "QuicSettings.certificate (and private_key) to file paths"
        )
    if private_key is not None and not isinstance(private_key, str | os.PathLike):
        raise ValueError(
            "engine='qh3' loads the private key from a PEM file: set "
            "QuicSettings.private_key to a file path"
        )
    try:
        config.load_cert_chain(
            os.fspath(certificate),
            os.fspath(private_key) if private_key is not None else None,
        )
    except FileNotFoundError as exc:
        raise ValueError(
            f"cannot read the certificate or key file: {exc.filename}"
        ) from None
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"cannot load the certificate {os.fspath(certificate)!r}: {exc}"
        ) from None
    if config.private_key is None:
        raise ValueError(
            f"the certificate file {os.fspath(certificate)!r} holds no private "
            "key: set QuicSettings.private_key"
        )
