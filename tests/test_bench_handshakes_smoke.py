"""The handshakes benchmark runs end to end (a smoke test: the figures are not
checked). Its helpers serve the other benchmark smoke tests too."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence

import pytest

#: Starts servers and load clients as subprocesses: not in the default run
#: (``pytest -m bench``, or ``nox -s bench -- --quick``).
pytestmark = pytest.mark.bench

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def peers_missing() -> str | None:
    """Why the HTTP/3 server benchmarks cannot run here, or None."""
    try:
        from trioquic.h3 import serve_http3  # noqa: F401
    except ImportError as exc:
        return f"trioquic.h3.serve_http3 is unavailable: {exc}"
    found = importlib.util.find_spec("hypercorn") is not None
    return None if found else "hypercorn (a peer of the benchmarks) is not installed"


def qh3_engine_missing() -> str | None:
    """Why trioquic's qh3 engine cannot run here (the benchmarks' own check,
    ``_h3_peers/_shared.py``), or None."""
    spec = importlib.util.spec_from_file_location(
        "bench_shared", BENCHMARKS / "_h3_peers" / "_shared.py"
    )
    assert spec is not None and spec.loader is not None
    shared = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shared)
    reason: str | None = shared.qh3_engine_missing()
    return reason


def qh3_asyncio() -> list[str]:
    """qh3's asyncio layer, the label of its column, when qh3 is installed."""
    return ["qh3-asyncio"] if importlib.util.find_spec("qh3") else []


def stacks() -> list[str]:
    """The labels of the columns every benchmark here must fill: trioquic,
    qh3-asyncio when qh3 is installed, trioquic+qh3 when its engine runs."""
    engine = ["trioquic+qh3"] if qh3_engine_missing() is None else []
    return ["trioquic", *qh3_asyncio(), *engine]


def assert_goals(stdout: str, goals: Sequence[str], *, measured: bool) -> None:
    """Every goal is printed with a verdict (``goal [met] <what>: ...``); with
    ``measured``, a figure too (met, not met or reported: never n/a)."""
    for what in goals:
        line = re.search(
            rf"^  goal \[(met|not met|n/a|reported)\] {re.escape(what)}: ",
            stdout,
            re.MULTILINE,
        )
        assert line is not None, (what, stdout)
        if measured:
            assert line.group(1) != "n/a", (what, stdout)


def run_benchmark(script: str, *arguments: str, timeout: float = 120) -> str:
    """Run ``benchmarks/<script>``; its standard output, once it exited 0."""
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


#: The same-run ratios every HTTP/3 server benchmark prints.
SERVER_RATIOS = (
    "trioquic/aioquic",
    "trioquic/hypercorn-trio",
    "trioquic+qh3/trioquic",
    "trioquic+qh3/qh3-asyncio",
)


@pytest.mark.skipif(peers_missing() is not None, reason=str(peers_missing()))
def test_handshakes_benchmark_quick() -> None:
    stdout = run_benchmark("handshakes.py", "--quick", timeout=240)
    # Without gtlsclient the script skips the native client, and says so.
    clients = ["python"] + (["native"] if shutil.which("gtlsclient") else [])
    for client in clients:
        for shape in ("sequential", "16 concurrent"):
            for ratio in SERVER_RATIOS:
                line = f"[{client} client, {shape}] {ratio}: "
                assert line in stdout, stdout
    assert "headline client: " in stdout, stdout
    # A peer failing a run is reported, not a test failure (it is a finding
    # about that server); trioquic's own figures must be there, on each
    # engine it has, and qh3's asyncio layer's.
    engine_missing = qh3_engine_missing()
    if engine_missing is not None:
        assert f"skipping trioquic+qh3: {engine_missing}" in stdout, stdout
    for shape in ("sequential", "16 concurrent"):
        for server in stacks():
            row = rf"^python {shape} +{re.escape(server)} +\d+ +\d+\.\d+ "
            assert re.search(row, stdout, re.MULTILINE), (server, stdout)
    headline = re.search(r"^headline client: (\w+)", stdout, re.MULTILINE)
    assert headline is not None, stdout
    assert_goals(
        stdout,
        [
            f"handshakes/s, 16 concurrent, {headline.group(1)} client: "
            f"trioquic+qh3/{other}"
            for other in ("trioquic", "qh3-asyncio")
        ],
        measured=engine_missing is None,
    )
