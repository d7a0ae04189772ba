"""A simulation's run folder holds the data-quality report across its sites."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from medfed.cli.main import cli
from medfed.orchestration.quality import QualityReport
from tests.orchestration.test_quality import write_consortium


def _simulate(*args: str) -> None:
    result = CliRunner().invoke(cli, ["simulate", "--rounds", "1", *args])
    assert result.exit_code == 0, result.output


def test_the_run_folder_has_the_report_and_the_summary_its_flags(tmp_path: Path) -> None:
    data = write_consortium(tmp_path)
    _simulate("--data", str(data), "--out", str(tmp_path / "run"))
    report = QualityReport.from_json(json.loads((tmp_path / "run" / "quality.json").read_text()))
    assert any(
        f.site == "holey" and f.feature == "age" and f.check.startswith("missing")
        for f in report.flags
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data_quality"]["file"] == "quality.json"
    assert len(summary["data_quality"]["flags"]) == len(report.flags) > 0
    markdown = (tmp_path / "run" / "summary.md").read_text()
    assert "## Data quality" in markdown and "holey" in markdown
    assert "tiny" not in report.sites  # below the minimum count: never shown


def test_images_say_why_there_is_no_report_and_it_can_be_turned_off(tmp_path: Path) -> None:
    _simulate("--data", "synthetic-imaging", "--out", str(tmp_path / "img"))
    assert not (tmp_path / "img" / "quality.json").exists()
    summary = json.loads((tmp_path / "img" / "summary.json").read_text())
    assert "tables of features" in summary["data_quality"]["note"]
    (tmp_path / "off.toml").write_text("[evaluation]\nquality = false\n")
    _simulate("--config", str(tmp_path / "off.toml"), "--out", str(tmp_path / "off"))
    assert not (tmp_path / "off" / "quality.json").exists()
    assert "data_quality" not in json.loads((tmp_path / "off" / "summary.json").read_text())
