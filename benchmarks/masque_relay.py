"""UDP relayed through a MASQUE CONNECT-UDP proxy (``trioquic masque-proxy``)
against the floor: a plain UDP relay written in trio (a socket that forwards
each datagram to the target and the answers back, no tunnel, no QUIC).

Processes, all on loopback:

* the target: a UDP echo server (blocking socket, plain Python);
* the plain relay: ``masque_relay.py --role relay`` (trio);
* the proxy: ``python -m trioquic masque-proxy --allow 127.0.0.1``;
* the load generator: ``masque_relay.py --role load``, one process: trio
  UDP sockets for the direct and plain-relay paths, a
  ``trioquic.masque.open_udp_tunnel`` (HTTP/3 datagrams) for the MASQUE path.

Measured per path (direct, plain relay, MASQUE):

* round-trip time: one 64-byte datagram at a time, median and 99th
  percentile of ``--pings`` round trips; "added" is the median minus the
  direct median;
* datagrams per second relayed: ``--window`` 64-byte datagrams in flight
  (sequence numbers; one more goes out per answer; one unanswered for 0.5 s
  is counted lost and replaced), answers counted over ``--seconds``.

Ratios are of the same run: MASQUE / plain relay. The load generator's own
cost (the client side of QUIC for the MASQUE path) is part of the figure.

Run it::

    python benchmarks/masque_relay.py            # 5 s per rate, 2000 pings
    python benchmarks/masque_relay.py --quick    # a smoke test, seconds
    python benchmarks/masque_relay.py --quick --profile DIR

``--profile DIR`` writes ``DIR/proxy.prof`` (the proxy process under
cProfile) and ``DIR/client.prof`` (the load generator's MASQUE part); read
them with ``python -m pstats``. Profiled figures are slower than the
others.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

HERE = os.path.dirname(os.path.abspath(__file__))

#: Runs ``python -m trioquic ...`` under cProfile: SIGTERM becomes SIGINT, which
#: the command takes as its signal to shut down, so the profile is written.
_PROFILED = """\
import cProfile, os, runpy, signal, sys
signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
out, sys.argv = sys.argv[1], sys.argv[1:]
cProfile.run("runpy.run_module('trioquic', run_name='__main__')", out)
"""
PAYLOAD = 64


# -- roles run as their own processes --------------------------------------------------


def role_echo() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    while True:
        data, address = sock.recvfrom(65536)
        sock.sendto(data, address)


async def role_relay(target_port: int) -> None:
    """The floor: each client address gets a connected socket to the target."""
    listen = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    await listen.bind(("127.0.0.1", 0))
    print(listen.getsockname()[1], flush=True)
    upstream: dict[Any, trio.socket.SocketType] = {}
    async with trio.open_nursery() as nursery:

        async def back(sock: trio.socket.SocketType, address: Any) -> None:
            while True:
                data = await sock.recv(65536)
                await listen.sendto(data, address)

        while True:
            data, address = await listen.recvfrom(65536)
            sock = upstream.get(address)
            if sock is None:
                sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
                await sock.connect(("127.0.0.1", target_port))
                upstream[address] = sock
                nursery.start_soon(back, sock, address)
            await sock.send(data)


Send = Callable[[bytes], Awaitable[None]]
Receive = Callable[[], Awaitable[bytes]]


async def measure(
    send: Send, receive: Receive, args: argparse.Namespace
) -> dict[str, float]:
    padding = bytes(PAYLOAD - 8)
    # warm-up and round trips, one at a time
    rtts: list[float] = []
    for seq in range(args.pings + 20):
        start = time.perf_counter()
        await send(struct.pack("!Q", seq) + padding)
        with trio.move_on_after(1.0):
            while True:
                reply = await receive()
                if struct.unpack("!Q", reply[:8])[0] == seq:
                    if seq >= 20:
                        rtts.append(time.perf_counter() - start)
                    break
    # rate with a window in flight
    in_flight: dict[int, float] = {}
    answered = 0
    lost = 0
    next_seq = 1 << 32
    counting = False
    wake = trio.Event()

    async def sender() -> None:
        nonlocal next_seq, wake
        while True:
            while len(in_flight) < args.window:
                in_flight[next_seq] = trio.current_time()
                await send(struct.pack("!Q", next_seq) + padding)
                next_seq += 1
            await wake.wait()
            wake = trio.Event()

    async def receiver() -> None:
        nonlocal answered
        while True:
            reply = await receive()
            if in_flight.pop(struct.unpack("!Q", reply[:8])[0], None) is not None:
                if counting:
                    answered += 1
                wake.set()

    async def reaper() -> None:
        nonlocal lost
        while True:
            await trio.sleep(0.1)
            now = trio.current_time()
            for seq, sent in list(in_flight.items()):
                if now - sent > 0.5:
                    del in_flight[seq]
                    if counting:
                        lost += 1
            wake.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        nursery.start_soon(receiver)
        nursery.start_soon(reaper)
        await trio.sleep(min(0.5, args.seconds / 4))  # warm-up
        counting = True
        start = time.perf_counter()
        cpu = time.process_time()
        await trio.sleep(args.seconds)
        counting = False
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        nursery.cancel_scope.cancel()
    rtts.sort()
    return {
        "rtt_median_us": statistics.median(rtts) * 1e6,
        "rtt_p99_us": rtts[int(len(rtts) * 0.99) - 1] * 1e6,
        "rtt_samples": len(rtts),
        "datagrams_per_second": answered / elapsed,
        "lost": lost,
        "load_cpu_share": cpu / elapsed,
    }


async def role_load(args: argparse.Namespace) -> None:
    from trioquic import masque

    results: dict[str, dict[str, float]] = {}
    for name, port in (("direct", args.echo_port), ("plain relay", args.relay_port)):
        sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
        await sock.connect(("127.0.0.1", port))
        with sock:
            results[name] = await measure(sock.send, lambda s=sock: s.recv(65536), args)
    async with masque.open_udp_tunnel(
        f"https://127.0.0.1:{args.proxy_port}",
        "127.0.0.1",
        args.echo_port,
        ca_certs=args.ca_certs,
        server_name="localhost",
        limits=masque.MasqueLimits(datagram_queue_size=max(64, 2 * args.window)),
    ) as tunnel:
        profile = None
        if args.profile:
            import cProfile

            profile = cProfile.Profile()
            profile.enable()
        results["masque"] = await measure(tunnel.send, tunnel.receive, args)
        if profile is not None:
            profile.disable()
            profile.dump_stats(os.path.join(args.profile, "client.prof"))
        results["masque"]["client_drops"] = sum(tunnel.statistics().drops.values())
    print(json.dumps(results), flush=True)


# -- orchestration ---------------------------------------------------------------------


def _start(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _line(process: subprocess.Popen[str], prefix: str = "") -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"process {process.args} exited")
        if line.startswith(prefix):
            return line.strip()
    raise RuntimeError(f"no line {prefix!r} from {process.args}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("echo", "relay", "load"))
    parser.add_argument("--quick", action="store_true", help="a smoke test")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="write cProfile data of the proxy and of the client side to DIR",
    )
    parser.add_argument("--echo-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--relay-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--proxy-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca-certs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.pings = 1.0, 200
    if args.role == "echo":
        role_echo()
        return
    if args.role == "relay":
        trio.run(role_relay, args.echo_port)
        return
    if args.role == "load":
        trio.run(role_load, args)
        return

    me = [sys.executable, os.path.abspath(__file__)]
    processes: list[subprocess.Popen[str]] = []
    try:
        echo = _start([*me, "--role", "echo"])
        processes.append(echo)
        echo_port = int(_line(echo))
        relay = _start([*me, "--role", "relay", "--echo-port", str(echo_port)])
        processes.append(relay)
        relay_port = int(_line(relay))
        if args.profile:
            os.makedirs(args.profile, exist_ok=True)
            python = [
                sys.executable,
                "-c",
                _PROFILED,
                os.path.join(args.profile, "proxy.prof"),
            ]
        else:
            python = [sys.executable, "-m", "trioquic"]
        proxy = _start(
            [
                *python,
                "masque-proxy",
                "--port",
                "0",
                "--allow",
                "127.0.0.1",
                "--queue-size",
                str(max(64, 2 * args.window)),
            ]
        )
        processes.append(proxy)
        listening = _line(proxy, "trioquic masque-proxy listening on ")
        proxy_port = int(listening.split(" on ")[1].split()[0].rsplit(":", 1)[1])
        cert = _line(proxy, "self-signed development certificate: ").split(": ", 1)[1]
        load = subprocess.run(
            [
                *me,
                "--role",
                "load",
                "--echo-port",
                str(echo_port),
                "--relay-port",
                str(relay_port),
                "--proxy-port",
                str(proxy_port),
                "--ca-certs",
                cert,
                "--seconds",
                str(args.seconds),
                "--pings",
                str(args.pings),
                "--window",
                str(args.window),
                *(["--profile", os.path.abspath(args.profile)] if args.profile else []),
            ],
            capture_output=True,
            text=True,
            timeout=60 + 4 * args.seconds + args.pings / 100,
            check=True,
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    results = json.loads(load.stdout.strip().splitlines()[-1])
    print(
        f"UDP relay on loopback: {PAYLOAD}-byte datagrams, {args.pings} round trips "
        f"one at a time, then {args.window} in flight for {args.seconds:g} s per path"
    )
    header = (
        f"{'path':<12} {'RTT median us':>14} {'RTT p99 us':>11} {'added us':>9} "
        f"{'datagrams/s':>12} {'lost':>5} {'load CPU':>9}"
    )
    print(header)
    print("-" * len(header))
    direct = results["direct"]["rtt_median_us"]
    for name in ("direct", "plain relay", "masque"):
        row = results[name]
        added = row["rtt_median_us"] - direct
        print(
            f"{name:<12} {row['rtt_median_us']:>14.1f} {row['rtt_p99_us']:>11.1f} "
            f"{added:>9.1f} {row['datagrams_per_second']:>12.0f} {row['lost']:>5.0f} "
            f"{row['load_cpu_share']:>8.0%}"
        )
    relay_row, masque_row = results["plain relay"], results["masque"]
    rate_ratio = masque_row["datagrams_per_second"] / relay_row["datagrams_per_second"]
    added_relay = relay_row["rtt_median_us"] - direct
    added_masque = masque_row["rtt_median_us"] - direct
    print(f"masque/plain relay datagrams per second: {rate_ratio:.2f}x")
    print(
        f"added latency (median RTT minus direct): plain relay {added_relay:.1f} us, "
        f"masque {added_masque:.1f} us ({added_masque / max(added_relay, 1e-9):.1f}x)"
    )
    if args.json:
        with open(args.json, "w") as fp:
            json.dump(results, fp, indent=2)


if __name__ == "__main__":
    main()
