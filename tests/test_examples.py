"""Every example runs end to end on loopback, as its header says to run it."""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import ModuleType

import pytest
import trio

import trioquic

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 30.0


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (``__main__`` does not run)."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Process:
    """An example running as a child process; stdout lines read by a thread so
    that every wait has a deadline."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            cwd=EXAMPLES.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} in {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"exited before {pattern!r}: {self.seen}")
            self.seen.append(line)
            match = re.fullmatch(pattern, line)
            if match:
                return match

    def stop(self) -> list[str]:
        """Ctrl-C; the example must exit 0. Returns everything it printed."""
        self.popen.send_signal(signal.SIGINT)
        assert self.popen.wait(timeout=TIMEOUT) == 0, self.seen
        deadline = time.monotonic() + TIMEOUT
        while (line := self.lines.get(timeout=deadline - time.monotonic())) is not None:
            self.seen.append(line)
        return self.seen

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=TIMEOUT)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    try:
        yield started
    finally:
        for process in started:
            process.kill()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=EXAMPLES.parent,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def start_server(processes: list[Process], *args: str) -> tuple[Process, int, str]:
    process = Process(*args, "--port", "0")
    processes.append(process)
    port = int(process.wait_for(r"listening on 127\.0\.0\.1:(\d+)")[1])
    certificate = process.wait_for(r"certificate: (.+)")[1]
    return process, port, certificate


def test_every_example_has_a_header_that_says_how_to_run_it() -> None:
    examples = sorted(EXAMPLES.glob("*.py"))
    assert {path.name for path in examples} >= {
        "echo_server.py",
        "echo_client.py",
        "custom_protocol.py",
    }
    for path in examples:
        doc = load(path.stem).__doc__
        assert doc, path
        assert "How to run it" in doc, path
        assert f"python examples/{path.name}" in doc, path


# -- echo_server.py + echo_client.py --------------------------------------------


def test_echo_client_against_echo_server(processes: list[Process]) -> None:
    server, port, certificate = start_server(processes, "examples/echo_server.py")
    run_line = server.wait_for(r"run: (python examples/echo_client\.py .*)")[1]
    # The command the server printed, as printed (with this interpreter).
    args = run_line.split()[1:]
    assert args == [
        "examples/echo_client.py",
        "--ca-certs",
        certificate,
        "127.0.0.1",
        str(port),
        "hello",
        "world",
    ]
    result = run(*args, "a third message")
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.splitlines()[0]
        == f"connected to 127.0.0.1:{port} (trioquic-echo)"
    )
    assert result.stdout.splitlines()[1:4] == [
        "'hello' -> 'hello'",
        "'world' -> 'world'",
        "'a third message' -> 'a third message'",
    ]
    assert re.fullmatch(
        r"3 streams, smoothed RTT [\d.]+ ms", result.stdout.splitlines()[4]
    )
    server.wait_for(r"connection from \('127\.0\.0\.1', \d+\)")
    server.wait_for(r"connection ended: closed by peer \(application error 0x0\)")
    lines = server.stop()
    assert lines[-2:] == ["stopping: closing every connection", "stopped"]


def test_echo_example_server_with_the_cli_client(processes: list[Process]) -> None:
    _, port, certificate = start_server(processes, "examples/echo_server.py")
    result = run(
        "-m", "trioquic", "echo-client", "127.0.0.1", str(port),
        "--ca-certs", certificate, "same", "protocol",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["same", "protocol"]


def test_echo_client_reports_an_untrusted_server(
    processes: list[Process], tmp_path: pathlib.Path
) -> None:
    _, port, _ = start_server(processes, "examples/echo_server.py")
    other = trioquic.generate_self_signed_certificate(directory=tmp_path)
    result = run(
        "examples/echo_client.py", "--ca-certs", str(other.certificate_path),
        "127.0.0.1", str(port), "hi",
    )  # fmt: skip
    assert result.returncode == 1
    assert "echo_client: connection failed" in result.stderr


async def test_echo_example_in_process() -> None:
    """The example's handler and client functions, imported and used directly."""
    server_example = load("echo_server")
    client_example = load("echo_client")
    cert = trioquic.generate_self_signed_certificate()
    settings = trioquic.QuicSettings(
        alpn_protocols=[server_example.ALPN],
        certificate=str(cert.certificate_path),
        private_key=str(cert.private_key_path),
    )
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    trioquic.serve_quic,
                    server_example.handle_connection,
                    0,
                    host="127.0.0.1",
                    settings=settings,
                )
            )
            client_settings = trioquic.QuicSettings(
                alpn_protocols=[client_example.ALPN],
                ca_certs=str(cert.certificate_path),
            )
            async with trioquic.open_quic_connection(
                "127.0.0.1", server.port, settings=client_settings
            ) as connection:
                big = bytes(range(256)) * 4096  # 1 MiB: more than the send buffer
                assert await client_example.echo(connection, big) == big
                assert await client_example.echo(connection, b"") == b""
            nursery.cancel_scope.cancel()


# -- custom_protocol.py ----------------------------------------------------------------


def test_custom_protocol_both_sides_in_one_process() -> None:
    result = run("examples/custom_protocol.py")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for expected in [
        "client: connected (trioquic-kv)",
        "SET colour blue -> OK",
        "SET shape circle -> OK",
        "GET colour -> VALUE blue",
        "DEL shape -> OK",
        "GET shape -> NOT_FOUND",
        "FLY away -> ERROR unknown request: 'FLY away'",
        "GET k0..k9 after 10 parallel SETs -> "
        + " ".join(f"VALUE K{i}" for i in range(10)),
    ]:
        assert expected in lines, (expected, lines)
    assert lines[-1].startswith("server store: {'colour': 'blue', 'k0': 'K0'")


def test_custom_protocol_separate_server_and_client(processes: list[Process]) -> None:
    server, port, certificate = start_server(
        processes, "examples/custom_protocol.py", "--server"
    )
    common = ["--client", "--port", str(port), "--ca-certs", certificate]
    first = run("examples/custom_protocol.py", *common, "SET", "colour", "blue")
    assert first.returncode == 0, first.stderr
    assert "SET colour blue -> OK" in first.stdout.splitlines()
    # A second connection sees the same store.
    second = run("examples/custom_protocol.py", *common, "GET colour, GET nothing")
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    assert "GET colour -> VALUE blue" in lines
    assert "GET nothing -> NOT_FOUND" in lines
    assert server.stop()[-1] == "stopped"


def test_custom_protocol_client_needs_ca_certs() -> None:
    result = run("examples/custom_protocol.py", "--client")
    assert result.returncode == 2
    assert "--ca-certs" in result.stderr


def test_answer_is_a_pure_function() -> None:
    answer = load("custom_protocol").answer
    store: dict[str, str] = {}
    assert answer(store, "SET a one two\n") == "OK"
    assert store == {"a": "one two"}
    assert answer(store, "get a") == "VALUE one two"
    assert answer(store, "GET").startswith("ERROR")
    assert answer(store, "SET a").startswith("ERROR")
    assert answer(store, "DEL a") == "OK"
    assert answer(store, "DEL a") == "NOT_FOUND"
    assert answer(store, "").startswith("ERROR")


async def test_custom_protocol_closes_on_an_oversized_request() -> None:
    """The server's should_act/close path: a request over 4 KiB ends the
    connection with the protocol's own error code, seen by the client."""
    example = load("custom_protocol")
    cert = trioquic.generate_self_signed_certificate()
    store: dict[str, str] = {}
    client_settings = trioquic.QuicSettings(
        alpn_protocols=[example.ALPN], ca_certs=str(cert.certificate_path)
    )
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    trioquic.serve_application,
                    lambda: example.KeyValueServer(store),
                    0,
                    host="127.0.0.1",
                    settings=example.server_settings(cert),
                )
            )
            async with trioquic.open_application(
                example.KeyValueClient(), "127.0.0.1", server.port,
                settings=client_settings,
            ) as kv:  # fmt: skip
                assert await kv.request("SET a 1") == "OK"
                with pytest.raises(trioquic.ConnectionClosed) as info:
                    await kv.request("SET big " + "x" * 5000)
                assert info.value.reason.error_code == example.KV_PROTOCOL_ERROR
                assert info.value.reason.by_peer
                # Later requests fail at once, they do not hang.
                with pytest.raises(trioquic.ConnectionClosed):
                    await kv.request("GET a")
            nursery.cancel_scope.cancel()
    assert store == {"a": "1"}


async def test_custom_protocol_client_fails_pending_requests_on_close() -> None:
    """Requests waiting in the client's channel are failed, not left hanging,
    when the server goes away."""
    example = load("custom_protocol")
    cert = trioquic.generate_self_signed_certificate()
    client_settings = trioquic.QuicSettings(
        alpn_protocols=[example.ALPN], ca_certs=str(cert.certificate_path)
    )
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as outer:
            server_scope = trio.CancelScope()

            async def serve(task_status: trio.TaskStatus[trioquic.QuicServer]) -> None:
                with server_scope:
                    await trioquic.serve_application(
                        lambda: example.KeyValueServer({}),
                        0,
                        host="127.0.0.1",
                        settings=example.server_settings(cert),
                        task_status=task_status,
                    )

            server = await outer.start(serve)
            async with trioquic.open_application(
                example.KeyValueClient(), "127.0.0.1", server.port,
                settings=client_settings,
            ) as kv:  # fmt: skip
                assert await kv.request("SET a 1") == "OK"
                outcomes: list[str] = []

                async def ask() -> None:
                    try:
                        outcomes.append(await kv.request("GET a"))
                    except trioquic.ConnectionClosed as exc:
                        assert exc.reason.by_peer
                        outcomes.append("closed")

                server_scope.cancel()  # the server leaves: CONNECTION_CLOSE
                async with trio.open_nursery() as nursery:
                    for _ in range(5):
                        nursery.start_soon(ask)
                assert len(outcomes) == 5
                assert set(outcomes) <= {"VALUE 1", "closed"}
                # Whatever was answered before the close, nothing hangs, and a
                # request after the close fails at once.
                with pytest.raises(trioquic.ConnectionClosed):
                    await kv.request("GET a")
