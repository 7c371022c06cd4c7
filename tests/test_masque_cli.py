"""``trioquic masque-proxy`` and ``trioquic masque-client``: argument errors,
help, and real runs: dnspython through the forwarder and the proxy (both
subprocesses) to a DNS server on loopback, and a QUIC connection (trioquic's
HTTP/3 client) carried inside a tunnel to a trioquic server."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import dns.asyncbackend
import dns.asyncquery
import dns.message
import dns.rdatatype
import dns.rrset
import pytest
import trio

from trioquic import QuicSettings
from trioquic.cli import main
from trioquic.h3 import Request, open_http3_client, serve_http3
from trioquic.testing import development_certificate

PYTHON_M = [sys.executable, "-m", "trioquic"]
ANSWER = "192.0.2.53"


class Child:
    """A subprocess whose stdout is read line by line (trio)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._buffer = b""

    async def wait_for(self, prefix: str) -> str:
        assert self.process.stdout is not None
        with trio.fail_after(30):
            while True:
                while b"\n" in self._buffer:
                    line, self._buffer = self._buffer.split(b"\n", 1)
                    text = line.decode()
                    self.lines.append(text)
                    if text.startswith(prefix):
                        return text
                data = await self.process.stdout.receive_some()
                if not data:
                    raise AssertionError(f"exited before {prefix!r}: {self.lines}")
                self._buffer += data

    async def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            return await self.process.wait()


@asynccontextmanager
async def child(argv: list[str]) -> AsyncIterator[Child]:
    process = await trio.lowlevel.open_process(
        argv,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield Child(process)
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(10):
                await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


async def dns_server(
    *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A UDP DNS server on loopback (dnspython): one A record for any name."""
    with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        task_status.started(sock.getsockname()[1])
        while True:
            wire, address = await sock.recvfrom(65535)
            query = dns.message.from_wire(wire)
            response = dns.message.make_response(query)
            question = query.question[0]
            response.answer.append(
                dns.rrset.from_text(question.name, 60, "IN", "A", ANSWER)
            )
            await sock.sendto(response.to_wire(), address)


def _port_of(line: str) -> int:
    # "trioquic ... listening on 127.0.0.1:PORT (UDP)..."
    where = line.split(" listening on ", 1)[1].split()[0]
    return int(where.rsplit(":", 1)[1])


@asynccontextmanager
async def proxy_process(*extra: str) -> AsyncIterator[tuple[Child, int, str]]:
    async with child([*PYTHON_M, "masque-proxy", "--port", "0", *extra]) as proxy:
        port = _port_of(await proxy.wait_for("trioquic masque-proxy listening on "))
        cert = (await proxy.wait_for("self-signed development certificate: ")).split(
            ": ", 1
        )[1]
        await proxy.wait_for("press Ctrl-C to stop")
        yield proxy, port, cert


async def test_dnspython_through_masque_client_and_proxy() -> None:
    """The must-show run: dnspython -> trioquic masque-client (UDP forwarder)
    -> trioquic masque-proxy (CONNECT-UDP over HTTP/3) -> a DNS server."""
    async with trio.open_nursery() as nursery:
        dns_port = await nursery.start(dns_server)
        async with proxy_process("--allow", "127.0.0.1") as (proxy, port, cert):
            relay = proxy.lines[-2]
            assert "masque-client --proxy https://127.0.0.1:" in relay
            async with child(
                [
                    *PYTHON_M,
                    "masque-client",
                    "--listen",
                    "127.0.0.1:0",
                    "--proxy",
                    f"https://127.0.0.1:{port}",
                    "--ca-certs",
                    cert,
                    "--target",
                    f"127.0.0.1:{dns_port}",
                ]
            ) as client:
                line = await client.wait_for("trioquic masque-client listening on ")
                local = _port_of(line)
                backend = dns.asyncbackend.get_backend("trio")
                for name in ("example.com.", "www.example.org."):
                    query = dns.message.make_query(name, "A")
                    with trio.fail_after(20):
                        answer = await dns.asyncquery.udp(
                            query, "127.0.0.1", port=local, timeout=10, backend=backend
                        )
                    assert answer.id == query.id
                    rrset = answer.find_rrset(
                        answer.answer,
                        dns.name.from_text(name),
                        dns.rdataclass.IN,
                        dns.rdatatype.A,
                    )
                    assert [r.address for r in rrset] == [ANSWER]
                assert await client.interrupt() == 0
                assert "masque-client stopped" in (
                    await client.wait_for("masque-client stopped")
                )
            assert await proxy.interrupt() == 0
            await proxy.wait_for("masque-proxy stopped")
        nursery.cancel_scope.cancel()


async def test_proxy_refuses_loopback_without_allow() -> None:
    async with trio.open_nursery() as nursery:
        dns_port = await nursery.start(dns_server)
        async with (
            proxy_process() as (proxy, port, cert),
            child(
                [
                    *PYTHON_M,
                    "masque-client",
                    "--listen",
                    "127.0.0.1:0",
                    "--proxy",
                    f"https://127.0.0.1:{port}",
                    "--ca-certs",
                    cert,
                    "--target",
                    f"127.0.0.1:{dns_port}",
                ]
            ) as client,
        ):
            local = _port_of(
                await client.wait_for("trioquic masque-client listening on ")
            )
            backend = dns.asyncbackend.get_backend("trio")
            with pytest.raises(dns.exception.Timeout):
                await dns.asyncquery.udp(
                    dns.message.make_query("example.com", "A"),
                    "127.0.0.1",
                    port=local,
                    timeout=2,
                    backend=backend,
                )
            assert await client.interrupt() == 0
            assert await proxy.interrupt() == 0
        nursery.cancel_scope.cancel()


async def test_quic_inside_a_tunnel() -> None:
    """QUIC over MASQUE: trioquic's HTTP/3 client talks to a trioquic HTTP/3
    server through the forwarder (library form) and the proxy (CLI)."""
    from trioquic import masque

    cert = development_certificate()

    async def hello(request: Request) -> None:
        await request.respond(
            200, body=b"hello through the tunnel " + request.path.encode()
        )

    server_settings = QuicSettings(
        certificate=str(cert.certificate_path), private_key=str(cert.private_key_path)
    )
    async with trio.open_nursery() as nursery:
        inner = await nursery.start(
            functools.partial(
                serve_http3, hello, 0, host="127.0.0.1", settings=server_settings
            )
        )
        async with proxy_process("--allow", "127.0.0.1") as (proxy, port, proxy_cert):
            async with masque.open_masque_client(
                f"https://127.0.0.1:{port}", ca_certs=proxy_cert
            ) as client:
                forwarder = await nursery.start(
                    functools.partial(
                        masque.run_udp_forwarder, client, "127.0.0.1", inner.port
                    )
                )
                settings = QuicSettings(
                    ca_certs=str(cert.certificate_path),
                    server_name="localhost",
                    # fits in one HTTP/3 datagram of the outer connection
                    max_udp_payload_size=1200,
                )
                with trio.fail_after(30):
                    async with open_http3_client(
                        "127.0.0.1", forwarder.address[1], settings=settings
                    ) as h3:
                        for path in ("/a", "/b"):
                            response = await h3.request("GET", path)
                            assert response.status == 200
                            assert await response.read() == (
                                b"hello through the tunnel " + path.encode()
                            )
                        big = await h3.request("GET", "/" + "x" * 3000)
                        assert len(await big.read()) > 3000
                (tunnel,) = client.tunnels()
                assert tunnel.to_target_datagrams > 3
                assert tunnel.transport == "datagram"
                assert forwarder.statistics().peers_total == 1
                nursery.cancel_scope.cancel()
            assert await proxy.interrupt() == 0


# -- arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["masque-client", "--proxy", "https://x", "--target", "h:1"],  # no --listen
        [
            "masque-client",
            "--listen",
            "nope",
            "--proxy",
            "https://x",
            "--target",
            "h:1",
        ],
        ["masque-client", "--listen", ":0", "--proxy", "https://x", "--target", "h:0"],
        ["masque-client", "--listen", "h:1", "--proxy", "u", "--target", "h:99999"],
        ["masque-proxy", "--port", "70000"],
        ["masque-proxy", "--max-tunnels", "0"],
        ["masque-proxy", "--idle-timeout", "-1"],
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["masque-proxy", "--template", "/udp/{target_host}"], "target_port"),
        (
            ["masque-proxy", "--template", "https://x/{target_host}/{target_port}"],
            "path",
        ),
        (["masque-proxy", "--allow", "no/such name"], "not a host name"),
        (["masque-proxy", "--allow-port", "0-5"], "1-65535"),
        (
            ["masque-proxy", "--max-tunnels", "2", "--max-tunnels-per-connection", "3"],
            "cannot exceed",
        ),
        (["masque-proxy", "--certificate", "c.pem"], "go together"),
        (
            [
                "masque-client",
                "--listen",
                "127.0.0.1:0",
                "--proxy",
                "http://nope",
                "--target",
                "127.0.0.1:53",
                "--insecure",
            ],
            "https://",
        ),
    ],
)
def test_command_errors_exit_1(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1  # one line


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("masque-proxy", "masque-client"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert command in out
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "masque-proxy" in out and "masque-client" in out


def test_client_without_a_proxy_fails_in_time() -> None:
    # Nothing listens on this port: the handshake times out, one line, exit 1.
    completed = subprocess.run(
        [
            *PYTHON_M,
            "masque-client",
            "--listen",
            "127.0.0.1:0",
            "--proxy",
            "https://127.0.0.1:9",
            "--insecure",
            "--target",
            "127.0.0.1:53",
            "--timeout",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 1, completed
    assert completed.stderr.startswith("python -m trioquic: error:")
    assert completed.stderr.count("\n") == 1
