"""``serve_workers``: N worker processes on one port, and their supervisor.

The parent process binds every socket itself, before any worker starts: per
address, one UDP socket per worker in one ``SO_REUSEPORT`` group with the
routing program attached (see :mod:`._bpf`), and, for the TCP front door, one
listening socket all workers accept on. A worker that dies leaves its UDP
socket open in the parent, so the group's order never changes (the kernel
would move the last socket into a closed one's place) and the datagrams that
arrive meanwhile wait in its buffer for the worker started in its place.

The parent runs no event loop: it forks the workers, restarts one that dies,
forwards SIGINT/SIGTERM as SIGTERM (each worker then stops gracefully:
GOAWAY, requests in flight finish, CONNECTION_CLOSE), and gathers the
statistics every worker sends it once a second over a pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import math
import os
import selectors
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TextIO

import attrs
import trio

from .._endpoint import QuicServer
from .._quic_lb import QuicLbConfig
from .._serve_http import HttpServer
from .._settings import QuicSettings
from .._udp import bind_addresses_blocking
from ._bpf import attach_reuseport_program, reuseport_program
from ._keys import SharedKeys, shared_keys

__all__ = [
    "EXIT_CRASH_LOOP",
    "EXIT_OK",
    "EXIT_UNCLEAN",
    "WorkerContext",
    "serve_workers",
]

#: Every worker stopped on request and shut down cleanly.
EXIT_OK = 0
#: Stopped on request, but a worker had to be killed after the shutdown
#: timeout, or exited with an error.
EXIT_UNCLEAN = 1
#: Gave up: a worker kept dying right after it started.
EXIT_CRASH_LOOP = 3
#: A worker that dies this soon after its start counts towards a crash loop.
_CRASH_WINDOW = 10.0
#: A worker's statistics line is far shorter; a longer one is dropped.
_MAX_REPORT = 1 << 20
#: linux/prctl.h
_PR_SET_PDEATHSIG = 1
#: Backlog of the TCP front door's shared listening sockets.
_TCP_BACKLOG = 1024


@attrs.frozen(kw_only=True)
class WorkerContext:
    """What one worker process is given: its index, its sockets, its
    settings. The target of :func:`serve_workers` gets it."""

    #: This worker's index, 0 to ``count - 1`` (also its socket's place in
    #: the group, and its server-ID octet's offset).
    index: int
    count: int
    #: This worker's UDP sockets, bound (one per address, all one port).
    udp_sockets: tuple[socket.socket, ...]
    #: The TCP front door's listening sockets, shared by every worker.
    tcp_sockets: tuple[socket.socket, ...]
    #: This worker's QUIC-LB configuration (its own server ID).
    quic_lb: QuicLbConfig
    #: The keys every worker shares (see :func:`shared_keys`).
    keys: SharedKeys = attrs.field(repr=False)
    _report: Callable[[Mapping[str, Any]], None] = attrs.field(
        alias="report", repr=False
    )
    _served: list[QuicServer | HttpServer] = attrs.field(
        alias="served", factory=list, repr=False
    )

    @property
    def port(self) -> int:
        return int(self.udp_sockets[0].getsockname()[1])

    def settings(self, settings: QuicSettings) -> QuicSettings:
        """``settings`` for this worker: its connection IDs name it, and it
        shares the stateless reset and Retry token keys."""
        return self.keys.apply(with_quic_lb(settings, self.quic_lb))

    def serving(self, server: QuicServer | HttpServer) -> None:
        """Tell the supervisor this worker serves (it is ready) and whose
        statistics to send it."""
        self._served.append(server)
        _send_statistics(self, ready=True)

    def report(self, statistics: Mapping[str, Any]) -> None:
        """Send ``statistics`` (JSON-serializable) to the supervisor now;
        the worker also sends its server's once a second by itself."""
        self._report(statistics)


WorkerTarget = Callable[[WorkerContext], Awaitable[object]]


def with_quic_lb(settings: QuicSettings, quic_lb: QuicLbConfig) -> QuicSettings:
    """``settings`` issuing connection IDs in ``quic_lb``'s layout (and
    length)."""
    return attrs.evolve(
        settings, quic_lb=quic_lb, connection_id_length=quic_lb.connection_id_length
    )


def serve_workers(
    target: WorkerTarget,
    *,
    workers: int | Literal["auto"],
    port: int,
    host: str | None = None,
    tcp: bool = False,
    quic_lb: QuicLbConfig | None = None,
    secret: bytes | None = None,
    shutdown_timeout: float = 15.0,
    crash_limit: int = 5,
    stats_interval: float = 1.0,
    stats_file: str | os.PathLike[str] | None = None,
    on_ready: Callable[[Mapping[str, Any]], object] | None = None,
    log: TextIO | None = None,
) -> int:
    """Run ``await target(context)`` in ``workers`` processes that share
    ``port``, and supervise them until SIGINT or SIGTERM; returns the exit
    status (:data:`EXIT_OK`, :data:`EXIT_UNCLEAN`, :data:`EXIT_CRASH_LOOP`).

    ``target`` serves on ``context.udp_sockets`` (and ``context.tcp_sockets``
    with ``tcp``) with ``context.settings(settings)``, calls
    ``context.serving(server)`` once it listens, and stops gracefully when
    cancelled: each worker runs it under ``trio.run`` and cancels it on
    SIGTERM. Linux only (``SO_REUSEPORT`` and its BPF program).

    ``quic_lb``: the connection ID layout; worker ``i`` gets
    ``quic_lb.for_worker(i)``. Its server IDs must be plaintext (the kernel
    reads them). Default: a 1-octet server ID 0 (worker ``i`` is ``i``), a
    6-octet nonce. ``secret``: what the workers' shared keys derive from
    (default: random, for this run). ``workers="auto"``: one per CPU this
    process may run on.

    A worker that dies is started again at once (its connections are lost,
    the other workers' are not); one that dies ``crash_limit`` times within
    10 seconds of starting ends the whole server with
    :data:`EXIT_CRASH_LOOP`. On SIGINT/SIGTERM every worker is sent SIGTERM
    and given ``shutdown_timeout`` seconds before SIGKILL; a second SIGINT
    kills them at once. The statistics of all workers are written to
    ``stats_file`` (JSON, replaced every ``stats_interval`` seconds) and
    passed to ``on_ready`` once every worker serves.
    """
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "serve_workers forks its workers: call it outside trio.run (it "
            "runs trio.run in each worker itself)"
        )
    count = _worker_count(workers)
    if quic_lb is None:
        quic_lb = QuicLbConfig(server_id=b"\x00")
    elif not isinstance(quic_lb, QuicLbConfig):
        raise TypeError(
            f"quic_lb must be a trioquic.QuicLbConfig, got {type(quic_lb).__name__}"
        )
    if quic_lb.key is not None:
        raise ValueError(
            "serve_workers needs plaintext server IDs (the kernel routes by "
            "them): give a QuicLbConfig without a key"
        )
    quic_lb.for_worker(count - 1)  # every worker's octet fits
    keys = shared_keys(secret if secret is not None else os.urandom(32))
    if not sys.platform.startswith("linux"):
        raise OSError("serve_workers needs Linux (SO_REUSEPORT and its BPF program)")
    supervisor = _Supervisor(
        target,
        count=count,
        quic_lb=quic_lb,
        keys=keys,
        crash_limit=crash_limit,
        shutdown_timeout=shutdown_timeout,
        stats_interval=stats_interval,
        stats_file=stats_file,
        on_ready=on_ready,
        log=log if log is not None else sys.stderr,
    )
    supervisor.bind(host, port, tcp=tcp)
    try:
        return supervisor.run()
    finally:
        supervisor.close()


def _worker_count(workers: int | str) -> int:
    if workers == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(f"workers must be an int or 'auto', got {workers!r}")
    if not 1 <= workers <= 256:
        raise ValueError(f"workers must be 1 to 256, got {workers}")
    return workers


@attrs.define
class _Worker:
    """The supervisor's record of one worker slot."""

    index: int
    udp_sockets: list[socket.socket]
    pid: int | None = None
    started: float = 0.0
    report_fd: int | None = None
    buffer: bytes = b""
    ready: bool = False
    restarts: int = 0
    recent_crashes: list[float] = attrs.Factory(list)
    statistics: dict[str, Any] = attrs.Factory(dict)


class _Supervisor:
    def __init__(
        self,
        target: WorkerTarget,
        *,
        count: int,
        quic_lb: QuicLbConfig,
        keys: SharedKeys,
        crash_limit: int,
        shutdown_timeout: float,
        stats_interval: float,
        stats_file: str | os.PathLike[str] | None,
        on_ready: Callable[[Mapping[str, Any]], object] | None,
        log: TextIO,
    ) -> None:
        self.target = target
        self.count = count
        self.quic_lb = quic_lb
        self.keys = keys
        self.crash_limit = crash_limit
        self.shutdown_timeout = shutdown_timeout
        self.stats_interval = stats_interval
        self.stats_file = stats_file
        self.on_ready = on_ready
        self.log = log
        self.workers: list[_Worker] = []
        self.tcp_sockets: list[socket.socket] = []
        self.port = 0
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.exit_status = EXIT_OK
        self.announced = False
        self.pid = os.getpid()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._signals: list[int] = []

    # -- sockets ---------------------------------------------------------------

    def bind(self, host: str | None, port: int, *, tcp: bool) -> None:
        addresses = bind_addresses_blocking(host, port)
        self.workers = [_Worker(i, []) for i in range(self.count)]
        program = reuseport_program(
            workers=self.count,
            connection_id_length=self.quic_lb.connection_id_length,
            server_id_length=self.quic_lb.server_id_length,
            config_rotation=self.quic_lb.config_rotation,
            base=self.quic_lb.server_id[-1],
        )
        chosen = port
        try:
            for family, type_, proto, sockaddr in addresses:
                for worker in self.workers:
                    sock = socket.socket(family, type_, proto)
                    worker.udp_sockets.append(sock)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    # (buffer sizes: the worker's server sets them, from its
                    # QuicSettings.udp_buffer_size, as for any socket)
                    sock.bind((sockaddr[0], chosen, *sockaddr[2:]))
                    if chosen == 0:
                        chosen = sock.getsockname()[1]
                    if worker.index == 0:
                        # The group's program: set once, shared by all.
                        attach_reuseport_program(sock, program)
                if tcp:
                    listener = socket.socket(family, socket.SOCK_STREAM)
                    self.tcp_sockets.append(listener)
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    listener.bind((sockaddr[0], chosen, *sockaddr[2:]))
                    listener.listen(_TCP_BACKLOG)
        except BaseException:
            self.close()
            raise
        self.port = chosen

    def close(self) -> None:
        for worker in self.workers:
            for sock in worker.udp_sockets:
                sock.close()
            if worker.report_fd is not None:
                self._forget_report(worker)
        for sock in self.tcp_sockets:
            sock.close()
        self.selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the loop --------------------------------------------------------------

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)
        }
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            for worker in self.workers:
                self._start(worker)
            return self._loop()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stopping = True  # (an error got here: restart nothing)
            self._kill_all(signal.SIGKILL)
            self._reap(block=True)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)

    def _loop(self) -> int:
        next_stats = time.monotonic() + self.stats_interval
        deadline: float | None = None
        while True:
            self._handle_signals()
            self._reap(block=False)
            if self.stopping:
                if deadline is None:
                    deadline = time.monotonic() + self.shutdown_timeout
                if all(w.pid is None for w in self.workers):
                    self._write_stats()
                    return self.exit_status
                if time.monotonic() >= deadline:
                    self._note(
                        f"workers still running after {self.shutdown_timeout:g} s: "
                        "killing them"
                    )
                    self._kill_all(signal.SIGKILL)
                    self.exit_status = max(self.exit_status, EXIT_UNCLEAN)
                    deadline = math.inf
            now = time.monotonic()
            if now >= next_stats:
                self._write_stats()
                next_stats = now + self.stats_interval
            timeout = max(0.0, next_stats - now)
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - now))
            for key, _ in self.selector.select(min(timeout, 1.0)):
                if key.data is None:
                    self._drain_wakeup()
                else:
                    self._read_report(key.data)

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGCHLD:
                continue  # reaped below
            if not self.stopping:
                self._note(
                    f"{signal.Signals(signum).name}: stopping the workers gracefully"
                )
                self.stopping = True
                self._kill_all(signal.SIGTERM)
            elif signum == signal.SIGINT:
                self._note("second interrupt: killing the workers")
                self._kill_all(signal.SIGKILL)
                self.exit_status = max(self.exit_status, EXIT_UNCLEAN)

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # -- workers -----------------------------------------------------------------

    def _start(self, worker: _Worker) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            os.close(read_fd)
            self._child(worker, write_fd)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        worker.pid = pid
        worker.started = time.monotonic()
        worker.report_fd = read_fd
        worker.buffer = b""
        worker.ready = False
        self.selector.register(read_fd, selectors.EVENT_READ, worker)

    def _child(self, worker: _Worker, report_fd: int) -> None:  # pragma: no cover
        """The worker process: never returns."""
        status = 1
        try:
            os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the parent only
            _stop_with_parent(self.pid)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            for other in self.workers:
                if other is not worker:
                    for sock in other.udp_sockets:
                        sock.close()
                if other.report_fd is not None:
                    os.close(other.report_fd)
            self.selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            context = WorkerContext(
                index=worker.index,
                count=self.count,
                udp_sockets=tuple(worker.udp_sockets),
                tcp_sockets=tuple(self.tcp_sockets),
                quic_lb=self.quic_lb.for_worker(worker.index),
                keys=self.keys,
                report=_Reporter(report_fd),
            )
            trio.run(_run_worker, self.target, context, self.stats_interval)
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(status)

    def _reap(self, *, block: bool) -> None:
        """Collect the workers that ended (only ours: a process that runs
        serve_workers may have other children)."""
        for worker in self.workers:
            pid = worker.pid
            if pid is None:
                continue
            try:
                ended, status = os.waitpid(pid, 0 if block else os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its status is lost
                ended, status = pid, 0
            if ended == pid:
                self._ended(worker, status)

    def _ended(self, worker: _Worker, status: int) -> None:
        pid, worker.pid = worker.pid, None
        code = os.waitstatus_to_exitcode(status)
        if worker.report_fd is not None:
            self._read_report(worker)
            self._forget_report(worker)
        if self.stopping:
            # (SIGTERM before it served: it had nothing to close.)
            if code != 0 and not (code == -signal.SIGTERM and not worker.ready):
                self.exit_status = max(self.exit_status, EXIT_UNCLEAN)
            return
        now = time.monotonic()
        how = f"exit status {code}" if code >= 0 else f"signal {-code}"
        self._note(
            f"worker {worker.index} (pid {pid}) ended ({how}): starting it again"
        )
        if now - worker.started < _CRASH_WINDOW:
            worker.recent_crashes = [
                t for t in worker.recent_crashes if now - t < _CRASH_WINDOW
            ] + [now]
            if len(worker.recent_crashes) >= self.crash_limit:
                self._note(
                    f"worker {worker.index} died {len(worker.recent_crashes)} times "
                    f"within {_CRASH_WINDOW:g} s of starting: giving up"
                )
                self.stopping = True
                self.exit_status = EXIT_CRASH_LOOP
                self._kill_all(signal.SIGTERM)
                return
        worker.restarts += 1
        self._start(worker)

    def _kill_all(self, sig: int) -> None:
        for worker in self.workers:
            if worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, sig)

    # -- statistics --------------------------------------------------------------

    def _read_report(self, worker: _Worker) -> None:
        fd = worker.report_fd
        if fd is None:
            return
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:  # pragma: no cover - a closed pipe
                if exc.errno == errno.EBADF:
                    break
                raise
            if not chunk:
                self._forget_report(worker)
                break
            worker.buffer += chunk
        *lines, worker.buffer = worker.buffer.split(b"\n")
        if len(worker.buffer) > _MAX_REPORT:
            worker.buffer = b""  # not a report of ours: bounded, dropped
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                worker.statistics = message
                if message.get("ready"):
                    worker.ready = True
        if not self.announced and all(w.ready for w in self.workers):
            self.announced = True
            if self.on_ready is not None:
                self.on_ready(self.statistics())

    def _forget_report(self, worker: _Worker) -> None:
        fd = worker.report_fd
        worker.report_fd = None
        if fd is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(fd)
        os.close(fd)

    def statistics(self) -> dict[str, Any]:
        """Every worker's latest statistics, and their totals."""
        per_worker = []
        total: dict[str, Any] = {}
        for worker in self.workers:
            stats = dict(worker.statistics.get("statistics", {}))
            per_worker.append(
                {
                    "index": worker.index,
                    "pid": worker.pid,
                    "alive": worker.pid is not None,
                    "ready": worker.ready,
                    "restarts": worker.restarts,
                    "cpu_seconds": worker.statistics.get("cpu_seconds", 0.0),
                    "statistics": stats,
                }
            )
            _add(total, stats)
        first = self.workers[0].udp_sockets if self.workers else []
        return {
            "port": self.port,
            "addresses": [
                ("udp6" if sock.family == socket.AF_INET6 else "udp4", _name(sock))
                for sock in first
            ],
            "tcp_addresses": [_name(sock) for sock in self.tcp_sockets],
            "workers": per_worker,
            "restarts": sum(w.restarts for w in self.workers),
            "total": total,
        }

    def _write_stats(self) -> None:
        if self.stats_file is None:
            return
        path = os.fspath(self.stats_file)
        directory = os.path.dirname(os.path.abspath(path))
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".stats-")
        try:
            with os.fdopen(fd, "w") as fp:
                json.dump(self.statistics(), fp, indent=1, sort_keys=True)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def _note(self, message: str) -> None:
        print(f"trioquic workers: {message}", file=self.log, flush=True)


def _stop_with_parent(parent: int) -> None:  # pragma: no cover - in the child
    """SIGTERM this worker if the supervisor dies (even killed): workers
    never outlive it. Linux's ``prctl(PR_SET_PDEATHSIG)``."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def _name(sock: socket.socket) -> list[Any]:
    """A bound socket's address (host, port), even once it is closed."""
    try:
        return list(sock.getsockname()[:2])
    except OSError:
        return []


def _add(total: dict[str, Any], stats: Mapping[str, Any]) -> None:
    """Sum numbers (and dicts of numbers) into ``total``."""
    for name, value in stats.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            total[name] = total.get(name, 0) + value
        elif isinstance(value, Mapping):
            _add(total.setdefault(name, {}), value)


# -- in the worker ------------------------------------------------------------------


class _Reporter:
    """Writes JSON lines to the supervisor's pipe (never blocks: a report
    that does not fit is dropped, the next one replaces it anyway)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def __call__(self, statistics: Mapping[str, Any]) -> None:
        line = json.dumps(statistics, default=str).encode() + b"\n"
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(self.fd, line)


async def _run_worker(
    target: WorkerTarget, context: WorkerContext, interval: float
) -> None:
    """Run the target until SIGTERM (or SIGINT) cancels it: gracefully, as
    cancelling a trioquic server is."""
    async with trio.open_nursery() as nursery:
        serving = trio.CancelScope()

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    serving.cancel()
                    return

        async def report() -> None:
            while True:
                _send_statistics(context, ready=bool(context._served))
                await trio.sleep(interval)

        nursery.start_soon(watch_signals)
        nursery.start_soon(report)
        with serving:
            await target(context)
        _send_statistics(context, ready=bool(context._served))
        nursery.cancel_scope.cancel()


def _send_statistics(context: WorkerContext, *, ready: bool) -> None:
    statistics: dict[str, Any] = {}
    for server in context._served:
        quic = server.http3 if isinstance(server, HttpServer) else server
        snapshot = attrs.asdict(quic.statistics())
        _add(statistics, snapshot)
    times = os.times()
    context.report(
        {
            "index": context.index,
            "pid": os.getpid(),
            "ready": ready,
            "cpu_seconds": times.user + times.system,
            "statistics": statistics,
        }
    )
