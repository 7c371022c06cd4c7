"""The handshakes benchmark runs end to end (a smoke test: the figures are not
checked). Its helpers serve ``test_bench_idle_memory_smoke.py`` too."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import shutil
import subprocess
import sys

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


def run_benchmark(script: str, *arguments: str) -> str:
    """Run ``benchmarks/<script>``; its standard output, once it exited 0."""
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


@pytest.mark.skipif(peers_missing() is not None, reason=str(peers_missing()))
def test_handshakes_benchmark_quick() -> None:
    stdout = run_benchmark("handshakes.py", "--quick")
    # Without gtlsclient the script skips the native client, and says so.
    clients = ["python"] + (["native"] if shutil.which("gtlsclient") else [])
    for client in clients:
        for shape in ("sequential", "16 concurrent"):
            for other in ("aioquic", "hypercorn-trio"):
                line = f"[{client} client, {shape}] trioquic/{other}: "
                assert line in stdout, stdout
    assert "headline client: " in stdout, stdout
    # A peer failing a run is reported, not a test failure (it is a finding
    # about that server); trioquic's own figures must be there.
    for shape in ("sequential", "16 concurrent"):
        row = rf"^python {shape} +trioquic +\d+ +\d+\.\d+ "
        assert re.search(row, stdout, re.MULTILINE), stdout
