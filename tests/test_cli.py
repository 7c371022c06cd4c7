"""The ``trioquic`` command line: argument errors in-process, the echo server
and client as real processes on loopback."""

from __future__ import annotations

import os
import pathlib
import queue
import re
import shlex
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
from trioquic._cli import _describe, _leaf, build_parser, main
from trioquic._echo import ECHO_ALPN, spki_sha256

PYTHON_M = [sys.executable, "-m", "trioquic"]
TIMEOUT = 30.0


class Process:
    """A child process whose stdout lines are read by a thread, so that
    waiting for a line has a deadline."""

    def __init__(self, argv: list[str]) -> None:
        self.popen = subprocess.Popen(
            argv,
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
    reason = trioquic.CloseReason(0x12A, 6, "bad certificate", by_peer=False)
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
            with pytest.raises(trio.BrokenResourceError):
                await stream.receive_some()
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
