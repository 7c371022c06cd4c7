from __future__ import annotations

import datetime
import pathlib

import attrs
import pytest

from trioquic import QuicSettings, generate_self_signed_certificate
from trioquic._aioquic import AioquicEndpoint as EndpointConfiguration


def test_defaults_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIOQUIC_ENGINE", raising=False)
    settings = QuicSettings()
    assert settings.engine == "aioquic"
    assert settings.alpn_protocols == ()
    assert settings.congestion_control == "reno"
    assert settings.close_grace_period == 1.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("idle_timeout", 0, "greater than 0"),
        ("handshake_timeout", -1, "greater than 0"),
        ("connection_id_length", 3, "at least 4"),
        ("connection_id_length", 21, "at most 20"),
        ("stream_send_buffer", 0, "at least 1"),
        ("inbound_queue_size", 0, "at least 1"),
        ("max_udp_payload_size", 1000, "at least 1200"),
        ("congestion_control", "bbr", "'reno' or 'cubic'"),
        ("max_datagram_frame_size", 0, "at least 1"),
        ("active_connection_id_limit", 1, "at least 2"),
        ("session_ticket_lifetime", 0, "greater than 0"),
        ("session_ticket_lifetime", 8 * 86400, "at most 604800"),
    ],
)
def test_bad_values_raise_value_error_naming_the_field(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        QuicSettings(**{field: value})  # type: ignore[arg-type]
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("idle_timeout", "10"),
        ("connection_id_length", 8.0),
        ("max_pending_handshakes", True),
        ("max_connections", True),
        ("qlog_dir", 3),
        ("verify_peer", "yes"),
        ("udp_offload", 1),
    ],
)
def test_wrong_types_raise_type_error(field: str, value: object) -> None:
    with pytest.raises(TypeError):
        QuicSettings(**{field: value})  # type: ignore[arg-type]


def test_alpn_must_be_a_sequence_of_strings() -> None:
    with pytest.raises(TypeError, match=r"alpn_protocols=\['h3'\]"):
        QuicSettings(alpn_protocols="h3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1 to 255 bytes"):
        QuicSettings(alpn_protocols=[""])
    assert QuicSettings(alpn_protocols=["h3", "echo"]).alpn_protocols == ("h3", "echo")


def test_stream_window_cannot_exceed_connection_window() -> None:
    with pytest.raises(ValueError, match="must not exceed"):
        QuicSettings(
            stream_receive_window=2_000_000, connection_receive_window=1_000_000
        )


def test_private_key_needs_a_certificate() -> None:
    with pytest.raises(ValueError, match="certificate"):
        QuicSettings(private_key="key.pem")


def test_escape_hatch_type_checked() -> None:
    with pytest.raises(TypeError, match="QuicConfiguration"):
        QuicSettings(quic_configuration={"is_client": False})


def test_evolve_revalidates() -> None:
    settings = QuicSettings()
    with pytest.raises(ValueError):
        attrs.evolve(settings, idle_timeout=0)


def test_configuration_mapping(tmp_path: object) -> None:
    cert = generate_self_signed_certificate()
    settings = QuicSettings(
        alpn_protocols=["echo"],
        certificate=cert.certificate_path,
        private_key=cert.private_key_path,
        congestion_control="cubic",
        connection_id_length=12,
        idle_timeout=7,
        connection_receive_window=3_000_000,
        stream_receive_window=500_000,
        max_datagram_frame_size=1200,
        max_udp_payload_size=1400,
    )
    config = EndpointConfiguration(
        settings, is_client=False
    )._connection_configuration()
    assert config.alpn_protocols == ["echo"]
    assert config.congestion_control_algorithm == "cubic"
    assert config.connection_id_length == 12
    assert config.idle_timeout == 7
    assert config.max_data == 3_000_000
    assert config.max_stream_data == 500_000
    assert config.max_datagram_frame_size == 1200
    assert config.max_datagram_size == 1400
    assert config.certificate is not None and config.private_key is not None


def test_server_without_certificate_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="generate_self_signed_certificate"):
        EndpointConfiguration(QuicSettings(), is_client=False)


def test_missing_certificate_file_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        EndpointConfiguration(
            QuicSettings(
                certificate="/nonexistent/cert.pem", private_key="/nonexistent/k"
            ),
            is_client=False,
        )


def test_escape_hatch_keeps_our_bounds() -> None:
    from aioquic.quic.configuration import QuicConfiguration

    base = QuicConfiguration(is_client=True, alpn_protocols=["x"], idle_timeout=99)
    settings = QuicSettings(engine="aioquic", quic_configuration=base, idle_timeout=5)
    config = EndpointConfiguration(settings, is_client=True)._connection_configuration(
        "example"
    )
    assert config.alpn_protocols == ["x"]
    assert config.idle_timeout == 5
    assert config.server_name == "example"
    assert base.idle_timeout == 99  # the caller's object is not modified


def test_keylog_file_from_environment(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(path))
    settings = QuicSettings()
    assert settings.effective_keylog_file() == str(path)
    endpoint = EndpointConfiguration(settings, is_client=True)
    assert endpoint._connection_configuration().secrets_log_file is not None
    endpoint.close()
    assert path.exists()


def test_development_certificate_validity_is_days_in_all(
    tmp_path: pathlib.Path,
) -> None:
    """Browsers take a certificate by its hash (WebTransport's
    serverCertificateHashes) only when its whole validity is at most two
    weeks: the default is exactly 14 days, backdating included."""
    from cryptography import x509

    for days, expected in ((None, 14), (3, 3)):
        kwargs = {} if days is None else {"days": days}
        cert = generate_self_signed_certificate(
            ["localhost"], tmp_path / str(days), **kwargs
        )
        parsed = x509.load_pem_x509_certificate(cert.certificate_path.read_bytes())
        validity = parsed.not_valid_after_utc - parsed.not_valid_before_utc
        assert validity == datetime.timedelta(days=expected)
        assert parsed.not_valid_before_utc < datetime.datetime.now(datetime.UTC)


# -- the engine -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "engine", "congestion_control"),
    [(None, "aioquic", "reno"), ("", "aioquic", "reno"), ("qh3", "qh3", "cubic")],
)
def test_the_engine_defaults_to_trioquic_engine(
    monkeypatch: pytest.MonkeyPatch,
    environment: str | None,
    engine: str,
    congestion_control: str,
) -> None:
    """``TRIOQUIC_ENGINE`` picks the default engine (unset or empty:
    aioquic), read when the settings are made; the congestion controller's
    default follows the engine (qh3 has CUBIC only)."""
    if environment is None:
        monkeypatch.delenv("TRIOQUIC_ENGINE", raising=False)
    else:
        monkeypatch.setenv("TRIOQUIC_ENGINE", environment)
    settings = QuicSettings()
    assert settings.engine == engine
    assert settings.congestion_control == congestion_control
    # An explicit engine wins over the environment.
    other = "aioquic" if engine == "qh3" else "qh3"
    assert QuicSettings(engine=other).engine == other  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["quiche", "QH3", "", None, 3])
def test_a_bad_engine_names_the_allowed_ones(value: object) -> None:
    with pytest.raises(ValueError, match=r"QuicSettings\.engine") as info:
        QuicSettings(engine=value)  # type: ignore[arg-type]
    message = str(info.value)
    assert "'aioquic'" in message and "'qh3'" in message
    assert repr(value) in message


def test_a_bad_trioquic_engine_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRIOQUIC_ENGINE", "msquic")
    with pytest.raises(ValueError, match="TRIOQUIC_ENGINE") as info:
        QuicSettings()
    assert "'msquic'" in str(info.value) and "'qh3'" in str(info.value)


def test_qh3_refuses_reno_saying_why() -> None:
    with pytest.raises(ValueError, match="CUBIC only") as info:
        QuicSettings(engine="qh3", congestion_control="reno")
    assert "congestion_control='cubic'" in str(info.value)
    assert QuicSettings(engine="qh3", congestion_control="cubic").engine == "qh3"


def test_qh3_refuses_an_aioquic_configuration() -> None:
    from aioquic.quic.configuration import QuicConfiguration

    with pytest.raises(ValueError, match="cannot be used with engine='qh3'"):
        QuicSettings(engine="qh3", quic_configuration=QuicConfiguration(is_client=True))


def test_switching_to_qh3_keeps_the_refusals() -> None:
    """``attrs.evolve`` revalidates: settings that chose reno cannot switch
    to qh3 without choosing CUBIC too."""
    settings = QuicSettings(engine="aioquic", congestion_control="reno")
    with pytest.raises(ValueError, match="CUBIC only"):
        attrs.evolve(settings, engine="qh3")
    evolved = attrs.evolve(settings, engine="qh3", congestion_control="cubic")
    assert evolved.engine == "qh3"
