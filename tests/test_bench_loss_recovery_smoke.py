"""The loss-recovery benchmark runs end to end (a smoke test: the figures
are not checked, only that every pair downloaded its body through the lossy
hop and the summary reports each pair and the ratios)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

#: Starts servers, hops and clients as subprocesses: not in the default run.
pytestmark = pytest.mark.bench

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def test_loss_recovery_benchmark_quick(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("aioquic", reason="aioquic is a peer of the benchmark")
    results = tmp_path / "results.json"
    run = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "loss_recovery.py"),
            "--quick",
            "--json",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    everything = run.stdout + run.stderr
    assert run.returncode == 0, everything
    report = json.loads(results.read_text())
    assert len(report["runs"]) == 6  # 3 pairs x reno, cubic, once each
    for each in report["runs"]:
        assert not each["failed"], each
        assert each["seconds"] > 0
        # The hop carried the transfer, and its loss was in effect.
        assert each["hop"]["down"]["forwarded"] > 700  # 1 MiB, in datagrams
        assert each["hop"]["up"]["received"] > 0
    lost = sum(
        r["hop"]["up"]["lost"] + r["hop"]["down"]["lost"] for r in report["runs"]
    )
    assert lost > 0
    for cc in ("reno", "cubic"):
        ratios = report["summary"][cc]["ratios"]
        assert set(ratios) == {"trioquic", "trioquic-defaults"}
        assert f"{cc:5} trioquic / aioquic median seconds: " in run.stdout
