"""DP mechanisms on model updates: L2 norm, clipping, Gaussian noise, distributed noise.

Client-level DP (DP-FedAvg, McMahan et al. 2018) protects a whole site's contribution in a
round: each site clips its update to L2 norm ``C``, so the *sum* of the updates changes by at
most ``C`` when one site is added or removed; Gaussian noise of std ``σ·C`` on that sum makes
the release ``(ε, δ)``-DP, with ``ε`` from :mod:`medfed.privacy.accounting`. The guarantee is
about the unweighted sum (or a mean with a fixed, public denominator); weighting updates by
each site's private example count changes the sensitivity and is not covered.

Pure numpy; the noise generator is always passed in (see :mod:`medfed.privacy.steps` for
why it must not come from the round's public seed).
"""

from __future__ import annotations

import math

import numpy as np

from medfed.records import Params

__all__ = ["add_gaussian_noise", "clip_l2", "distributed_noise_std", "l2_norm"]


def _check_float(params: Params) -> None:
    for name, arr in params.items():
        if arr.dtype.kind != "f":
            raise TypeError(
                f"tensor {name!r} is {arr.dtype}, but clipping and DP noise need floating-point "
                "tensors; use a model without integer buffers (GroupNorm instead of BatchNorm)"
            )


def l2_norm(params: Params) -> float:
    """The L2 norm of all tensors taken together as one vector, accumulated in float64.

    NaN when any value is NaN, ``inf`` when any is infinite.
    """
    total = 0.0
    for arr in params.values():
        if arr.size == 0:
            continue
        flat = arr.reshape(-1)
        if flat.dtype != np.float64:
            flat = flat.astype(np.float64)
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def clip_l2(params: Params, *, max_norm: float) -> tuple[Params, float]:
    """Scale ``params`` down to L2 norm at most ``max_norm``; returns ``(clipped, norm_before)``.

    An update already within the bound comes back unchanged (the same arrays); a zero update
    is within any bound, so nothing is divided by zero. Scaling keeps the direction. The result
    is checked after rounding to the tensors' dtype, so the bound holds exactly, which the
    sensitivity argument needs. A non-finite update raises :class:`FloatingPointError`: it
    cannot be clipped to any bound.
    """
    if not (math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"max_norm must be a positive finite number, got {max_norm}")
    _check_float(params)
    norm = l2_norm(params)
    if not math.isfinite(norm):
        raise FloatingPointError(
            f"the update's norm is {norm}: it holds NaN or infinite values and cannot be clipped"
        )
    if norm <= max_norm:
        return params, norm
    scale = max_norm / norm
    for _ in range(8):  # float32 rounding may leave the result a hair above the bound
        clipped = Params((k, np.multiply(v, v.dtype.type(scale))) for k, v in params.items())
        after = l2_norm(clipped)
        if after <= max_norm:
            return clipped, norm
        scale *= (max_norm / after) * (1 - 1e-6)
    raise FloatingPointError(f"could not clip an update of norm {norm} to {max_norm}")


def add_gaussian_noise(params: Params, *, std: float, rng: np.random.Generator) -> Params:
    """A copy of ``params`` with independent N(0, std²) noise added to every value.

    Noise is drawn in float32 for float16/float32 tensors and in float64 otherwise.
    ``std = 0`` returns copies without drawing anything.
    """
    if not (math.isfinite(std) and std >= 0):
        raise ValueError(f"std must be a non-negative finite number, got {std}")
    _check_float(params)
    if std == 0:
        return params.copy()
    out = []
    for name, arr in params.items():
        draw_dtype = np.float64 if arr.dtype == np.float64 else np.float32
        noise = rng.standard_normal(arr.shape, dtype=draw_dtype)
        noise *= draw_dtype(std)
        out.append((name, np.add(arr, noise).astype(arr.dtype, copy=False)))
    return Params(out)


def distributed_noise_std(*, noise_multiplier: float, clip: float, min_sites: int) -> float:
    """Std of the noise each site adds so that a sum over ``min_sites`` sites holds σ·C in all.

    Distributed DP: each site adds N(0, (σC)²/t) with ``t = min_sites``, the least number of
    sites whose noise is guaranteed to be in the released sum (for example the secure
    aggregation threshold, counting only sites trusted not to reveal their own noise).
    Gaussians add in variance, so a sum over ``k ≥ t`` sites carries noise of std
    ``σC·√(k/t) ≥ σC``: sites dropping out above the threshold never weaken the guarantee,
    the extra sites only add noise. Without secure aggregation the coordinator sees each
    update alone, and each site must add the full ``σC`` itself (``min_sites=1``).
    """
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be non-negative, got {noise_multiplier}")
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be positive, got {clip}")
    if min_sites < 1:
        raise ValueError(f"min_sites must be at least 1, got {min_sites}")
    return noise_multiplier * clip / math.sqrt(min_sites)
