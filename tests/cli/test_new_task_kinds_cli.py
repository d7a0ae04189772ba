"""``medfed simulate`` on the regression and segmentation data sets, as a user runs it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.cli.test_errors import medfed


@pytest.mark.integration
def test_simulate_diabetes_prints_rmse_and_mae_per_hospital(tmp_path: Path) -> None:
    out = tmp_path / "diabetes"
    proc = medfed(
        "simulate", "--data", "diabetes", "--rounds", "5", "--local-epochs", "2",
        "--baselines", "--out", str(out), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for site in ("academic-centre", "obesity-clinic", "geriatric-hospital", "young-adult-clinic"):
        assert site in proc.stdout
    assert "RMSE" in proc.stdout and "MAE" in proc.stdout and "lower is better" in proc.stdout
    assert "AUROC" not in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["rmse"] < 77 and summary["final"]["accuracy"] is None
    with open(out / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["phase"] == "evaluate"]
    assert rows and all(float(r["rmse"]) > 0 and r["dice"] == "" for r in rows)
    assert "RMSE fed" in (out / "summary.md").read_text()


@pytest.mark.integration
def test_simulate_synthetic_segmentation_prints_dice(tmp_path: Path) -> None:
    out = tmp_path / "segmentation"
    proc = medfed(
        "simulate", "--data", "synthetic-segmentation", "--option", "image_size=16",
        "--option", "num_images=120", "--rounds", "2", "--optimizer", "adam", "--lr", "0.003",
        "--baselines", "--out", str(out), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "segmentation-site-01" in proc.stdout and "Dice" in proc.stdout
    assert "mean over sites" in proc.stdout and "lower is better" not in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["dice"] is not None and summary["final"]["rmse"] is None
    assert summary["comparison"][0]["pooled"]["dice"] is not None


@pytest.mark.integration
def test_a_bad_segmentation_option_is_a_clean_error(tmp_path: Path) -> None:
    proc = medfed(
        "simulate", "--data", "synthetic-segmentation", "--option", "depth=99",
        "--out", str(tmp_path / "x"),
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "depth must be between 8 and 32" in proc.stderr
