"""The ASGI-server benchmark runs end to end with tiny counts (a smoke test:
the figures are not compared, only checked to make sense)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

#: Starts servers and load clients as subprocesses: not in the default run
#: (``pytest -m bench``, or ``nox -s bench -- --quick``).
pytestmark = pytest.mark.bench

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
SERVERS = ("trioquic", "h3", "hypercorn-trio", "hypercorn-asyncio", "anycorn-trio")


def _missing() -> str | None:
    if shutil.which("gtlsclient") is None:
        return "ngtcp2's HTTP/3 client (gtlsclient) is not installed"
    for package in ("starlette", "hypercorn", "anycorn"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed (the benchmark's application or a peer)"
    try:
        from trioquic.asgi import serve_asgi  # noqa: F401
    except ImportError as exc:
        return f"trioquic.asgi.serve_asgi is unavailable: {exc}"
    return None


def run_benchmark(script: str, *args: str, tag: str) -> tuple[dict, str]:
    """Run ``benchmarks/script`` with ``args``; its summary line (``tag``)
    and its whole output."""
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    lines = [x for x in completed.stdout.splitlines() if x.startswith(tag)]
    assert len(lines) == 1, output
    return json.loads(lines[0][len(tag) :]), output


@pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
def test_asgi_servers_benchmark_quick() -> None:
    summary, output = run_benchmark(
        "asgi_servers.py",
        "--quick",
        "--requests",
        "100",
        "--downloads",
        "4",
        tag="ASGI-BENCH ",
    )
    assert summary["missing"] == {}, output
    # Every server started and answered both routes with the right bodies.
    assert summary["not_started"] == {}, output
    for route in ("1 KB", "1 MiB"):
        medians = summary["medians"][route]
        assert set(medians) == set(SERVERS), output
        # trioquic (ASGI and plain) never fails a request; another server's
        # failure is a finding about it, reported in its row.
        for name in ("trioquic", "h3"):
            assert summary["failed_requests"][route][name] == 0, output
            assert medians[name] is not None and medians[name] > 0, output
        for name in SERVERS:
            value = medians[name]
            failed = summary["failed_requests"][route][name]
            assert (value is not None and value > 0) or failed > 0, output
    # Every server was probed with clients that stop reading; trioquic's
    # servers kept answering (another server's failure is a finding).
    assert set(summary["stop_sending"]) == set(SERVERS), output
    for name in ("trioquic", "h3"):
        assert summary["stop_sending"][name] == ["ok"], output
    goals = {(g["theirs"], g["route"]): g for g in summary["goals"]}
    assert set(goals) == {
        (theirs, route)
        for theirs in ("hypercorn-trio", "hypercorn-asyncio", "anycorn-trio", "h3")
        for route in ("1 KB", "1 MiB")
    }, output
    for goal in goals.values():
        if goal["ratio"] is not None:
            assert goal["verdict"] == (
                "met" if goal["ratio"] >= goal["factor"] else "NOT met"
            ), output
    assert "goal: trioquic / hypercorn-trio on 1 KB (req/s)" in output
