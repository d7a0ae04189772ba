"""Issue 9, part 7: CLI mistakes that trained silently, were ignored or ended in a traceback.

Each case runs the real ``medfed`` command (``python -m medfed``) and expects one sentence on
stderr and exit code 2 — or, for what is not a mistake, that the run says what it did.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TASK_FILE = Path(__file__).resolve().parents[2] / "examples" / "breast_mlp.py"


def medfed(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medfed", *args], capture_output=True, text=True, timeout=timeout
    )


def _assert_clean_error(
    proc: subprocess.CompletedProcess[str], *needles: str, code: int = 2
) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert "error:" in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


# -- 1. DP settings without --dp ---------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["--target-epsilon", "4"],
        ["--noise-multiplier", "1.1"],
        ["--dp", "none", "--noise-multiplier", "1.1"],
    ],
)
def test_simulate_refuses_dp_settings_without_dp(tmp_path: Path, flags: list[str]) -> None:
    out = tmp_path / "r"
    proc = medfed("simulate", "--rounds", "1", *flags, "--out", str(out))
    _assert_clean_error(proc, "add --dp", flags[-2])
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()  # refused before anything trained


@pytest.mark.parametrize("flag", ["--target-epsilon", "--noise-multiplier"])
def test_job_submit_refuses_dp_settings_without_dp(tmp_path: Path, flag: str) -> None:
    # refused before the kit is read or anything is uploaded
    proc = medfed(
        "job", "submit", str(TASK_FILE), "--kit", str(tmp_path / "kit"), "--data",
        "breast-cancer", flag, "4",
    )  # fmt: skip
    _assert_clean_error(proc, "add --dp", flag)


# -- 2. --data-dir for a bundled data set ------------------------------------------------------


@pytest.mark.parametrize("name", ["breast-cancer", "synthetic-ehr"])
def test_data_dir_for_a_bundled_data_set_is_refused(tmp_path: Path, name: str) -> None:
    out = tmp_path / "r"
    proc = medfed(
        "simulate", "--data", name, "--data-dir", str(tmp_path), "--rounds", "1", "--out", str(out)
    )
    _assert_clean_error(proc, "--data-dir", name, "bundled", "tcga-brca")
    assert not out.exists()


def test_data_dir_in_a_run_file_for_a_bundled_data_set_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'rounds = 1\n[data]\nname = "lung"\ndir = "{tmp_path}"\n')
    proc = medfed("simulate", "--config", str(cfg), "--out", str(tmp_path / "r"))
    _assert_clean_error(proc, "data.dir", "lung")
