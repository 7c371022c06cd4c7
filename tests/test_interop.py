"""Interoperability with an independent QUIC and HTTP/3 implementation:
ngtcp2's example client and server (Debian packages ``ngtcp2-client`` and
``ngtcp2-server``: ``gtlsclient``, ``gtlsserver``), on loopback.

* ``gtlsclient`` downloads 1 KB, 1 MB and 10 MB from ``trioquic serve``;
* ``trioquic get`` downloads the same sizes from ``gtlsserver``.

Every body is checked by SHA-256. Every process runs under a timeout and is
killed when the test ends.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import trio

import trioquic

pytestmark = pytest.mark.interop

GTLSCLIENT = shutil.which("gtlsclient") or shutil.which("gtlsclient", path="/usr/bin")
GTLSSERVER = shutil.which("gtlsserver") or shutil.which(
    "gtlsserver", path="/usr/sbin:/usr/bin"
)
PYTHON_M = [sys.executable, "-m", "trioquic"]
TIMEOUT = 60.0
SIZES = {"1k.bin": 1024, "1m.bin": 1024 * 1024, "10m.bin": 10 * 1024 * 1024}

needs_client = pytest.mark.skipif(
    GTLSCLIENT is None,
    reason="gtlsclient not found (install the ngtcp2-client package)",
)
needs_server = pytest.mark.skipif(
    GTLSSERVER is None,
    reason="gtlsserver not found (install the ngtcp2-server package)",
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Process:
    """A child process; its output is collected by threads so that waiting
    for a line has a deadline and a full pipe never blocks it."""

    def __init__(self, argv: list[str], cwd: pathlib.Path | None = None) -> None:
        self.argv = argv
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.errors: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_errors, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_errors(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.errors.append(line.rstrip("\n"))
            del self.errors[:-200]  # keep the tail only

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} in {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"{self.argv[0]} exited before printing {pattern!r}: "
                    f"{self.seen}; stderr: {self.errors[-20:]}"
                )
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("htdocs")
    for name, size in SIZES.items():
        (root / name).write_bytes(os.urandom(size))
    return root


@pytest.fixture(scope="module")
def certificate(
    tmp_path_factory: pytest.TempPathFactory,
) -> trioquic.DevelopmentCertificate:
    return trioquic.generate_self_signed_certificate(
        directory=tmp_path_factory.mktemp("cert")
    )


# -- gtlsclient → trioquic serve ------------------------------------------------------


@pytest.fixture(scope="module", params=["plain", "retry"])
def trioquic_server(
    request: pytest.FixtureRequest,
    files: pathlib.Path,
    certificate: trioquic.DevelopmentCertificate,
) -> Iterator[int]:
    """``trioquic serve``, without and with ``--retry`` (the client must
    follow a Retry and echo its token)."""
    process = Process(
        [
            *PYTHON_M,
            *["serve", "--host", "127.0.0.1", "--port", "0", "--root", str(files)],
            *["--certificate", str(certificate.certificate_path)],
            *["--private-key", str(certificate.private_key_path)],
            *(["--retry"] if request.param == "retry" else []),
        ]
    )
    try:
        match = process.wait_for(r"listening on 127\.0\.0\.1:(\d+) \(UDP\)")
        process.wait_for("press Ctrl-C to stop")
        yield int(match[1])
    finally:
        process.stop()


@needs_client
@pytest.mark.parametrize("name", list(SIZES))
def test_gtlsclient_downloads_from_trioquic_serve(
    trioquic_server: int,
    files: pathlib.Path,
    tmp_path: pathlib.Path,
    name: str,
) -> None:
    assert GTLSCLIENT is not None
    port = trioquic_server
    download = tmp_path / "download"
    download.mkdir()
    argv = [
        GTLSCLIENT,
        *["--quiet", "--exit-on-all-streams-close", "--timeout", "20s"],
        *["--download", str(download)],
        *["127.0.0.1", str(port), f"https://127.0.0.1:{port}/{name}"],
    ]
    try:
        result = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:  # run() killed it
        raise AssertionError(f"gtlsclient timed out: {exc.stderr!r}") from None
    output = (result.stdout + result.stderr).decode(errors="replace")[-2000:]
    assert result.returncode == 0, output
    saved = download / name
    assert saved.is_file(), output
    assert saved.stat().st_size == SIZES[name]
    assert sha256(saved.read_bytes()) == sha256((files / name).read_bytes())


# -- trioquic get → gtlsserver --------------------------------------------------------


async def _wait_until_listening(port: int) -> None:
    """Handshake with the server until it answers (it prints nothing when
    it is ready). An attempt before the port is bound is refused at once
    (ICMP port unreachable); one that got no answer waits its handshake
    timeout. Either is retried at once (each costs a handshake's first flight,
    not a sleep)."""
    settings = trioquic.QuicSettings(
        alpn_protocols=["h3"], verify_peer=False, handshake_timeout=0.5
    )
    while True:
        try:
            async with trioquic.open_quic_connection(
                "127.0.0.1", port, settings=settings
            ):
                return
        except (trioquic.HandshakeTimeout, trioquic.ConnectionRefused):
            continue  # not listening yet


@pytest.fixture(scope="module")
def ngtcp2_server(
    files: pathlib.Path, certificate: trioquic.DevelopmentCertificate
) -> Iterator[int]:
    assert GTLSSERVER is not None
    port = free_udp_port()
    process = Process(
        [
            GTLSSERVER,
            *["--quiet", "--htdocs", str(files)],
            *["127.0.0.1", str(port)],
            str(certificate.private_key_path),
            str(certificate.certificate_path),
        ]
    )
    try:

        async def ready() -> None:
            with trio.fail_after(20):
                await _wait_until_listening(port)

        try:
            trio.run(ready)
        except (trioquic.ConnectionClosed, trio.TooSlowError) as exc:
            raise AssertionError(
                f"gtlsserver did not answer: {exc}; stderr: {process.errors[-20:]}"
            ) from None
        yield port
    finally:
        process.stop()


@needs_server
@pytest.mark.parametrize("name", list(SIZES))
def test_trioquic_get_downloads_from_gtlsserver(
    ngtcp2_server: int,
    files: pathlib.Path,
    certificate: trioquic.DevelopmentCertificate,
    tmp_path: pathlib.Path,
    name: str,
) -> None:
    port = ngtcp2_server
    target = tmp_path / name
    argv = [
        *PYTHON_M,
        *["get", f"https://localhost:{port}/{name}", "-o", str(target)],
        *["--ca-certs", str(certificate.certificate_path)],
    ]
    result = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert target.stat().st_size == SIZES[name]
    assert sha256(target.read_bytes()) == sha256((files / name).read_bytes())


@needs_server
def test_trioquic_get_many_from_gtlsserver_at_once(
    ngtcp2_server: int,
    files: pathlib.Path,
    certificate: trioquic.DevelopmentCertificate,
    tmp_path: pathlib.Path,
) -> None:
    """All sizes on one connection, concurrently, into a directory."""
    port = ngtcp2_server
    argv = [
        *PYTHON_M,
        "get",
        *[f"https://127.0.0.1:{port}/{name}" for name in SIZES],
        *["--output", str(tmp_path)],
        *["--ca-certs", str(certificate.certificate_path)],
    ]
    result = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    for name in SIZES:
        assert sha256((tmp_path / name).read_bytes()) == sha256(
            (files / name).read_bytes()
        )


@needs_server
def test_trioquic_get_reports_gtlsserver_404(
    ngtcp2_server: int, certificate: trioquic.DevelopmentCertificate
) -> None:
    url = f"https://localhost:{ngtcp2_server}/missing.bin"
    argv = [*PYTHON_M, "get", url, "--ca-certs", str(certificate.certificate_path)]
    result = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"python -m trioquic get: {url}: 404 Not Found"
    ]
