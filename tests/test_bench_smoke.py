"""The bulk benchmark runs end to end (a smoke test: the figures are not checked)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

#: Starts servers and load clients as subprocesses: not in the default run
#: (``pytest -m bench``, or ``nox -s bench -- --quick``).
pytestmark = pytest.mark.bench

BENCHMARK = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "bulk.py"


def test_bulk_benchmark_quick() -> None:
    completed = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--timeout", "30"],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "server+client trioquic/aioquic: " in completed.stdout, output
    assert "server side (aioquic client) trioquic/aioquic: " in completed.stdout
    assert "client side (aioquic server) trioquic/aioquic: " in completed.stdout
