"""benchmarks/privacy_cost.py still runs: its quick pass, in a subprocess, prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.integration
def test_privacy_cost_quick_prints_its_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "privacy_cost.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "breast-cancer:" in out and "synthetic-ehr" not in out, out
    assert "accuracy" in out and "Δ AUROC" in out, out
    labels = [
        "no protection",
        "secure aggregation only",
        "client DP ε=8",
        "client DP ε=4",
        "client DP ε=2",
        "client DP ε=4, adaptive clip",
        "sample DP ε=8",
        "sample DP ε=2",
    ]
    lines = out.splitlines()
    for label in labels:
        assert any(line.startswith(label) for line in lines), (label, out)
    # the accountant's ε is reported (calibrated to the target)
    client8 = next(line for line in lines if line.startswith("client DP ε=8"))
    assert "  8.00  " in client8, client8
    assert "Secure aggregation only vs none, same seed" in out, out
    assert "Secure RNG turned off" not in proc.stderr, proc.stderr[-3000:]
