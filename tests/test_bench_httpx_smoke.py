"""The HTTP/3 client benchmark (httpx over HTTP3Transport, trioquic's
Http3Client, niquests) runs end to end with a short window (a smoke test:
figures checked to make sense, not compared)."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
from test_bench_asgi_smoke import run_benchmark

pytestmark = pytest.mark.bench


def _missing() -> str | None:
    if shutil.which("gtlsclient") is None:
        return "ngtcp2's HTTP/3 client (gtlsclient, which checks the server) is missing"
    for package in ("httpx", "niquests"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed"
    try:
        from trioquic.httpx import HTTP3Transport  # noqa: F401
    except ImportError as exc:
        return f"trioquic.httpx.HTTP3Transport is unavailable: {exc}"
    return None


@pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
def test_httpx_client_benchmark_quick() -> None:
    summary, output = run_benchmark("httpx_client.py", "--quick", tag="HTTPX-BENCH ")
    assert summary["missing"] == {}, output
    # Every client answered over HTTP/3 (the benchmark fails a client whose
    # responses came over anything else, or were wrong): all have a figure.
    for name in ("httpx", "trioquic", "niquests"):
        assert summary["medians"][name] is not None, output
        assert summary["medians"][name] > 0, output
    goals = {g["theirs"]: g for g in summary["goals"]}
    assert set(goals) == {"trioquic", "niquests"}, output
    for theirs, goal in goals.items():
        ratio = summary["medians"]["httpx"] / summary["medians"][theirs]
        assert goal["ratio"] == pytest.approx(ratio), output
        assert goal["verdict"] == ("met" if ratio >= goal["factor"] else "NOT met")
