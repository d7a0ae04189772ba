"""The secure-aggregation docstring examples run; the benchmark still prints its table."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "module", ["medfed.secagg.shamir", "medfed.secagg.graph", "medfed.secagg.config"]
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.slow
@pytest.mark.integration
def test_benchmark_quick_run_prints_its_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "secagg.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] == ["10"]]
    assert len(rows) == 2 and all(r[-2:] == ["exact", "ok"] for r in rows), proc.stdout
