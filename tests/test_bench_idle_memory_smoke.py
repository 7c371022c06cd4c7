"""The idle-memory benchmark runs end to end in both modes (a smoke test: the
figures are not checked)."""

from __future__ import annotations

import re

import pytest
from test_bench_handshakes_smoke import (
    SERVER_RATIOS,
    assert_goals,
    peers_missing,
    qh3_engine_missing,
    run_benchmark,
    stacks,
)

#: Starts servers and load clients as subprocesses: not in the default run
#: (``pytest -m bench``, or ``nox -s bench -- --quick``).
pytestmark = pytest.mark.bench


@pytest.mark.skipif(peers_missing() is not None, reason=str(peers_missing()))
def test_idle_memory_http3_quick() -> None:
    stdout = run_benchmark(
        "idle_memory.py",
        "--quick",
        "--connections",
        "100",
        "--settle",
        "0.5",
        timeout=240,
    )
    for ratio in SERVER_RATIOS:
        assert f"[idle HTTP/3] {ratio}: " in stdout, stdout
    # A peer failing is reported, not a test failure (it is a finding about
    # that server); trioquic's own figures must be there (on each engine it
    # has), and qh3's asyncio layer's.
    engine_missing = qh3_engine_missing()
    for server in stacks():
        row = rf"^{re.escape(server)} +-?\d+\.\d +0 "
        assert re.search(row, stdout, re.MULTILINE), (server, stdout)
    assert_goals(
        stdout,
        [
            f"memory per idle HTTP/3 connection: trioquic+qh3/{other} (lower is better)"
            for other in ("trioquic", "qh3-asyncio")
        ],
        measured=engine_missing is None,
    )


@pytest.mark.parametrize("engine", ["aioquic", "qh3"])
def test_idle_memory_memory_network_quick(engine: str) -> None:
    if engine == "qh3" and (missing := qh3_engine_missing()) is not None:
        pytest.skip(missing)
    stdout = run_benchmark(
        "idle_memory.py", "--mode", "memory-network", "--quick", "--engine", engine
    )
    assert f"idle connections:            100 (engine {engine})" in stdout, stdout
    assert "tracemalloc heap per pair:" in stdout, stdout
    assert "RSS growth per pair:" in stdout, stdout
