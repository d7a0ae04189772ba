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
