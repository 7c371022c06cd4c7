"""HTTP/3 clients: 1 KB GETs per second from one client over one connection,
httpx over ``trioquic.httpx.HTTP3Transport`` beside trioquic's own
``Http3Client`` and niquests (HTTP/3 through qh3), against the same server,
in the same run.

The server is a plain ``trioquic.h3`` handler (``_asgi_peers/trioquic_server.py
--mode h3``, ``GET /`` answers 1024 bytes), in its own process on one CPU.
Each client runs in its own process on another CPU
(``_asgi_peers/client_load.py``), with ``--concurrency`` (10) requests in
flight over one connection: ``httpx`` and ``trioquic`` under trio, ``niquests``
under asyncio (multiplexed, HTTP/1.1 and HTTP/2 off so that it speaks HTTP/3
from the first request). The first request (the handshake) is not timed;
after ``--warmup`` seconds, the requests that complete within ``--duration``
seconds are counted: requests/s; the client's CPU microseconds per request
(its CPU time over the measurement, per request) are printed beside it, a
figure the server's speed does not cap. Every answer's status and size are
checked, and every response must have come over HTTP/3 (httpx:
``response.http_version``; niquests: ``http_version`` and ``conn_info``), or
the measurement fails.

The server's certificate is signed by a scratch CA that every client is
given (``verify=CA``): niquests (qh3) refuses a self-signed certificate
that is its own CA as the server's certificate.

Goals (medians over ``--rounds``, order rotating, server restarted every
round): httpx + HTTP3Transport >= 0.8x Http3Client and >= 1.5x niquests.

Run it::

    python benchmarks/httpx_client.py              # 5 rounds of 3 s each
    python benchmarks/httpx_client.py --quick      # a smoke test

The last line is ``HTTPX-BENCH {json}``: the medians and the goals.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from asgi_servers import (  # noqa: E402 - the sibling benchmark's harness
    ASGI_PEERS,
    NATIVE_CLIENT,
    Route,
    Suite,
    start_server,
    trioquic_peer,
)
from h3_requests import (  # noqa: E402
    HOST,
    BenchError,
    choose_cpus,
    read_tagged,
    start,
    stop,
    stop_server,
)

CLIENTS = ("httpx", "trioquic", "niquests")
LABELS = {
    "httpx": "httpx+HTTP3Transport",
    "trioquic": "trioquic Http3Client",
    "niquests": "niquests",
}
LOAD_TAG = "CLIENT-LOAD "
RESULT_TAG = "HTTPX-BENCH "
#: (ours, theirs, factor)
GOALS = (("httpx", "trioquic", 0.8), ("httpx", "niquests", 1.5))


def missing_client(name: str) -> str | None:
    if name == "httpx":
        if importlib.util.find_spec("httpx") is None:
            return "httpx is not installed"
        try:
            from trioquic.httpx import HTTP3Transport  # noqa: F401
        except ImportError as exc:
            return f"trioquic.httpx.HTTP3Transport is unavailable ({exc})"
    elif name == "niquests" and importlib.util.find_spec("niquests") is None:
        return "niquests is not installed"
    return None


def write_ca_and_leaf(directory: Path) -> tuple[str, str, str]:
    """A scratch CA and a server certificate it signs (``localhost`` and
    ``127.0.0.1``): paths of the CA, the certificate and its key."""
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
                        x509.IPAddress(ipaddress.ip_address(HOST)),
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


def measure(
    name: str, port: int, args: argparse.Namespace, cpu: int | None
) -> dict[str, Any]:
    """One client process's figures; ``failed`` with a note when it broke."""
    command = [
        sys.executable,
        str(ASGI_PEERS / "client_load.py"),
        "--impl",
        name,
        "--port",
        str(port),
        "--ca",
        args.ca,
        "--concurrency",
        str(args.concurrency),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
    ]
    with tempfile.TemporaryFile() as log:
        process = start(command, cpu=cpu, stdout=subprocess.PIPE, stderr=log)
        try:
            deadline = time.monotonic() + args.warmup + args.duration + 40
            result, _ = read_tagged(process, LOAD_TAG, deadline)
            if result is None:
                log.seek(0)
                tail = log.read().decode(errors="replace").strip()[-600:]
                return {"failed": True, "note": tail or "no result"}
        finally:
            stop(process, grace=2.0)
            assert process.stdout is not None
            process.stdout.close()
    if result["protocols"] != ["HTTP/3"]:
        return {"failed": True, "note": f"protocols used: {result['protocols']}"}
    if result["bad"]:
        return {**result, "failed": True, "note": f"{result['bad']} wrong answers"}
    return {**result, "failed": False}


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    args.native_path = shutil.which(NATIVE_CLIENT)
    if args.native_path is None:
        print(f"{NATIVE_CLIENT} not found (it checks the server): nothing to do")
        return None
    names = [c.strip() for c in args.clients.split(",") if c.strip()]
    for name in names:
        if name not in CLIENTS:
            raise SystemExit(f"unknown client {name!r}; choose from {CLIENTS}")
    missing = {n: why for n in names if (why := missing_client(n)) is not None}
    for name, why in missing.items():
        print(f"skipping {LABELS[name]}: {why}")
    names = [n for n in names if n not in missing]
    if not names:
        print("nothing to measure")
        return None
    sys.path.insert(0, str(ASGI_PEERS))
    from app import SMALL_PATH, SMALL_SIZE

    suite = Suite(
        title="server",
        routes=[Route("1 KB", SMALL_PATH, SMALL_SIZE, "index.html", bulk=False)],
        peers={"h3": trioquic_peer("h3", "h3")},
        reference="h3",
        goals=[],
    )
    server_cpu, client_cpu = choose_cpus(args.pin)
    print(
        f"GET {SMALL_PATH} ({SMALL_SIZE} bytes), one connection, "
        f"{args.concurrency} in flight; clients {', '.join(LABELS[n] for n in names)}; "
        f"{args.rounds} round(s) of {args.warmup:g} s + {args.duration:g} s; "
        f"CPUs: server {server_cpu}, clients {client_cpu}",
        flush=True,
    )
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for round_ in range(args.rounds):
        server = start_server("h3", suite, args, server_cpu)
        try:
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                figures = measure(name, server.port, args, client_cpu)
                results[name].append(figures)
                rate = (
                    "failed"
                    if figures["failed"]
                    else f"{figures['requests_per_s']:.0f} req/s"
                )
                cpu = figures.get("client_cpu_share")
                print(
                    f"  round {round_ + 1}: {LABELS[name]:<22} {rate:>12}"
                    + (f"  client CPU {cpu:.0%}" if cpu is not None else "")
                    + (f"\n    {figures['note']}" if figures.get("note") else ""),
                    flush=True,
                )
        finally:
            stop_server(server)
    return summarize(names, results, missing)


def summarize(
    names: list[str], results: dict[str, list[dict[str, Any]]], missing: dict[str, str]
) -> dict[str, Any]:
    print()
    print("1 KB GETs per second, one client, one connection: medians over rounds")
    header = (
        f"{'client':<22} {'req/s':>8} {'vs Http3Client':>15} "
        f"{'client CPU us/req':>17} {'failed':>7}  runs"
    )
    print(header)
    print("-" * len(header))
    medians: dict[str, float | None] = {}
    for name in names:
        rates = [r["requests_per_s"] for r in results[name] if not r["failed"]]
        medians[name] = statistics.median(rates) if rates else None
    reference = medians.get("trioquic")
    for name in names:
        value = medians[name]
        ratio = "-" if value is None or not reference else f"{value / reference:.2f}x"
        runs = " ".join(
            "failed" if r["failed"] else f"{r['requests_per_s']:.0f}"
            for r in results[name]
        )
        failed = sum(r["failed"] for r in results[name])
        shown = "-" if value is None else f"{value:.0f}"
        costs = [
            r["client_cpu_share"] * 1e6 / r["requests_per_s"]
            for r in results[name]
            if not r["failed"] and r["requests_per_s"]
        ]
        cost = f"{statistics.median(costs):.0f}" if costs else "-"
        print(
            f"{LABELS[name]:<22} {shown:>8} {ratio:>15} {cost:>17} {failed:>7}  {runs}"
        )
    for name, why in missing.items():
        print(f"{LABELS[name]}: not measured ({why})")
    print()
    goals = []
    for ours, theirs, factor in GOALS:
        a, b = medians.get(ours), medians.get(theirs)
        ratio = None if a is None or not b else a / b
        verdict = (
            "not measured"
            if ratio is None
            else ("met" if ratio >= factor else "NOT met")
        )
        print(
            f"goal: {LABELS[ours]} / {LABELS[theirs]} "
            f"{'-' if ratio is None else f'{ratio:.2f}'}x, goal >= {factor}x: {verdict}"
        )
        goals.append(
            {
                "ours": ours,
                "theirs": theirs,
                "ratio": ratio,
                "factor": factor,
                "verdict": verdict,
            }
        )
    summary = {"medians": medians, "missing": missing, "goals": goals}
    print(RESULT_TAG + json.dumps(summary), flush=True)
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (5; quick 1)")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--duration", type=float, default=None, help="seconds (3)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds (0.5)")
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin to CPUs"
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 5)
    if args.duration is None:
        args.duration = 0.5 if args.quick else 3.0
    if args.warmup is None:
        args.warmup = 0.2 if args.quick else 0.5
    if args.rounds < 1 or args.concurrency < 1 or args.duration <= 0:
        parser.error("--rounds and --concurrency >= 1, --duration > 0")
    # What asgi_servers' server helpers read.
    args.budget = args.rounds * (args.duration + args.warmup + 40) * len(CLIENTS)
    args.scratch = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        args.ca, args.cert, args.key = write_ca_and_leaf(Path(directory))
        try:
            summary = run(args)
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    return 0 if summary is not None else 1


if __name__ == "__main__":
    sys.exit(main())
