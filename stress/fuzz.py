"""Fuzz a live trioquic HTTP/3 server over loopback while a transfer runs.

The server runs in a process of its own (``_fuzz_server.py``), and so does a
legitimate HTTP/3 client (``_fuzz_client.py``) that downloads and uploads
through a UDP relay in this process for the whole run, checking every byte.
The relay keeps a corpus of the real datagrams it forwards and learns the
server's connection IDs from them; this process also drives connections of
its own whose keys it knows. From these it sends ``--datagrams`` structure-
aware mutated datagrams at the server, from several source ports (and some
from the legitimate client's own address): mutated Initials, Handshake and
short-header packets with live connection IDs, truncations, coalesced
packets, oversized length fields, correctly encrypted packets whose
ClientHello, transport parameters or HTTP/3 frames are wrong (see
``_fuzz_mutate.KINDS``).

Then it stops, lets the fuzz-created connections time out, and checks: the
server never crashed or logged an error, no task is left over (the task
count is back to the idle server's), every connection and connection ID is
gone, the heap and RSS are back within bounds, every transfer was intact.
It prints a summary (``--json FILE`` writes it as JSON) and exits 1 on any
finding, writing the datagrams sent just before it to ``--dump-dir``.

Every decision is drawn from ``--seed``; the captured packets differ between
runs (TLS is randomized), which is why findings come with the datagrams::

    python stress/fuzz.py --seed 7                # 1,000,000 datagrams
    python stress/fuzz.py --quick                 # a smoke run, ~20 s
    python stress/fuzz.py --replay fuzz-dumps/finding-1.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _fuzz_mutate import KINDS, SERVER_CID_LENGTH, Corpus, Mutator  # noqa: E402
from _fuzz_own import OwnConnection, OwnConnections, close_code_name  # noqa: E402
from _fuzz_wire import (  # noqa: E402
    INITIAL,
    find_connection_close,
    open_server_initial,
    parse_long_header,
)

import trioquic  # noqa: E402

SERVER_SCRIPT = HERE / "_fuzz_server.py"
CLIENT_SCRIPT = HERE / "_fuzz_client.py"
HOST = "127.0.0.1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--datagrams",
        type=int,
        default=None,
        help="how many to send (1,000,000; 5,000 with --quick)",
    )
    parser.add_argument("--seed", type=int, default=1, help="draws every decision")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=900.0,
        help="seconds of fuzzing at most (a run that ends before sending "
        "--datagrams is a finding)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=4000.0,
        help="fuzzed datagrams per second (bounded so that the transfer "
        "goes on: the server has one CPU)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 5,000 datagrams at 500/s, 1 MiB transfers, short timeouts",
    )
    parser.add_argument("--json", metavar="FILE", help="write the summary here")
    parser.add_argument(
        "--transfer-size", type=int, default=8 << 20, help="bytes per download"
    )
    parser.add_argument("--sockets", type=int, default=8, help="fuzzing source ports")
    parser.add_argument(
        "--own-connections",
        type=int,
        default=3,
        help="connections of the fuzzer's own kept open (for sealed packets)",
    )
    parser.add_argument("--idle-timeout", type=float, default=5.0)
    parser.add_argument(
        "--retry", choices=["never", "always", "under-load"], default="under-load"
    )
    parser.add_argument(
        "--heap-slack",
        type=int,
        default=150_000,
        help="allocated memory blocks the quiet server may hold beyond the "
        "fuzz's start",
    )
    parser.add_argument(
        "--rss-slack-mb",
        type=float,
        default=96.0,
        help="MiB of RSS the quiet server may hold beyond the fuzz's start",
    )
    parser.add_argument(
        "--dump-dir",
        default="fuzz-dumps",
        help="where findings' datagrams are written",
    )
    parser.add_argument(
        "--keep", type=int, default=20_000, help="datagrams kept for a dump"
    )
    parser.add_argument(
        "--replay",
        metavar="FILE",
        help="send a dump's datagrams to a fresh server instead of fuzzing",
    )
    parser.add_argument(
        "--minimize",
        metavar="FILE",
        help="bisect a dump to the fewest datagrams that reproduce its finding",
    )
    parser.add_argument(
        "--replay-range",
        metavar="A:B",
        help="only entries A to B-1 of the dump (to bisect)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="the server also reports tracemalloc's heap (slower)",
    )
    args = parser.parse_args(argv)
    if args.datagrams is None:
        args.datagrams = 5_000 if args.quick else 1_000_000
    if args.quick:
        args.rate = min(args.rate, 500.0)
        args.transfer_size = min(args.transfer_size, 1 << 20)
        args.time_limit = min(args.time_limit, 60.0)
        args.idle_timeout = min(args.idle_timeout, 2.0)
    return args


# -- processes --------------------------------------------------------------


class LineReader:
    """JSON lines from a child's stdout, read without blocking."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        os.set_blocking(self._fd, False)
        self._buffer = b""
        self.closed = False

    def read(self) -> list[dict[str, Any]]:
        while True:
            try:
                chunk = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                self.closed = True
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "text", "text": line.decode(errors="replace")})
        return out


class Child:
    """A child process whose stdout carries JSON lines and whose stderr goes
    to a file; closing its stdin asks it to finish."""

    def __init__(self, name: str, argv: list[str], directory: str) -> None:
        self.name = name
        self.stderr_path = Path(directory) / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), *sys.path]))
        self.process = subprocess.Popen(
            [sys.executable, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        assert self.process.stdout is not None
        self.lines = LineReader(self.process.stdout)

    def finish(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stderr.close()

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")


def udp_receive_errors() -> int:
    """The kernel's count of UDP datagrams dropped for a full receive buffer
    (all sockets of the machine: Linux ``/proc/net/snmp``)."""
    try:
        with open("/proc/net/snmp") as fp:
            rows = [line.split() for line in fp if line.startswith("Udp:")]
        return int(dict(zip(rows[0][1:], rows[1][1:], strict=True))["RcvbufErrors"])
    except (OSError, IndexError, KeyError, ValueError):
        return 0


def udp_socket(buffer: int = 4 << 20) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, buffer)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


class Relay:
    """Forwards the legitimate client's datagrams to the server and back,
    adding what it sees to the corpus."""

    def __init__(self, server: tuple[str, int], corpus: Corpus) -> None:
        self.server = server
        self.corpus = corpus
        self.client_side = udp_socket()
        self.server_side = udp_socket()
        self.client: tuple[str, int] | None = None
        #: The port the legitimate client's datagrams reach the server from.
        self.server_port = int(self.server_side.getsockname()[1])
        self.to_server = 0
        self.to_client = 0

    @property
    def port(self) -> int:
        return int(self.client_side.getsockname()[1])

    def pump(self) -> int:
        moved = 0
        for _ in range(256):
            try:
                data, addr = self.client_side.recvfrom(65536)
            except (BlockingIOError, ConnectionRefusedError):
                break
            self.client = addr
            self.corpus.add(data)
            self._send(self.server_side, data, self.server)
            self.to_server += 1
            moved += 1
        for _ in range(256):
            try:
                data, _ = self.server_side.recvfrom(65536)
            except (BlockingIOError, ConnectionRefusedError):
                break
            header = parse_long_header(data)
            if header is not None and len(header.source_cid) == SERVER_CID_LENGTH:
                self.corpus.note_cid(header.source_cid)
            if self.client is not None:
                self._send(self.client_side, data, self.client)
                self.to_client += 1
            moved += 1
        return moved

    @staticmethod
    def _send(sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):  # a full buffer: UDP drops it
            sock.sendto(data, addr)

    def close(self) -> None:
        self.client_side.close()
        self.server_side.close()


# -- the run ----------------------------------------------------------------


class Findings:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, kind: str, detail: str, **extra: Any) -> None:
        entry = {"kind": kind, "detail": detail, **extra}
        self.items.append(entry)
        print(f"FINDING [{kind}] {detail}", flush=True)

    def __bool__(self) -> bool:
        return bool(self.items)


class Fuzz:
    """One run: the processes, the relay, the fuzzing loop, the checks."""

    def __init__(self, args: argparse.Namespace, directory: str) -> None:
        self.args = args
        self.directory = directory
        seed = args.seed
        # One stream per part, so that one part's draws do not shift another's.
        self.rng = random.Random(f"{seed}:mutate")
        self.send_rng = random.Random(f"{seed}:send")
        self.corpus = Corpus(random.Random(f"{seed}:corpus"))
        self.findings = Findings()
        certificate = trioquic.generate_self_signed_certificate(
            ["localhost"], directory
        )
        self.cert = str(certificate.certificate_path)
        self.key = str(certificate.private_key_path)
        self.reports: list[dict[str, Any]] = []
        self.transfers: list[dict[str, Any]] = []
        self.sent_by_kind: Counter[str] = Counter()
        self.sent = 0
        self.sent_bytes = 0
        self.send_errors: Counter[str] = Counter()
        self.via: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        self.reply_bytes: Counter[str] = Counter()
        self.socket_sent: Counter[int] = Counter()
        self.socket_received: Counter[int] = Counter()
        self.handshake_closes: Counter[str] = Counter()
        self.ring: deque[tuple[float, str, str, bytes, bytes]] = deque(maxlen=args.keep)
        self.dumps: list[str] = []
        self.marks: dict[str, dict[str, Any]] = {}
        self.fuzz_started = self.fuzz_ended = 0.0
        self.last_report_at = 0.0
        self.max_report_gap = 0.0
        self.warnings: Counter[str] = Counter()
        self.dump_counts: Counter[str] = Counter()
        self.dumping = True
        self.relayed_at_start = self.own_at_start = self.rcvbuf_errors = 0

    # -- processes -----------------------------------------------------------

    def start_server(self) -> tuple[Child, dict[str, Any]]:
        args = self.args
        argv = [
            str(SERVER_SCRIPT),
            "--cert",
            self.cert,
            "--key",
            self.key,
            "--payload-seed",
            str(args.seed),
            "--idle-timeout",
            str(args.idle_timeout),
            "--handshake-timeout",
            str(min(3.0, args.idle_timeout)),
            "--retry",
            args.retry,
        ]
        if args.tracemalloc:
            argv.append("--tracemalloc")
        server = Child("server", argv, self.directory)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in server.lines.read():
                if line.get("event") == "listening":
                    self.last_report_at = time.monotonic()
                    return server, line
            if server.process.poll() is not None:
                break
            time.sleep(0.05)
        server.kill()
        raise SystemExit(f"the server did not start:\n{server.stderr()}")

    def start_client(self, relay: Relay) -> Child:
        args = self.args
        return Child(
            "client",
            [
                str(CLIENT_SCRIPT),
                "--port",
                str(relay.port),
                "--ca",
                self.cert,
                "--payload-seed",
                str(args.seed),
                "--size",
                str(args.transfer_size),
                "--idle-timeout",
                str(max(args.idle_timeout, 5.0)),
            ],
            self.directory,
        )

    # -- reading the children ------------------------------------------------

    def read_server(self, server: Child, phase: str) -> None:
        now = time.monotonic()
        for line in server.lines.read():
            event = line.get("event")
            if event not in ("report", "final"):
                if event == "text":
                    print(f"server: {line['text']}", flush=True)
                continue
            line["phase"] = phase
            self.reports.append(line)
            self.max_report_gap = max(self.max_report_gap, now - self.last_report_at)
            self.last_report_at = now
            for record in line.get("log", []):
                self.server_log(record)
            stats = line["stats"]
            if stats["pending_handshakes"] > 128:
                self.findings.add(
                    "limit",
                    f"{stats['pending_handshakes']} pending handshakes "
                    "(max_pending_handshakes is 128)",
                )

    def server_log(self, record: dict[str, Any]) -> None:
        message = record["message"]
        serious = record["level"] in ("ERROR", "CRITICAL") or (
            "RuntimeWarning" in message or "ResourceWarning" in message
        )
        if not serious:
            # aioquic logs every connection it closes for a protocol error
            # (logger "quic"): counted, expected.
            self.warnings[record["logger"]] += 1
            return
        first_line = message.splitlines()[0]
        dump = self.dump(f"log-{len(self.dumps) + 1}", record["t"], first_line)
        self.findings.add(
            "server-log",
            message.splitlines()[0],
            level=record["level"],
            logger=record["logger"],
            message=message,
            dump=dump,
        )

    def read_client(self, client: Child, phase: str) -> None:
        for line in client.lines.read():
            if "transfer" not in line:
                if line.get("event") == "text":
                    print(f"client: {line['text']}", flush=True)
                continue
            line["phase"] = phase
            line["t"] = time.monotonic()
            self.transfers.append(line)
            if not line["ok"]:
                self.findings.add(
                    "transfer",
                    f"transfer {line['transfer']} ({line['kind']}) failed: "
                    f"{line.get('error')}",
                    dump=self.dump(
                        f"transfer-{line['transfer']}", time.monotonic(), "transfer"
                    ),
                )

    def read_replies(self, sockets: list[socket.socket], mutator: Mutator) -> None:
        for index, sock in enumerate(sockets):
            for _ in range(64):
                try:
                    data, _ = sock.recvfrom(65536)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                self.socket_received[index] += len(data)
                kind = self.classify_reply(data, mutator)
                self.replies[kind] += 1
                self.reply_bytes[kind] += len(data)

    def classify_reply(self, data: bytes, mutator: Mutator) -> str:
        if not data:
            return "empty"
        if not data[0] & 0x80:
            return "short (stateless reset)"
        header = parse_long_header(data)
        if header is None:
            return "other"
        if header.version == 0:
            return "version negotiation"
        packet_type = header.packet_type
        if packet_type == 3:
            return "retry"
        if packet_type == INITIAL:
            client_dcid = mutator.sealed_initials.get(header.destination_cid)
            if client_dcid is not None:
                opened = open_server_initial(data, client_dcid)
                if opened is not None:
                    close = find_connection_close(opened[1])
                    if close is not None:
                        name = close_code_name(close.error_code, False)
                        if close.reason == b"handshake timeout":
                            self.handshake_closes[f"{name} (handshake timeout)"] += 1
                        else:
                            self.handshake_closes[name] += 1
                        # trioquic's own handshake timeout closes with
                        # INTERNAL_ERROR (a policy, not a failure).
                        if (
                            name == "INTERNAL_ERROR"
                            and close.reason != b"handshake timeout"
                        ):
                            self.findings.add(
                                "internal-error",
                                "the server closed a fuzzed handshake with "
                                f"INTERNAL_ERROR: {close.reason!r}",
                            )
                        return "initial (CONNECTION_CLOSE)"
            return "initial"
        return {2: "handshake", 1: "0-rtt"}.get(packet_type, "other")

    # -- dumps ---------------------------------------------------------------

    def dump(self, name: str, around: float, key: str = "") -> str | None:
        """Write the datagrams sent in the half second before ``around`` (and
        just after it) for a reproducer; returns the file's path. Only the
        first two findings of each ``key`` get one."""
        self.dump_counts[key or name] += 1
        if not self.dumping or self.dump_counts[key or name] > 2:
            return None
        directory = Path(self.args.dump_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"seed{self.args.seed}-{name}.jsonl"
        with open(path, "w") as fp:
            for t, kind, via, data, plain in self.ring:
                if around - 0.5 <= t <= around + 0.05:
                    entry = {"t": round(t - around, 6), "kind": kind, "via": via}
                    entry["hex"] = data.hex()
                    if plain:
                        entry["plain"] = plain.hex()
                    fp.write(json.dumps(entry) + "\n")
        self.dumps.append(str(path))
        return str(path)

    # -- the loop ------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        started = time.monotonic()
        server, listening = self.start_server()
        self.reports.append({**listening, "phase": "baseline"})
        # The server binds an ephemeral port and reports it.
        server_addr = (HOST, int(listening["port"]))
        relay = Relay(server_addr, self.corpus)
        client = self.start_client(relay)
        pool = OwnConnections(
            random.Random(f"{args.seed}:own"),
            server_addr,
            self.corpus,
            size=args.own_connections,
        )
        mutator = Mutator(self.rng, self.corpus, pool)
        sockets = [udp_socket(1 << 20) for _ in range(args.sockets)]
        print(
            f"fuzzing trioquic's HTTP/3 server at {HOST}:{server_addr[1]} "
            f"(pid {server.process.pid}), seed {args.seed}: "
            f"{args.datagrams:,} datagrams at {args.rate:,.0f}/s at most",
            flush=True,
        )
        phase = "warmup"
        warmup_deadline = time.monotonic() + 60
        next_progress = 0.0
        crashed = False
        try:
            while True:
                now = time.monotonic()
                moved = relay.pump()
                pool.poll(now)
                self.read_replies(sockets, mutator)
                self.read_server(server, phase)
                self.read_client(client, phase)
                if server.process.poll() is not None:
                    crashed = True
                    self.findings.add(
                        "crash",
                        f"the server exited with {server.process.returncode} "
                        f"during the {phase}",
                        dump=self.dump("crash", now),
                    )
                    break
                silent = now - self.last_report_at
                if silent > max(10.0, args.idle_timeout * 2):
                    self.findings.add(
                        "hang",
                        f"no report from the server for {silent:.1f} s",
                        dump=self.dump("hang", self.last_report_at),
                    )
                    self.last_report_at = now
                if phase == "warmup":
                    ready = (
                        any(t["ok"] and t["kind"] == "download" for t in self.transfers)
                        and pool.established_count > 0
                        and self.corpus.client_hellos
                        and self.corpus.live_cids
                    )
                    if ready:
                        phase = "fuzz"
                        self.fuzz_started = now
                        self.marks["start"] = self.reports[-1]
                        self.relayed_at_start = relay.to_server
                        self.own_at_start = pool.datagrams_sent + sum(
                            c.datagrams_sent for c in pool.connections
                        )
                        self.rcvbuf_errors = udp_receive_errors()
                        print(
                            f"warm: corpus of {len(self.corpus)} datagrams, "
                            f"{len(self.corpus.live_cids)} live connection IDs",
                            flush=True,
                        )
                    elif now > warmup_deadline:
                        self.findings.add(
                            "warmup", "no transfer or handshake within 60 s"
                        )
                        break
                    time.sleep(0.002 if moved else 0.005)
                    continue
                # Fuzzing.
                elapsed = now - self.fuzz_started
                due = min(int(elapsed * args.rate) - self.sent, 128)
                for _ in range(max(due, 0)):
                    self.send_one(mutator, sockets, relay, now)
                if "middle" not in self.marks and self.sent >= args.datagrams // 2:
                    self.marks["middle"] = self.reports[-1]
                if now >= next_progress:
                    next_progress = now + (5.0 if args.quick else 15.0)
                    self.progress(elapsed, relay, pool)
                if self.sent >= args.datagrams or elapsed >= args.time_limit:
                    break
                if due <= 0 and not moved:
                    time.sleep(0.0005)
            self.fuzz_ended = time.monotonic()
            if not crashed:
                self.wind_down(server, client, relay, pool, sockets, mutator)
        finally:
            for child in (client, server):
                child.finish()
            client.wait(10)
            exit_code = server.wait(30)
            self.read_server(server, "final")
            for child in (client, server):
                child.kill()
            relay.close()
            for sock in sockets:
                sock.close()
        self.check_end(server, exit_code, crashed)
        if self.findings:
            directory = Path(args.dump_dir)
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"seed{args.seed}-server.stderr"
            path.write_text(server.stderr())
            self.dumps.append(str(path))
        return self.summary(started, relay, pool, exit_code)

    def send_one(
        self,
        mutator: Mutator,
        sockets: list[socket.socket],
        relay: Relay,
        now: float,
    ) -> None:
        kind, data = mutator.next()
        rng = self.send_rng
        target = mutator.target
        if target is not None and rng.random() < 0.9:
            via = "own"
            target.send(data)
        elif rng.random() < 0.1:
            # From the legitimate client's own address (spoofed).
            via = "spoofed"
            relay._send(relay.server_side, data, relay.server)
        else:
            index = rng.randrange(len(sockets))
            via = f"port{index}"
            try:
                sockets[index].sendto(data, relay.server)
                self.socket_sent[index] += len(data)
            except OSError as exc:
                self.send_errors[type(exc).__name__] += 1
        self.via[via] += 1
        self.sent += 1
        self.sent_bytes += len(data)
        self.sent_by_kind[kind] += 1
        self.ring.append((now, kind, via, data, mutator.plain))

    def progress(self, elapsed: float, relay: Relay, pool: OwnConnections) -> None:
        report = self.reports[-1]
        ok = sum(1 for t in self.transfers if t["ok"])
        print(
            f"{elapsed:6.0f} s  sent {self.sent:>9,}  "
            f"server received {report['stats']['datagrams_received']:>9,}  "
            f"rss {report['rss'] / 2**20:6.1f} MiB  tasks {report['tasks']:4}  "
            f"connections {report['connections']:3}  "
            f"own {pool.established_count}/{pool.opened}  transfers ok {ok}",
            flush=True,
        )

    def wind_down(
        self,
        server: Child,
        client: Child,
        relay: Relay,
        pool: OwnConnections,
        sockets: list[socket.socket],
        mutator: Mutator,
    ) -> None:
        """Stop fuzzing, let the client finish its round, then wait for every
        connection to end (the fuzzer's own by the idle timeout)."""
        args = self.args
        self.marks["end"] = self.reports[-1]
        pool.stop()
        client.finish()
        deadline = time.monotonic() + 180
        while client.process.poll() is None and time.monotonic() < deadline:
            relay.pump()
            self.read_client(client, "wind-down")
            self.read_server(server, "wind-down")
            self.read_replies(sockets, mutator)
            time.sleep(0.002)
        self.read_client(client, "wind-down")
        if client.process.poll() is None:
            self.findings.add("client", "the client did not finish its last round")
        elif client.process.returncode != 0:
            self.findings.add(
                "client",
                f"the client exited with {client.process.returncode}: "
                f"{client.stderr()[-2000:]}",
            )
        baseline = self.reports[0]["tasks"]
        quiet_deadline = time.monotonic() + args.idle_timeout * 3 + 15
        settled = 0
        while time.monotonic() < quiet_deadline and server.process.poll() is None:
            relay.pump()
            self.read_replies(sockets, mutator)
            count = len(self.reports)
            self.read_server(server, "quiet")
            if len(self.reports) > count:
                report = self.reports[-1]
                stats = report["stats"]
                idle = (
                    report["tasks"] == baseline
                    and stats["connections"] == 0
                    and stats["pending_handshakes"] == 0
                    and stats["connection_ids"] == 0
                    and report["connections"] == 0
                )
                settled = settled + 1 if idle else 0
                if settled >= 3:
                    break
            time.sleep(0.01)
        self.marks["quiet"] = self.reports[-1]
        if settled < 3:
            report = self.reports[-1]
            self.findings.add(
                "stuck",
                f"{args.idle_timeout * 3 + 15:.0f} s after the fuzz, the server "
                f"still has {report['tasks']} tasks (idle: {baseline}), "
                f"{report['connections']} connections, "
                f"{report['stats']['connection_ids']} connection IDs",
                tasks=report["task_names"],
                baseline=self.reports[0]["task_names"],
            )

    # -- checks and summary --------------------------------------------------

    def check_end(self, server: Child, exit_code: int | None, crashed: bool) -> None:
        args = self.args
        if self.sent < args.datagrams:
            self.findings.add(
                "short",
                f"sent {self.sent:,} of {args.datagrams:,} datagrams within "
                f"--time-limit {args.time_limit:.0f} s",
            )
        if not crashed and exit_code != 0:
            self.findings.add(
                "exit", f"the server exited with {exit_code} after shutdown"
            )
        stderr = server.stderr()
        if "Traceback" in stderr:
            first = stderr.index("Traceback")
            if not any(f["kind"] == "server-log" for f in self.findings.items):
                self.findings.add(
                    "traceback",
                    "a traceback in the server's stderr",
                    stderr=stderr[first : first + 4000],
                )
        during = [t for t in self.transfers if t["phase"] == "fuzz" and t["ok"]]
        if not during and not crashed:
            self.findings.add("transfer", "no transfer completed during the fuzz")
        start, quiet = self.marks.get("start"), self.marks.get("quiet")
        if start is not None and quiet is not None:
            grown = quiet["blocks"] - start["blocks"]
            if grown > args.heap_slack:
                self.findings.add(
                    "heap",
                    f"the quiet server holds {grown:,} more memory blocks than "
                    f"at the fuzz's start (bound {args.heap_slack:,})",
                )
            rss_grown = (quiet["rss"] - start["rss"]) / 2**20
            if rss_grown > args.rss_slack_mb:
                self.findings.add(
                    "rss",
                    f"the quiet server's RSS is {rss_grown:.1f} MiB above the "
                    f"fuzz's start (bound {args.rss_slack_mb:.0f} MiB)",
                )
        for index, sent in self.socket_sent.items():
            received = self.socket_received[index]
            if received > 3 * sent + 1500:
                self.findings.add(
                    "amplification",
                    f"source port {index} sent {sent:,} bytes and got {received:,}",
                )

    def summary(
        self,
        started: float,
        relay: Relay,
        pool: OwnConnections,
        exit_code: int | None,
    ) -> dict[str, Any]:
        for name, reason, frames in pool.internal_errors:
            self.findings.add(
                "internal-error",
                f"the server closed one of the fuzzer's connections with {name}: "
                f"{reason!r}",
                frames=frames.hex(),
            )

        def point(report: dict[str, Any] | None) -> dict[str, Any] | None:
            if report is None:
                return None
            return {
                "rss_mib": round(report["rss"] / 2**20, 1),
                "blocks": report["blocks"],
                "tasks": report["tasks"],
                "connections": report["connections"],
                "connection_ids": report["stats"]["connection_ids"],
                **(
                    {"heap_mib": round(report["heap"] / 2**20, 1)}
                    if "heap" in report
                    else {}
                ),
            }

        fuzz_reports = [r for r in self.reports if r["phase"] == "fuzz"]
        first = self.marks.get("start") or self.reports[0]
        last = self.reports[-1]
        received = (
            last["stats"]["datagrams_received"] - first["stats"]["datagrams_received"]
        )
        to_server = (
            self.sent
            + relay.to_server
            - self.relayed_at_start
            + pool.datagrams_sent
            - self.own_at_start
        )
        dropped_start = Counter(first["stats"]["dropped"])
        drops = Counter(last["stats"]["dropped"])
        drops.subtract(dropped_start)
        ok = [t for t in self.transfers if t["ok"]]
        fuzz_seconds = max(self.fuzz_ended - self.fuzz_started, 1e-9)
        result: dict[str, Any] = {
            "seed": self.args.seed,
            "ok": not self.findings,
            "findings": self.findings.items,
            "dumps": self.dumps,
            "datagrams": {
                "sent": self.sent,
                "target": self.args.datagrams,
                "bytes": self.sent_bytes,
                "by_kind": dict(sorted(self.sent_by_kind.items())),
                "kinds": list(KINDS),
                "via": dict(sorted(self.via.items())),
                "send_errors": dict(self.send_errors),
                "rate_per_s": round(self.sent / fuzz_seconds),
            },
            "seconds": {
                "fuzz": round(fuzz_seconds, 1),
                "total": round(time.monotonic() - started, 1),
            },
            "server": {
                "exit_code": exit_code,
                "datagrams_received": received,
                "datagrams_sent_to_it": to_server,
                "legitimate_datagrams_relayed": relay.to_server - self.relayed_at_start,
                "kernel_receive_buffer_errors": udp_receive_errors()
                - self.rcvbuf_errors,
                "dropped": {k: v for k, v in sorted(drops.items()) if v},
                "final_stats": last["stats"],
                "max_pending_handshakes": max(
                    (r["stats"]["pending_handshakes"] for r in self.reports), default=0
                ),
                "max_connections": max(
                    (r["stats"]["connections"] for r in self.reports), default=0
                ),
                "max_report_gap_s": round(self.max_report_gap, 2),
                "log_counts": last.get("log_counts", {}),
                # Sampled twice a second: short-lived connections are missed.
                "connections_ended_by": last.get("close_causes", {}),
                "legitimate_connections_ended": [
                    c
                    for c in last.get("big_closes", [])
                    if c["peer"] and c["peer"][1] == relay.server_port
                ],
                "warnings_by_logger": dict(self.warnings),
            },
            "memory": {
                "idle": point(self.reports[0]),
                "start": point(self.marks.get("start")),
                "middle": point(self.marks.get("middle")),
                "end_of_fuzz": point(self.marks.get("end")),
                "quiet": point(self.marks.get("quiet")),
                "peak_rss_mib": round(
                    max((r["rss"] for r in self.reports), default=0) / 2**20, 1
                ),
                "max_tasks": max((r["tasks"] for r in self.reports), default=0),
                "rss_mib_over_fuzz": [
                    round(r["rss"] / 2**20, 1)
                    for r in fuzz_reports[:: max(len(fuzz_reports) // 12, 1)]
                ],
                "tasks_over_fuzz": [
                    r["tasks"] for r in fuzz_reports[:: max(len(fuzz_reports) // 12, 1)]
                ],
            },
            "transfers": {
                "ok": len(ok),
                "failed": len(self.transfers) - len(ok),
                "ok_during_fuzz": sum(1 for t in ok if t["phase"] == "fuzz"),
                "bytes_ok": sum(t.get("bytes", 0) for t in ok),
                "failures": [t for t in self.transfers if not t["ok"]][:20],
            },
            "own_connections": {
                "opened": pool.opened,
                "established": pool.established_count,
                "handshakes_unfinished": pool.handshakes_failed,
                "closed_by": dict(pool.close_codes.most_common()),
            },
            "replies": {
                k: {"datagrams": n, "bytes": self.reply_bytes[k]}
                for k, n in self.replies.most_common()
            },
            "fuzzed_handshakes_closed_by": dict(self.handshake_closes.most_common()),
        }
        return result


def print_summary(result: dict[str, Any]) -> None:
    d = result["datagrams"]
    print()
    print(
        f"sent {d['sent']:,} datagrams ({d['bytes'] / 2**20:,.1f} MiB) in "
        f"{result['seconds']['fuzz']:.0f} s ({d['rate_per_s']:,}/s), "
        f"seed {result['seed']}"
    )
    width = max(len(k) for k in KINDS)
    for kind, count in d["by_kind"].items():
        print(f"  {kind:<{width}} {count:>10,}")
    print(f"  via: {d['via']}")
    s = result["server"]
    print(
        f"the server received {s['datagrams_received']:,} of the "
        f"{s['datagrams_sent_to_it']:,} datagrams sent to it since the fuzz "
        f"started (fuzzed, {s['legitimate_datagrams_relayed']:,} legitimate "
        f"relayed, the fuzzer's own connections'; kernel receive buffer errors "
        f"{s['kernel_receive_buffer_errors']:,}); dropped by reason:"
    )
    for reason, count in s["dropped"].items():
        print(f"  {reason:<24} {count:>10,}")
    final = s["final_stats"]
    print(
        f"  accepted {final['connections_accepted']:,}, retries "
        f"{final['retries_sent']:,}, version negotiations "
        f"{final['version_negotiations_sent']:,}, stateless resets "
        f"{final['stateless_resets_sent']:,}, invalid tokens "
        f"{final['invalid_tokens']:,}; "
        f"max {s['max_connections']} connections, "
        f"{s['max_pending_handshakes']} pending handshakes"
    )
    print(f"  connections ended by (sampled): {s['connections_ended_by']}")
    for ended in s["legitimate_connections_ended"]:
        print(f"  the legitimate client's connection ended: {ended['reason']}")
    m = result["memory"]
    print("server memory and tasks:")
    for name in ("idle", "start", "middle", "end_of_fuzz", "quiet"):
        print(f"  {name:<12} {m[name]}")
    print(f"  peak RSS {m['peak_rss_mib']} MiB, max tasks {m['max_tasks']}")
    print(f"  RSS over the fuzz (MiB): {m['rss_mib_over_fuzz']}")
    print(f"  tasks over the fuzz: {m['tasks_over_fuzz']}")
    t = result["transfers"]
    print(
        f"transfers: {t['ok']} intact ({t['ok_during_fuzz']} during the fuzz, "
        f"{t['bytes_ok'] / 2**20:,.1f} MiB), {t['failed']} failed"
    )
    o = result["own_connections"]
    print(
        f"own connections: {o['opened']} opened, {o['established']} established; "
        f"the server closed them with {o['closed_by']}"
    )
    print(f"fuzzed handshakes closed with: {result['fuzzed_handshakes_closed_by']}")
    print(f"replies: {result['replies']}")
    if result["findings"]:
        print(f"{len(result['findings'])} FINDING(S):")
        distinct = Counter(f"[{f['kind']}] {f['detail']}" for f in result["findings"])
        for text, count in distinct.most_common():
            print(f"  {count:>4} x {text}")
        for path in result["dumps"]:
            print(f"  datagrams: {path}")
    else:
        print("no findings: 0 crashes, 0 stuck tasks, transfers intact, heap bounded")


# -- replay -----------------------------------------------------------------


def load_dump(path: str, selection: str | None) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in Path(path).read_text().splitlines()]
    if selection:
        low, _, high = selection.partition(":")
        entries = entries[int(low or 0) : int(high) if high else None]
    return entries


def replay_entries(
    args: argparse.Namespace, entries: list[dict[str, Any]], *, verbose: bool
) -> list[str]:
    """Send dumped datagrams to a fresh server: raw ones as they are, the
    frames of sealed ones sealed again for a new connection of the fuzzer's
    own. Returns what went wrong (nothing: it did not reproduce)."""
    with tempfile.TemporaryDirectory() as directory:
        fuzz = Fuzz(args, directory)
        fuzz.dumping = False
        server, listening = fuzz.start_server()
        fuzz.reports.append({**listening, "phase": "baseline"})
        address = (HOST, int(listening["port"]))
        own: OwnConnection | None = None
        sock = udp_socket()
        try:
            if any("plain" in e for e in entries):
                own = OwnConnection(
                    random.Random(0),
                    address,
                    time.monotonic(),
                    chaos=True,
                    hold_handshake=0.0,
                    lifetime=1e9,
                )
                deadline = time.monotonic() + 10
                while own.established_at is None and time.monotonic() < deadline:
                    own.poll(time.monotonic(), fuzz.corpus)
                    time.sleep(0.001)
                settle = time.monotonic() + 0.3  # HANDSHAKE_DONE and its ACK
                while time.monotonic() < settle:
                    own.poll(time.monotonic(), fuzz.corpus)
                    time.sleep(0.001)
                # The requests may be on any stream: let the client take the
                # answers on all of them.
                own.streams.offsets.update(dict.fromkeys(range(0, 400, 4), 0))
            for entry in entries:
                data = bytes.fromhex(entry["hex"])
                if "plain" in entry and own is not None:
                    plain = bytes.fromhex(entry["plain"])
                    sealed = (
                        own.seal_1rtt(plain)
                        if entry["kind"] == "sealed-1rtt"
                        else own.seal_handshake(plain)
                    )
                    if sealed is not None:
                        own.send(sealed)
                    own.poll(time.monotonic(), fuzz.corpus)
                else:
                    sock.sendto(data, address)
                time.sleep(0.0002)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                if own is not None:
                    own.poll(time.monotonic(), fuzz.corpus)
                fuzz.read_server(server, "replay")
                time.sleep(0.01)
        finally:
            server.finish()
            code = server.wait(30)
            fuzz.read_server(server, "final")
            server.kill()
            sock.close()
        stderr = server.stderr()
    problems = sorted({f["detail"] for f in fuzz.findings.items})
    if code != 0:
        problems.append(f"server exit code {code}")
    if "Traceback" in stderr and not problems:
        problems.append("a traceback in the server's stderr")
    if verbose and "Traceback" in stderr:
        print(stderr[stderr.index("Traceback") :][:4000])
    if own is not None and own.terminated is not None:
        event = own.terminated
        name = close_code_name(event.error_code, event.frame_type is None)
        if verbose:
            print(f"the server closed the replay connection with {name}")
    return problems


def replay(args: argparse.Namespace) -> int:
    entries = load_dump(args.replay, args.replay_range)
    problems = replay_entries(args, entries, verbose=True)
    print(
        f"replayed {len(entries)} datagrams: " + ("; ".join(problems) or "no problem")
    )
    return 1 if problems else 0


def minimize(args: argparse.Namespace) -> int:
    """Bisect a dump down to the fewest datagrams that still reproduce (one,
    when a single datagram does it); writes them beside the dump."""
    entries = load_dump(args.minimize, args.replay_range)
    problems = replay_entries(args, entries, verbose=False)
    if not problems:
        print(f"{len(entries)} datagrams: does not reproduce")
        return 1
    print(f"{len(entries)} datagrams: {'; '.join(problems)}")
    while len(entries) > 1:
        half = len(entries) // 2
        # The later half first: a finding is dumped when it happens.
        for part in (entries[half:], entries[:half]):
            found = replay_entries(args, part, verbose=False)
            if found:
                entries, problems = part, found
                print(f"{len(entries)} datagrams: {'; '.join(problems)}")
                break
        else:
            break  # both halves are needed
    path = Path(args.minimize).with_suffix(".min.jsonl")
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    print(f"minimized to {len(entries)} datagram(s): {path}")
    for entry in entries[:5]:
        print(
            f"  {entry['kind']} ({len(entry['hex']) // 2} bytes): {entry['hex'][:160]}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # aioquic logs each connection of the fuzzer's own that it closes.
    logging.getLogger("quic").setLevel(logging.ERROR)
    if args.replay:
        return replay(args)
    if args.minimize:
        return minimize(args)
    with tempfile.TemporaryDirectory() as directory:
        result = Fuzz(args, directory).run()
    print_summary(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
