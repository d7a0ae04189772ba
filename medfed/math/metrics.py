"""Evaluation metrics as pure numpy functions: accuracy, AUROC, concordance index, MAE, RMSE
and Dice."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["accuracy", "auroc", "concordance_index", "dice", "dice_scores", "mae", "rmse"]

FloatArray = npt.NDArray[np.floating]


def accuracy(*, labels: npt.ArrayLike, predicted: npt.ArrayLike) -> float | None:
    """Share of exact matches; None for an empty set."""
    y = np.asarray(labels).reshape(-1)
    p = np.asarray(predicted).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ in length")
    return float(np.mean(y == p)) if y.size else None


def _average_ranks(values: FloatArray) -> FloatArray:
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    # 1-based ranks, ties get the mean of the ranks they span
    boundaries = np.flatnonzero(np.diff(sorted_vals)) + 1
    starts = np.concatenate(([0], boundaries))
    stops = np.concatenate((boundaries, [values.size]))
    mean_rank = (starts + stops + 1) / 2.0
    ranks[order] = np.repeat(mean_rank, stops - starts)
    return ranks


def _binary_auroc(y: npt.NDArray[np.bool_], score: FloatArray) -> float | None:
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(score.astype(np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc(*, labels: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """Area under the ROC curve (Mann–Whitney U, ties counted half).

    ``scores`` is a vector of positive-class scores for binary labels, or an ``(n, k)`` matrix
    of class scores for ``k`` classes (macro one-vs-rest average over the classes present).
    None when a class needed for the comparison is absent.

    >>> auroc(labels=[0, 0, 1, 1], scores=[0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1 or (s.ndim == 2 and s.shape[1] == 1):
        s = s.reshape(-1)
        if s.size != y.size:
            raise ValueError("labels and scores differ in length")
        return _binary_auroc(y.astype(bool), s)
    if s.ndim != 2 or s.shape[0] != y.size:
        raise ValueError("multi-class scores must have shape (n_examples, n_classes)")
    per_class = [_binary_auroc(y == k, s[:, k]) for k in range(s.shape[1])]
    present = [v for v in per_class if v is not None]
    return float(np.mean(present)) if present else None


def concordance_index(
    *, times: npt.ArrayLike, events: npt.ArrayLike, risk: npt.ArrayLike
) -> float | None:
    """Harrell's C-index for survival: how often the higher-risk patient fails first.

    A pair is comparable when the patient with the shorter time had an event. Ties in risk
    count one half. Pairs tied in time are comparable only when exactly one of the two had the
    event (the censored one outlived the other). None when no pair is comparable.

    >>> concordance_index(times=[1, 2, 3], events=[1, 1, 0], risk=[3.0, 2.0, 1.0])
    1.0
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    e = np.asarray(events).reshape(-1).astype(bool)
    r = np.asarray(risk, dtype=np.float64).reshape(-1)
    if not (t.size == e.size == r.size):
        raise ValueError("times, events and risk differ in length")
    concordant = 0.0
    comparable = 0
    idx = np.flatnonzero(e)
    # chunk the rows so memory stays O(chunk × n) on large test sets
    for start in range(0, idx.size, 512):
        rows = idx[start : start + 512]
        ti, ri = t[rows, None], r[rows, None]
        shorter = ti < t[None, :]
        tied_vs_censored = (ti == t[None, :]) & ~e[None, :]
        comp = shorter | tied_vs_censored
        comparable += int(comp.sum())
        concordant += float(((ri > r[None, :]) & comp).sum())
        concordant += 0.5 * float(((ri == r[None, :]) & comp).sum())
    return concordant / comparable if comparable else None


def _errors(targets: npt.ArrayLike, predicted: npt.ArrayLike) -> FloatArray:
    t = np.asarray(targets, dtype=np.float64).reshape(-1)
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"targets {t.shape} and predictions {p.shape} differ in length")
    return p - t


def mae(*, targets: npt.ArrayLike, predicted: npt.ArrayLike) -> float | None:
    """Mean absolute error, in the target's unit; None for an empty set.

    >>> mae(targets=[1.0, 2.0, 4.0], predicted=[2.0, 2.0, 1.0])
    1.3333333333333333
    """
    err = _errors(targets, predicted)
    return float(np.mean(np.abs(err))) if err.size else None


def rmse(*, targets: npt.ArrayLike, predicted: npt.ArrayLike) -> float | None:
    """Root mean squared error, in the target's unit; None for an empty set.

    >>> rmse(targets=[1.0, 2.0, 4.0], predicted=[2.0, 2.0, 1.0])
    1.8257418583505538
    """
    err = _errors(targets, predicted)
    return float(np.sqrt(np.mean(err**2))) if err.size else None


def dice_scores(*, labels: npt.ArrayLike, predicted: npt.ArrayLike, n_classes: int) -> FloatArray:
    """Dice overlap ``2|A∩B| / (|A| + |B|)`` per image and foreground class.

    ``labels`` and ``predicted`` are integer masks of the same shape ``(n, *spatial)``
    with class indices ``0..n_classes-1`` (0 = background). Returns an
    ``(n, n_classes - 1)`` array; an entry is NaN where the class is in neither the truth
    nor the prediction of that image: there is no overlap to measure, and counting it as 1
    would reward a model for the images that have no tumour rather than for finding the
    tumours.

    >>> truth = np.array([[[0, 1, 1, 0]], [[0, 0, 0, 0]]])
    >>> guess = np.array([[[0, 1, 0, 0]], [[0, 0, 0, 0]]])
    >>> dice_scores(labels=truth, predicted=guess, n_classes=2).round(3).tolist()
    [[0.667], [nan]]
    """
    y = np.asarray(labels)
    p = np.asarray(predicted)
    if y.shape != p.shape:
        raise ValueError(f"label masks {y.shape} and predicted masks {p.shape} differ in shape")
    if n_classes < 2:
        raise ValueError(f"segmentation needs background and 1+ classes, not {n_classes}")
    n = y.shape[0] if y.ndim else 0
    y = y.reshape(n, -1)
    p = p.reshape(n, -1)
    out = np.empty((n, n_classes - 1), dtype=np.float64)
    for k in range(1, n_classes):
        truth, guess = y == k, p == k
        overlap = np.count_nonzero(truth & guess, axis=1)
        total = np.count_nonzero(truth, axis=1) + np.count_nonzero(guess, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, k - 1] = np.where(total > 0, 2.0 * overlap / total, np.nan)
    return out


def dice(*, labels: npt.ArrayLike, predicted: npt.ArrayLike, n_classes: int) -> float | None:
    """Mean Dice over images and foreground classes (:func:`dice_scores`, NaNs left out);
    None when no image holds a foreground class in its truth or its prediction.

    An all-background prediction scores 0 on every image with a tumour:

    >>> truth = np.array([[[0, 1, 1, 0]], [[0, 0, 0, 0]]])
    >>> dice(labels=truth, predicted=np.zeros_like(truth), n_classes=2)
    0.0
    >>> dice(labels=truth, predicted=truth, n_classes=2)
    1.0
    """
    scores = dice_scores(labels=labels, predicted=predicted, n_classes=n_classes)
    measured = scores[~np.isnan(scores)]
    return float(measured.mean()) if measured.size else None
