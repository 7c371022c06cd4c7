"""The soak runs end to end in its quick form (``stress/soak.py --quick``): every
workload does work, no request is lost, memory and tasks level off."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

#: Starts a server, a lossy hop and a load as subprocesses: not in the default
#: run (``pytest -m bench``).
pytestmark = pytest.mark.bench

SOAK = pathlib.Path(__file__).resolve().parent.parent / "stress" / "soak.py"


def test_soak_quick(tmp_path: pathlib.Path) -> None:
    summary_path = tmp_path / "soak.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            "--quick",
            "--json",
            str(summary_path),
        ],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    summary = json.loads(summary_path.read_text())
    assert summary["ok"], output
    requests = summary["requests"]
    assert requests["ok"] > 100, output
    assert requests["errors"] == 0 and requests["timeouts"] == 0, output
    for name in ("mixed", "bulk", "datagrams", "churn", "rebind"):
        workload = summary["workloads"][name]
        assert workload["ok"] > 0 and workload["failed"] == 0, (name, output)
    assert summary["workloads"]["rebind"]["operations"]["rebind"]["ok"] > 0
    assert summary["datagrams"]["echoed"] > 0
    assert all(c["ok"] for c in summary["checks"]), summary["checks"]
    assert "soak passed" in completed.stdout
