"""Self-signed development certificates."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import pathlib
import tempfile
from collections.abc import Sequence

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


@attrs.frozen
class DevelopmentCertificate:
    """Where a generated certificate and its key were written."""

    certificate_path: pathlib.Path
    private_key_path: pathlib.Path
    #: Base64 SHA-256 of the certificate's SubjectPublicKeyInfo: what
    #: ``--ignore-certificate-errors-spki-list`` in Chromium wants.
    spki_sha256: str
    names: tuple[str, ...]


def generate_self_signed_certificate(
    names: Sequence[str] = DEFAULT_NAMES,
    directory: str | os.PathLike[str] | None = None,
    *,
    days: int = 14,
) -> DevelopmentCertificate:
    """Make a self-signed ECDSA P-256 certificate for ``names`` (DNS names or
    IP addresses) valid for ``days`` days, and write ``cert.pem`` and
    ``key.pem`` into ``directory`` (a new temporary directory by default).

    For development only: clients must be told to trust it (``ca_certs`` set
    to the certificate file). The validity period, counted from five minutes
    ago (for clocks a little behind), is ``days`` days in all: with the
    default 14 it is one a browser accepts by its hash for WebTransport
    (``serverCertificateHashes`` takes at most two weeks).
    """
    if isinstance(names, str):
        raise TypeError("names must be a sequence of names, not one string")
    names = tuple(names)
    if not names:
        raise ValueError("give at least one name for the certificate")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    key = ec.generate_private_key(ec.SECP256R1())
    alternative: list[x509.GeneralName] = []
    for name in names:
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(
            now - datetime.timedelta(minutes=5) + datetime.timedelta(days=days)
        )
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    target = pathlib.Path(
        directory if directory is not None else tempfile.mkdtemp(prefix="trioquic-")
    )
    target.mkdir(parents=True, exist_ok=True)
    cert_path = target / "cert.pem"
    key_path = target / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DevelopmentCertificate(
        certificate_path=cert_path,
        private_key_path=key_path,
        spki_sha256=base64.b64encode(hashlib.sha256(spki).digest()).decode(),
        names=names,
    )
