"""Calibration of a binary classifier: reliability bins and the expected calibration error.

A model is calibrated when, of the patients it gives a probability near ``p``, a share near
``p`` has the outcome. A reliability diagram shows this bin by bin; the expected calibration
error (ECE) sums the gaps, each weighted by its bin's share of patients (Naeini, Cooper and
Hauskrecht, "Obtaining well calibrated probabilities using Bayesian binning", AAAI 2015;
Guo et al., "On calibration of modern neural networks", ICML 2017). Equal-width bins, as
both papers use: the bins mean the same thing at every site, so sites can be compared.

Pure: arrays in, numbers out (no files, no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["ReliabilityBin", "expected_calibration_error", "reliability_bins"]


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin ``[lower, upper)`` (the last one also holds 1.0): how many patients fell in
    it, their mean predicted probability and the share with the outcome (None when empty)."""

    lower: float
    upper: float
    count: int
    mean_predicted: float | None
    observed: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "lower": self.lower,
            "upper": self.upper,
            "count": self.count,
            "mean_predicted": self.mean_predicted,
            "observed": self.observed,
        }


def reliability_bins(
    *,
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike,
    n_bins: int = 10,
) -> list[ReliabilityBin]:
    """``n_bins`` equal-width bins over [0, 1] of predicted probabilities against outcomes.

    >>> [b.count for b in reliability_bins(probabilities=[0.05, 0.15, 0.95, 1.0],
    ...                                    labels=[0, 0, 1, 1], n_bins=2)]
    [2, 2]

    Raises ValueError for probabilities outside [0, 1] (or not finite), labels other than
    0 and 1, arrays of different lengths, or fewer than one bin.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} probabilities but {y.size} labels")
    if not np.all(np.isfinite(p)) or np.any(p < 0.0) or np.any(p > 1.0):
        raise ValueError("probabilities must be finite and within [0, 1]")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    outcome = y.astype(np.float64)
    # p * n_bins, floored; 1.0 goes to the last bin rather than to a bin of its own
    index = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    out = []
    for b in range(n_bins):
        inside = index == b
        count = int(inside.sum())
        out.append(
            ReliabilityBin(
                lower=b / n_bins,
                upper=(b + 1) / n_bins,
                count=count,
                mean_predicted=float(p[inside].mean()) if count else None,
                observed=float(outcome[inside].mean()) if count else None,
            )
        )
    return out


def expected_calibration_error(bins: list[ReliabilityBin]) -> float | None:
    """``Σ count/n · |observed − mean predicted|`` over the bins; None with no patients.

    >>> expected_calibration_error(reliability_bins(probabilities=[0.25, 0.75],
    ...                                             labels=[0, 1], n_bins=2))
    0.25
    """
    total = sum(b.count for b in bins)
    if total == 0:
        return None
    gap = 0.0
    for b in bins:
        if b.count and b.observed is not None and b.mean_predicted is not None:
            gap += b.count * abs(b.observed - b.mean_predicted)
    return gap / total
