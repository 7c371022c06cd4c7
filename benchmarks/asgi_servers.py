"""ASGI over HTTP/3: the same Starlette application served by trioquic's ASGI
server and by the other trio/asyncio HTTP/3 ASGI servers, loaded by ngtcp2's
native client, in the same run.

The application (``_asgi_peers/app.py``) has two routes: ``GET /`` answers
1024 bytes of text (``PlainTextResponse``) and ``GET /stream`` 1 MiB as a
``StreamingResponse`` of 64 KiB pieces. The servers, each in its own
process, on one CPU:

* ``trioquic``: ``trioquic.asgi.serve_asgi`` (``_asgi_peers/trioquic_server.py
  --mode asgi``);
* ``h3``: the baseline, a plain ``trioquic.h3`` handler answering the same
  two routes with the same bodies, no ASGI and no framework (``--mode h3``);
  trioquic / h3 is the application's overhead (goal: trioquic keeps >= 75 %
  of the plain handler's figure);
* ``hypercorn-trio``: ``hypercorn --worker-class trio --workers 0
  --quic-bind`` (the worker runs in the process started);
* ``hypercorn-asyncio``: the same with ``--worker-class asyncio``;
* ``anycorn-trio``: anycorn (a hypercorn fork on AnyIO), ``--worker-class
  trio --workers 0 --quic-bind``.

Every server uses the same certificate and aioquic's default QUIC settings
(``_h3_peers/_shared.py``; hypercorn and anycorn cannot change them).

The load is ngtcp2's ``gtlsclient`` (native, so the load generator costs
little), 4 processes in parallel, one connection each, on another CPU:

* ``1 KB``: ``--requests`` requests of ``/`` in all (``-n`` each); requests/s
  = requests / wall time from starting the clients to their exit (one
  handshake per connection included). gtlsclient opens as many streams at
  once as the server's stream credit allows.
* ``1 MiB``: ``--downloads`` downloads of ``/stream`` in all; MB/s (10**6
  bytes) = bytes / the same wall time.

Before its measurements each server is checked with one request of each
route (status 200 and the exact body size, through ``--download``); a
server that answers wrongly is reported, not measured. A client process
that exits with an error or does not finish within ``--timeout`` seconds
fails its measurement: its figure is left out, the failure printed and
every request of the measurement counted as ``failed`` for that server
(gtlsclient cannot say which of them failed); so does a server that exits.
After its measurements, each server is probed with clients that stop
reading (``_asgi_peers/stop_sending_probe.py``: five ``/stream`` downloads
abandoned with STOP_SENDING, then ``/`` on that connection and on a new
one), since hypercorn's trio worker was seen to exit on STOP_SENDING; the
outcome is printed per round and summed up at the end.

The server's CPU time (``/proc``) is shown beside each figure, as
microseconds per request or MB per CPU-second: on a busy machine it is the
steadier comparison. Servers are restarted for every round and their order
rotates between rounds; figures are medians over the rounds. The CPU time
other processes took meanwhile is printed; the run says when the machine
was busy.

Run it::

    python benchmarks/asgi_servers.py                # 5 rounds, 10 to 15 minutes
    python benchmarks/asgi_servers.py --quick        # a smoke test
    python benchmarks/asgi_servers.py --servers trioquic,h3 --rounds 3
    python benchmarks/asgi_servers.py --servers trioquic,h3 --quick --profile DIR

Loopback only: servers bind 127.0.0.1. The last line is ``ASGI-BENCH
{json}``: the medians and ratios, for scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import h3_requests as h3  # noqa: E402 - the request benchmark, for its helpers
from _bench_common import use_self_signed_certificate  # noqa: E402
from h3_requests import (  # noqa: E402
    HOST,
    BenchError,
    Server,
    choose_cpus,
    free_port,
    start,
    stop_server,
)

ASGI_PEERS = HERE / "_asgi_peers"
NATIVE_CLIENT = "gtlsclient"
RESULT_TAG = "ASGI-BENCH "
PROBE_TAG = "PROBE "
CONNECTIONS = 4
MB = 1e6
#: A measurement during which other processes used more than this share of
#: a CPU is flagged as noisy.
NOISY_SHARE = 0.25


@dataclass(frozen=True)
class Route:
    """One measured route: ``bulk`` ones in MB/s, the others in requests/s."""

    label: str
    path: str
    size: int
    #: The file name gtlsclient's ``--download`` gives the body.
    filename: str
    bulk: bool


@dataclass(frozen=True)
class Peer:
    """A server: its label, its command line and what it needs installed."""

    label: str
    command: Callable[[int, argparse.Namespace], list[str]]
    #: None when it can run, else why not.
    missing: Callable[[], str | None]


@dataclass(frozen=True)
class Goal:
    """``ours / theirs >= factor`` on every route."""

    ours: str
    theirs: str
    factor: float
    text: str


@dataclass
class Load:
    """One measurement of one route on one server."""

    #: requests/s or MB/s; None when the measurement failed.
    rate: float | None
    server_cpu: float | None = None
    seconds: float | None = None
    other_cpu: float | None = None
    failed_requests: int = 0
    #: Requests (or, for a bulk route, MB) the measurement asked for.
    amount: float = 0.0
    note: str = ""

    def server_cost(self, bulk: bool) -> float | None:
        """Server CPU microseconds per request, or MB per server CPU-second
        (``bulk``): a figure the machine's other load disturbs less."""
        if self.rate is None or not self.server_cpu or not self.amount:
            return None
        if bulk:
            return self.amount / self.server_cpu
        return self.server_cpu / self.amount * 1e6


@dataclass
class Suite:
    """What a benchmark script measures with :func:`run_suite`."""

    title: str
    routes: list[Route]
    peers: dict[str, Peer]
    #: The server every ratio is taken against.
    reference: str
    goals: list[Goal]
    #: Extra environment for the servers.
    env: dict[str, str] = field(default_factory=dict)
    #: Run ``_asgi_peers/stop_sending_probe.py`` after each server's
    #: measurements (the suite's app must be ``app.py``'s).
    probe: bool = False


# -- servers -------------------------------------------------------------------


#: Runs a server script under cProfile (``--profile DIR``): SIGTERM, which
#: ends every server, becomes trio's KeyboardInterrupt, so that the server
#: exits through its own shutdown and the profile is written.
_PROFILED = """\
import cProfile, os, runpy, signal, sys
signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
out, sys.argv = sys.argv[1], sys.argv[2:]
cProfile.run("runpy.run_path(sys.argv[0], run_name='__main__')", out)
"""


def profiled(label: str, args: argparse.Namespace) -> list[str]:
    """What goes before a Python server script's arguments: ``python`` or,
    with ``--profile DIR``, ``python -c _PROFILED DIR/LABEL-N.prof``."""
    if not getattr(args, "profile", None):
        return [sys.executable]
    directory = Path(args.profile)
    directory.mkdir(parents=True, exist_ok=True)
    n = len(list(directory.glob(f"{label}-*.prof"))) + 1
    return [sys.executable, "-c", _PROFILED, str(directory / f"{label}-{n}.prof")]


def trioquic_peer(label: str, mode: str, *extra: str) -> Peer:
    """A server of ``_asgi_peers/trioquic_server.py --mode mode``."""

    def command(port: int, args: argparse.Namespace) -> list[str]:
        return [
            *profiled(label, args),
            str(ASGI_PEERS / "trioquic_server.py"),
            "--mode",
            mode,
            *extra,
            "--port",
            str(port),
            "--cert",
            args.cert,
            "--key",
            args.key,
            "--lifetime",
            str(args.budget + 120),
        ]

    def missing() -> str | None:
        try:
            if mode == "asgi":
                from trioquic.asgi import serve_asgi  # noqa: F401
            else:
                from trioquic.h3 import serve_http3  # noqa: F401
        except ImportError as exc:
            return f"trioquic is missing a part ({exc})"
        return None

    return Peer(label, command, missing)


def corn_peer(label: str, package: str, worker_class: str, app: str) -> Peer:
    """hypercorn or anycorn (``package``) with a QUIC bind, the worker in the
    process started (``--workers 0``)."""

    def command(port: int, args: argparse.Namespace) -> list[str]:
        return [
            sys.executable,
            "-m",
            package,
            "--workers",
            "0",
            "--worker-class",
            worker_class,
            "--quic-bind",
            f"{HOST}:{port}",
            "--bind",
            f"{HOST}:{free_port(socket.SOCK_STREAM)}",
            "--certfile",
            args.cert,
            "--keyfile",
            args.key,
            "--log-level",
            "warning",
            app,
        ]

    def missing() -> str | None:
        for module in (package, "aioquic", "trio" if worker_class == "trio" else ""):
            if module and importlib.util.find_spec(module) is None:
                return f"{module} is not installed"
        return None

    return Peer(label, command, missing)


def start_server(
    name: str, suite: Suite, args: argparse.Namespace, cpu: int | None
) -> Server:
    """Start ``name`` and check that it answers every route correctly."""
    # The request benchmark's Server names its process by label.
    h3.LABELS.setdefault(name, name)
    port = free_port(socket.SOCK_DGRAM)
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop_server()
    env = dict(os.environ, **suite.env)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ASGI_PEERS), *filter(None, [env.get("PYTHONPATH")])]
    )
    process = start(
        suite.peers[name].command(port, args),
        cpu=cpu,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ASGI_PEERS,
        env=env,
    )
    server = Server(name, port, process, log)
    try:
        check_routes(server, suite.routes, args, deadline=time.monotonic() + 20)
    except BaseException:
        stop_server(server)
        raise
    return server


def fetch_once(
    server: Server, route: Route, args: argparse.Namespace, directory: str
) -> int | None:
    """One request of ``route`` with gtlsclient; the body's size, or None
    when no body arrived."""
    body = Path(directory) / route.filename
    with contextlib.suppress(FileNotFoundError):
        body.unlink()
    try:
        completed = subprocess.run(
            [
                args.native_path,
                "-q",
                "--exit-on-all-streams-close",
                "--timeout=2s",
                f"--download={directory}",
                HOST,
                str(server.port),
                f"https://{HOST}:{server.port}{route.path}",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=15,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    if completed.returncode != 0 or not body.exists():
        return None
    return body.stat().st_size


def check_routes(
    server: Server, routes: Sequence[Route], args: argparse.Namespace, deadline: float
) -> None:
    """Wait until the server answers, then check every route's body size."""
    with tempfile.TemporaryDirectory(dir=args.scratch) as directory:
        pending = list(routes)
        while pending:
            if server.process.poll() is not None:
                raise BenchError(f"server exited\n{server.diagnostics()}")
            if time.monotonic() > deadline:
                raise BenchError(f"server did not answer\n{server.diagnostics()}")
            size = fetch_once(server, pending[0], args, directory)
            if size is None:
                time.sleep(0.2)
                continue
            if size != pending[0].size:
                raise BenchError(
                    f"{server.name} answered {size} bytes for {pending[0].path}, "
                    f"expected {pending[0].size}"
                )
            pending.pop(0)


# -- measurements --------------------------------------------------------------


def native_load(
    server: Server, route: Route, args: argparse.Namespace, cpu: int | None
) -> Load:
    """``CONNECTIONS`` gtlsclient processes at once, each sending its share of
    the route's requests on its connection: the request benchmark's native
    load, aimed at ``route``."""
    asked = copy.copy(args)
    asked.requests = args.downloads if route.bulk else args.requests
    total = max(1, asked.requests // CONNECTIONS) * CONNECTIONS
    # The request benchmark's load takes its target from the module's PATH.
    with mock.patch.object(h3, "PATH", route.path):
        measured = h3.native_load(server, asked, CONNECTIONS, cpu)
    load = Load(
        rate=measured.requests_per_s,
        server_cpu=None
        if measured.server_cpu_us is None
        else measured.server_cpu_us * total / 1e6,
        seconds=measured.seconds,
        other_cpu=measured.other_cpu,
        amount=total * route.size / MB if route.bulk else total,
        note=measured.note,
    )
    if load.rate is not None and server.process.poll() is not None:
        load.rate, load.note = None, f"server exited\n{server.diagnostics()}"
    if load.rate is None:
        # gtlsclient cannot say which of its requests failed: all count.
        load.failed_requests = total
    elif route.bulk:
        load.rate = load.rate * route.size / MB
    return load


def stop_sending_probe(server: Server, args: argparse.Namespace) -> str:
    """ "ok", or what went wrong when clients stopped reading the server's
    streamed responses (``_asgi_peers/stop_sending_probe.py``)."""
    command = [
        sys.executable,
        str(ASGI_PEERS / "stop_sending_probe.py"),
        "--port",
        str(server.port),
        "--cert",
        args.cert,
    ]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=40, check=False
        )
    except subprocess.TimeoutExpired:
        return "the probe did not finish"
    lines = [x for x in completed.stdout.splitlines() if x.startswith(PROBE_TAG)]
    if not lines:
        return f"the probe failed: {completed.stderr.strip()[-300:]}"
    outcome = json.loads(lines[0][len(PROBE_TAG) :])
    if server.process.poll() is not None:
        outcome["server"] = f"exited ({server.process.returncode})"
    problems = [f"{k}: {v}" for k, v in outcome.items() if v is not True]
    return "; ".join(problems) if problems else "ok"


def noise_share(load: Load) -> float:
    if load.other_cpu is None or not load.seconds:
        return 0.0
    return load.other_cpu / load.seconds


def unit(route: Route) -> str:
    return "MB/s" if route.bulk else "req/s"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_load(round_: int, route: Route, name: str, load: Load) -> None:
    rate = "failed" if load.rate is None else f"{load.rate:.1f} {unit(route)}"
    print(
        f"  round {round_ + 1}: {route.label:<8} {name:<18} {rate:>14}"
        f"  server CPU {_fmt(load.server_cpu, '.2f')} s"
        f"  failed requests {load.failed_requests}"
        f"  other processes' CPU {_fmt(load.other_cpu, '.2f')} s"
        + (f"\n    {load.note}" if load.note else ""),
        flush=True,
    )


# -- the run -------------------------------------------------------------------


Results = dict[tuple[str, str], list[Load]]  # (route label, server) -> loads


def run_suite(suite: Suite, args: argparse.Namespace) -> dict[str, Any] | None:
    """Measure every route on every server, print the table and return the
    summary; None when nothing could be measured."""
    args.native_path = shutil.which(NATIVE_CLIENT)
    if args.native_path is None:
        print(f"{NATIVE_CLIENT} (ngtcp2's HTTP/3 client) not found: nothing to do")
        return None
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    for name in names:
        if name not in suite.peers:
            raise SystemExit(
                f"unknown server {name!r}; choose from {list(suite.peers)}"
            )
    missing = {n: why for n in names if (why := suite.peers[n].missing()) is not None}
    for name, why in missing.items():
        print(f"skipping {name}: {why}")
    names = [n for n in names if n not in missing]
    if not names:
        print("nothing to measure")
        return None
    server_cpu, client_cpu = choose_cpus(args.pin)
    results: Results = {}
    probes: dict[str, list[str]] = {}
    not_started: dict[str, list[str]] = {}
    budget_end = time.monotonic() + args.budget
    print(
        f"{suite.title}; servers {', '.join(names)}; {args.rounds} round(s); "
        f"{CONNECTIONS} gtlsclient connections; {args.requests} requests per "
        f"small-route measurement, {args.downloads} per bulk one; "
        f"CPUs: server {server_cpu}, clients {client_cpu}",
        flush=True,
    )
    for round_ in range(args.rounds):
        if time.monotonic() > budget_end:
            print(f"time budget of {args.budget:.0f} s spent; stopping")
            break
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            try:
                server = start_server(name, suite, args, server_cpu)
            except BenchError as exc:
                print(f"  round {round_ + 1}: {name} did not start or answer: {exc}")
                not_started.setdefault(name, []).append(str(exc)[:300])
                continue
            try:
                for route in suite.routes:
                    load = native_load(server, route, args, client_cpu)
                    print_load(round_, route, name, load)
                    results.setdefault((route.label, name), []).append(load)
                if suite.probe:
                    outcome = stop_sending_probe(server, args)
                    print(f"  round {round_ + 1}: STOP_SENDING probe {name}: {outcome}")
                    probes.setdefault(name, []).append(outcome)
            finally:
                stop_server(server)
    summary = summarize(suite, names, results, not_started, missing)
    if suite.probe:
        for name in names:
            outcomes = probes.get(name, [])
            ok = outcomes.count("ok")
            bad = sorted({x for x in outcomes if x != "ok"})
            print(
                f"STOP_SENDING probe: {name} kept answering in {ok} of "
                f"{len(outcomes)} round(s)" + (f"; {' | '.join(bad)}" if bad else "")
            )
        summary["stop_sending"] = probes
    print(RESULT_TAG + json.dumps(summary), flush=True)
    return summary


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(
    suite: Suite,
    names: list[str],
    results: Results,
    not_started: dict[str, list[str]],
    missing: dict[str, str],
) -> dict[str, Any]:
    """Print the table and the goals; return them as a JSON-able dict."""
    print()
    print(
        f"{suite.title}: medians over rounds; {CONNECTIONS} gtlsclient "
        "connections; wall time from client start to exit"
    )
    header = (
        f"{'route':<8} {'server':<18} {'median':>9} {'unit':<5} "
        f"{'vs ' + suite.reference:>12} {'server CPU':>16} {'failed req':>10} "
        f"{'failed runs':>11}  runs"
    )
    print(header)
    print("-" * len(header))
    medians: dict[str, dict[str, float | None]] = {}
    failures: dict[str, dict[str, int]] = {}
    for route in suite.routes:
        reference = _median(
            [x.rate for x in results.get((route.label, suite.reference), [])]
        )
        for name in names:
            loads = results.get((route.label, name), [])
            value = _median([x.rate for x in loads])
            medians.setdefault(route.label, {})[name] = value
            failed = sum(x.failed_requests for x in loads)
            failures.setdefault(route.label, {})[name] = failed
            ratio = (
                "-" if value is None or not reference else f"{value / reference:.2f}x"
            )
            runs = " ".join(_fmt(x.rate, ".1f") if x.rate else "failed" for x in loads)
            cost = _median([x.server_cost(route.bulk) for x in loads])
            cost_text = (
                "-"
                if cost is None
                else (f"{cost:.1f} MB/CPU-s" if route.bulk else f"{cost:.0f} us/req")
            )
            print(
                f"{route.label:<8} {name:<18} {_fmt(value, '.1f'):>9} {unit(route):<5} "
                f"{ratio:>12} {cost_text:>16} {failed:>10} "
                f"{sum(x.rate is None for x in loads):>11}  {runs or 'not measured'}"
            )
    for name, reasons in not_started.items():
        print(f"{name} did not start or answer correctly in {len(reasons)} round(s)")
    for name, why in missing.items():
        print(f"{name}: not measured ({why})")
    print()
    goals = []
    for goal in suite.goals:
        for route in suite.routes:
            ours = medians.get(route.label, {}).get(goal.ours)
            theirs = medians.get(route.label, {}).get(goal.theirs)
            if ours is None or theirs is None or theirs <= 0:
                verdict, ratio = "not measured", None
            else:
                ratio = ours / theirs
                verdict = "met" if ratio >= goal.factor else "NOT met"
            print(
                f"goal: {goal.ours} / {goal.theirs} on {route.label} "
                f"({unit(route)}) {_fmt(ratio, '.2f')}x, {goal.text}: {verdict}"
            )
            goals.append(
                {
                    "ours": goal.ours,
                    "theirs": goal.theirs,
                    "route": route.label,
                    "ratio": ratio,
                    "factor": goal.factor,
                    "verdict": verdict,
                }
            )
    shares = [noise_share(x) for loads in results.values() for x in loads]
    if shares and max(shares) > NOISY_SHARE:
        print(
            f"warning: other processes used up to {max(shares):.0%} of a CPU during "
            "a measurement: the machine was busy, the figures are noisy"
        )
    return {
        "medians": medians,
        "failed_requests": failures,
        "not_started": {n: len(r) for n, r in not_started.items()},
        "missing": missing,
        "goals": goals,
    }


def suite_parser(description: str, defaults: dict[str, Any]) -> argparse.ArgumentParser:
    """The options every suite takes; ``defaults``: servers, requests,
    downloads (normal and ``quick_*``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test: one short round"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds (5; --quick: 1)"
    )
    parser.add_argument(
        "--servers", default=defaults["servers"], help="comma-separated"
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help=f"small route: requests per measurement ({defaults['requests']})",
    )
    parser.add_argument(
        "--downloads",
        type=int,
        default=None,
        help=f"bulk route: downloads per measurement ({defaults['downloads']})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds allowed per measurement (the slowest peers need 40 s for "
        "the default bulk load)",
    )
    parser.add_argument(
        "--native-idle-timeout", type=int, default=3, help="gtlsclient idle timeout, s"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=1200.0,
        help="seconds after which no round starts",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin processes to CPUs",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="run trioquic's servers under cProfile, writing DIR/SERVER-N.prof "
        "for each start (read with python -m pstats); the figures of a "
        "profiled run are not comparable with others",
    )
    parser.set_defaults(**{"_suite_defaults": defaults})
    return parser


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    defaults = args._suite_defaults
    prefix = "quick_" if args.quick else ""
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.requests is None:
        args.requests = defaults[prefix + "requests"]
    if args.downloads is None:
        args.downloads = defaults[prefix + "downloads"]
    if args.rounds < 1 or args.requests < CONNECTIONS or args.downloads < CONNECTIONS:
        raise SystemExit(f"--rounds >= 1, --requests and --downloads >= {CONNECTIONS}")
    args.scratch = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return args


def run_main(suite: Suite, args: argparse.Namespace) -> dict[str, Any] | None:
    """Make a certificate, run the suite; its summary, or None."""
    with tempfile.TemporaryDirectory() as directory:
        use_self_signed_certificate(args, directory, HOST)
        try:
            return run_suite(suite, args)
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return None


# -- this benchmark ------------------------------------------------------------


def asgi_suite() -> Suite:
    sys.path.insert(0, str(ASGI_PEERS))
    from app import SMALL_PATH, SMALL_SIZE, STREAM_PATH, STREAM_SIZE

    peers = {
        "trioquic": trioquic_peer("trioquic", "asgi", "--app", "app:app"),
        "h3": trioquic_peer("h3", "h3"),
        "hypercorn-trio": corn_peer("hypercorn-trio", "hypercorn", "trio", "app:app"),
        "hypercorn-asyncio": corn_peer(
            "hypercorn-asyncio", "hypercorn", "asyncio", "app:app"
        ),
        "anycorn-trio": corn_peer("anycorn-trio", "anycorn", "trio", "app:app"),
    }
    others = ("hypercorn-asyncio", "anycorn-trio")
    return Suite(
        title="Starlette over HTTP/3 (1 KB text, 1 MiB streamed)",
        routes=[
            Route("1 KB", SMALL_PATH, SMALL_SIZE, "index.html", bulk=False),
            Route("1 MiB", STREAM_PATH, STREAM_SIZE, "stream", bulk=True),
        ],
        peers=peers,
        reference="trioquic",
        probe=True,
        goals=[
            Goal("trioquic", "hypercorn-trio", 3.0, "goal >= 3x"),
            *(Goal("trioquic", other, 1.5, "goal >= 1.5x") for other in others),
            Goal("trioquic", "h3", 0.75, "goal >= 0.75x (the app's overhead <= 25 %)"),
        ],
    )


DEFAULTS = {
    "servers": "trioquic,h3,hypercorn-trio,hypercorn-asyncio,anycorn-trio",
    "requests": 4000,
    "downloads": 64,
    "quick_requests": 200,
    "quick_downloads": 8,
}


def main(argv: list[str] | None = None) -> int:
    parser = suite_parser(__doc__.splitlines()[0], DEFAULTS)
    summary = run_main(asgi_suite(), finish_args(parser.parse_args(argv)))
    return 0 if summary is not None else 1


if __name__ == "__main__":
    sys.exit(main())
