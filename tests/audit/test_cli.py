"""``medfed audit leakage`` and ``medfed audit membership`` through the real CLI group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from medfed.cli.main import cli


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["audit", *args], env={"COLUMNS": "120"})


def test_leakage_passes_by_default_and_writes_json(tmp_path: Path) -> None:
    path = tmp_path / "leakage.json"
    result = run("leakage", "--json", str(path))
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout
    for name in ("raw", "secagg-only", "protected", "cos≥0.95"):
        assert name in result.stdout
    data = json.loads(path.read_text())
    assert data["verdict"] == "pass"
    assert data["scenarios"][0]["reconstructed"] == 1


def test_a_leaking_protection_exits_1_only_with_fail_on_leak() -> None:
    weak = ("leakage", "--noise-multiplier", "0", "--no-secagg")
    result = run(*weak)
    assert result.exit_code == 0, result.output
    assert "FAIL" in result.stdout
    result = run(*weak, "--fail-on-leak")
    assert result.exit_code == 1
    assert "Traceback" not in result.output


def test_membership_runs_and_writes_json(tmp_path: Path) -> None:
    path = tmp_path / "membership.json"
    result = run("membership", "--members", "200", "--epochs", "3", "--json", str(path))
    assert result.exit_code == 0, result.output
    assert "ε" in result.stdout and "with-dp" in result.stdout
    data = json.loads(path.read_text())
    assert data["audit"] == "membership"
    assert [r["name"] for r in data["results"]] == ["without-dp", "with-dp"]
    assert data["results"][1]["epsilon"] > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["leakage", "--sites", "0"], "--sites"),
        (["leakage", "--task", "imaging", "--batch-size", "8"], "--batch-size"),
        (["leakage", "--clip", "-1"], "--clip"),
        (["leakage", "--json", "/nonexistent-folder/x.json"], "does not exist"),
        (["membership", "--noise-multiplier", "0"], "--noise-multiplier"),
        (["membership", "--epochs", "0"], "--epochs"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(args: list[str], needle: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr and needle in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args", [["leakage", "--task", "genomics"], ["membership", "--data", "lung"]]
)
def test_unknown_choices_are_usage_errors(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_help_states_the_thresholds() -> None:
    leakage = run("leakage", "--help")
    assert leakage.exit_code == 0
    assert ">= 0.95" in leakage.stdout and "<= 0.1" in leakage.stdout
    assert "20 dB" in leakage.stdout and "INCONCLUSIVE" in leakage.stdout
    membership = run("membership", "--help")
    assert ">= 0.55" in membership.stdout
