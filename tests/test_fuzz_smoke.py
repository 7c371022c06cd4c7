"""The datagram fuzzer runs end to end in its quick form (``stress/fuzz.py
--quick``): a few thousand mutated datagrams of every kind at a live server
while a transfer runs, and every check holds."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

#: Starts a server and a client as subprocesses: not in the default run
#: (``pytest -m bench``).
pytestmark = pytest.mark.bench

FUZZ = pathlib.Path(__file__).resolve().parent.parent / "stress" / "fuzz.py"


def test_fuzz_quick(tmp_path: pathlib.Path) -> None:
    summary_path = tmp_path / "fuzz.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(FUZZ),
            "--quick",
            "--seed",
            "1",
            "--json",
            str(summary_path),
            "--dump-dir",
            str(tmp_path / "dumps"),
        ],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    summary = json.loads(summary_path.read_text())
    assert summary["ok"] and summary["findings"] == [], output
    datagrams = summary["datagrams"]
    assert datagrams["sent"] >= datagrams["target"] == 5_000, output
    # Every kind was sent, the sealed ones included (they need live keys).
    assert set(datagrams["by_kind"]) == set(datagrams["kinds"]), datagrams
    transfers = summary["transfers"]
    assert transfers["failed"] == 0 and transfers["ok_during_fuzz"] > 0, output
    memory = summary["memory"]
    assert memory["quiet"]["tasks"] == memory["idle"]["tasks"], memory
    assert memory["quiet"]["connections"] == 0, memory
    assert "no findings" in completed.stdout
