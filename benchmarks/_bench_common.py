"""What the benchmark scripts share: the machine's CPU and UDP counters, and
the certificate their servers use.

Imported by the scripts beside it (``bulk.py``, ``h3_requests.py`` and, through
the latter, the HTTP/3 benchmarks), which run with this folder on ``sys.path``.
Linux only in substance: elsewhere each reading is None or empty.
"""

from __future__ import annotations

import argparse
import os
import resource


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
