"""The HTTP/3 bulk benchmark runs end to end (a smoke test: the figures are
not checked). Peers that are not installed (gtlsclient, gtlsserver,
hypercorn) are skipped by the benchmark itself, with a message, and the
summary says so; that is checked too."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import subprocess
import sys

import pytest

#: Starts servers and load clients as subprocesses: not in the default run
#: (``pytest -m bench``, or ``nox -s bench -- --quick``).
pytestmark = pytest.mark.bench

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def test_h3_bulk_benchmark_quick() -> None:
    pytest.importorskip("aioquic", reason="aioquic is a peer of the benchmark")
    pytest.importorskip("trioquic.h3")
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / "h3_bulk.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out, everything = run.stdout, run.stdout + run.stderr
    assert run.returncode == 0, everything
    for line in (
        "[servers, gtlsclient] trioquic/aioquic: ",
        "[servers, gtlsclient] trioquic/hypercorn-trio: ",
        "[clients, gtlsserver] trioquic/aioquic: ",
        "[self] trioquic/aioquic: ",
        "[ceiling] ",
    ):
        assert line in out, everything
    # The self measurement needs only Python: both stacks must have figures.
    assert "\ntrioquic         trioquic " in out, everything
    assert "[self] trioquic/aioquic: n/a" not in out, everything
    # A server failing a run is reported, not a test failure (it is a finding
    # about that server); trioquic's rows must be there when its peer is.
    for tool, row in (
        ("gtlsclient", "\ntrioquic         gtlsclient "),
        ("gtlsserver", "\ngtlsserver       trioquic "),
    ):
        if shutil.which(tool) is None:
            assert f"n/a ({tool} not found)" in out, everything
        else:
            assert row in out, everything
    if importlib.util.find_spec("hypercorn") is None:
        assert "skipping hypercorn-trio" in out, everything
    if (BENCHMARKS / "ceiling.py").exists():
        # ceiling.py's own test checks its figures; here, that they arrive.
        assert "[ceiling] trioquic against aioquic's sans-io alone" in out
        assert "ceiling.py unavailable" not in out, everything
