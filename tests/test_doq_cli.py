"""``trioquic doq-proxy`` and ``examples/doq_server.py`` as real processes on
loopback, queried with dnspython's DoQ client (``dns.query.quic``)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import ModuleType

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from trioquic.cli import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT = 30.0


class Process:
    """A child process whose stdout lines are read by a thread, so that every
    wait has a deadline."""

    def __init__(self, argv: list[str]) -> None:
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
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

    def interrupt(self) -> tuple[int, list[str]]:
        """Ctrl-C; the exit status and every line printed."""
        self.popen.send_signal(signal.SIGINT)
        status = self.popen.wait(timeout=TIMEOUT)
        while (line := self.lines.get(timeout=TIMEOUT)) is not None:
            self.seen.append(line)
        return status, self.seen

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=TIMEOUT)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


class ThreadedUdpDns:
    """A classic DNS server on loopback UDP, in a thread: every A query gets
    192.0.2.7; it records the Message IDs it saw."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.ids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, address = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            self.ids.append(query.id)
            response = dns.message.make_response(query)
            response.answer.append(
                dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "192.0.2.7")
            )
            self.sock.sendto(response.to_wire(), address)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        self.sock.close()


@pytest.fixture
def upstream() -> Iterator[ThreadedUdpDns]:
    server = ThreadedUdpDns()
    try:
        yield server
    finally:
        server.close()


def _query_and_run(
    name: str, port: int, certificate: str, command: str
) -> tuple[dns.message.Message, subprocess.CompletedProcess[str]]:
    """Query ``name`` with dnspython's (sync) DoQ client, as a user would
    call it, and run the command the server printed, as printed."""
    response = dns.query.quic(
        dns.message.make_query(name, "A"),
        "127.0.0.1",
        port=port,
        timeout=10,
        verify=certificate,
        server_hostname="localhost",
    )
    printed = subprocess.run(
        shlex.split(command),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    return response, printed


def test_doq_proxy_end_to_end(upstream: ThreadedUdpDns) -> None:
    process = Process(
        [
            *[sys.executable, "-m", "trioquic", "doq-proxy"],
            *["--upstream", f"127.0.0.1:{upstream.port}", "--port", "0"],
        ]
    )
    try:
        port = int(
            process.wait_for(
                r"trioquic doq-proxy listening on 127\.0\.0\.1:(\d+) \(UDP\)"
            ).group(1)
        )
        process.wait_for(rf"forwarding to 127\.0\.0\.1:{upstream.port} \(UDP, TCP\)")
        certificate = process.wait_for(
            r"self-signed development certificate: (.*)"
        ).group(1)
        command = process.wait_for(r"query it with: (.*)").group(1)
        process.wait_for("press Ctrl-C to stop")
        response, printed = _query_and_run(
            "www.example.test", port, certificate, command
        )
        status, lines = process.interrupt()
    finally:
        process.kill()
    assert response.id == 0 and response.rcode() == dns.rcode.NOERROR
    assert [rr.to_text() for rr in response.answer[0]] == ["192.0.2.7"]
    assert "example.com. 60 IN A 192.0.2.7" in printed.stdout
    assert len(upstream.ids) == 2 and 0 not in upstream.ids
    assert status == 0
    assert "doq-proxy stopped" in lines


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["doq-proxy"], "--upstream"),
        (["doq-proxy", "--upstream", "127.0.0.1"], "not HOST:PORT"),
        (["doq-proxy", "--upstream", "127.0.0.1:0"], "not HOST:PORT"),
        (["doq-proxy", "--upstream", "127.0.0.1:53", "--timeout", "0"], "greater"),
        (["doq-proxy", "--upstream", "127.0.0.1:53", "--port", "70000"], "0..65535"),
    ],
)
def test_doq_proxy_bad_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_doq_proxy_certificate_without_key_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                *["doq-proxy", "--upstream", "127.0.0.1:53", "--port", "0"],
                *["--certificate", str(tmp_path / "cert.pem")],
            ]
        )
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("--certificate and --private-key go together: give both")
    assert len(err.splitlines()) == 1


# -- examples/doq_server.py ------------------------------------------------------------


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "example_doq_server", ROOT / "examples" / "doq_server.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_zone_lookup() -> None:
    example = load_example()
    www = example.lookup(dns.message.make_query("WWW.example.test", "AAAA"))
    assert [rr.to_text() for rr in www.answer[0]] == ["2001:db8::1"]
    missing = example.lookup(dns.message.make_query("nope.example.test", "A"))
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert missing.authority[0].rdtype == dns.rdatatype.SOA
    nodata = example.lookup(dns.message.make_query("www.example.test", "MX"))
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    other = example.lookup(dns.message.make_query("example.com", "A"))
    assert other.rcode() == dns.rcode.REFUSED


def test_example_doq_server_runs_as_its_header_says() -> None:
    process = Process([sys.executable, "examples/doq_server.py", "--port", "0"])
    try:
        port = int(
            process.wait_for(r"DoQ server listening on 127\.0\.0\.1:(\d+)").group(1)
        )
        certificate = process.wait_for(r"certificate: (.*)").group(1)
        command = process.wait_for(r"query it with: (.*)").group(1)
        process.wait_for("press Ctrl-C to stop")
        response, printed = _query_and_run(
            "mail.example.test", port, certificate, command
        )
        status, lines = process.interrupt()
    finally:
        process.kill()
    assert [rr.to_text() for rr in response.answer[0]] == ["192.0.2.25"]
    assert "www.example.test. 300 IN A 192.0.2.1" in printed.stdout
    assert status == 0
    assert any(
        line.startswith("query from 127.0.0.1: mail.example.test") for line in lines
    )
    assert "stopped after 2 responses" in lines
