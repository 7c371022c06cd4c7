"""``serve --workers``: the routing program (read by an interpreter here and
run by the kernel), the supervisor (restart, signals, exit status,
statistics), the shared keys, and sockets bound elsewhere."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio

import trioquic
import trioquic.workers
from trioquic import QuicLbConfig
from trioquic.workers import reuseport_program, shared_keys
from trioquic.workers._bpf import KERNEL_HASH, Instruction, attach_reuseport_program

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT's BPF is Linux's"
)


# -- the program, interpreted -----------------------------------------------------


class _OutOfBounds(Exception):
    pass


def run_cbpf(program: list[Instruction], packet: bytes) -> int:
    """A classic BPF interpreter for the instructions the program uses (as
    the kernel runs them: a load past the packet's end returns 0)."""
    a = 0
    pc = 0

    def load(offset: int, size: int) -> int:
        if offset + size > len(packet):
            raise _OutOfBounds
        return int.from_bytes(packet[offset : offset + size], "big")

    try:
        while True:
            ins = program[pc]
            pc += 1
            cls = ins.code & 0x07
            if cls == 0x00:  # LD ABS
                size = {0x00: 4, 0x08: 2, 0x10: 1}[ins.code & 0x18]
                assert ins.code & 0xE0 == 0x20
                a = load(ins.k, size)
            elif cls == 0x04:  # ALU K
                op = ins.code & 0xF0
                if op == 0x10:
                    a = (a - ins.k) & 0xFFFFFFFF
                elif op == 0x50:
                    a &= ins.k
                elif op == 0x90:
                    a %= ins.k
                else:  # pragma: no cover
                    raise AssertionError(hex(ins.code))
            elif cls == 0x05:  # JMP K
                op = ins.code & 0xF0
                if op == 0x10:
                    taken = a == ins.k
                elif op == 0x30:
                    taken = a >= ins.k
                elif op == 0x40:
                    taken = bool(a & ins.k)
                else:  # pragma: no cover
                    raise AssertionError(hex(ins.code))
                pc += ins.jt if taken else ins.jf
            elif cls == 0x06:  # RET
                return a if ins.code & 0x18 == 0x10 else ins.k
            else:  # pragma: no cover
                raise AssertionError(hex(ins.code))
    except _OutOfBounds:
        return 0


def short_packet(cid: bytes) -> bytes:
    return bytes([0x40 | 0x01]) + cid + os.urandom(40)


def long_packet(dcid: bytes, scid: bytes = b"\x11" * 8, kind: int = 0) -> bytes:
    return (
        bytes([0xC0 | (kind << 4)])
        + b"\x00\x00\x00\x01"
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + os.urandom(60)
    )


@pytest.mark.parametrize(
    ("server_id", "nonce", "rotation", "workers"),
    [(b"\x00", 6, 0, 4), (b"\x07\x20", 5, 3, 3), (b"\x01\x02\x10", 12, 6, 16)],
)
def test_program_routes_by_server_id(
    server_id: bytes, nonce: int, rotation: int, workers: int
) -> None:
    base = QuicLbConfig(
        server_id=server_id, nonce_length=nonce, config_rotation=rotation
    )
    program = reuseport_program(
        workers=workers,
        connection_id_length=base.connection_id_length,
        server_id_length=len(server_id),
        config_rotation=rotation,
        base=server_id[-1],
    )
    for index in range(workers):
        worker = base.for_worker(index)
        for _ in range(20):
            cid = worker.generate()
            assert run_cbpf(program, short_packet(cid)) == index
            # A client's Initial after our first answer, its Handshake packets.
            assert run_cbpf(program, long_packet(cid, kind=0)) == index
            assert run_cbpf(program, long_packet(cid, kind=2)) == index
    # A server ID beyond the workers: the kernel's hash (short) or the
    # client-ID hash (long), never an index out of range.
    outside = base.for_worker(workers) if server_id[-1] + workers <= 255 else None
    if outside is not None:
        cid = outside.generate()
        assert run_cbpf(program, short_packet(cid)) == KERNEL_HASH
        assert run_cbpf(program, long_packet(cid)) < workers
    # Another config rotation: not ours.
    other = QuicLbConfig(
        server_id=server_id, nonce_length=nonce, config_rotation=(rotation + 1) % 7
    )
    assert run_cbpf(program, short_packet(other.generate())) == KERNEL_HASH


def test_program_spreads_first_flights_by_the_clients_id() -> None:
    """Every datagram of a client's first flight carries the same DCID of its
    own: they reach one worker; different clients spread over all of them."""
    program = reuseport_program(
        workers=4, connection_id_length=8, server_id_length=1, config_rotation=0, base=0
    )
    chosen = []
    for _ in range(400):
        dcid = os.urandom(int.from_bytes(os.urandom(1), "big") % 13 + 8)
        first = run_cbpf(program, long_packet(dcid, kind=0))
        assert run_cbpf(program, long_packet(dcid, kind=0)) == first  # 2nd datagram
        assert run_cbpf(program, long_packet(dcid, kind=1)) == first  # 0-RTT
        assert 0 <= first < 4
        chosen.append(first)
    assert all(chosen.count(i) > 50 for i in range(4))
    # Runts load past their end: the kernel returns 0 from the program.
    assert run_cbpf(program, b"\x40") == 0
    assert run_cbpf(program, b"\xc0\x00\x00\x00\x01") == 0


def test_program_refuses_what_cannot_route() -> None:
    with pytest.raises(ValueError, match="workers must be 1 to"):
        reuseport_program(
            workers=0,
            connection_id_length=8,
            server_id_length=1,
            config_rotation=0,
            base=0,
        )
    with pytest.raises(ValueError, match="workers must be 1 to 6"):
        reuseport_program(
            workers=7,
            connection_id_length=8,
            server_id_length=1,
            config_rotation=0,
            base=250,
        )
    with pytest.raises(ValueError, match="server ID must fit"):
        reuseport_program(
            workers=2,
            connection_id_length=2,
            server_id_length=2,
            config_rotation=0,
            base=0,
        )


# -- the program, in the kernel -------------------------------------------------------


@linux_only
def test_kernel_gives_each_packet_to_its_worker() -> None:
    """Real sockets in one SO_REUSEPORT group with the program attached:
    packets for worker k reach socket k from whatever source port."""
    workers = 4
    config = QuicLbConfig(server_id=b"\x30", nonce_length=7)
    program = reuseport_program(
        workers=workers,
        connection_id_length=config.connection_id_length,
        server_id_length=1,
        config_rotation=0,
        base=0x30,
    )
    group: list[socket.socket] = []
    senders: list[socket.socket] = []
    try:
        port = 0
        for _ in range(workers):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            group.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            port = sock.getsockname()[1]
            sock.settimeout(2.0)
            if len(group) == 1:
                attach_reuseport_program(sock, program)
        for _ in range(8):  # eight source addresses (a client rebinding)
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.bind(("127.0.0.1", 0))
            senders.append(sender)
        for index in range(workers):
            cid = config.for_worker(index).generate()
            for sender in senders:
                for packet in (short_packet(cid), long_packet(cid, kind=2)):
                    sender.sendto(packet, ("127.0.0.1", port))
                    data = group[index].recv(2048)
                    assert data == packet
        # Nothing reached another socket.
        for sock in group:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(2048)
    finally:
        for sock in group + senders:
            sock.close()


# -- shared keys --------------------------------------------------------------------


def test_shared_keys() -> None:
    a = shared_keys(b"s" * 32)
    assert a == shared_keys(b"s" * 32)
    assert a != shared_keys(b"t" * 32)
    assert a.stateless_reset_key != a.retry_token_key
    assert len(a.stateless_reset_key) == len(a.retry_token_key) == 32
    assert "s" * 8 not in repr(a)
    settings = a.apply(trioquic.QuicSettings())
    assert settings.stateless_reset_key == a.stateless_reset_key
    assert settings.retry_token_key == a.retry_token_key
    with pytest.raises(ValueError, match="at least 16 bytes"):
        shared_keys(b"short")
    with pytest.raises(TypeError, match="must be bytes"):
        shared_keys("x" * 32)  # type: ignore[arg-type]


# -- sockets bound elsewhere ---------------------------------------------------------


async def test_serve_http_checks_sockets_bound_elsewhere(
    tmp_path: pathlib.Path,
) -> None:
    certificate = trioquic.generate_self_signed_certificate(directory=tmp_path)
    settings = trioquic.QuicSettings(
        certificate=certificate.certificate_path,
        private_key=certificate.private_key_path,
    )
    with pytest.raises(TypeError, match=r"bound socket\.socket"):
        await trioquic.serve_http(
            lambda request: None,  # type: ignore[arg-type,return-value]
            0,
            settings=settings,
            tcp=False,
            udp_sockets=["not a socket"],  # type: ignore[list-item]
        )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(ValueError, match="give tcp_sockets too"):
            await trioquic.serve_http(
                lambda request: None,  # type: ignore[arg-type,return-value]
                0,
                settings=settings,
                udp_sockets=[sock],
            )
    finally:
        sock.close()


# -- the supervisor, in processes -----------------------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "trioquic", *args]


class Server:
    """``trioquic serve --workers`` in a subprocess."""

    def __init__(self, tmp_path: pathlib.Path, *args: str, tcp: bool = False) -> None:
        self.stats_path = tmp_path / "stats.json"
        self.log_path = tmp_path / "serve.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            _cli(
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                *([] if tcp else ["--no-tcp"]),
                "--stats-file",
                str(self.stats_path),
                "--engine",
                "aioquic",  # the client side runs on either
                *args,
            ),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.port = self._wait_port()

    def output(self) -> str:
        return self.log_path.read_text()

    def _wait_port(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.output())
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                raise AssertionError(f"server exited:\n{self.output()}")
            time.sleep(0.05)
        raise AssertionError(f"server did not start:\n{self.output()}")

    def stats(self) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while True:
            try:
                result: dict[str, Any] = json.loads(self.stats_path.read_text())
                return result
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, sig: int | None = signal.SIGTERM) -> int:
        """Send ``sig`` (None: it was sent already) and wait for the exit."""
        if sig is not None and self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=30)
        finally:
            self.log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def workers_server(tmp_path: pathlib.Path) -> Iterator[Any]:
    servers: list[Server] = []

    def start(*args: str, tcp: bool = False) -> Server:
        server = Server(tmp_path, *args, tcp=tcp)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


async def _worker_of_each_connection(port: int, count: int) -> list[int]:
    """``count`` connections, one request each: the worker that answered."""
    from trioquic import h3

    settings = trioquic.QuicSettings(
        alpn_protocols=["h3"], verify_peer=False, server_name="localhost"
    )
    seen = []
    for _ in range(count):
        async with h3.open_http3_client("127.0.0.1", port, settings=settings) as client:
            response = await client.request("GET", "/bytes/1000")
            assert await response.read() == _pattern(1000)
            seen.append(int(dict(response.headers)[b"trioquic-worker"]))
    return seen


def _pattern(count: int) -> bytes:
    from trioquic.cli._serve import pattern_bytes

    return pattern_bytes(count)


@linux_only
def test_workers_serve_restart_and_stop_gracefully(workers_server: Any) -> None:
    server = workers_server(
        "--workers",
        "3",
        "--server-id",
        "0a10",
        "--lb-nonce-length",
        "7",
        "--lb-config-rotation",
        "2",
    )
    seen = trio.run(_worker_of_each_connection, server.port, 30)
    assert set(seen) == {0, 1, 2}  # every worker serves (first flights hash)
    stats = server.stats()
    assert [w["index"] for w in stats["workers"]] == [0, 1, 2]
    assert all(w["alive"] and w["ready"] for w in stats["workers"])
    # The totals are the sum of the workers'.
    deadline = time.monotonic() + 5
    while stats["total"].get("connections_accepted", 0) < 30:
        assert time.monotonic() < deadline, stats["total"]
        time.sleep(0.2)
        stats = server.stats()
    assert stats["total"]["connections_accepted"] == sum(
        w["statistics"]["connections_accepted"] for w in stats["workers"]
    )
    # A worker killed: started again in its slot, within a second.
    victim = stats["workers"][1]["pid"]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    while True:
        stats = server.stats()
        worker = stats["workers"][1]
        if worker["pid"] != victim and worker["ready"]:
            break
        assert time.monotonic() - killed_at < 10, stats
        time.sleep(0.02)
    assert worker["restarts"] == 1
    assert "worker 1" in server.output() and "starting it again" in server.output()
    seen = trio.run(_worker_of_each_connection, server.port, 30)
    assert 1 in seen
    # SIGTERM: every worker stops gracefully, exit status 0.
    assert server.stop() == 0
    output = server.output()
    assert "stopping the workers gracefully" in output
    assert "exit status 0" in output


@linux_only
def test_workers_give_up_on_a_crash_loop(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from trioquic.workers import serve_workers

            async def target(context):
                raise RuntimeError("broken at start")

            sys.exit(serve_workers(target, workers=2, port=0, host="127.0.0.1",
                                   crash_limit=3))
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result.stderr
    assert "giving up" in result.stderr
    assert "broken at start" in result.stderr


@linux_only
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stats-file", "x.json"], "--stats-file goes with --workers"),
        (["--lb-key", "00" * 16], "--lb-key goes with --server-id"),
        (["--server-id", "zz"], "hexadecimal"),
        (["--server-id", "01", "--lb-nonce-length", "2"], "between 4 and 18"),
        (
            [
                "--workers",
                "2",
                "--server-id",
                "01",
                "--lb-key",
                "00" * 16,
                "--lb-nonce-length",
                "15",
            ],
            "plaintext server IDs",
        ),
        (["--workers", "2", "--server-id", "ff"], "last octet"),
        (["--workers", "0"], "must be 1 to 256"),
        (["--workers", "2", "--engine", "qh3"], "not available with engine='qh3'"),
        (["--secret-file", "/nonexistent/secret"], "cannot read --secret-file"),
    ],
)
def test_serve_refuses_bad_scaling_options(args: list[str], message: str) -> None:
    result = subprocess.run(
        _cli("serve", "--no-tcp", "--port", "0", "--engine", "aioquic", *args),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr + result.stdout


def test_pack_is_struct_sock_filter() -> None:
    assert Instruction(0x30, 1, 2, 0x11223344).pack() == struct.pack(
        "=HBBI", 0x30, 1, 2, 0x11223344
    )


@linux_only
async def test_workers_close_open_connections_gracefully(
    workers_server: Any,
) -> None:
    """SIGTERM to the supervisor: each worker sends GOAWAY, lets the
    request in flight finish, then closes its connections with
    H3_NO_ERROR; the supervisor exits 0."""
    from trioquic import h3

    server = await trio.to_thread.run_sync(workers_server, "--workers", "2")
    settings = trioquic.QuicSettings(
        alpn_protocols=["h3"], verify_peer=False, server_name="localhost"
    )
    with trio.fail_after(30):
        async with h3.open_http3_client(
            "127.0.0.1", server.port, settings=settings
        ) as client:
            response = await client.request("GET", "/bytes/10")
            assert await response.read() == _pattern(10)
            # A request in flight when the signal comes (its body is read
            # after the server started shutting down).
            in_flight = await client.request("GET", "/bytes/3000000")
            server.process.send_signal(signal.SIGTERM)
            body = await in_flight.read()
            assert body == _pattern(3_000_000)
            closed = await client.wait_closed()
            assert client.goaway_received
            assert closed.reason.by_peer
            assert closed.reason.error_code == h3.H3ErrorCode.NO_ERROR
    assert await trio.to_thread.run_sync(server.stop, None) == 0


@linux_only
def test_workers_share_the_tcp_front_door(workers_server: Any) -> None:
    """The TCP door's listening socket is shared: HTTP/1.1 over TLS reaches
    a worker, and its answer points at HTTP/3 on the same port."""
    import http.client
    import ssl

    server = workers_server("--workers", "2", tcp=True)
    assert "(TCP, shared by the workers)" in server.output()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for _ in range(6):
        connection = http.client.HTTPSConnection(
            "127.0.0.1", server.port, context=context, timeout=10
        )
        try:
            connection.request("GET", "/bytes/100")
            response = connection.getresponse()
            assert response.status == 200
            assert response.read() == _pattern(100)
            assert response.getheader("alt-svc") == f'h3=":{server.port}"; ma=86400'
        finally:
            connection.close()
    seen = trio.run(_worker_of_each_connection, server.port, 4)
    assert len(seen) == 4
    assert server.stop() == 0


def test_describe_annotates_every_instruction() -> None:
    from trioquic.workers._bpf import describe

    program = reuseport_program(
        workers=2, connection_id_length=8, server_id_length=1, config_rotation=0, base=0
    )
    text = describe(program).splitlines()
    assert len(text) == len(program)
    assert text[0].startswith(" 0: ldb [0]")
    assert any("ret a" in line for line in text)
    assert all(" ; " in line for line in text)


@linux_only
def test_workers_never_outlive_the_supervisor(workers_server: Any) -> None:
    """The supervisor killed outright (no chance to stop them): its workers
    are sent SIGTERM by the kernel and stop by themselves."""
    server = workers_server("--workers", "2")
    pids = [w["pid"] for w in server.stats()["workers"]]
    server.process.kill()
    server.process.wait()
    deadline = time.monotonic() + 20
    for pid in pids:
        while _alive(pid):
            assert time.monotonic() < deadline, f"worker {pid} outlived its parent"
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fp:
            return fp.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_serve_workers_is_called_outside_trio() -> None:
    async def target(context: Any) -> None:  # pragma: no cover - never runs
        pass

    with pytest.raises(RuntimeError, match=r"outside trio\.run"):
        trioquic.workers.serve_workers(target, workers=2, port=0)


@linux_only
def test_workers_serve_an_asgi_application(
    workers_server: Any, tmp_path: pathlib.Path
) -> None:
    """Each worker imports the application and runs its lifespan."""
    (tmp_path / "hello_app.py").write_text(
        textwrap.dedent(
            """
            import os

            async def app(scope, receive, send):
                if scope["type"] == "lifespan":
                    while True:
                        message = await receive()
                        if message["type"] == "lifespan.startup":
                            scope["state"]["pid"] = os.getpid()
                            await send({"type": "lifespan.startup.complete"})
                        elif message["type"] == "lifespan.shutdown":
                            await send({"type": "lifespan.shutdown.complete"})
                            return
                body = str(scope["state"]["pid"]).encode()
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": body})
            """
        )
    )
    server = workers_server(
        "hello_app:app", "--app-dir", str(tmp_path), "--workers", "2"
    )
    pids = {w["index"]: w["pid"] for w in server.stats()["workers"]}

    async def fetch() -> list[tuple[int, int]]:
        from trioquic import h3

        settings = trioquic.QuicSettings(
            alpn_protocols=["h3"], verify_peer=False, server_name="localhost"
        )
        answers = []
        for _ in range(16):
            async with h3.open_http3_client(
                "127.0.0.1", server.port, settings=settings
            ) as client:
                response = await client.request("GET", "/")
                worker = int(dict(response.headers)[b"trioquic-worker"])
                answers.append((worker, int(await response.read())))
        return answers

    answers = trio.run(fetch)
    assert {worker for worker, _ in answers} == {0, 1}
    for worker, pid in answers:
        assert pid == pids[worker]  # its own process, its own lifespan state
    assert server.stop() == 0
