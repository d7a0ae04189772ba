"""How much of a record an attack recovered: similarity of reconstructions to the true records.

An audit knows the true records, so each true record is matched to the attack's candidate
that resembles it most (the attacker does not know which candidate is right: matching with
hindsight gives an upper bound on what the attacker learns, the conservative choice for an
audit). Per record, then the max and mean over records.

What counts as **reconstructed** (the thresholds an audit reports):

- tabular records: the closest candidate (smallest relative error ``‖x̂ − x‖ / ‖x‖``) has
  cosine similarity ≥ :data:`TABULAR_COSINE_THRESHOLD` (0.95: the record's profile) **and**
  relative error ≤ :data:`TABULAR_RELATIVE_ERROR_THRESHOLD` (0.1: its values to within 10 %).
  The second implies the first (it bounds the angle), and it is the one that matters:
  clinical features are correlated, so a mixture of many records can point the way of one
  of them (cosine 0.97 was measured for a row mixing 64 breast-cancer records) while its
  values are far off (relative error 3.4) and identify nobody.
- images: the candidate with the highest peak signal-to-noise ratio (PSNR) has
  PSNR ≥ :data:`IMAGE_PSNR_THRESHOLD_DB` (20 dB: a root-mean-square error of at most 10 % of
  the true image's intensity range, where the anatomy and any lesion are recognisable). A
  flat image at the right mean intensity scores about 14 dB on the synthetic scans. SSIM
  (Wang et al. 2004) of the same candidate is reported beside it.

numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "IMAGE_PSNR_THRESHOLD_DB",
    "TABULAR_COSINE_THRESHOLD",
    "TABULAR_RELATIVE_ERROR_THRESHOLD",
    "Similarity",
    "cosine_matrix",
    "match_images",
    "match_records",
    "psnr",
    "ssim",
]

TABULAR_COSINE_THRESHOLD = 0.95
"""A tabular record counts as reconstructed when its best candidate has cosine ≥ this."""
TABULAR_RELATIVE_ERROR_THRESHOLD = 0.1
"""Relative error ≤ this: the record's values (not only their direction) are recovered."""
IMAGE_PSNR_THRESHOLD_DB = 20.0
"""An image counts as reconstructed when its best candidate has PSNR ≥ this (in dB)."""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Similarity:
    """Per-record similarity of the best candidate, against a threshold.

    ``metric`` is ``"cosine"`` (tabular) or ``"psnr_db"`` (images); ``secondary`` holds the
    same candidates' relative error or SSIM. A record is reconstructed when its ``per_record``
    value is ≥ ``threshold`` and, if ``secondary_max`` is set, its ``secondary`` value is
    ≤ ``secondary_max``; the update **leaks** when at least one record is.
    """

    metric: str
    threshold: float
    per_record: tuple[float, ...]
    secondary_metric: str
    secondary: tuple[float, ...]
    secondary_max: float | None = None

    @property
    def max(self) -> float:
        return max(self.per_record, default=-math.inf)

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_record)) if self.per_record else -math.inf

    @property
    def reconstructed_records(self) -> tuple[bool, ...]:
        """For each record, whether it counts as reconstructed."""
        limit = math.inf if self.secondary_max is None else self.secondary_max
        return tuple(
            v >= self.threshold and w <= limit
            for v, w in zip(self.per_record, self.secondary, strict=True)
        )

    @property
    def reconstructed(self) -> int:
        """How many records reached the threshold(s)."""
        return sum(self.reconstructed_records)

    @property
    def leaks(self) -> bool:
        return self.reconstructed > 0

    def as_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "threshold": self.threshold,
            "secondary_metric": self.secondary_metric,
            "secondary_max": self.secondary_max,
            "max": self.max,
            "mean": self.mean,
            "reconstructed": self.reconstructed,
            "records": len(self.per_record),
            "per_record": list(self.per_record),
            "secondary": list(self.secondary),
        }


def _rows(array: npt.ArrayLike) -> FloatArray:
    a = np.asarray(array, dtype=np.float64)
    return a.reshape(len(a), -1) if a.ndim else a.reshape(1, 1)


def cosine_matrix(*, references: npt.ArrayLike, candidates: npt.ArrayLike) -> FloatArray:
    """``(n_references, n_candidates)`` cosine similarities; 0 where a vector is zero."""
    r, c = _rows(references), _rows(candidates)
    rn = np.linalg.norm(r, axis=1, keepdims=True)
    cn = np.linalg.norm(c, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (r @ c.T) / (rn * cn.T)
    return np.asarray(np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), dtype=np.float64)


def match_records(*, references: npt.ArrayLike, candidates: npt.ArrayLike) -> Similarity:
    """Each true record's closest candidate (smallest relative error): its cosine and error.

    With no candidates every record scores cosine 0 and relative error 1 (nothing recovered).
    Non-finite candidates (a division by a tiny bias) count as recovering nothing.
    """
    r = _rows(references)
    c = _rows(candidates) if np.size(candidates) else np.zeros((0, r.shape[1]))
    c = c[np.isfinite(c).all(axis=1)]
    if len(c) == 0:
        return Similarity(
            "cosine",
            TABULAR_COSINE_THRESHOLD,
            tuple(0.0 for _ in r),
            "relative_error",
            tuple(1.0 for _ in r),
            TABULAR_RELATIVE_ERROR_THRESHOLD,
        )
    norms = np.maximum(np.linalg.norm(r, axis=1), np.finfo(np.float64).tiny)
    distance = np.linalg.norm(r[:, None, :] - c[None, :, :], axis=2) / norms[:, None]
    best = distance.argmin(axis=1)
    rows = np.arange(len(r))
    cos = cosine_matrix(references=r, candidates=c)[rows, best]
    return Similarity(
        "cosine",
        TABULAR_COSINE_THRESHOLD,
        tuple(float(v) for v in cos),
        "relative_error",
        tuple(float(v) for v in distance[rows, best]),
        TABULAR_RELATIVE_ERROR_THRESHOLD,
    )


def _data_range(reference: FloatArray, data_range: float | None) -> float:
    if data_range is not None:
        return float(data_range)
    span = float(reference.max() - reference.min())
    return span if span > 0 else 1.0


def psnr(
    *, reconstruction: npt.ArrayLike, reference: npt.ArrayLike, data_range: float | None = None
) -> float:
    """Peak signal-to-noise ratio in dB: ``10·log10(range² / MSE)``.

    ``data_range`` defaults to the reference's own max − min. An exact copy gives ``inf``.

    >>> round(psnr(reconstruction=[0.0, 0.5, 1.1], reference=[0.0, 0.5, 1.0]), 2)
    24.77
    """
    ref = np.asarray(reference, dtype=np.float64)
    rec = np.asarray(reconstruction, dtype=np.float64)
    if ref.shape != rec.shape:
        raise ValueError(f"shapes differ: reconstruction {rec.shape}, reference {ref.shape}")
    mse = float(np.mean((rec - ref) ** 2))
    if not math.isfinite(mse):
        return -math.inf
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(_data_range(ref, data_range) ** 2 / mse)


def _gaussian_window(size: int, sigma: float) -> FloatArray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-0.5 * (ax / sigma) ** 2)
    w = np.outer(g, g)
    return np.asarray(w / w.sum(), dtype=np.float64)


def _filter(image: FloatArray, window: FloatArray) -> FloatArray:
    k = window.shape[0]
    views = np.lib.stride_tricks.sliding_window_view(image, (k, k), axis=(-2, -1))
    return np.asarray(np.tensordot(views, window, axes=([-2, -1], [0, 1])), dtype=np.float64)


def ssim(
    *, reconstruction: npt.ArrayLike, reference: npt.ArrayLike, data_range: float | None = None
) -> float:
    """Structural similarity (Wang et al. 2004): Gaussian window σ = 1.5 (11 px, fewer for
    small images), K1 = 0.01, K2 = 0.03; averaged over the valid windows and the channels.

    Images are ``(height, width)`` or ``(channels, height, width)``; 1 means identical.
    """
    ref = np.asarray(reference, dtype=np.float64)
    rec = np.asarray(reconstruction, dtype=np.float64)
    if ref.shape != rec.shape or ref.ndim not in (2, 3):
        raise ValueError(f"ssim takes two equal 2-D or 3-D images, got {rec.shape}, {ref.shape}")
    if not np.isfinite(rec).all():
        return 0.0
    size = min(11, ref.shape[-1], ref.shape[-2])
    size -= 1 - size % 2  # odd
    window = _gaussian_window(size, 1.5)
    c1 = (0.01 * _data_range(ref, data_range)) ** 2
    c2 = (0.03 * _data_range(ref, data_range)) ** 2
    mu_x, mu_y = _filter(rec, window), _filter(ref, window)
    var_x = _filter(rec * rec, window) - mu_x**2
    var_y = _filter(ref * ref, window) - mu_y**2
    cov = _filter(rec * ref, window) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float(np.mean(num / den))


def match_images(*, references: npt.ArrayLike, candidates: npt.ArrayLike) -> Similarity:
    """Each true image's best candidate by PSNR, and that candidate's SSIM.

    ``references`` and ``candidates`` are stacks ``(n, [channels,] height, width)``.
    """
    refs = np.asarray(references, dtype=np.float64)
    cands = np.asarray(candidates, dtype=np.float64)
    if len(cands) == 0:
        raise ValueError("match_images needs at least one candidate image")
    if refs.shape[1:] != cands.shape[1:]:
        raise ValueError(f"image shapes differ: {refs.shape[1:]} and {cands.shape[1:]}")
    scores, structure = [], []
    for ref in refs:
        values = [psnr(reconstruction=c, reference=ref) for c in cands]
        best = int(np.argmax(values))
        scores.append(values[best])
        structure.append(ssim(reconstruction=cands[best], reference=ref))
    return Similarity("psnr_db", IMAGE_PSNR_THRESHOLD_DB, tuple(scores), "ssim", tuple(structure))
