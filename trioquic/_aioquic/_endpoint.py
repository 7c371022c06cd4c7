"""The aioquic engine's endpoint: configuration built once from
:class:`~trioquic.QuicSettings`, the connection factory, and the stateless
packets the router sends (Retry, refusals, INVALID_TOKEN closes)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import ssl
from typing import IO

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection as _AioquicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.logger import QuicFileLogger
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_retry,
)
from aioquic.quic.packet_builder import QuicPacketBuilder

from .._engine import Address
from .._settings import QuicSettings
from .._stateless_reset import StatelessResetKey
from ._engine import AioquicEngine
from ._tickets import TicketStore, decode_session_ticket


class AioquicEndpoint:
    """The aioquic engine of one endpoint (a :class:`~trioquic._engine.EndpointEngine`).

    Builds aioquic's configuration once from the settings, and owns the
    endpoint-wide resources it references (the key-log file, the qlog
    writer, the server's ticket store); :meth:`close` releases them.
    """

    def __init__(self, settings: QuicSettings, *, is_client: bool) -> None:
        self.settings = settings
        self.is_client = is_client
        self._keylog: IO[str] | None = None
        base = settings.quic_configuration
        if base is not None:
            config = _copy_configuration(base)
            config.is_client = is_client
        else:
            config = QuicConfiguration(is_client=is_client)
            if settings.alpn_protocols:
                config.alpn_protocols = list(settings.alpn_protocols)
            config.congestion_control_algorithm = settings.congestion_control
            config.max_datagram_size = settings.max_udp_payload_size
            config.max_datagram_frame_size = settings.max_datagram_frame_size
            if is_client:
                if settings.ca_certs is not None:
                    config.load_verify_locations(os.fspath(settings.ca_certs))
                if not settings.verify_peer:
                    config.verify_mode = ssl.CERT_NONE
            elif settings.certificate is not None:
                _load_certificate(config, settings)
            if settings.qlog_dir is not None:
                pathlib.Path(settings.qlog_dir).mkdir(parents=True, exist_ok=True)
                config.quic_logger = QuicFileLogger(os.fspath(settings.qlog_dir))
            keylog = settings.effective_keylog_file()
            if keylog is not None:
                self._keylog = open(keylog, "a")  # noqa: SIM115 - closed in close()
                config.secrets_log_file = self._keylog
        # trioquic's own bounds always apply.
        config.idle_timeout = settings.idle_timeout
        config.connection_id_length = settings.connection_id_length
        config.max_data = settings.connection_receive_window
        config.max_stream_data = settings.stream_receive_window
        if not is_client and config.certificate is None:
            raise ValueError(
                "a QUIC server needs a certificate: set QuicSettings.certificate and "
                "private_key (trioquic.generate_self_signed_certificate() makes a "
                "development one)"
            )
        if is_client and settings.session_ticket is not None:
            config.session_ticket = decode_session_ticket(settings.session_ticket)
        self._base = config
        #: Derives the stateless reset tokens of every connection ID this
        #: endpoint issues (and the router's resets).
        self.stateless_reset_key = StatelessResetKey(settings.stateless_reset_key)
        self._tickets = TicketStore(lifetime=settings.session_ticket_lifetime)

    def client_connection(self, server_name: str) -> AioquicEngine:
        return AioquicEngine(
            self._connection_configuration(server_name), self.settings, reset_key=None
        )

    def server_connection(
        self,
        *,
        original_destination_cid: bytes,
        retry_source_cid: bytes | None,
        source_cid: bytes | None = None,
    ) -> AioquicEngine:
        return AioquicEngine(
            self._base,
            self.settings,
            original_destination_cid=original_destination_cid,
            retry_source_cid=retry_source_cid,
            reset_key=self.stateless_reset_key,
            tickets=self._tickets,
        )

    def _connection_configuration(
        self, server_name: str | None = None
    ) -> QuicConfiguration:
        """The configuration of one connection. aioquic only reads it, so a
        server's connections share the endpoint's; a client's gets a copy
        with its server name."""
        if not self.is_client:
            return self._base
        config = _copy_configuration(self._base)
        if server_name is not None and config.server_name is None:
            config.server_name = server_name
        return config

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
        8.1.3): a throwaway aioquic connection reads the Initial (to derive
        its keys) and closes."""
        dcid = data[6 : 6 + data[5]]
        quic = _AioquicConnection(
            configuration=self._connection_configuration(),
            original_destination_connection_id=bytes(dcid),
        )
        quic.receive_datagram(data, addr, now=now)
        if not quic._network_paths:
            return []  # not even parsed: no path to answer on (a backstop)
        # Whatever reading the ClientHello concluded (it may have failed on
        # its own), the answer is INVALID_TOKEN.
        quic._close_event = None
        quic.close(
            error_code=QuicErrorCode.INVALID_TOKEN,
            frame_type=QuicFrameType.PADDING,
            reason_phrase="invalid address validation token",
        )
        return [datagram for datagram, _ in quic.datagrams_to_send(now=now)]

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
        client (RFC 9000 section 5.2.2) without reading its ClientHello.

        Stateless and cheap (the Initial keys are derived from the client's
        destination CID, then one small packet is sealed: no TLS, no
        connection): it is what a server at ``max_connections`` sends. The
        reply is smaller than the 1200-byte Initial it answers, so it cannot
        be used for amplification.
        """
        crypto = CryptoPair()
        crypto.setup_initial(cid=destination_cid, is_client=False, version=version)
        builder = QuicPacketBuilder(
            host_cid=os.urandom(8),
            peer_cid=source_cid,
            version=version,
            is_client=False,
            max_datagram_size=1200,
        )
        builder.start_packet(QuicPacketType.INITIAL, crypto)
        reason_bytes = reason.encode()
        buf = builder.start_frame(
            QuicFrameType.TRANSPORT_CLOSE, capacity=3 * 8 + len(reason_bytes)
        )
        buf.push_uint_var(error_code)
        buf.push_uint_var(QuicFrameType.PADDING)
        buf.push_uint_var(len(reason_bytes))
        buf.push_bytes(reason_bytes)
        datagrams, _ = builder.flush()
        return [bytes(datagram) for datagram in datagrams]

    def close(self) -> None:
        if self._keylog is not None:
            self._keylog.close()
            self._keylog = None


def _copy_configuration(config: QuicConfiguration) -> QuicConfiguration:
    """A shallow copy of an aioquic configuration (a dataclass)."""
    return dataclasses.replace(config)


def _load_certificate(config: QuicConfiguration, settings: QuicSettings) -> None:
    certificate = settings.certificate
    private_key = settings.private_key
    if isinstance(certificate, str | os.PathLike):
        key_path = (
            os.fspath(private_key)
            if isinstance(private_key, str | os.PathLike)
            else None
        )
        try:
            config.load_cert_chain(os.fspath(certificate), key_path)
        except FileNotFoundError as exc:
            raise ValueError(
                f"cannot read the certificate or key file: {exc.filename}"
            ) from None
        except ValueError as exc:
            raise ValueError(
                f"cannot load the certificate {os.fspath(certificate)!r}: {exc}"
            ) from None
        if key_path is None and private_key is not None:
            config.private_key = private_key
        if config.private_key is None:
            raise ValueError(
                f"the certificate file {os.fspath(certificate)!r} holds no private "
                "key: set QuicSettings.private_key"
            )
    else:
        config.certificate = certificate
        if isinstance(private_key, str | os.PathLike):
            from cryptography.hazmat.primitives.serialization import (
                load_pem_private_key,
            )

            with open(private_key, "rb") as fp:
                config.private_key = load_pem_private_key(fp.read(), password=None)
        else:
            config.private_key = private_key
