"""A data scientist's own tables, from the command line: files to a simulated federation.

The tables are the bundled breast-cancer hospitals written out as CSV (`medfed data export`),
so the simulation on the files must give the very model the bundled data set gives.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from medfed.cli.main import cli


def medfed(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.integration
def test_files_to_a_simulated_federation_with_baselines_and_a_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    medfed("data", "export", "breast-cancer", "--out", "tables")
    common = ("--rounds", "3", "--seed", "4", "--baselines")
    medfed("simulate", "--data", "tables/data.toml", *common, "--out", "from-files")
    medfed("simulate", "--data", "breast-cancer", *common, "--out", "bundled")
    files = json.loads(Path("from-files/summary.json").read_text())
    bundled = json.loads(Path("bundled/summary.json").read_text())
    assert files["model_sha256"] == bundled["model_sha256"]
    assert [c["site"] for c in files["comparison"]] == [c["site"] for c in bundled["comparison"]]
    assert all(c["local_only"] and c["pooled"] for c in files["comparison"])

    # the run folder names the file by its absolute path: it replays from anywhere
    saved = tomllib.loads(Path("from-files/config.toml").read_text())
    assert saved["data"]["name"] == str(tmp_path / "tables" / "data.toml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    medfed("simulate", "--config", "../from-files/config.toml", "--out", "again")
    again = json.loads(Path("again/summary.json").read_text())
    assert again["model_sha256"] == files["model_sha256"]
    # workers rebuild the sites from the file's absolute path; torch's sums may round
    # differently on another thread count (a worker gets its share of the cores), so the
    # model agrees to rounding, not bit for bit
    medfed(*("simulate", "--config", "../from-files/config.toml", "--out", "pool"),
           *("--backend", "process", "--workers", "2"))  # fmt: skip
    pool = json.loads(Path("pool/summary.json").read_text())
    for name, value in files["final"].items():
        assert pool["final"][name] == pytest.approx(value, abs=1e-3), name


def test_a_bad_table_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x,y\n1,0\n2,1\n")
    (tmp_path / "b.csv").write_text("x\n1\n")
    (tmp_path / "d.toml").write_text(
        'task = "binary"\nlabel = "y"\n[sites.a]\ntrain = "a.csv"\n[sites.b]\ntrain = "b.csv"\n'
    )
    result = CliRunner().invoke(cli, ["simulate", "--data", str(tmp_path / "d.toml")])
    assert result.exit_code == 2, result.output
    assert "b.csv (site b): no column 'y'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.integration
def test_exported_images_to_a_simulated_federation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's tour on images: a bundled imaging set as PNG files, then a federation."""
    monkeypatch.chdir(tmp_path)
    medfed(
        "data", "export", "synthetic-imaging", "--sites", "2",
        "--option", "num_images=80", "--out", "scans",
    )  # fmt: skip
    assert Path("scans/imaging-site-01/labels.csv").is_file()
    medfed("simulate", "--data", "scans/data.toml", "--rounds", "1", "--out", "run")
    summary = json.loads(Path("run/summary.json").read_text())
    assert summary["model_sha256"]


@pytest.mark.integration
def test_segmentation_masks_to_a_simulated_federation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scans and their masks as PNG files (synthetic-segmentation exported), trained by the
    default U-Net: the federation is evaluated by Dice on every site's test masks."""
    monkeypatch.chdir(tmp_path)
    medfed(
        "data", "export", "synthetic-segmentation", "--sites", "2",
        "--option", "num_images=32", "--option", "image_size=16", "--out", "seg",
    )  # fmt: skip
    assert Path("seg/segmentation-site-01/masks/train-00000.png").is_file()
    medfed("simulate", "--data", "seg/data.toml", "--rounds", "1", "--out", "run")
    summary = json.loads(Path("run/summary.json").read_text())
    assert summary["sites"] == ["segmentation-site-01", "segmentation-site-02"]
    assert 0 <= summary["final"]["dice"] <= 1
    assert summary["final"]["num_examples"] == sum(
        len(Path(f"seg/{s}/test.csv").read_text().splitlines()) - 1 for s in summary["sites"]
    )
