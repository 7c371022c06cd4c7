"""The static-file benchmark (the built-in file server against Starlette's
StaticFiles through the ASGI adapter) runs end to end with tiny counts (a
smoke test: figures checked to make sense, not compared)."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
from test_bench_asgi_smoke import run_benchmark

pytestmark = pytest.mark.bench


def _missing() -> str | None:
    if shutil.which("gtlsclient") is None:
        return "ngtcp2's HTTP/3 client (gtlsclient) is not installed"
    if importlib.util.find_spec("starlette") is None:
        return "starlette is not installed"
    try:
        from trioquic.asgi import serve_asgi  # noqa: F401
    except ImportError as exc:
        return f"trioquic.asgi.serve_asgi is unavailable: {exc}"
    return None


@pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
def test_static_files_benchmark_quick() -> None:
    summary, output = run_benchmark(
        "static_files.py",
        "--quick",
        "--requests",
        "100",
        "--downloads",
        "4",
        tag="ASGI-BENCH ",
    )
    assert summary["missing"] == {} and summary["not_started"] == {}, output
    for route in ("1 KB", "10 MiB"):
        for name in ("trioquic-files", "starlette-static"):
            assert summary["failed_requests"][route][name] == 0, output
            assert summary["medians"][route][name] > 0, output
    verdicts = {g["route"]: g["verdict"] for g in summary["goals"]}
    assert set(verdicts) == {"1 KB", "10 MiB"}, output
    # The run ends with the choice the table makes.
    if set(verdicts.values()) == {"met"}:
        assert "choice: Starlette's StaticFiles" in output
    else:
        assert "choice: the built-in file server" in output
