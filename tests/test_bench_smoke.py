"""The bulk benchmark runs end to end (a smoke test: the figures are not checked)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
from test_bench_handshakes_smoke import (
    assert_goals,
    qh3_engine_missing,
    stacks,
)

#: Starts servers and load clients as subprocesses: not in the default run
#: (``pytest -m bench``, or ``nox -s bench -- --quick``).
pytestmark = pytest.mark.bench

BENCHMARK = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "bulk.py"


def test_bulk_benchmark_quick() -> None:
    completed = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--timeout", "30"],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "server+client trioquic/aioquic: " in completed.stdout, output
    assert "server side (aioquic client) trioquic/aioquic: " in completed.stdout
    assert "client side (aioquic server) trioquic/aioquic: " in completed.stdout
    for line in (
        "server+client trioquic+qh3/trioquic: ",
        "server+client trioquic+qh3/qh3-asyncio: ",
        "server side (qh3-asyncio client) trioquic+qh3/qh3-asyncio: ",
        "client side (qh3-asyncio server) trioquic+qh3/qh3-asyncio: ",
    ):
        assert line in completed.stdout, output
    # Each stack against itself has its row (a failing mixed pair is a
    # finding, reported in its run line).
    engine_missing = qh3_engine_missing()
    for stack in stacks():
        assert f"\n{stack:<12} {stack:<12} " in completed.stdout, (stack, output)
    assert_goals(
        completed.stdout,
        [
            f"raw QUIC bulk, server+client: trioquic+qh3/{other} MB/s"
            for other in ("trioquic", "qh3-asyncio")
        ],
        measured=engine_missing is None,
    )
