"""What the benchmark scripts share: the machine's CPU and UDP counters, and
the certificates their servers use (self-signed, or signed by a scratch CA:
qh3's client, on rustls, refuses a self-signed certificate that is its own
CA as the server's certificate).

Imported by the scripts beside it (``bulk.py``, ``h3_requests.py`` and, through
the latter, the HTTP/3 benchmarks), which run with this folder on ``sys.path``.
Linux only in substance: elsewhere each reading is None or empty.
"""

from __future__ import annotations

import argparse
import os
import resource
from pathlib import Path
from typing import Any


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters (Linux), to count datagrams dropped because a
    socket's receive buffer was full; empty where unavailable."""
    try:
        with open("/proc/net/snmp") as fp:
            rows = [line.split() for line in fp if line.startswith("Udp:")]
        return dict(zip(rows[0][1:], map(int, rows[1][1:]), strict=True))
    except (OSError, IndexError, ValueError):
        return {}


def system_busy_seconds() -> float | None:
    """CPU seconds every process on the machine spent in user and system mode
    (Linux ``/proc/stat``); None where unavailable."""
    try:
        with open("/proc/stat") as fp:
            fields = fp.readline().split()
        user, nice, system = (int(x) for x in fields[1:4])
    except (OSError, ValueError, IndexError):
        return None
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def own_and_children_seconds() -> float:
    """CPU seconds of this process and of the children it has waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def use_self_signed_certificate(
    args: argparse.Namespace, directory: str, host: str
) -> None:
    """Make a self-signed certificate for ``localhost`` and ``host`` in
    ``directory``, and point ``args.cert`` and ``args.key`` at it."""
    import trioquic

    certificate = trioquic.generate_self_signed_certificate(
        ["localhost", host], directory
    )
    args.cert = str(certificate.certificate_path)
    args.key = str(certificate.private_key_path)


def use_ca_signed_certificate(
    args: argparse.Namespace, directory: str, host: str
) -> None:
    """Make a scratch CA and a certificate it signs for ``localhost`` and
    ``host`` in ``directory``: ``args.cert`` and ``args.key`` are the
    server's, ``args.ca`` is what clients verify against."""
    args.ca, args.cert, args.key = write_ca_and_leaf(Path(directory), host)


def write_ca_and_leaf(directory: Path, host: str = "127.0.0.1") -> tuple[str, str, str]:
    """A scratch CA and a server certificate it signs (``localhost`` and
    ``host``): paths of the CA, the certificate and its key."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str, issuer: str, public: Any, signer: Any, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(
                x509.BasicConstraints(ca=ca, path_length=None), critical=True
            )
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address(host)),
                    ]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("benchmark CA", "benchmark CA", ca_key.public_key(), ca_key, True)
    leaf = build("localhost", "benchmark CA", leaf_key.public_key(), ca_key, False)
    paths = [directory / name for name in ("ca.pem", "cert.pem", "key.pem")]
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(paths[0]), str(paths[1]), str(paths[2])
