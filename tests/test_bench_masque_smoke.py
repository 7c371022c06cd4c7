"""The MASQUE relay benchmark runs end to end (a smoke test: the figures are
not checked, only that every path was measured)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

#: Starts the proxy, a plain relay, a UDP echo server and a load generator
#: as subprocesses: not in the default run (``pytest -m bench``).
pytestmark = pytest.mark.bench

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def test_masque_relay_benchmark_quick() -> None:
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "masque_relay.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    stdout = completed.stdout
    assert completed.returncode == 0, stdout + completed.stderr
    for path in ("direct", "plain relay", "masque"):
        row = rf"^{path} +\d+\.\d +\d+\.\d +-?\d+\.\d +\d+ +\d+ +\d+%$"
        assert re.search(row, stdout, re.MULTILINE), stdout
    assert re.search(r"masque/plain relay datagrams per second: \d+\.\d\dx", stdout)
    assert "added latency (median RTT minus direct): plain relay " in stdout
