"""Across machines: an nftables load balancer routes QUIC by server ID.

Two "machines", each a network namespace running ``trioquic serve
--workers 2`` with its own server ID (``0100``, ``0200``) and one shared
``--secret-file``, sit behind a balancer namespace that forwards between
them and the client namespace. The balancer's nftables ruleset
(:data:`RULESET`, the one docs/scaling.rst explains) DNATs the public
address ``10.99.0.1:4433`` to a machine by the first octet of the server ID
in each packet's destination connection ID, and a client's first flight
(its own, random connection ID) by a hash of its address. On each machine,
the kernel's reuseport BPF program picks the worker by the server ID's
last octet: two tiers, one connection ID.

The client namespace opens :data:`CONNECTIONS` HTTP/3 connections at once,
downloads ``/bytes/N`` on each, and rebinds every connection to a new local
port halfway through: its next packet arrives at the balancer from a
4-tuple it has never seen (no conntrack entry), so only the server ID can
send it to the right machine. A misrouted short-header packet would reach
the other machine, which holds no such connection and answers with a
stateless reset (the machines share the reset key), and the connection
would die: so every body arriving intact after the rebind, a second request
on the new path answered by the same worker, no stateless reset sent by
either machine, and the balancer's server-ID rule counting the rebinds'
new flows, together show that each connection stayed on its machine (and
its worker) from start to end.

The test creates and removes its namespaces itself (unique names per run)
and is skipped, with the reason, where it cannot: not Linux, no ``ip`` or
``nft`` (Debian: iproute2, nftables), or no privilege to create a network
namespace or load an nftables ruleset in it (run as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

import trioquic

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"),
        reason="network namespaces and nftables are Linux's",
    ),
]

#: The address clients connect to: the balancer's.
PUBLIC = "10.99.0.1"
PORT = 4433
#: The machines: name, server ID (hex), address. The balancer routes by the
#: server ID's first octet; each machine's workers by its last.
MACHINES = (("m1", "0100", "10.99.1.2"), ("m2", "0200", "10.99.2.2"))
WORKERS = 2
#: The nonce after the server ID, and so the connection ID's length: 1
#: octet (config rotation, length) + the 2-octet server ID + the nonce.
NONCE_LENGTH = 5
CID_LENGTH = 1 + 2 + NONCE_LENGTH
#: The name the development certificate is for (the client's SNI).
SERVER_NAME = "lb.trioquic.test"
#: Simultaneous connections: the first-flight hash sends all of them to one
#: machine with a probability of 2 ** -(CONNECTIONS - 1).
CONNECTIONS = 16
#: The download on each connection (rebound halfway), and the request on
#: the new path after it.
BODY = 384 * 1024
AFTER = 64 * 1024
#: Whole-test bounds, in seconds.
SETUP_TIMEOUT = 20.0
CLIENT_TIMEOUT = 40.0
COMMAND_TIMEOUT = 10.0

#: The balancer's ruleset. ``@th,OFFSET,LENGTH`` reads LENGTH bits at bit
#: OFFSET from the start of the UDP header: the QUIC packet starts at bit 64.
#: Short header (form bit 0): DCID at payload octet 1, server ID from octet
#: 2. Long header (form bit 1): DCID length at octet 5, DCID at 6, server ID
#: from 7. Either is routed by the ID only under our config rotation (the
#: DCID's top three bits, 0) and, for long headers, our DCID length.
#: Anything else (a client's first flight) by a hash of its address.
RULESET = textwrap.dedent(
    f"""\
    table ip quic_lb {{
        chain prerouting {{
            type nat hook prerouting priority dstnat; policy accept;
            ip daddr {PUBLIC} udp dport {PORT} jump quic
        }}
        chain quic {{
            @th,64,1 0 @th,72,3 0 counter dnat to @th,80,8 map {{ 0x01 : {MACHINES[0][2]}, 0x02 : {MACHINES[1][2]} }} comment "short header: server ID"
            @th,64,1 1 @th,104,8 {CID_LENGTH} @th,112,3 0 counter dnat to @th,120,8 map {{ 0x01 : {MACHINES[0][2]}, 0x02 : {MACHINES[1][2]} }} comment "long header: server ID"
            counter dnat to jhash ip saddr . udp sport mod 2 seed 0x71756963 map {{ 0 : {MACHINES[0][2]}, 1 : {MACHINES[1][2]} }} comment "first flight: hash"
        }}
    }}
    """  # noqa: E501 - one rule a line, as nft lists them
)

#: The client, run in the client namespace: CONNECTIONS connections at once,
#: each downloading BODY bytes and rebinding halfway, then asking for AFTER
#: bytes on the new path. Prints one JSON object per connection.
CLIENT = textwrap.dedent(
    """\
    import json
    import sys

    import trio

    import trioquic
    from trioquic import h3

    config = json.loads(sys.argv[1])
    body_size, after_size = config["body"], config["after"]


    def worker(response):
        return dict(response.headers).get(b"trioquic-worker", b"").decode()


    def pattern(size):
        # serve's /bytes/N: byte i is i % 251.
        return bytes(i % 251 for i in range(size))


    async def connection(index, results):
        settings = trioquic.QuicSettings(
            alpn_protocols=["h3"],
            ca_certs=config["ca_certs"],
            server_name=config["server_name"],
        )
        outcome = {"index": index}
        results.append(outcome)
        try:
            await transfer(settings, outcome)
        except Exception as exc:  # a connection that died: reported, not raised
            outcome["error"] = repr(exc)


    async def transfer(settings, outcome):
        host, port = config["host"], config["port"]
        async with h3.open_http3_client(host, port, settings=settings) as client:
            outcome["first_address"] = list(client.local_address[:2])
            response = await client.request("GET", f"/bytes/{body_size}")
            outcome["status"] = response.status
            outcome["worker"] = worker(response)
            body = bytearray()
            async for chunk in response:
                body += chunk
                if "rebound_at" not in outcome and len(body) >= body_size // 2:
                    outcome["rebound_at"] = len(body)
                    outcome["new_address"] = list((await client.rebind())[:2])
            outcome["body_intact"] = bytes(body) == pattern(body_size)
            outcome["body_length"] = len(body)
            again = await client.request("GET", f"/bytes/{after_size}")
            outcome["after_status"] = again.status
            outcome["after_worker"] = worker(again)
            outcome["after_intact"] = await again.read() == pattern(after_size)
            outcome["final_address"] = list(client.local_address[:2])
            outcome["closed_early"] = client.is_closed
        outcome["close_reason"] = repr(client.close_reason)


    async def main():
        results = []
        with trio.fail_after(config["timeout"]):
            async with trio.open_nursery() as nursery:
                for index in range(config["connections"]):
                    nursery.start_soon(connection, index, results)
        print(json.dumps(results))


    trio.run(main)
    """
)


def _skip_reason() -> str | None:
    """Why this machine cannot run the test (None: it can)."""
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (install {package})"
    if os.geteuid() != 0:
        return "creating network namespaces and nftables rulesets needs root"
    return None


def _run(*command: str, input: str | None = None) -> str:
    """Run ``command``; its output, or an AssertionError saying what failed."""
    result = subprocess.run(
        command,
        input=input,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


class Lab:
    """The namespaces (client, balancer, machines), joined by veth pairs;
    :meth:`close` removes them, and everything in them, whatever state the
    test left them in."""

    def __init__(self) -> None:
        self.prefix = f"tq-{os.getpid()}-{time.monotonic_ns() % 100000}"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[str]] = []

    def name(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def add_namespace(self, role: str) -> str:
        name = self.name(role)
        _run("ip", "netns", "add", name)
        self.namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def link(self, role: str, outside: str, inside: str, subnet: int) -> None:
        """A veth pair between the balancer (``outside``, 10.99.subnet.1)
        and ``role``'s namespace (``eth0``, 10.99.subnet.2, routed through
        the balancer)."""
        balancer, other = self.name("lb"), self.name(role)
        _run(
            "ip", "-n", balancer, "link", "add", outside,
            "type", "veth", "peer", "name", inside, "netns", other,
        )  # fmt: skip
        _run(
            "ip", "-n", balancer, "addr", "add", f"10.99.{subnet}.1/24", "dev", outside
        )
        _run("ip", "-n", other, "addr", "add", f"10.99.{subnet}.2/24", "dev", inside)
        _run("ip", "-n", balancer, "link", "set", outside, "up")
        _run("ip", "-n", other, "link", "set", inside, "up")
        _run("ip", "-n", other, "route", "add", "default", "via", f"10.99.{subnet}.1")

    def execute(self, role: str, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.name(role), *command]

    def start(
        self, role: str, log: pathlib.Path, *command: str
    ) -> subprocess.Popen[str]:
        # ip netns exec execs the command: the process is the server itself.
        with open(log, "w") as out:
            process = subprocess.Popen(
                self.execute(role, *command),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=_environment("aioquic"),
            )
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()  # the supervisor stops its workers
            try:
                process.wait(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for name in reversed(self.namespaces):
            # Whatever still runs in our namespaces (a worker whose
            # supervisor was killed) is ours: a namespace outlives its
            # processes otherwise.
            pids = subprocess.run(
                ["ip", "netns", "pids", name],
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            # Deleting a namespace removes its links, addresses, routes and
            # nftables ruleset with it.
            subprocess.run(
                ["ip", "netns", "del", name],
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        self.namespaces.clear()


def _environment(engine: str) -> dict[str, str]:
    """A subprocess's environment: QUIC ``engine`` (the servers need
    aioquic, whatever this run's is: qh3 refuses QUIC-LB connection IDs),
    and this checkout importable."""
    env = dict(os.environ)
    env["TRIOQUIC_ENGINE"] = engine
    root = str(pathlib.Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def lab() -> Iterator[Lab]:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    lab = Lab()
    try:
        try:
            lab.add_namespace("lb")
        except AssertionError as exc:
            pytest.skip(f"cannot create a network namespace: {exc}")
        try:
            _run("ip", "netns", "exec", lab.name("lb"), "nft", "-f", "-", input=RULESET)
        except AssertionError as exc:
            pytest.skip(f"cannot load an nftables ruleset: {exc}")
        yield lab
    finally:
        lab.close()


def _wait_listening(
    process: subprocess.Popen[str], log: pathlib.Path, address: str
) -> None:
    deadline = time.monotonic() + SETUP_TIMEOUT
    while f"listening on {address}:{PORT}" not in log.read_text():
        if process.poll() is not None:
            raise AssertionError(f"server exited:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"server did not start:\n{log.read_text()}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[str], log: pathlib.Path) -> None:
    """SIGTERM: the workers stop gracefully, the statistics are written."""
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(timeout=SETUP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"server did not stop:\n{log.read_text()}") from None
    assert status == 0, log.read_text()


def _rule_counters(lab: Lab) -> dict[str, int]:
    """Packets each balancer rule matched, by its comment (the first packet
    of each flow only: conntrack applies the decision to the rest)."""
    listing = json.loads(
        _run(*lab.execute("lb", "nft", "-j", "list", "chain", "ip", "quic_lb", "quic"))
    )
    counters = {}
    for item in listing["nftables"]:
        rule = item.get("rule")
        if rule is None:
            continue
        packets = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        counters[rule["comment"]] = packets
    return counters


def test_balancer_routes_by_server_id_through_rebinding(
    lab: Lab, tmp_path: pathlib.Path
) -> None:
    started = time.monotonic()
    lab.add_namespace("client")
    for role, _, _ in MACHINES:
        lab.add_namespace(role)
    lab.link("client", "client", "eth0", 0)
    for subnet, (role, _, _) in enumerate(MACHINES, start=1):
        lab.link(role, role, "eth0", subnet)
    _run(*lab.execute("lb", "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"))

    certificate = trioquic.generate_self_signed_certificate([SERVER_NAME], tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(32))
    servers = []
    for role, server_id, address in MACHINES:
        log = tmp_path / f"{role}.log"
        stats = tmp_path / f"{role}.json"
        process = lab.start(
            role,
            log,
            sys.executable, "-m", "trioquic", "serve", "--no-tcp",
            "--host", address, "--port", str(PORT),
            "--workers", str(WORKERS), "--server-id", server_id,
            "--lb-nonce-length", str(NONCE_LENGTH),
            "--secret-file", str(secret), "--stats-file", str(stats),
            "--certificate", str(certificate.certificate_path),
            "--private-key", str(certificate.private_key_path),
        )  # fmt: skip
        servers.append((role, process, log, stats))
    for (_, process, log, _), (_, _, address) in zip(servers, MACHINES, strict=True):
        _wait_listening(process, log, address)

    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    config = {
        "host": PUBLIC,
        "port": PORT,
        "ca_certs": str(certificate.certificate_path),
        "server_name": SERVER_NAME,
        "connections": CONNECTIONS,
        "body": BODY,
        "after": AFTER,
        "timeout": CLIENT_TIMEOUT - 5,
    }
    try:
        client = subprocess.run(
            lab.execute("client", sys.executable, str(script), json.dumps(config)),
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
            # The client runs on this run's engine (the servers on aioquic).
            env=_environment(trioquic.QuicSettings().engine),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        logs = "\n".join(log.read_text() for _, _, log, _ in servers)
        raise AssertionError(f"the client hung: {exc.stderr!r}\n{logs}") from None
    assert client.returncode == 0, client.stderr
    outcomes = json.loads(client.stdout)
    counters = _rule_counters(lab)
    for _, process, log, _ in servers:
        _stop(process, log)
    statistics = {role: json.loads(stats.read_text()) for role, _, _, stats in servers}

    # Every connection: body intact across its rebind, a second request on
    # the new path answered by the same worker, the connection alive till
    # the client closed it.
    assert len(outcomes) == CONNECTIONS
    for outcome in outcomes:
        assert "error" not in outcome, f"connection {outcome['index']}: {outcome}"
        assert outcome["status"] == 200 and outcome["after_status"] == 200, outcome
        assert outcome["body_intact"] and outcome["after_intact"], outcome
        assert outcome["new_address"] != outcome["first_address"], outcome
        assert outcome["final_address"] == outcome["new_address"], outcome
        assert outcome["worker"] == outcome["after_worker"] != "", outcome
        assert not outcome["closed_early"], outcome
    # Each connection was accepted once, on one machine; both machines
    # served; neither reset a connection (what a misrouted packet gets).
    accepted = {
        role: stats["total"]["connections_accepted"]
        for role, stats in statistics.items()
    }
    assert sum(accepted.values()) == CONNECTIONS, accepted
    assert all(accepted.values()), accepted
    for role, stats in statistics.items():
        assert stats["total"].get("stateless_resets_sent", 0) == 0, (role, stats)
        assert stats["restarts"] == 0, (role, stats)
    # The balancer: each rebind was a new flow, routed by the server ID
    # alone. Each first flight was a new flow, routed by the hash, or, when
    # the client's own random 8-octet ID happens to look like one of ours
    # (config rotation bits 0, a machine's octet: about 1 in 1000), by that.
    assert counters["short header: server ID"] >= CONNECTIONS, counters
    assert counters["first flight: hash"] <= CONNECTIONS, counters
    first_flights = counters["first flight: hash"] + counters["long header: server ID"]
    assert first_flights >= CONNECTIONS, counters
    summary = {
        "seconds": round(time.monotonic() - started, 1),
        "accepted": accepted,
        "per_worker": {
            role: [
                w["statistics"].get("connections_accepted", 0) for w in stats["workers"]
            ]
            for role, stats in statistics.items()
        },
        "balancer_rules": counters,
    }
    print(json.dumps(summary))
    assert summary["seconds"] < 60
