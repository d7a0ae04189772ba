"""`medfed privacy plan` through click's runner: the real command, its numbers and its errors."""

from __future__ import annotations

import math
import re

import pytest
from click.testing import CliRunner

from medfed.cli.main import cli
from medfed.privacy.accounting import epsilon, noise_for_epsilon


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["privacy", "plan", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stdout, result.stderr


def number_after(label: str, text: str) -> float:
    match = re.search(re.escape(label) + r"\s+([0-9.e+-]+)", text)
    assert match, text
    return float(match.group(1))


def test_plan_for_a_target_epsilon() -> None:
    code, out, _ = run(
        "--target-epsilon", "3", "--delta", "1e-5", "--rounds", "100",
        "--sites", "20", "--sites-per-round", "5", "--clip", "0.5",
    )  # fmt: skip
    assert code == 0
    # 5 of 20 sites per round claims no amplification: every round counts at q = 1
    sigma = noise_for_epsilon(target_epsilon=3, delta=1e-5, rounds=100, sample_rate=1.0)
    assert number_after("noise multiplier σ", out) == pytest.approx(sigma, abs=1e-4)
    assert number_after("central noise std σ·C", out) == pytest.approx(0.5 * sigma, rel=1e-3)
    assert number_after("per-site std, no secagg", out) == pytest.approx(0.5 * sigma, rel=1e-3)
    secagg = number_after("per-site std, secagg", out)
    assert secagg == pytest.approx(0.5 * sigma / math.sqrt(5), rel=1e-3)
    for rounds in (25, 50, 75, 100):
        expected = epsilon(noise_multiplier=sigma, sample_rate=1.0, rounds=rounds, delta=1e-5)
        assert re.search(rf"\b{rounds}\s+{expected:.4g}\b", out), out
    assert "no amplification by sampling" in out and "q = 1" in out


def test_the_issues_example_plans_for_a_fixed_number_of_sites_per_round() -> None:
    code, out, err = run(
        "--target-epsilon", "4", "--delta", "1e-5", "--rounds", "50",
        "--sites", "10", "--sites-per-round", "5",
    )  # fmt: skip
    assert code == 0 and err == ""
    sigma = number_after("noise multiplier σ", out)
    assert sigma == pytest.approx(8.1852, abs=1e-4)  # was 4.2561, assuming q = 0.5
    assert epsilon(noise_multiplier=sigma, sample_rate=1.0, rounds=50, delta=1e-5) <= 4 + 1e-3
    assert "sample rate q = 0.5" not in out
    # the printed run spends at most the plan's ε: its σ is rounded up, not down
    match = re.search(r"--noise-multiplier ([0-9.]+) --clip 1 --delta 1e-05 --min-sites 5", out)
    assert match, out
    printed = float(match.group(1))
    assert (
        0
        <= printed - noise_for_epsilon(target_epsilon=4, delta=1e-5, rounds=50, sample_rate=1.0)
        < 1e-6
    )
    assert "--sites 10 --fraction 0.5" in out


def test_plan_for_a_given_noise_multiplier() -> None:
    code, out, _ = run("--noise-multiplier", "1.1", "--rounds", "8", "--sites-per-round", "4")
    assert code == 0
    expected = epsilon(noise_multiplier=1.1, sample_rate=1.0, rounds=8, delta=1e-5)
    assert number_after("ε after all rounds", out) == pytest.approx(expected, rel=1e-3)
    assert number_after("per-site std, secagg", out) == pytest.approx(1.1 / 2, rel=1e-3)


def test_without_sites_the_secagg_share_is_asked_for() -> None:
    code, out, _ = run("--noise-multiplier", "3", "--rounds", "8")
    assert code == 0
    assert "--min-sites" in out  # no threshold known: says how to give one


def test_a_weak_guarantee_warns_but_still_plans() -> None:
    code, out, err = run("--noise-multiplier", "0.8", "--rounds", "50")
    assert code == 0
    assert number_after("ε after all rounds", out) > 10
    assert err.startswith("warning:") and "weak guarantee" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rounds", "10"], "exactly one"),
        (["--rounds", "10", "--target-epsilon", "1", "--noise-multiplier", "1"], "exactly one"),
        (["--rounds", "0", "--target-epsilon", "1"], "rounds must be at least 1"),
        (["--rounds", "10", "--target-epsilon", "1", "--delta", "2"], "delta"),
        (["--rounds", "10", "--target-epsilon", "1", "--sites", "0"], "--sites must be"),
        (["--rounds", "10", "--target-epsilon", "1", "--sites-per-round", "0"], "sites per round"),
        (
            ["--rounds", "10", "--target-epsilon", "1", "--sites", "4", "--sites-per-round", "9"],
            "sites per round",
        ),
        (["--rounds", "10", "--target-epsilon", "1", "--sample-rate", "0.5"], "no amplification"),
        (["--rounds", "10", "--target-epsilon", "1", "--clip", "-1"], "clip"),
        (["--rounds", "10", "--target-epsilon", "1e9"], "smaller target epsilon"),
        (["--rounds", "10", "--target-epsilon", "1e-6"], "raise the target epsilon"),
        (["--rounds", "10", "--noise-multiplier", "0"], "must be positive"),
        (
            ["--rounds", "10", "--target-epsilon", "1", "--sample-rate", "0.5", "--sites", "4"],
            "--sites-per-round instead",
        ),
        (
            [
                *("--rounds", "9", "--target-epsilon", "1", "--sites", "9"),
                *("--sites-per-round", "3", "--min-sites", "4"),
            ],
            "cannot exceed",
        ),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(args: list[str], needle: str) -> None:
    code, out, err = run(*args)
    assert code == 2
    assert "Traceback" not in out + err
    assert err.startswith("error:") and needle in err
    assert err.strip().count("\n") == 0  # one line
