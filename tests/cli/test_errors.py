"""User mistakes end in one sentence and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def medfed(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medfed", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def _assert_clean_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "error:" in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_unknown_dataset(tmp_path: Path) -> None:
    proc = medfed("simulate", "--data", "breast-cancr", "--out", str(tmp_path / "r"))
    _assert_clean_error(proc, "breast-cancer")


def test_task_that_does_not_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad_task.py"
    bad.write_text("import numpy as np\nthis is not python\n")
    proc = medfed(
        "simulate", "--task", f"{bad}:task", "--rounds", "1", "--out", str(tmp_path / "r")
    )
    _assert_clean_error(proc, "bad_task.py")


def test_missing_task_file(tmp_path: Path) -> None:
    proc = medfed("simulate", "--task", "nowhere/task.py:task", "--out", str(tmp_path / "r"))
    _assert_clean_error(proc, "nowhere/task.py")


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--rounds", "0"], "rounds"),
        (["--fraction", "1.5"], "fraction"),
        (["--lr", "-1"], "learning_rate"),
        (["--sites", "0"], "sites"),
        (["--min-sites", "9", "--sites", "4"], "min_sites"),
    ],
)
def test_out_of_range_values(tmp_path: Path, flags: list[str], needle: str) -> None:
    proc = medfed("simulate", *flags, "--out", str(tmp_path / "r"))
    _assert_clean_error(proc, needle)


def test_bad_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text("rounds = 3\n[train]\nbatch_sise = 4\n")
    _assert_clean_error(medfed("simulate", "--config", str(cfg)), "batch_size")
    cfg.write_text("rounds = = 3\n")
    _assert_clean_error(medfed("simulate", "--config", str(cfg)), "not valid TOML")
    _assert_clean_error(
        medfed("simulate", "--config", str(tmp_path / "none.toml")), "does not exist"
    )


def test_existing_run_is_not_overwritten_silently(tmp_path: Path) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "status.json").write_text("{}")
    proc = medfed("simulate", "--rounds", "1", "--out", str(out))
    _assert_clean_error(proc, "--overwrite")
