"""``medfed report`` and the report ``medfed simulate`` writes, on real small runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_errors import _assert_clean_error, medfed
from tests.reporting.test_html_report import Page, assert_self_contained, make_run

_SIMULATE = (sys.executable, "-m", "medfed", "simulate", "--data", "breast-cancer")
_SIMULATE += ("--rounds", "2", "--baselines")


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two seeds of the bundled breast-cancer federation, with baselines (run side by side)."""
    root = tmp_path_factory.mktemp("seeds")
    runs = [root / f"seed-{s}" for s in (1, 2)]
    procs = [
        subprocess.Popen(
            [*_SIMULATE, "--seed", str(seed), "--out", str(run)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed, run in zip((1, 2), runs, strict=True)
    ]
    for proc, run in zip(procs, runs, strict=True):
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        lines = [line for line in stdout.splitlines() if line.startswith("report: ")]
        assert lines == [f"report: {run / 'report.html'}"]  # one line, the page's path
    return runs


@pytest.mark.integration
def test_simulate_writes_calibration_and_a_self_contained_report(seeds: list[Path]) -> None:
    run = seeds[0]
    calibration = json.loads((run / "calibration.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    for c in summary["comparison"]:
        bins = calibration["sites"][c["site"]]["bins"]
        assert len(bins) == 10 and sum(b["count"] for b in bins) == c["num_test"]
    page = Page((run / "report.html").read_text())
    assert {"curves", "comparison", "worst-site", "calibration", "participation"} <= set(
        page.sections
    )
    assert_self_contained(page)
    assert len(page.images) == 4  # curves, comparison, reliability diagrams, timeline
    worst = min(summary["final_per_site"], key=lambda s: summary["final_per_site"][s]["accuracy"])
    assert f"Worst site: {worst}" in page.sections["worst-site"]
    assert "local-only" in page.sections["comparison"]
    assert "Not recorded" in page.sections["traffic"]


@pytest.mark.integration
def test_report_across_seeds_shows_intervals(seeds: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "seeds.html"
    proc = medfed("report", *map(str, seeds), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"report: {out}"
    page = Page(out.read_text())
    assert_self_contained(page)
    assert "(n=2)" in page.sections["comparison"] and "n = 2 runs" in page.sections["comparison"]
    assert "mean of 2 runs" in page.sections["worst-site"]
    assert "pooled over n = 2 runs" in page.sections["calibration"]


@pytest.mark.integration
def test_report_refusals_are_clean(seeds: list[Path], tmp_path: Path) -> None:
    _assert_clean_error(medfed("report", str(tmp_path)), "not a run folder")
    _assert_clean_error(medfed("report", str(tmp_path / "nothing")), "not a folder")
    other = make_run(tmp_path / "diabetes", data="diabetes", metric="rmse")
    _assert_clean_error(medfed("report", str(seeds[0]), str(other)), "diabetes", "breast-cancer")
    assert not (tmp_path / "report.html").exists()


@pytest.mark.integration
def test_an_incomplete_run_is_reported_as_such(seeds: list[Path], tmp_path: Path) -> None:
    run = tmp_path / "cut"
    shutil.copytree(seeds[1], run)
    (run / "summary.json").unlink()
    (run / "report.html").unlink()
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "status": "running"}))
    proc = medfed("report", str(run))
    assert proc.returncode == 0, proc.stderr
    text = (run / "report.html").read_text()
    assert "is incomplete" in text and "no summary.json" in text
    assert_self_contained(Page(text))
