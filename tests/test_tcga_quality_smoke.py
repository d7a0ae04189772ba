"""benchmarks/tcga_quality.py still runs: a quick pass prints its tables; no data, a clean skip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "tcga_quality.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.data
def test_quick_run_prints_the_tables(tcga_dir: Path) -> None:
    proc = _run("--quick", "--data-dir", str(tcga_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    lines = out.splitlines()
    header = next((line for line in lines if line.startswith("arm ")), None)
    assert header is not None, out
    assert "median" in header and "min–max over seeds" in header and "FLamby" in header, out
    arms = {line.split("  ")[0] for line in lines if line.startswith(("FedAvg", "pooled", "local"))}
    assert {"FedAvg (federated)", "pooled", "local-only, own region (mean of 6)"} <= arms, out
    regions = [line.split()[0] for line in lines if line.startswith("region-")]
    assert regions == [f"region-{k}" for k in range(6)], out
    assert "warning" not in proc.stderr, proc.stderr  # the retrained local models match


@pytest.mark.slow
@pytest.mark.integration
def test_absent_data_is_a_skip_not_a_failure(tmp_path: Path) -> None:
    proc = _run("--data-dir", str(tmp_path / "absent"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("\n") == 1 and "skipped" in proc.stdout, proc.stdout
