"""`medfed stats` as a user runs it: a real process, real tables, JSON written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def _medfed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medfed", *args], capture_output=True, text=True, timeout=120
    )


def test_stats_prints_tables_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "stats.json"
    run = _medfed(
        "stats", "--data", "synthetic-ehr", "--option", "standardize=false",
        "--feature", "age", "--feature", "bmi", "--statistic", "count", "--statistic", "mean",
        "--statistic", "variance", "--statistic", "histogram", "--json", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "federation" in run.stdout and "site hospital-01" in run.stdout
    assert "histogram age" in run.stdout
    got = json.loads(out.read_text())
    assert got["features"] == ["age", "bmi"] and got["min_count"] == 10
    from medfed.data import load_dataset

    d = load_dataset("synthetic-ehr", seed=0, options={"standardize": False})
    age = np.concatenate([np.concatenate([s.x_train, s.x_test])[:, 0] for s in d.sites])
    fed = got["federation"]["features"]["age"]
    assert fed["count"] == age.size
    assert abs(fed["mean"] - float(age.astype(np.float64).mean())) < 1e-9
    counts = [c for c in fed["histogram"]["counts"] if c is not None]
    assert all(c == 0 or c >= 10 for c in counts)


def test_stats_secure_has_no_site_rows_and_a_bad_range_is_one_line(tmp_path: Path) -> None:
    run = _medfed("stats", "--data", "breast-cancer", "--feature", "mean radius", "--secure")
    assert run.returncode == 0, run.stderr
    assert "site " not in run.stdout and "secure aggregation" in run.stdout
    bad = _medfed("stats", "--data", "breast-cancer", "--epsilon", "1", "--range", "x=1")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "NAME=LOW:HIGH" in bad.stderr
    need = _medfed("stats", "--data", "breast-cancer", "--feature", "mean radius", "--epsilon", "1")
    assert need.returncode != 0 and "--range" in need.stderr and "Traceback" not in need.stderr
