"""The ``trioquic`` command line: argument errors in-process, the echo server
and client as real processes on loopback."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pathlib
import queue
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import trioquic
from trioquic import h3
from trioquic.cli import build_parser, main

# private: the one-line error formatter has no public entry but main()'s
# output, and no command fails with the nested groups tested here.
from trioquic.cli._common import _describe, _leaf

PYTHON_M = [sys.executable, "-m", "trioquic"]
TIMEOUT = 30.0
#: The ALPN of echo-server and echo-client (see ``trioquic.cli``).
ECHO_ALPN = "trioquic-echo"


def spki_sha256(certificate_path: str | os.PathLike[str]) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo (what
    Chromium's ``--ignore-certificate-errors-spki-list`` takes), computed
    here independently of what the commands print."""
    certificate = x509.load_pem_x509_certificate(
        pathlib.Path(certificate_path).read_bytes()
    )
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


class Process:
    """A child process whose stdout lines are read by a thread, so that
    waiting for a line has a deadline."""

    def __init__(
        self, argv: list[str], cwd: str | os.PathLike[str] | None = None
    ) -> None:
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, prefix: str, timeout: float = TIMEOUT) -> str:
        """The first line starting with ``prefix``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line {prefix!r} in {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"process exited before printing {prefix!r}: {self.seen}, "
                    f"stderr: {self.stderr()}"
                )
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def stderr(self) -> str:
        if self.popen.poll() is None or self.popen.stderr is None:
            return ""
        return self.popen.stderr.read()

    def interrupt(self, timeout: float = TIMEOUT) -> int:
        """Send SIGINT (Ctrl-C) and wait for the exit status."""
        self.popen.send_signal(signal.SIGINT)
        return self.popen.wait(timeout=timeout)

    def rest(self, timeout: float = TIMEOUT) -> list[str]:
        """Every remaining stdout line (the process must be exiting)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                return self.seen
            self.seen.append(line)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=TIMEOUT)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


class EchoServer:
    def __init__(self, process: Process) -> None:
        self.process = process
        listening = process.wait_for("trioquic echo server listening on ")
        self.port = int(listening.split()[-2].rsplit(":", 1)[1])
        self.certificate = process.wait_for("self-signed development certificate: ")
        self.certificate = self.certificate.split(": ", 1)[1]
        self.spki = process.wait_for("certificate SPKI SHA-256 (base64): ").split()[-1]
        self.client_command = process.wait_for("try it with: ").split(": ", 1)[1]
        process.wait_for("press Ctrl-C to stop")


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    process = Process([*PYTHON_M, "echo-server", "--port", "0"])
    try:
        yield EchoServer(process)
    finally:
        process.kill()


def run(argv: list[str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False
    )


# -- in-process: arguments and certificates -------------------------------------


def test_no_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert trioquic.__version__ in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["echo-server", "--port", "70000"],
        ["echo-server", "--port", "http"],
        ["echo-client", "127.0.0.1", "4433"],  # no message
        ["echo-client", "127.0.0.1", "4433", "hi", "--insecure", "--ca-certs", "x"],
        ["echo-client", "127.0.0.1", "4433", "hi", "--timeout", "0"],
        ["cert", "--days", "0"],
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def one_line_failure(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("trioquic: error: ")
    return err


def test_certificate_without_key_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    err = one_line_failure(
        ["echo-server", "--certificate", str(tmp_path / "cert.pem")], capsys
    )
    assert "--private-key" in err


def test_missing_certificate_file_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    missing = str(tmp_path / "nope.pem")
    err = one_line_failure(
        ["echo-server", "--certificate", missing, "--private-key", missing], capsys
    )
    assert "nope.pem" in err


def test_missing_ca_file_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    err = one_line_failure(
        ["echo-client", "127.0.0.1", "4433", "hi", "--ca-certs", str(tmp_path / "x")],
        capsys,
    )
    assert "not found" in err


def test_port_in_use_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        err = one_line_failure(["echo-server", "--port", str(port)], capsys)
    assert "in use" in err.lower()


def test_cert_command(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    target = tmp_path / "dev"
    status = main(
        ["cert", "--dir", str(target), "--name", "example.test", "--name", "10.0.0.1"]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert (target / "cert.pem").is_file()
    assert (target / "key.pem").is_file()
    assert f"certificate: {target / 'cert.pem'}" in out
    assert "names: example.test, 10.0.0.1" in out
    assert f"(base64): {spki_sha256(target / 'cert.pem')}" in out


def test_cert_command_default_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cert"]) == 0
    assert "names: localhost, 127.0.0.1, ::1" in capsys.readouterr().out


def test_describe_unwraps_groups() -> None:
    reason = trioquic.CloseReason(
        error_code=0x12A,
        frame_type=6,
        reason="bad certificate",
        cause=trioquic.CloseCause.CLOSED_LOCALLY,
    )
    group = ExceptionGroup(
        "x", [ExceptionGroup("y", [trioquic.ConnectionClosed(reason)])]
    )
    assert isinstance(_leaf(group), trioquic.ConnectionClosed)
    assert _describe(group).startswith("connection failed: ")
    assert "bad certificate" in _describe(group)
    two = ExceptionGroup("x", [ValueError("a"), ValueError("b")])
    assert _describe(two) == "a; b"


def test_parser_help_mentions_every_command() -> None:
    text = build_parser().format_help()
    for command in ("echo-server", "echo-client", "cert"):
        assert command in text


# -- real processes on loopback ------------------------------------------------------


def test_echo_server_and_client(echo_server: EchoServer) -> None:
    # The server printed the exact client command; it must work as is.
    argv = shlex.split(echo_server.client_command)
    assert argv[-2:] == ["hello", "world"]
    assert echo_server.spki == spki_sha256(echo_server.certificate)
    result = run(argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hello", "world"]


def test_echo_client_many_streams(echo_server: EchoServer) -> None:
    messages = [f"message {i}" for i in range(20)] + ["ünïcödé", "x" * 5000]
    result = run(
        [
            *PYTHON_M,
            "echo-client",
            "127.0.0.1",
            str(echo_server.port),
            "--ca-certs",
            echo_server.certificate,
            *messages,
        ]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == messages


def test_echo_client_insecure(echo_server: EchoServer) -> None:
    result = run(
        [
            *PYTHON_M,
            "echo-client",
            "localhost",
            str(echo_server.port),
            "--insecure",
            "hi",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"


def test_echo_client_rejects_untrusted_certificate(echo_server: EchoServer) -> None:
    result = run([*PYTHON_M, "echo-client", "127.0.0.1", str(echo_server.port), "hi"])
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("python -m trioquic: error: connection failed")
    assert "certificate" in lines[0]


def test_echo_client_wrong_server_name(echo_server: EchoServer) -> None:
    result = run(
        [
            *PYTHON_M,
            "echo-client",
            "127.0.0.1",
            str(echo_server.port),
            "--ca-certs",
            echo_server.certificate,
            "--server-name",
            "not-this.example",
            "hi",
        ]
    )
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_echo_client_nobody_listening() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))  # holds the port; never answers
        port = quiet.getsockname()[1]
        result = run(
            [
                *PYTHON_M,
                *["echo-client", "127.0.0.1", str(port), "--insecure"],
                *["--timeout", "0.5", "hi"],
            ]
        )
    assert result.returncode == 1
    assert "handshake timeout" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_ctrl_c_stops_the_server(echo_server: EchoServer) -> None:
    assert echo_server.process.interrupt() == 0
    lines = echo_server.process.rest()
    assert "SIGINT received: closing connections and stopping" in lines
    assert lines[-1] == "echo server stopped"


async def test_ctrl_c_closes_connections_gracefully(
    echo_server: EchoServer,
) -> None:
    """A connected client learns at once that the server left: CONNECTION_CLOSE
    from the peer, not an idle timeout."""
    settings = trioquic.QuicSettings(
        alpn_protocols=[ECHO_ALPN], ca_certs=echo_server.certificate, idle_timeout=60
    )
    with trio.fail_after(TIMEOUT):
        async with trioquic.open_quic_connection(
            "127.0.0.1", echo_server.port, settings=settings
        ) as connection:
            stream = await connection.open_stream()
            await stream.send_all(b"ping")
            assert await stream.receive_some() == b"ping"
            echo_server.process.popen.send_signal(signal.SIGINT)
            start = trio.current_time()
            closed = await connection.wait_closed()
            assert trio.current_time() - start < 10
            assert closed.reason.by_peer
            # The stream is over: broken by the close, or ended (b"") if the
            # server's handler finished it (FIN) before the close went out,
            # which depends on the scheduling of the shutdown.
            with contextlib.suppress(trio.BrokenResourceError):
                assert await stream.receive_some() == b""
    status = await trio.to_thread.run_sync(echo_server.process.popen.wait, TIMEOUT)
    assert status == 0


def test_server_with_given_certificate(tmp_path: pathlib.Path) -> None:
    assert main(["cert", "--dir", str(tmp_path)]) == 0
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    process = Process(
        [
            *PYTHON_M,
            *["echo-server", "--port", "0", "--verbose"],
            *["--certificate", cert, "--private-key", key],
        ]
    )
    try:
        listening = process.wait_for("trioquic echo server listening on ")
        port = int(re.fullmatch(r".* 127\.0\.0\.1:(\d+) \(UDP\)", listening)[1])
        assert process.wait_for("certificate: ") == f"certificate: {cert}"
        command = shlex.split(process.wait_for("try it with: ").split(": ", 1)[1])
        assert command[:3] == PYTHON_M
        assert command[3:8] == [
            "echo-client",
            "127.0.0.1",
            str(port),
            "--ca-certs",
            cert,
        ]
        result = run(command)
        assert result.returncode == 0, result.stderr
        assert process.interrupt() == 0
    finally:
        process.kill()


@pytest.mark.skipif(
    shutil.which("trioquic", path=os.path.dirname(sys.executable)) is None,
    reason="the console script is not installed next to this interpreter",
)
def test_console_script() -> None:
    script = shutil.which("trioquic", path=os.path.dirname(sys.executable))
    assert script is not None
    result = run([script, "--help"])
    assert result.returncode == 0
    assert "echo-server" in result.stdout


# -- trioquic serve / trioquic get ----------------------------------------------------


def loopback6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Http3Server:
    def __init__(self, process: Process) -> None:
        self.process = process
        listening = process.wait_for("trioquic HTTP/3 server listening on ")
        self.port = int(re.fullmatch(r".*:(\d+) \(UDP\)", listening)[1])
        self.url = process.wait_for("URL: ").split(": ", 1)[1]
        self.certificate = process.wait_for(
            "self-signed development certificate: "
        ).split(": ", 1)[1]
        self.spki = process.wait_for("certificate SPKI SHA-256 (base64): ").split()[-1]
        self.client_command = process.wait_for("try it with: ").split(": ", 1)[1]
        self.chromium = process.wait_for("in Chromium: ")
        process.wait_for("press Ctrl-C to stop")
        #: The curl command for the TCP front door (None with --no-tcp).
        self.curl = next(
            (
                line.split(": ", 1)[1]
                for line in process.seen
                if line.startswith("over TCP: ")
            ),
            None,
        )

    def get(
        self, *args: str, timeout: float = TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*PYTHON_M, "get", "--ca-certs", self.certificate, *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def at(self, path: str) -> str:
        return f"https://localhost:{self.port}{path}"


@pytest.fixture
def site(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text("<h1>site</h1>")
    (root / "1k.bin").write_bytes(os.urandom(1024))
    (root / "1m.bin").write_bytes(os.urandom(1024 * 1024))
    (root / "notes.txt").write_text("some notes\n")
    return root


@pytest.fixture
def http3_server(site: pathlib.Path) -> Iterator[Http3Server]:
    process = Process([*PYTHON_M, "serve", "--port", "0", "--root", str(site)])
    try:
        yield Http3Server(process)
    finally:
        process.kill()


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "-1"],
        ["serve", "--congestion-control", "bbr"],
        ["get"],
        ["get", "https://localhost/", "--data", "x", "--data-file", "f"],
        ["get", "https://localhost/", "--insecure", "--ca-certs", "x"],
        ["get", "https://localhost/", "--output", "d", "-o", "f"],
    ],
)
def test_serve_get_bad_arguments_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["get", "http://localhost:4433/"], "only https://"),
        (["get", "https://a/x", "https://a/y", "-o", "out"], "one URL"),
        (["get", "https://a/x", "--output", "/nonexistent-dir"], "not found"),
        (["get", "https://a/x/f", "https://b/y/f", "--output", "."], "both be saved"),
        (["get", "https://a/", "--header", "nocolon"], "not a header"),
        (["get", "https://a/", "--zero-rtt"], "needs --session-ticket"),
        (["serve", "--root", "/nonexistent-dir"], "not a directory"),
        (["serve", "no_such_module_here:app"], "cannot load no_such_module_here:app"),
        (["serve", "noattr"], "MODULE:ATTR"),
        (["serve", "json:app", "--root", "."], "cannot be given with an application"),
        (["serve", "--factory"], "--factory needs an application"),
        (["serve", "--asyncio"], "--asyncio needs an application"),
    ],
)
def test_serve_get_failures_are_one_line(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = one_line_failure(argv, capsys)
    assert reason in err


def test_parser_help_mentions_serve_and_get() -> None:
    text = build_parser().format_help()
    assert "serve" in text
    assert "get" in text


def test_serve_prints_a_working_client_command(http3_server: Http3Server) -> None:
    argv = shlex.split(http3_server.client_command)
    assert argv[3:5] == ["get", f"https://localhost:{http3_server.port}/"]
    assert argv[5:] == ["--ca-certs", http3_server.certificate]
    assert http3_server.spki == spki_sha256(http3_server.certificate)
    # With the TCP front door Chromium finds HTTP/3 through Alt-Svc; QUIC
    # takes the development certificate only for a host listed in
    # --origin-to-force-quic-on, listed with another port so that nothing
    # is forced (tests/test_browser.py runs this command's flags).
    assert (
        f"--ignore-certificate-errors-spki-list={http3_server.spki} "
        f"--origin-to-force-quic-on=localhost:1 "
        f"https://localhost:{http3_server.port}/"
    ) in http3_server.chromium
    result = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"<h1>site</h1>"


@pytest.mark.parametrize("name", ["1k.bin", "1m.bin"])
def test_get_downloads_files_intact(
    http3_server: Http3Server, site: pathlib.Path, name: str
) -> None:
    result = http3_server.get(http3_server.at(f"/{name}"))
    assert result.returncode == 0, result.stderr
    assert sha256(result.stdout) == sha256((site / name).read_bytes())


def test_get_many_urls_to_a_directory(
    http3_server: Http3Server, site: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    names = ["1k.bin", "1m.bin", "notes.txt"]
    result = http3_server.get(
        *[http3_server.at(f"/{name}") for name in names],
        http3_server.at("/bytes/300000"),
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    for name in names:
        assert sha256((out / name).read_bytes()) == sha256((site / name).read_bytes())
    expected = bytes(i % 251 for i in range(300000))
    assert sha256((out / "300000").read_bytes()) == sha256(expected)


def test_get_many_urls_to_stdout_in_order(
    http3_server: Http3Server, site: pathlib.Path
) -> None:
    names = ["1m.bin", "notes.txt", "1k.bin"]
    result = http3_server.get(*[http3_server.at(f"/{name}") for name in names])
    assert result.returncode == 0, result.stderr
    expected = b"".join((site / name).read_bytes() for name in names)
    assert sha256(result.stdout) == sha256(expected)


def test_get_output_file(http3_server: Http3Server, tmp_path: pathlib.Path) -> None:
    target = tmp_path / "big.bin"
    result = http3_server.get(http3_server.at("/bytes/1048576"), "-o", str(target))
    assert result.returncode == 0, result.stderr
    expected = bytes(i % 251 for i in range(1048576))
    assert sha256(target.read_bytes()) == sha256(expected)


def test_get_post_echo(http3_server: Http3Server, tmp_path: pathlib.Path) -> None:
    result = http3_server.get(http3_server.at("/echo"), "--data", "hello, echo")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello, echo"
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(700_000))
    result = http3_server.get(
        http3_server.at("/echo"),
        "--data-file",
        str(upload),
        "--header",
        "content-type: application/x-test",
    )
    assert result.returncode == 0, result.stderr
    assert sha256(result.stdout) == sha256(upload.read_bytes())


def test_get_not_found_fails(http3_server: Http3Server, tmp_path: pathlib.Path) -> None:
    url = http3_server.at("/missing.txt")
    result = http3_server.get(url, http3_server.at("/notes.txt"))
    assert result.returncode == 1
    # The good URL is still written; the bad one is one line.
    assert result.stdout == b"some notes\n"
    lines = result.stderr.decode().splitlines()
    assert lines == [f"python -m trioquic get: {url}: 404 Not Found"]
    out = tmp_path / "out"
    out.mkdir()
    result = http3_server.get(url, "--output", str(out))
    assert result.returncode == 1
    assert list(out.iterdir()) == []
    # A failed download leaves a file that was already there alone.
    existing = tmp_path / "keep.txt"
    existing.write_bytes(b"precious")
    result = http3_server.get(url, "-o", str(existing))
    assert result.returncode == 1
    assert existing.read_bytes() == b"precious"


def test_get_wrong_method_fails(http3_server: Http3Server) -> None:
    url = http3_server.at("/notes.txt")
    result = http3_server.get(url, "--method", "DELETE")
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"python -m trioquic get: {url}: 405 Method Not Allowed"
    ]


def test_get_untrusted_certificate_fails(http3_server: Http3Server) -> None:
    url = http3_server.at("/notes.txt")
    result = subprocess.run(
        [*PYTHON_M, "get", url],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"python -m trioquic get: {url}: connection failed")


def test_serve_access_log_and_ctrl_c(http3_server: Http3Server) -> None:
    result = http3_server.get(http3_server.at("/notes.txt"))
    assert result.returncode == 0, result.stderr
    assert http3_server.process.interrupt() == 0
    lines = http3_server.process.rest()
    assert "SIGINT received: closing connections and stopping" in lines
    assert lines[-1] == "HTTP/3 server stopped"
    log = http3_server.process.stderr()
    assert re.search(r'"GET /notes\.txt HTTP/3" 200 11 [0-9.]+ms', log), log


def test_serve_builtin_page_with_retry() -> None:
    process = Process([*PYTHON_M, "serve", "--port", "0", "--retry"])
    try:
        server = Http3Server(process)
        result = server.get(server.at("/"))
        assert result.returncode == 0, result.stderr
        assert b"trioquic HTTP/3 server" in result.stdout
        result = server.get(server.at("/bytes/1024"))
        assert result.returncode == 0, result.stderr
        assert result.stdout == bytes(i % 251 for i in range(1024))
        if loopback6_available():
            # "localhost" is served on ::1 too, on the same port.
            assert f"trioquic HTTP/3 server listening on [::1]:{server.port} (UDP)" in (
                server.process.seen
            )
            result = server.get(f"https://[::1]:{server.port}/bytes/10")
            assert result.returncode == 0, result.stderr
            assert result.stdout == bytes(range(10))
        assert process.interrupt() == 0
    finally:
        process.kill()


STARLETTE_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def home(request):
    return PlainTextResponse("hello " + request.scope["http_version"])


async def echo(request):
    body = await request.body()
    return JSONResponse({"length": len(body), "root": request.scope["root_path"]})


def make_app():
    return Starlette(routes=[Route("/", home), Route("/echo", echo, methods=["POST"])])


app = make_app()
"""


@pytest.fixture
def app_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "cli_test_app.py").write_text(STARLETTE_APP)
    return directory


def test_serve_asgi_app_over_http3_and_the_tcp_door(app_dir: pathlib.Path) -> None:
    """``trioquic serve MODULE:ATTR``, found from the current directory as
    uvicorn finds it: HTTP/3 through ``trioquic get``, HTTP/2 and HTTP/1.1
    through the TCP front door, Alt-Svc on every response."""
    process = Process(
        [*PYTHON_M, "serve", "cli_test_app:app", "--port", "0", "--host", "127.0.0.1"],
        cwd=app_dir,
    )
    try:
        server = Http3Server(process)
        assert "serving: the ASGI application cli_test_app:app" in process.seen
        tcp_line = f"listening on 127.0.0.1:{server.port} (TCP)"
        assert any(tcp_line in line for line in process.seen), process.seen
        result = server.get(
            f"https://127.0.0.1:{server.port}/", "--server-name", "localhost"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"hello 3"
        result = server.get(
            f"https://127.0.0.1:{server.port}/echo",
            "--server-name",
            "localhost",
            "--data",
            "x" * 1000,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"length": 1000, "root": ""}
        assert server.curl is not None
        import httpx

        for http2, version in ((True, "2"), (False, "1.1")):
            context = ssl.create_default_context(cafile=server.certificate)
            with httpx.Client(verify=context, http2=http2) as client:
                response = client.get(f"https://localhost:{server.port}/")
            assert response.text == f"hello {version}"
            assert response.headers["alt-svc"] == f'h3=":{server.port}"; ma=86400'
        curl = shutil.which("curl")
        if curl is not None:
            argv = shlex.split(server.curl)
            assert argv[0] == "curl"
            result = run([curl, *argv[1:]])
            assert result.returncode == 0, result.stderr
            assert f'alt-svc: h3=":{server.port}"; ma=86400' in result.stdout
            assert result.stdout.endswith("hello 2") or result.stdout.endswith(
                "hello 1.1"
            )
        assert process.interrupt() == 0
        assert process.rest()[-1] == "HTTP/3 server stopped"
        # One access-log line per request, with the version it came over.
        log = process.stderr()
        assert re.search(r'"GET / HTTP/3" 200 7 [0-9.]+ms', log), log
        assert re.search(r'"POST /echo HTTP/3" 200 \d+ [0-9.]+ms', log), log
        assert re.search(r'"GET / HTTP/2" 200 7 [0-9.]+ms', log), log
        assert re.search(r'"GET / HTTP/1.1" 200 9 [0-9.]+ms', log), log
    finally:
        process.kill()


def test_serve_asgi_factory_root_path_and_no_tcp(app_dir: pathlib.Path) -> None:
    process = Process(
        [
            *PYTHON_M,
            "serve",
            "cli_test_app:make_app",
            "--factory",
            "--app-dir",
            str(app_dir),
            "--root-path",
            "/api",
            "--no-tcp",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
        ]
    )
    try:
        server = Http3Server(process)
        assert server.curl is None
        assert not any("(TCP)" in line for line in process.seen), process.seen
        # Without the TCP door nothing advertises HTTP/3: Chromium is told
        # to use QUIC for the origin.
        assert "--origin-to-force-quic-on=127.0.0.1:" in server.chromium
        result = server.get(
            # A proxy in front strips the prefix; the application sees it in
            # root_path (and, as with uvicorn, in front of the path).
            f"https://127.0.0.1:{server.port}/echo",
            "--server-name",
            "localhost",
            "--data",
            "abc",
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"length": 3, "root": "/api"}
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        assert process.interrupt() == 0
    finally:
        process.kill()


async def test_serve_ctrl_c_sends_goaway_then_closes(http3_server: Http3Server) -> None:
    """A connected HTTP/3 client learns at once that the server is leaving:
    GOAWAY, then CONNECTION_CLOSE from the peer, not an idle timeout."""
    settings = trioquic.QuicSettings(
        alpn_protocols=["h3"], ca_certs=http3_server.certificate, idle_timeout=60
    )
    with trio.fail_after(TIMEOUT):
        async with h3.open_http3_client(
            "127.0.0.1", http3_server.port, settings=settings
        ) as client:
            response = await client.request("GET", "/notes.txt")
            assert await response.read() == b"some notes\n"
            assert not client.goaway_received
            http3_server.process.popen.send_signal(signal.SIGINT)
            start = trio.current_time()
            error = await client.wait_closed()
            assert trio.current_time() - start < 10
            # GOAWAY came first: nothing is received after the close.
            assert client.goaway_received
            assert client.close_reason == error.reason
            assert error.reason.by_peer
            assert error.reason.error_code == h3.H3ErrorCode.NO_ERROR
    status = await trio.to_thread.run_sync(http3_server.process.popen.wait, TIMEOUT)
    assert status == 0


async def _qlog_run(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Serve and get one body, each with --qlog-dir; the two directories."""
    server_logs, client_logs = tmp_path / "server-qlog", tmp_path / "client-qlog"
    process = Process(
        [
            *PYTHON_M,
            *["serve", "--port", "0", "--congestion-control", "cubic"],
            *["--qlog-dir", str(server_logs)],
        ]
    )
    try:
        server = Http3Server(process)
        result = server.get(server.at("/bytes/100000"), "--qlog-dir", str(client_logs))
        assert result.returncode == 0, result.stderr
        assert len(result.stdout) == 100000
        # The server's side of the connection ends just after the client's
        # (which closed it before exiting), and only then is its qlog
        # written. Nothing announces that but the file (the server prints
        # nothing per connection): poll for it, bounded.
        with trio.fail_after(TIMEOUT):
            while not any(server_logs.glob("*.qlog")):  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert process.interrupt() == 0
    finally:
        process.kill()
    return server_logs, client_logs


def _one_qlog(directory: pathlib.Path) -> None:
    assert directory.is_dir()
    logs = list(directory.glob("*.qlog"))
    assert len(logs) == 1, (directory, list(directory.iterdir()))
    assert logs[0].stat().st_size > 0


async def test_qlog_dir_is_accepted_and_created(tmp_path: pathlib.Path) -> None:
    server_logs, client_logs = await _qlog_run(tmp_path)
    assert server_logs.is_dir()
    assert client_logs.is_dir()


async def test_get_writes_a_qlog(tmp_path: pathlib.Path) -> None:
    _, client_logs = await _qlog_run(tmp_path)
    _one_qlog(client_logs)


async def test_serve_writes_a_qlog(tmp_path: pathlib.Path) -> None:
    server_logs, _ = await _qlog_run(tmp_path)
    _one_qlog(server_logs)


def test_get_saves_and_resumes_a_session_ticket(
    http3_server: Http3Server, tmp_path: pathlib.Path
) -> None:
    ticket = tmp_path / "ticket"
    first = http3_server.get(
        http3_server.at("/bytes/100"), "--session-ticket", str(ticket)
    )
    assert first.returncode == 0, first.stderr
    assert ticket.stat().st_size > 0
    assert ticket.stat().st_mode & 0o077 == 0
    # Resumed, with the request in 0-RTT; the ticket is replaced by a new one.
    saved = ticket.read_bytes()
    second = http3_server.get(
        http3_server.at("/bytes/100"),
        "--session-ticket",
        str(ticket),
        "--zero-rtt",
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout == bytes(range(100))
    assert ticket.read_bytes() != saved


def test_get_rejects_a_file_that_is_no_ticket(
    http3_server: Http3Server, tmp_path: pathlib.Path
) -> None:
    """The ticket is checked as the client connects: one line, status 1, and
    the file is left as it was."""
    bogus = tmp_path / "ticket"
    bogus.write_bytes(b"hello")
    url = http3_server.at("/")
    result = http3_server.get(url, "--session-ticket", str(bogus))
    assert result.returncode == 1
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"python -m trioquic get: {url}: not a trioquic session ticket"
    )
    assert bogus.read_bytes() == b"hello"


# -- --engine ----------------------------------------------------------------------

#: The smallest command line of every command that builds QuicSettings.
QUIC_COMMANDS = {
    "serve": ["serve", "--port", "0"],
    "get": ["get", "https://localhost:4433/"],
    "echo-server": ["echo-server", "--port", "0"],
    "echo-client": ["echo-client", "127.0.0.1", "4433", "hi"],
    "doq-proxy": ["doq-proxy", "--upstream", "127.0.0.1:53", "--port", "0"],
    "masque-proxy": ["masque-proxy", "--port", "0"],
    "masque-client": [
        "masque-client",
        "--listen",
        "127.0.0.1:0",
        "--proxy",
        "https://localhost:4433",
        "--target",
        "127.0.0.1:53",
    ],
}


class _Stop(Exception):
    """Raised instead of running a command, once its settings are built."""


def settings_of(
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> trioquic.QuicSettings:
    """The QuicSettings the command line builds (the command stops at
    ``trio.run``, before any socket is opened)."""
    built: list[trioquic.QuicSettings] = []

    def record(**fields: object) -> trioquic.QuicSettings:
        built.append(trioquic.QuicSettings(**fields))
        return built[-1]

    def stop(*args: object, **kwargs: object) -> None:
        raise _Stop

    # Every command builds its settings through _common's QuicSettings.
    monkeypatch.setattr("trioquic.cli._common.QuicSettings", record)
    monkeypatch.setattr(trio, "run", stop)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 1
    assert "_Stop" in capsys.readouterr().err
    assert len(built) == 1, built
    return built[0]


@pytest.mark.parametrize("command", sorted(QUIC_COMMANDS))
@pytest.mark.parametrize("engine", ["aioquic", "qh3"])
@pytest.mark.parametrize("chosen_by", ["option", "environment"])
def test_engine_reaches_the_settings(
    command: str,
    engine: str,
    chosen_by: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--engine`` sets the settings' engine, whatever TRIOQUIC_ENGINE says;
    without it the settings' default (the environment's) holds."""
    other = "qh3" if engine == "aioquic" else "aioquic"
    if chosen_by == "option":
        monkeypatch.setenv("TRIOQUIC_ENGINE", other)
        argv = [*QUIC_COMMANDS[command], "--engine", engine]
        assert build_parser().parse_args(argv).engine == engine
    else:
        monkeypatch.setenv("TRIOQUIC_ENGINE", engine)
        argv = QUIC_COMMANDS[command]
        assert build_parser().parse_args(argv).engine is None
    assert settings_of(argv, monkeypatch, capsys).engine == engine


@pytest.mark.parametrize("command", sorted(QUIC_COMMANDS))
def test_unknown_engine_is_a_usage_error(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*QUIC_COMMANDS[command], "--engine", "nonsense"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --engine: invalid choice: 'nonsense'" in err
    assert "'aioquic'" in err and "'qh3'" in err


def test_a_setting_the_engine_lacks_is_a_one_line_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """qh3 has CUBIC only: asking for Reno fails before anything is bound,
    and says why; without --congestion-control the engine's own is used."""
    err = one_line_failure(
        ["serve", "--engine", "qh3", "--congestion-control", "reno", "--port", "0"],
        capsys,
    )
    assert "engine='qh3'" in err
    assert "CUBIC only" in err


@pytest.mark.parametrize("command", sorted(QUIC_COMMANDS))
def test_help_names_the_engines(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--engine {aioquic,qh3}" in text
    assert "TRIOQUIC_ENGINE" in text


@contextlib.contextmanager
def serving_on(engine: str, site: pathlib.Path) -> Iterator[Http3Server]:
    """``serve --root site`` on ``engine``, whatever TRIOQUIC_ENGINE says."""
    process = Process(
        [*PYTHON_M, "serve", "--port", "0", "--root", str(site), "--engine", engine]
    )
    try:
        yield Http3Server(process)
    finally:
        process.kill()


@pytest.fixture
def qh3_server(site: pathlib.Path) -> Iterator[Http3Server]:
    with serving_on("qh3", site) as server:
        yield server


def test_serve_and_get_on_the_qh3_engine(
    qh3_server: Http3Server, site: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """``serve --engine qh3`` says so and serves; ``get --engine qh3``
    downloads from it intact, and POST /echo streams a body both ways."""
    client_engine = "qh3"
    assert "QUIC engine: qh3" in qh3_server.process.seen
    result = qh3_server.get(qh3_server.at("/1m.bin"), "--engine", client_engine)
    assert result.returncode == 0, result.stderr
    assert sha256(result.stdout) == sha256((site / "1m.bin").read_bytes())
    body = tmp_path / "body.bin"
    body.write_bytes(os.urandom(300_000))
    echoed = qh3_server.get(
        qh3_server.at("/echo"), "--data-file", str(body), "--engine", client_engine
    )
    assert echoed.returncode == 0, echoed.stderr
    assert echoed.stdout == body.read_bytes()
    assert qh3_server.process.interrupt() == 0
    assert "HTTP/3 server stopped" in qh3_server.process.rest()


def test_get_on_qh3_from_a_server_on_aioquic(site: pathlib.Path) -> None:
    """The ends choose their engines independently."""
    with serving_on("aioquic", site) as server:
        assert "QUIC engine: aioquic" in server.process.seen
        result = server.get(server.at("/1m.bin"), "--engine", "qh3")
        assert result.returncode == 0, result.stderr
        assert sha256(result.stdout) == sha256((site / "1m.bin").read_bytes())
