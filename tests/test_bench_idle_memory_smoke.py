"""The idle-memory benchmark runs end to end in both modes (a smoke test: the
figures are not checked)."""

from __future__ import annotations

import re

import pytest
from test_bench_handshakes_smoke import peers_missing, run_benchmark

#: Starts servers and load clients as subprocesses: not in the default run
#: (``pytest -m bench``, or ``nox -s bench -- --quick``).
pytestmark = pytest.mark.bench


@pytest.mark.skipif(peers_missing() is not None, reason=str(peers_missing()))
def test_idle_memory_http3_quick() -> None:
    stdout = run_benchmark(
        "idle_memory.py", "--quick", "--connections", "100", "--settle", "0.5"
    )
    for other in ("aioquic", "hypercorn-trio"):
        assert f"[idle HTTP/3] trioquic/{other}: " in stdout, stdout
    # A peer failing is reported, not a test failure (it is a finding about
    # that server); trioquic's own figure must be there.
    assert re.search(r"^trioquic +-?\d+\.\d +0 ", stdout, re.MULTILINE), stdout


def test_idle_memory_memory_network_quick() -> None:
    stdout = run_benchmark("idle_memory.py", "--mode", "memory-network", "--quick")
    assert "tracemalloc heap per pair:" in stdout, stdout
    assert "RSS growth per pair:" in stdout, stdout
