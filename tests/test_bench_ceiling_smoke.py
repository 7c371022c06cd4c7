"""The in-memory ceiling benchmark runs end to end, on aioquic and on qh3 (a
smoke test: the figures are only checked to be there and positive)."""

from __future__ import annotations

import json
import math
import pathlib
import re
import subprocess
import sys

import pytest

#: Starts servers and load clients as subprocesses: not in the default run
#: (``pytest -m bench``, or ``nox -s bench -- --quick``).
pytestmark = pytest.mark.bench

BENCHMARK = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "ceiling.py"


def _positive(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


@pytest.mark.parametrize("engine", ["aioquic", "qh3"])
def test_ceiling_benchmark_quick(tmp_path: pathlib.Path, engine: str) -> None:
    pytest.importorskip(engine)
    result_path = tmp_path / "ceiling.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--engine",
            engine,
            "--quick",
            "--size",
            "1000000",
            "--requests",
            "100",
            "--handshakes",
            "5",
            "--timeout",
            "30",
            "--json",
            str(result_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    lines = completed.stdout.splitlines()
    for label in (
        "raw-bulk",
        "h3-bulk",
        "h3-requests 1x50",
        "h3-requests 10x10",
        "h3-requests 4x50",
        "handshakes",
    ):
        assert any(
            line.startswith(label + " ") and line.rstrip().endswith("/s")
            for line in lines
        ), output

    assert f"ceiling: {engine} " in completed.stdout, output
    results = json.loads(result_path.read_text())
    assert results["meta"]["engine"] == engine, results["meta"]
    for workload in ("raw-bulk", "h3-bulk"):
        figures = results[workload]
        assert figures["size"] == 1000000, figures
        for key in ("server_cpu_s", "client_cpu_s", "server_mb_per_s"):
            assert _positive(figures[key]), (workload, key, figures)
        assert _positive(figures["client_mb_per_s"]), (workload, figures)
    for shape in ("1x50", "10x10", "4x50"):
        figures = results["h3-requests"][shape]
        assert figures["requests"] == 100, figures
        for key in (
            "server_cpu_s",
            "client_cpu_s",
            "server_requests_per_s",
            "client_requests_per_s",
        ):
            assert _positive(figures[key]), (shape, key, figures)
    figures = results["handshakes"]
    assert figures["count"] == 5, figures
    for key in ("server_cpu_s", "client_cpu_s", "server_per_s", "client_per_s"):
        assert _positive(figures[key]), (key, figures)


def test_ceiling_benchmark_both_engines_quick() -> None:
    pytest.importorskip("qh3")
    completed = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--workloads", "h3-bulk"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    # One table per engine, aioquic on CUBIC as qh3 is, then the ratios.
    assert "ceiling: aioquic " in completed.stdout, output
    assert "ceiling: qh3 " in completed.stdout, output
    assert completed.stdout.count("congestion control: cubic;") == 2, output
    ratios = completed.stdout.split("qh3/aioquic, same run", 1)[1]
    line = re.search(r"^  h3-bulk +server +([\d.]+)x +client +([\d.]+)x$", ratios, re.M)
    assert line is not None, output
    assert all(_positive(float(figure)) for figure in line.groups()), output


def test_ceiling_benchmark_fails_clearly_on_timeout() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--workloads",
            "raw-bulk",
            "--size",
            "100000000",
            "--repeat",
            "1",
            "--timeout",
            "0.2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "benchmark failed: raw-bulk: " in completed.stderr
    assert "timed out" in completed.stderr
