"""Self-signed server certificates a client trusts by name: pinned.

qh3 verifies a server's chain with webpki, which refuses a self-signed
certificate that serves as its own root (``CaUsedAsEndEntity``): the kind
:func:`trioquic.generate_self_signed_certificate` makes, and a development
server presents. aioquic (OpenSSL) accepts it when the client's
``ca_certs`` holds it. So that both engines accept the same servers, the
qh3 engine *pins* such certificates: those of the client's ``ca_certs``
that are self-signed and name a server (a subjectAltName).

With pins, qh3's own check is switched off and the engine's TLS bridge
checks the server's certificate itself, at the same point of the handshake
(the server's Finished verified, the client's not sent yet): a certificate
byte-identical to a pinned one is accepted if it is valid now and names the
server (subjectAltName, RFC 6125 section 6.4); any other certificate goes
through qh3's own verification against the same ``ca_certs``. A refusal is
the TLS alert bad_certificate (QUIC error 0x12a), or certificate_expired
(0x12d). Nothing is accepted that aioquic would refuse.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding


class PinMismatch(Exception):
    """A pinned certificate does not fit: ``expired`` tells which alert."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.expired = expired


def pinned_certificates(path: str | os.PathLike[str]) -> tuple[bytes, ...]:
    """The DER of each self-signed certificate naming a server in the PEM
    file ``path`` (empty if none, or if the file cannot be read: qh3 then
    reports the file as it does)."""
    try:
        with open(path, "rb") as file:
            certificates = x509.load_pem_x509_certificates(file.read())
    except (OSError, ValueError):
        return ()
    pins = []
    for certificate in certificates:
        if certificate.issuer != certificate.subject:
            continue
        try:
            certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except (x509.ExtensionNotFound, ValueError):
            continue
        try:
            certificate.verify_directly_issued_by(certificate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        pins.append(certificate.public_bytes(Encoding.DER))
    return tuple(pins)


def check_pinned(der: bytes, server_name: str | None) -> None:
    """Raise :exc:`PinMismatch` unless the pinned certificate ``der`` is
    valid now and, when ``server_name`` is given, names it."""
    certificate = x509.load_der_x509_certificate(der)
    now = datetime.datetime.now(datetime.UTC)
    if now < certificate.not_valid_before_utc:
        raise PinMismatch("certificate is not valid yet", expired=True)
    if now > certificate.not_valid_after_utc:
        raise PinMismatch("certificate is no longer valid", expired=True)
    if server_name is None:
        return
    try:
        names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except (x509.ExtensionNotFound, ValueError):
        raise PinMismatch("certificate names no server") from None
    if not _names_match(names, server_name):
        raise PinMismatch(f"hostname {server_name!r} doesn't match the certificate")


def _names_match(names: x509.SubjectAlternativeName, server_name: str) -> bool:
    try:
        address = ipaddress.ip_address(server_name.strip("[]"))
    except ValueError:
        pass
    else:
        return address in names.get_values_for_type(x509.IPAddress)
    host = server_name.rstrip(".").lower()
    for pattern in names.get_values_for_type(x509.DNSName):
        pattern = pattern.rstrip(".").lower()
        if pattern == host:
            return True
        # A wildcard stands for the whole left-most label, one label only.
        if pattern.startswith("*.") and "." in host:
            label, rest = host.split(".", 1)
            if label and rest == pattern[2:] and "." in rest:
                return True
    return False
