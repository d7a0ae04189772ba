"""The benchmark scripts still run: a quick pass of each, in a subprocess, prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.integration
def test_overhead_quick_case_a_prints_its_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "overhead.py"), "--quick", "--cases", "a"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "floor s/round" in out and "medfed s/round" in out, out
    assert "start-up, process launch → end of round 1" in out, out
    rows = [line.split()[0] for line in out.splitlines() if line.split()[:1] in (["a"], ["a/pool"])]
    assert rows == ["a", "a/pool"], out


@pytest.mark.integration
def test_harmonise_prints_a_row_per_case_with_every_arm() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "harmonise.py"), "breast-calibration"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, row = proc.stdout.splitlines()[1:3]
    assert header.split()[2:6] == ["site", "none", "standardise", "combat"], proc.stdout
    values = [float(v) for v in row.split()[2:6]]
    assert row.startswith("breast-calibration") and all(0.5 < v <= 1 for v in values), row
