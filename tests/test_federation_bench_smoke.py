"""The network federation benchmark still runs: its smallest case, quick, prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.integration
def test_federation_quick_case_c_prints_its_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "federation.py"), "--quick", "--cases", "c"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    header = out.splitlines()
    assert any(line.split()[:4] == ["case", "what", "measured", "floor"] for line in header), out
    rows = [line.split()[0] for line in header if line.split()[:1] == ["c"]]
    assert rows == ["c"], out
    assert "rounds/minute" in out, out
