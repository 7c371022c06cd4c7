"""HTTP/3 handshakes per second over loopback: trioquic's server on each of
its engines (``trioquic``: aioquic, its default; ``trioquic+qh3``) against
aioquic's and qh3's asyncio layers and hypercorn's trio worker (the server
processes of ``h3_requests.py``, started by its functions).

Every connection is a full QUIC + TLS 1.3 handshake (no session resumption,
no 0-RTT), then one ``GET /bytes/1024`` whose answer is checked (status 200,
1024 bytes), then CONNECTION_CLOSE; only answered connections count. Two
shapes: one connection at a time (``sequential``) and 16 at a time
(``16 concurrent``: a new one starts as soon as one ends).

Two load generators, used identically against every server:

* ``python``: ``_h3_peers/swarm_client.py``, aioquic's sans-io
  ``QuicConnection`` + ``H3Connection``, every connection on a UDP socket of
  its own, all driven by one selector loop in one process. When a server of
  the run is on qh3 it is qh3's, against every server (qh3 2.1's server
  fails aioquic's client handshake); qh3's client offers X25519MLKEM768 and
  X25519 key shares (aioquic's servers and hypercorn take X25519; qh3's may take
  the hybrid, a little more server work: compare the native client's
  figures, which offer X25519 to all). aioquic's client
  handshake costs less than a server's (it verifies a signature, it does not
  make one) and it offers one key share (X25519, as ngtcp2 and browsers do);
  it does not check the certificate. About 2 ms of client CPU per
  connection, less than any server spends: it stays below one CPU while
  the servers run flat out.
* ``native``: ngtcp2's ``gtlsclient``, one process per connection
  (``--exit-on-all-streams-close``; it checks no certificate; the body is
  downloaded and its size checked), 16 concurrent = 16 loops of processes.
  Each process costs about 15 ms of client CPU (start-up, GnuTLS reading the
  system's CA bundle, its handshake), several times what a server spends,
  and takes about 40 ms of wall time (about 20 ms of it a pause of its own
  after its handshake flight), so at 16 concurrent it saturates its CPU
  first and its handshakes/s measure the client. Its server CPU per
  handshake stays valid.

The headline is the client whose CPU share peaked lowest (the python one,
unless something is wrong); the summary names it.

handshakes/s = answered connections over the wall time from the first
connect to the last answer (after untimed warm-up connections). The server
process runs on one CPU, the load generator on another; the server's CPU
seconds per handshake (``/proc``, everything the server did for the
connection: handshake, request, close) and the client's CPU share (of one
CPU) are printed too: a client share near 100% means the client, not the
server, set the pace. Servers are restarted for every repeat and their
order rotates; a measurement during which other processes took more than a
quarter of a CPU is taken again (``--attempts``), and a warning says when
the figures kept are still noisy. Run it on an otherwise idle machine.

Every server has the same certificate, signed by a scratch CA. Congestion
control: CUBIC for every peer that can choose when a qh3 server is in the
run (``--cc auto``; qh3 has nothing else; hypercorn keeps Reno), Reno
otherwise. The run ends with the same-run ratios (trioquic/aioquic,
trioquic/hypercorn, trioquic+qh3/trioquic, trioquic+qh3/qh3-asyncio) and
the qh3 engine's goals (``_goals.py``: at 16 concurrent, with the headline
client, trioquic+qh3 >= 2x trioquic and >= 1.2x qh3-asyncio), met or not.

Run it::

    python benchmarks/handshakes.py                 # 3 repeats, 3 to 5 minutes
    python benchmarks/handshakes.py --quick         # a smoke test, under a minute
    python benchmarks/handshakes.py --clients python --repeat 5 --json out.json

Loopback only: servers bind 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import h3_requests as h3  # noqa: E402
from _bench_common import use_ca_signed_certificate  # noqa: E402
from _goals import HANDSHAKES_SPEEDUP, OVER_QH3_ASYNCIO, Goal, print_goals  # noqa: E402
from _goals import ratio as goal_ratio  # noqa: E402
from h3_requests import Measurement  # noqa: E402

sys.path.insert(0, str(h3.PEERS))
from _shared import add_cc_argument, congestion_control  # noqa: E402

SWARM = h3.PEERS / "swarm_client.py"
HANDSHAKES_TAG = "H3-HANDSHAKES "
#: Shape label -> connections at a time.
SHAPES = {"sequential": 1, "16 concurrent": 16}
CLIENTS = ("python", "native")
DEFAULT_REPEAT = 3
DEFAULT_COUNT, QUICK_COUNT = 400, 60
DEFAULT_NATIVE_COUNT, QUICK_NATIVE_COUNT = 100, 20
#: A client using more than this share of its CPU set the pace itself.
SATURATED = 0.9
#: Seconds the server gets after a run to finish closing its connections
#: (their draining period), so that the work is in its CPU figure.
SETTLE = 0.5


# -- what handshakes.py and idle_memory.py share --------------------------------


def select_servers(spec: str) -> tuple[list[str], dict[str, str]]:
    """The servers named in ``spec`` that can run, and why the others can't."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        if name not in h3.SERVERS:
            raise SystemExit(f"unknown server {name!r}; choose from {h3.SERVERS}")
    servers, missing = h3.available_servers(names)
    for name, reason in missing.items():
        print(f"skipping {h3.LABELS[name]}: {reason}")
    return servers, missing


def prepare(args: argparse.Namespace, servers: list[str]) -> None:
    """What ``h3_requests.start_server`` and the clients read from ``args``,
    besides the certificate (see :func:`each_server`): the congestion control
    of the run against ``servers`` (CUBIC when one runs on qh3) and the
    library of the python client (qh3 then: qh3's server fails aioquic's
    client handshake)."""
    args.native_path = shutil.which(h3.NATIVE_CLIENT)
    args.request_timeout = 2.0
    args.cc = congestion_control(args.cc, servers)
    args.client_library = h3.client_library(servers)


def each_server(
    args: argparse.Namespace, servers: list[str], what: str
) -> Iterator[tuple[int, str, h3.Server | None, str]]:
    """Every server once per repeat, their order rotating, each started (with
    a self-signed certificate they all share) before it is yielded and
    stopped after the loop's body, while ``args.budget`` seconds last:
    ``(repeat, name, server, "")``, or ``(repeat, name, None, why)`` when it
    did not start. Servers run on one CPU; this process, and the clients it
    starts, on ``args.client_cpu``, another (unless ``--no-pin``). Prints
    ``what`` first, with the servers, repeats and CPUs."""
    cpu, args.client_cpu = h3.choose_cpus(args.pin)
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    print(
        f"{what}; servers {', '.join(h3.LABELS[s] for s in servers)}; "
        f"python client on {args.client_library}; "
        f"{h3.cc_note(args.cc, servers)}; "
        f"{args.repeat} repeat(s); CPUs: server {cpu}, clients {args.client_cpu}",
        flush=True,
    )
    budget_end = time.monotonic() + args.budget
    with tempfile.TemporaryDirectory() as directory:
        use_ca_signed_certificate(args, directory, h3.HOST)
        for index in range(args.repeat * len(servers)):
            repeat, position = divmod(index, len(servers))
            name = servers[(position + repeat) % len(servers)]
            if time.monotonic() > budget_end:
                print(f"time budget of {args.budget:.0f} s spent; stopping")
                return
            try:
                server = h3.start_server(name, args, cpu)
            except h3.BenchError as exc:
                yield repeat, name, None, str(exc)
                continue
            try:
                yield repeat, name, server, ""
            finally:
                h3.stop_server(server)


def add_common_arguments(parser: argparse.ArgumentParser, budget: float) -> None:
    """The options every server benchmark here shares."""
    servers = ",".join(h3.SERVERS)
    parser.add_argument("--servers", default=servers, help=f"some of {servers}")
    parser.add_argument("--json", metavar="PATH", help="also write figures here")
    h3.add_profile_argument(parser)
    add_cc_argument(parser)
    parser.add_argument(
        "--budget", type=float, default=budget, help="no server starts after it (s)"
    )
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="no CPU pinning"
    )


def fill_defaults(
    args: argparse.Namespace, defaults: dict[str, tuple[Any, Any]]
) -> None:
    """Options left unset take their ``(quick, full)`` default."""
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)


def swarm_command(
    port: int, mode: str, args: argparse.Namespace, **options: Any
) -> list[str]:
    """The swarm client's command line, on the run's library and congestion
    control, with ``options``."""
    command = [sys.executable, str(SWARM), mode, "--port", str(port)]
    command += ["--library", args.client_library, "--cc", args.cc]
    for name, value in options.items():
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]
    return [*command, "--path", h3.PATH, "--expect-size", str(h3.SIZE)]


def ratio_text(values: dict[str, float | None], mine: str, other: str) -> str | None:
    """``mine``'s value over ``other``'s, as ``0.85x``, or None."""
    figure = goal_ratio(values.get(mine), values.get(other))
    return None if figure is None else f"{figure:.2f}x"


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"figures written to {path}")


# -- measurements --------------------------------------------------------------
#
# Figures are h3_requests' Measurement with one request per connection:
# requests_per_s is handshakes/s, server_cpu_us the server's CPU per
# connection, p50_ms the python client's connect-to-answer time.


def run_figures(runs: list[Any], figure: str, spec: str) -> str:
    """Each run's ``figure`` attribute, or "failed"."""
    return " ".join(
        "failed" if r.failed else h3._fmt(getattr(r, figure), spec) for r in runs
    )


def server_us(counters: h3.Counters, connections: int) -> float | None:
    """Server CPU microseconds per connection."""
    if counters.server_cpu is None or connections <= 0:
        return None
    return counters.server_cpu / connections * 1e6


def python_handshakes(
    server: h3.Server, args: argparse.Namespace, concurrency: int
) -> Measurement:
    command = swarm_command(
        server.port,
        "handshakes",
        args,
        count=args.count,
        warmup=concurrency,
        concurrency=concurrency,
        cpu=args.client_cpu,
        lifetime=args.timeout,
    )
    sampler = h3.Sampler(server.process.pid)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        process = h3.start(command, cpu=None, stdout=subprocess.PIPE, stderr=log)
        try:
            result, _ = h3.read_tagged(
                process, HANDSHAKES_TAG, time.monotonic() + args.timeout + 15
            )
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=3)
        finally:
            h3.stop(process, grace=0.5)
            assert process.stdout is not None
            process.stdout.close()
        log.seek(0)
        error = log.read().decode(errors="replace")[-1500:]
    time.sleep(SETTLE)
    counters = sampler.finish()
    elapsed = time.perf_counter() - started
    if result is None or not result["completed"]:
        return Measurement(
            None,
            failed=True,
            other_cpu=counters.other_cpu,
            seconds=elapsed,
            note=f"{error}{result or ''}\n{server.diagnostics()}",
        )
    # The server's CPU covers the warm-up connections too: divide by all.
    return Measurement(
        result["handshakes_per_s"],
        server_cpu_us=server_us(counters, result["total"]),
        client_cpu_share=result["client_cpu_share"],
        p50_ms=result["p50_ms"],
        lost=result["failed"],
        other_cpu=counters.other_cpu,
        seconds=elapsed,
        note="; ".join(f"{n} x {why}" for why, n in result["reasons"].items()),
    )


def native_handshakes(
    server: h3.Server, args: argparse.Namespace, concurrency: int
) -> Measurement:
    """``concurrency`` loops of ``gtlsclient`` processes, one connection
    each. This process runs on the client's CPU (see :func:`each_server`),
    and so do the processes it starts."""
    url = f"https://{h3.HOST}:{server.port}{h3.PATH}"
    with tempfile.TemporaryDirectory() as directory:
        slots = [Path(directory) / str(index) for index in range(concurrency)]
        for slot in slots:
            slot.mkdir()

        def launch(slot: Path) -> tuple[subprocess.Popen[bytes], int]:
            (slot / h3.PATH.rsplit("/", 1)[1]).unlink(missing_ok=True)
            process = h3.start(
                [
                    args.native_path,
                    "-q",
                    "--exit-on-all-streams-close",
                    f"--timeout={args.native_idle_timeout}s",
                    f"--cc={args.cc}",
                    f"--download={slot}",
                    h3.HOST,
                    str(server.port),
                    url,
                ],
                cpu=None,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            return process, os.pidfd_open(process.pid)

        # Untimed: two connections, which also check that the client works.
        warm = native_wave(launch, slots[:1], 2, time.monotonic() + 10)
        if warm[0] != 2:
            return Measurement(None, failed=True, note=f"warm-up: {warm[2]}")
        sampler = h3.Sampler(server.process.pid)
        cpu0, started = h3.own_and_children_seconds(), time.perf_counter()
        answered, lost, note = native_wave(
            launch, slots, args.native_count, time.monotonic() + args.timeout
        )
        elapsed = time.perf_counter() - started
        client_cpu = h3.own_and_children_seconds() - cpu0
        time.sleep(SETTLE)
        counters = sampler.finish()
    if not answered or note.startswith("out of time"):
        return Measurement(
            None,
            failed=True,
            lost=lost,
            other_cpu=counters.other_cpu,
            seconds=elapsed,
            note=note,
        )
    return Measurement(
        answered / elapsed,
        server_cpu_us=server_us(counters, answered),
        client_cpu_share=client_cpu / elapsed,
        lost=lost,
        other_cpu=counters.other_cpu,
        seconds=elapsed + SETTLE,
        note=note,
    )


def native_wave(
    launch: Any, slots: list[Path], count: int, deadline: float
) -> tuple[int, int, str]:
    """Run ``count`` processes, one per free slot at a time. Returns
    (answered, not answered, why not)."""
    running: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
    free = list(slots)
    launched = answered = 0
    codes: set[str] = set()
    try:
        while (running or launched < count) and time.monotonic() < deadline:
            while free and launched < count:
                slot = free.pop()
                process, fd = launch(slot)
                running[fd] = (process, slot)
                launched += 1
            ready, _, _ = select.select(
                list(running), [], [], max(0.0, deadline - time.monotonic())
            )
            for fd in ready:
                process, slot = running.pop(fd)
                os.close(fd)
                code = process.wait()
                body = slot / h3.PATH.rsplit("/", 1)[1]
                if code == 0 and body.exists() and body.stat().st_size == h3.SIZE:
                    answered += 1
                else:
                    codes.add(str(code))
                free.append(slot)
    finally:
        for fd, (process, _) in running.items():
            h3.stop(process, grace=0.5)
            os.close(fd)
    note = f"exit codes {sorted(codes)} or a wrong body" if codes else ""
    if running:
        note = f"out of time with {len(running)} running; {note}"
    return answered, count - answered, note


# -- the run -------------------------------------------------------------------

Key = tuple[str, str, str]  # (client, shape, server)


def run(args: argparse.Namespace) -> int:
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    for name in clients:
        if name not in CLIENTS:
            raise SystemExit(f"unknown client {name!r}; choose from {CLIENTS}")
    servers, missing = select_servers(args.servers)
    prepare(args, servers)
    if "native" in clients and (
        args.native_path is None or not hasattr(os, "pidfd_open")
    ):
        print(f"{h3.NATIVE_CLIENT} (or os.pidfd_open) not found: native is skipped")
        clients.remove("native")
    if not servers or not clients:
        print("nothing to measure")
        return 1
    results: dict[Key, list[Measurement]] = {}
    header = (
        f"full handshake + GET {h3.PATH} + close; clients {', '.join(clients)}; "
        f"python: {args.count}, native: {args.native_count} connections per shape"
    )
    for repeat, name, server, why in each_server(args, servers, header):
        if server is None:
            print(f"  run {repeat + 1}: {h3.LABELS[name]} did not start: {why}")
            continue
        for client in clients:
            for shape in SHAPES:
                m = measure(server, args, client, shape, repeat)
                results.setdefault((client, shape, name), []).append(m)
    summary = summarize(results, servers, clients, missing)
    write_json(
        args.json,
        {
            "runs": {" / ".join(k): [asdict(m) for m in v] for k, v in results.items()},
            **summary,
        },
    )
    return 0


def measure(
    server: h3.Server, args: argparse.Namespace, client: str, shape: str, repeat: int
) -> Measurement:
    """One measurement, taken again while other processes keep the machine
    busy; the quietest attempt is kept, whatever its figure."""
    attempts: list[Measurement] = []
    while len(attempts) < args.attempts:
        if server.process.poll() is not None:
            m = Measurement(None, failed=True, note="server exited")
        elif client == "native":
            m = native_handshakes(server, args, SHAPES[shape])
        else:
            m = python_handshakes(server, args, SHAPES[shape])
        attempts.append(m)
        print_run(repeat, client, shape, server.name, m)
        if m.failed or h3.noise_share(m) <= h3.NOISY_SHARE:
            break
        if len(attempts) < args.attempts:
            print("    (noisy: measuring again)", flush=True)
    return attempts[-1] if attempts[-1].failed else min(attempts, key=h3.noise_share)


def print_run(repeat: int, client: str, shape: str, name: str, m: Measurement) -> None:
    rate = "failed" if m.failed else f"{h3._fmt(m.requests_per_s, '.0f')} hs/s"
    cost = None if m.server_cpu_us is None else m.server_cpu_us / 1000
    print(
        f"  run {repeat + 1}: {client:<6} {shape:<13} {h3.LABELS[name]:<14} "
        f"{rate:>10}  server {h3._fmt(cost, '.2f')} ms/handshake  "
        f"client CPU {h3._fmt(m.client_cpu_share, '.0%')}"
        + (f"  p50 {h3._fmt(m.p50_ms, '.1f')} ms" if client == "python" else "")
        + f"  lost {m.lost}  other processes' CPU {h3._fmt(m.other_cpu, '.2f')} s"
        + (f"\n    {m.note[-1500:]}" if m.note else ""),
        flush=True,
    )


def summarize(
    results: dict[Key, list[Measurement]],
    servers: list[str],
    clients: list[str],
    missing: dict[str, str],
) -> dict[str, Any]:
    print()
    print(
        "full QUIC+TLS handshake + one GET of 1024 bytes + close, over loopback; "
        "medians over runs; hs/s = answered connections per second of wall "
        "time; srv ms/hs = server CPU milliseconds per connection; client CPU = "
        "the load generator's share of its one CPU"
    )
    header = (
        f"{'client':<6} {'shape':<13} {'server':<14} {'hs/s':>6} {'srv ms/hs':>9} "
        f"{'client CPU':>10} {'lost':>5} {'failed':>6}  runs (hs/s)"
    )
    print(header)
    print("-" * len(header))
    rates: dict[tuple[str, str], dict[str, float | None]] = {}
    costs: dict[tuple[str, str], dict[str, float | None]] = {}
    peak: dict[str, float] = {}
    for client in clients:
        for shape in SHAPES:
            for name in servers:
                runs = results.get((client, shape, name), [])
                if not runs:
                    continue
                rate = h3._median([m.requests_per_s for m in runs])
                rates.setdefault((client, shape), {})[name] = rate
                cost = h3._median([m.server_cpu_us for m in runs])
                cost = None if cost is None else cost / 1000
                costs.setdefault((client, shape), {})[name] = cost
                share = h3._median([m.client_cpu_share for m in runs])
                peak[client] = max(peak.get(client, 0.0), share or 0.0)
                print(
                    f"{client:<6} {shape:<13} {h3.LABELS[name]:<14} "
                    f"{h3._fmt(rate, '.0f'):>6} {h3._fmt(cost, '.2f'):>9} "
                    f"{h3._fmt(share, '.0%'):>10} {sum(m.lost for m in runs):>5} "
                    f"{sum(m.failed for m in runs):>6}  "
                    + run_figures(runs, "requests_per_s", ".0f")
                )
    print()
    ratios: dict[str, str] = {}
    for client in clients:
        for shape in SHAPES:
            for mine, other in h3.RATIOS:
                label = (
                    f"[{client} client, {shape}] {h3.LABELS[mine]}/{h3.LABELS[other]}: "
                )
                reason = missing.get(mine) or missing.get(other)
                rate = ratio_text(rates.get((client, shape), {}), mine, other)
                cost = ratio_text(costs.get((client, shape), {}), mine, other)
                if reason or rate is None:
                    text = f"n/a ({reason or 'not measured, or failed'})"
                else:
                    text = f"{rate} handshakes/s"
                    if cost is not None:
                        text += f"; server CPU per handshake {cost} (lower is better)"
                ratios[label.strip(" :")] = text
                print(label + text)
    headline = min(peak, key=lambda c: peak[c]) if peak else None
    if headline is not None:
        others = "; ".join(
            f"{c}: up to {peak[c]:.0%}"
            + (" (client-bound)" if peak[c] > SATURATED else "")
            for c in peak
            if c != headline
        )
        print(
            f"headline client: {headline} (its CPU share peaked at "
            f"{peak[headline]:.0%}{'; ' + others if others else ''})"
        )
        if peak[headline] > SATURATED:
            print(
                "warning: even the headline client used most of its CPU: its "
                "handshakes/s understate the fastest server; compare the "
                "server CPU per handshake"
            )
    goals = print_goals(handshake_goals(rates, headline, missing))
    noisiest = max(
        (h3.noise_share(m) for runs in results.values() for m in runs), default=0.0
    )
    if noisiest > 0.1:
        print(
            f"warning: other processes used up to {noisiest:.0%} of a CPU "
            "during a measurement: the machine was not idle, the figures are noisy"
        )
    return {
        "headline_client": headline,
        "ratios": ratios,
        "goals": goals,
        "medians": {
            f"{c} / {s}": {
                "handshakes_per_s": rates[(c, s)],
                "server_ms": costs[(c, s)],
            }
            for (c, s) in rates
        },
    }


def handshake_goals(
    rates: dict[tuple[str, str], dict[str, float | None]],
    headline: str | None,
    missing: dict[str, str],
) -> list[Goal]:
    """The qh3 engine's handshake goals: 16 concurrent, the headline client."""
    shape = "16 concurrent"
    values = rates.get((headline or "", shape), {})
    goals = []
    for other, target in (("trioquic", HANDSHAKES_SPEEDUP), ("qh3", OVER_QH3_ASYNCIO)):
        figure = goal_ratio(values.get("trioquic-qh3"), values.get(other))
        reason = missing.get("trioquic-qh3") or missing.get(other)
        goals.append(
            Goal(
                f"handshakes/s, {shape}, {headline or 'no'} client: "
                f"trioquic+qh3/{h3.LABELS[other]}",
                figure,
                target,
                note="" if figure else reason or "not measured, or failed",
            )
        )
    return goals


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="HTTP/3 handshakes/s: trioquic (both engines) vs aioquic, "
        "qh3 and hypercorn-trio."
    )
    parser.add_argument("--quick", action="store_true", help="smoke test")
    for flag, what in (
        ("--repeat", f"repeats ({DEFAULT_REPEAT}; --quick: 1)"),
        ("--count", f"python client: connections per shape ({DEFAULT_COUNT})"),
        ("--native-count", f"native client: the same ({DEFAULT_NATIVE_COUNT})"),
        ("--attempts", "tries per figure while the machine is busy (3; --quick: 1)"),
    ):
        parser.add_argument(flag, type=int, default=None, help=what)
    parser.add_argument(
        "--clients", default=",".join(CLIENTS), help="comma-separated: python,native"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds allowed for one run"
    )
    parser.add_argument(
        "--native-idle-timeout",
        type=int,
        default=2,
        help="native client: idle seconds after which it gives up",
    )
    add_common_arguments(parser, budget=300.0)
    args = parser.parse_args(argv)
    fill_defaults(
        args,
        {
            "repeat": (1, DEFAULT_REPEAT),
            "count": (QUICK_COUNT, DEFAULT_COUNT),
            "native_count": (QUICK_NATIVE_COUNT, DEFAULT_NATIVE_COUNT),
            "attempts": (1, 3),
            "timeout": (20.0, 60.0),
        },
    )
    if min(args.repeat, args.attempts, args.count, args.native_count) < 1:
        parser.error("--repeat, --attempts, --count, --native-count >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except h3.BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
