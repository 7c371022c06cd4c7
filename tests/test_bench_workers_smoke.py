"""The ``serve --workers`` benchmark runs end to end in its quick mode: it
produces its figures, and the correctness it checks holds (every connection
with a rebind intact on one worker; a killed worker answers again and the
other workers' connections finish). The speed goals are not checked here."""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import pytest
from test_bench_handshakes_smoke import assert_goals, run_benchmark

#: Starts servers and load clients as subprocesses: not in the default run
#: (``pytest -m bench``, or ``nox -s bench -- --quick``).
pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"),
        reason="serve --workers needs Linux (SO_REUSEPORT and its BPF program)",
    ),
    pytest.mark.skipif(
        shutil.which("gtlsclient") is None,
        reason="ngtcp2's HTTP/3 client (gtlsclient) is not installed: the "
        "benchmark's scaling part needs it",
    ),
]


def test_workers_benchmark_quick(tmp_path: pathlib.Path) -> None:
    figures = tmp_path / "workers.json"
    stdout = run_benchmark("workers.py", "--quick", "--json", str(figures), timeout=300)
    payload = json.loads(figures.read_text())

    medians = payload["scaling"]["medians"]
    assert set(medians) == {"1", "2", "4"}, stdout
    for workers, figure in medians.items():
        assert figure["failed"] == 0, (workers, stdout)
        assert figure["requests_per_s"] > 0, (workers, stdout)
        assert figure["server_us"] > 0, (workers, stdout)
        assert figure["client_us"] > 0, (workers, stdout)

    correct = payload["correctness"]
    assert correct["connections"] == 40, stdout
    assert correct["intact"] == correct["connections"], stdout
    assert correct["one_worker"] == correct["connections"], stdout
    assert correct["rebound"] == correct["connections"], stdout
    assert sum(correct["spread"].values()) == correct["connections"], stdout

    kill = payload["kill"]
    assert len(kill["runs"]) == 1, stdout
    for run in kill["runs"]:
        assert run["restarts"] == 1, stdout
        assert run["new_pid"] != run["victim_pid"], stdout
        assert run["answered"] is not None, stdout
        assert run["others"] > 0, stdout
        assert run["others_intact"] == run["others"], stdout
        assert run["on_killed"] + run["others"] == run["connections"], stdout
    assert kill["answered_max"] is not None, stdout

    assert_goals(
        stdout,
        [
            "1 KB requests/s, --workers 2 / --workers 1",
            "server CPU per request, --workers 2 / --workers 1",
            "connections with a rebind intact, on one worker (of 40)",
            "killed worker answering again",
            f"other workers' connections intact (of {kill['others']})",
        ],
        measured=True,
    )
