"""`medfed data quality` as a user runs it: a real process on a data set file, tables printed,
JSON and Markdown written; a file that cannot give a report is one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.orchestration.test_quality import write_consortium


def _medfed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medfed", *args], capture_output=True, text=True, timeout=300
    )


def test_quality_prints_flags_and_writes_json_and_markdown(tmp_path: Path) -> None:
    path = write_consortium(tmp_path)
    out, md = tmp_path / "quality.json", tmp_path / "quality.md"
    run = _medfed("data", "quality", "--data", str(path), "--json", str(out), "--markdown", str(md))
    assert run.returncode == 0, run.stderr
    assert "Flags" in run.stdout and "site shifted" in run.stdout and "SMD" in run.stdout
    assert "tiny not shown" in run.stdout
    got = json.loads(out.read_text())
    assert {(f["site"], f["feature"], f["check"]) for f in got["flags"]} == {
        ("shifted", "bmi", "smd"), ("shifted", "bmi", "psi"), ("holey", "age", "missing"),
    }  # fmt: skip
    assert "tiny" not in got["sites"] and "tiny" in got["not_shown"]
    assert md.read_text().startswith("# Data quality")


def test_quality_secure_shows_no_site_and_bad_input_is_one_line(tmp_path: Path) -> None:
    path = write_consortium(tmp_path)
    run = _medfed("data", "quality", "--data", str(path), "--secure")
    assert run.returncode == 0, run.stderr
    assert "site shifted" not in run.stdout and "secure aggregation" in run.stdout
    refused = _medfed("data", "quality", "--data", str(tmp_path / "absent.toml"))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "absent.toml" in refused.stderr
    low = _medfed("data", "quality", "--data", str(path), "--max-psi", "-1")
    assert low.returncode != 0 and "Traceback" not in low.stderr and "--max-psi" in low.stderr
