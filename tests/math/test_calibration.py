"""Reliability bins and the ECE, on numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medfed.math.calibration import expected_calibration_error, reliability_bins


def test_bins_count_average_and_observe_by_hand() -> None:
    p = [0.05, 0.15, 0.12, 0.55, 0.95, 1.0, 0.3]
    y = [0, 0, 1, 1, 1, 1, 0]
    bins = reliability_bins(probabilities=p, labels=y, n_bins=10)
    assert [b.count for b in bins] == [1, 2, 0, 1, 0, 1, 0, 0, 0, 2]
    assert bins[1].mean_predicted == pytest.approx(0.135)
    assert bins[1].observed == 0.5
    assert bins[2].mean_predicted is None and bins[2].observed is None
    assert bins[9].lower == 0.9 and bins[9].upper == 1.0  # 1.0 falls in the last bin
    assert bins[9].mean_predicted == pytest.approx(0.975) and bins[9].observed == 1.0
    assert bins[3].count == 1  # 0.3 is the lower edge of [0.3, 0.4)
    # ECE = (1·0.05 + 2·|0.5−0.135| + 1·0.3 + 1·0.45 + 2·0.025) / 7
    expected = (0.05 + 2 * 0.365 + 0.3 + 0.45 + 2 * 0.025) / 7
    assert expected_calibration_error(bins) == pytest.approx(expected)


def test_a_perfectly_calibrated_model_has_zero_ece() -> None:
    p = np.array([0.25] * 4 + [0.75] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    bins = reliability_bins(probabilities=p, labels=y, n_bins=4)
    assert [b.count for b in bins] == [0, 4, 0, 4]
    assert expected_calibration_error(bins) == 0.0


def test_no_patients_gives_empty_bins_and_no_ece() -> None:
    bins = reliability_bins(probabilities=[], labels=[], n_bins=10)
    assert len(bins) == 10 and all(b.count == 0 for b in bins)
    assert expected_calibration_error(bins) is None


@pytest.mark.parametrize(
    ("p", "y", "match"),
    [
        ([0.2, 1.2], [0, 1], "within"),
        ([0.2, float("nan")], [0, 1], "finite"),
        ([0.2, 0.3], [0, 2], "0 or 1"),
        ([0.2], [0, 1], "labels"),
    ],
)
def test_bad_inputs_are_refused(p: list[float], y: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        reliability_bins(probabilities=p, labels=y)


def test_at_least_one_bin() -> None:
    with pytest.raises(ValueError, match="n_bins"):
        reliability_bins(probabilities=[0.5], labels=[1], n_bins=0)


def test_docstring_examples_hold() -> None:
    import doctest

    import medfed.math.calibration as module

    result = doctest.testmod(module)
    assert result.attempted == 2 and result.failed == 0
