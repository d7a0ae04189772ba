"""The CLI as a user runs it: real processes, real run folders."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medfed.serde import load_params
from tests.cli.test_errors import medfed


@pytest.mark.integration
def test_demo_writes_a_complete_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = medfed("demo", "--rounds", "3", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    for site in ("academic-centre", "community-north", "oncology-clinic", "screening-clinic"):
        assert site in proc.stdout
    assert "mean over sites" in proc.stdout
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "complete" and status["rounds_done"] == 3
    params, meta = load_params(out / "model.safetensors", expected_sha256=status["model_sha256"])
    assert meta["round"] == "3" and params.num_values > 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["round"] for r in rows} == {1, 2, 3}
    assert {r["phase"] for r in rows} == {"train", "evaluate"}
    with open(out / "metrics.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows) and table[0]["site"]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["comparison"]) == 4
    assert "local-only" in (out / "summary.md").read_text()
    assert (out / "config.toml").exists()


@pytest.mark.integration
def test_resolved_config_repeats_the_run(tmp_path: Path) -> None:
    first = tmp_path / "first"
    proc = medfed(
        "simulate",
        "--data",
        "synthetic-ehr",
        "--sites",
        "3",
        "--rounds",
        "2",
        "--seed",
        "5",
        "--out",
        str(first),
    )
    assert proc.returncode == 0, proc.stderr
    again = tmp_path / "again"
    proc = medfed("simulate", "--config", str(first / "config.toml"), "--out", str(again))
    assert proc.returncode == 0, proc.stderr
    sha = [json.loads((d / "status.json").read_text())["model_sha256"] for d in (first, again)]
    assert sha[0] == sha[1]


@pytest.mark.integration
def test_a_private_run_reports_epsilon_every_round_and_in_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "private"
    proc = medfed(
        "simulate",
        "--data",
        "breast-cancer",
        "--rounds",
        "3",
        "--dp",
        "client",
        "--target-epsilon",
        "5",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    with open(out / "metrics.csv") as fh:
        table = [r for r in csv.DictReader(fh) if r["phase"] == "train" and r["site"] == "all"]
    eps = [float(r["epsilon"]) for r in table]
    assert len(eps) == 3 and eps == sorted(eps) and 0 < eps[-1] <= 5.0 + 1e-9
    summary = json.loads((out / "summary.json").read_text())
    assert summary["privacy"]["client_level"]["epsilon"] == pytest.approx(eps[-1], rel=1e-4)
    assert "ε = " in (out / "summary.md").read_text()
    config = (out / "config.toml").read_text()
    assert 'dp = "client"' in config and "secure_aggregation = true" in config


@pytest.mark.integration
def test_ctrl_c_keeps_finished_rounds_and_marks_the_run_incomplete(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medfed",
            "simulate",
            "--data",
            "synthetic-ehr",
            "--sites",
            "4",
            "--option",
            "num_patients=20000",
            "--rounds",
            "500",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell starts a background job with SIGINT ignored, and Python then keeps it so: a
        # test suite run in the background (nohup, CI runners) must not make Ctrl-C a no-op
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status_file = out / "status.json"
            if status_file.exists():
                try:
                    if json.loads(status_file.read_text()).get("rounds_done", 0) >= 2:
                        break
                except json.JSONDecodeError:
                    pass
            time.sleep(0.1)
        else:
            pytest.fail("the run did not finish two rounds in time")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "incomplete"
    done = status["rounds_done"]
    assert 2 <= done < 500
    _, meta = load_params(out / "model.safetensors", expected_sha256=status["model_sha256"])
    assert int(meta["round"]) == done
    rounds = {
        json.loads(line)["round"] for line in (out / "metrics.jsonl").read_text().splitlines()
    }
    assert rounds == set(range(1, done + 1))
    assert "incomplete" in (out / "summary.md").read_text()


def test_help_works_without_heavy_imports() -> None:
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "medfed", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0 and "demo" in proc.stdout and "simulate" in proc.stdout
