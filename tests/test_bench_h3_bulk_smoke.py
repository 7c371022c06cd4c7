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
from test_bench_handshakes_smoke import (
    assert_goals,
    qh3_engine_missing,
    stacks,
)

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
        timeout=300,
        check=False,
    )
    out, everything = run.stdout, run.stdout + run.stderr
    assert run.returncode == 0, everything
    for line in (
        "[servers, gtlsclient] trioquic/aioquic: ",
        "[servers, gtlsclient] trioquic/hypercorn-trio: ",
        "[servers, gtlsclient] trioquic+qh3/trioquic: ",
        "[servers, gtlsclient] trioquic+qh3/qh3-asyncio: ",
        "[clients, gtlsserver] trioquic/aioquic: ",
        "[clients, gtlsserver] trioquic+qh3/trioquic: ",
        "[clients, gtlsserver] trioquic+qh3/qh3-asyncio: ",
        "[self] trioquic/aioquic: ",
        "[self] trioquic+qh3/trioquic: ",
        "[self] trioquic+qh3/qh3-asyncio: ",
        "[ceiling] ",
    ):
        assert line in out, everything
    # The self measurement needs only Python: every stack must have figures.
    engine_missing = qh3_engine_missing()
    for stack in stacks():
        assert f"\n{stack:<16} {stack} " in out, (stack, everything)
    assert "[self] trioquic/aioquic: n/a" not in out, everything
    assert_goals(
        out,
        [
            f"bulk served to gtlsclient ({4 * 1024 * 1024 / 1e6:.1f} MB): {what}"
            for what in (
                "trioquic+qh3/trioquic MB/s",
                "trioquic+qh3 MB/s",
                "trioquic+qh3/qh3-asyncio MB/s",
            )
        ]
        + [
            "bulk from gtlsserver: trioquic+qh3 client/qh3-asyncio client MB/s",
            "bulk: trioquic+qh3 server MB per CPU-second / qh3's in-memory ceiling",
        ],
        measured=engine_missing is None
        and shutil.which("gtlsclient") is not None
        and shutil.which("gtlsserver") is not None,
    )
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
        # ceiling.py's own test checks its figures; here, that they arrive,
        # for each engine trioquic has.
        assert "[ceiling] trioquic against aioquic's sans-io alone" in out
        if engine_missing is None:
            assert "[ceiling] trioquic+qh3 against qh3's sans-io alone" in out
        assert "ceiling.py unavailable" not in out, everything
