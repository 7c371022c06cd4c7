"""The HTTP/3 request benchmark runs end to end (a smoke test: the figures are
not checked)."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import subprocess
import sys

import pytest
from test_bench_handshakes_smoke import (
    SERVER_RATIOS,
    assert_goals,
    qh3_engine_missing,
    stacks,
)

#: Starts servers and load clients as subprocesses: not in the default run
#: (``pytest -m bench``, or ``nox -s bench -- --quick``).
pytestmark = pytest.mark.bench

BENCHMARK = (
    pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "h3_requests.py"
)


def _missing() -> str | None:
    if shutil.which("gtlsclient") is None:
        return "ngtcp2's HTTP/3 client (gtlsclient) is not installed"
    if importlib.util.find_spec("hypercorn") is None:
        return "hypercorn is not installed (it is a peer of the benchmark)"
    try:
        from trioquic.h3 import serve_http3  # noqa: F401
    except ImportError as exc:
        return f"trioquic.h3.serve_http3 is unavailable: {exc}"
    return None


@pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
def test_h3_requests_benchmark_quick() -> None:
    completed = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    for client, shapes in (("native", ("1xN", "10xN")), ("python", ("1x50", "10x10"))):
        for shape in shapes:
            for ratio in SERVER_RATIOS:
                line = f"[{client} client, {shape}] {ratio}: "
                assert line in completed.stdout, output
    # A server failing a run is reported, not a test failure (it is a finding
    # about that server); trioquic's own rows must be there (on each engine
    # it has), and qh3's asyncio layer's.
    engine_missing = qh3_engine_missing()
    for server in stacks():
        assert f"\npython 1x50  {server} " in completed.stdout, (server, output)
        assert f"\nnative 4xN   {server} " in completed.stdout, (server, output)
    assert_goals(
        completed.stdout,
        [
            f"1 KB requests/s, native client, 4xN: trioquic+qh3/{other}"
            for other in ("trioquic", "qh3-asyncio")
        ],
        measured=engine_missing is None,
    )
