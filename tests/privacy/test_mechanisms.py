"""Clipping and Gaussian noise on real Params: bounds, direction, statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfed.privacy.mechanisms import (
    add_gaussian_noise,
    clip_l2,
    distributed_noise_std,
    l2_norm,
)
from medfed.records import Params


def params(rng: np.random.Generator, scale: float = 1.0, dtype: type = np.float32) -> Params:
    return Params(
        {
            "w": (rng.standard_normal((7, 5)) * scale).astype(dtype),
            "b": (rng.standard_normal(5) * scale).astype(dtype),
            "empty": np.zeros((0, 3), dtype),
        }
    )


def test_l2_norm_is_the_norm_of_all_tensors_as_one_vector() -> None:
    p = Params({"a": np.array([3.0], np.float32), "b": np.array([[4.0]], np.float64)})
    assert l2_norm(p) == 5.0
    assert l2_norm(Params()) == 0.0


def test_l2_norm_accumulates_in_float64() -> None:
    # 10⁶ float32 values of 1e-3: a float32 running sum would drift; float64 gives 1.0 exactly.
    p = Params({"x": np.full(1_000_000, 1e-3, np.float32)})
    expected = math.sqrt(1_000_000 * float(np.float32(1e-3)) ** 2)
    assert l2_norm(p) == pytest.approx(expected, rel=1e-12)


def test_clipping_a_zero_update_is_safe() -> None:
    zero = Params({"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)})
    with np.errstate(all="raise"):
        clipped, norm = clip_l2(zero, max_norm=1.0)
    assert norm == 0.0
    assert clipped == zero
    assert all(np.isfinite(v).all() for v in clipped.values())


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e-3, 0.5, 3.0, 1e4])
def test_clip_never_increases_the_norm_and_keeps_the_direction(dtype: type, scale: float) -> None:
    rng = np.random.default_rng(int(scale * 1000) % 2**32)
    p = params(rng, scale, dtype)
    before = l2_norm(p)
    clipped, norm = clip_l2(p, max_norm=1.0)
    after = l2_norm(clipped)
    assert norm == before
    assert after <= min(before, 1.0)  # exact: the bound holds after rounding to the dtype
    if before > 1.0:
        assert after == pytest.approx(1.0, rel=1e-2 if dtype is np.float16 else 1e-5)
        flat = np.concatenate([v.ravel().astype(np.float64) for v in p.values()])
        flat_c = np.concatenate([v.ravel().astype(np.float64) for v in clipped.values()])
        cosine = flat @ flat_c / (np.linalg.norm(flat) * np.linalg.norm(flat_c))
        assert cosine == pytest.approx(1.0, abs=1e-3 if dtype is np.float16 else 1e-6)
        assert [v.dtype for v in clipped.values()] == [v.dtype for v in p.values()]
    else:
        assert clipped is p


def test_clip_refuses_non_finite_and_integer_updates() -> None:
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        clip_l2(Params({"w": np.array([np.nan, 1.0], np.float32)}), max_norm=1.0)
    with pytest.raises(TypeError, match="GroupNorm"):
        clip_l2(Params({"steps": np.array([3], np.int64)}), max_norm=1.0)
    with pytest.raises(ValueError, match="max_norm"):
        clip_l2(Params({"w": np.ones(2, np.float32)}), max_norm=0.0)


def test_gaussian_noise_has_the_asked_std_and_keeps_the_layout() -> None:
    p = Params({"w": np.zeros((200, 250), np.float32), "v": np.zeros(50_000, np.float64)})
    noised = add_gaussian_noise(p, std=0.3, rng=np.random.default_rng(0))
    assert noised.specs == p.specs
    for arr in noised.values():
        assert abs(float(arr.mean())) < 0.01
        assert float(arr.std()) == pytest.approx(0.3, rel=0.01)
    assert np.all(p["w"] == 0)  # the input is not modified


def test_zero_noise_is_a_copy() -> None:
    p = Params({"w": np.ones(3, np.float32)})
    out = add_gaussian_noise(p, std=0.0, rng=np.random.default_rng(0))
    assert out == p and out["w"] is not p["w"]


def test_distributed_noise_sums_to_the_central_std() -> None:
    """t sites each adding N(0, (σC)²/t): the sum has std σC; more sites only add noise."""
    sigma, clip, t = 1.3, 0.7, 5
    per_site = distributed_noise_std(noise_multiplier=sigma, clip=clip, min_sites=t)
    assert per_site == pytest.approx(sigma * clip / math.sqrt(t))
    rng = np.random.default_rng(42)
    zero = Params({"w": np.zeros(100_000, np.float64)})
    total = sum(add_gaussian_noise(zero, std=per_site, rng=rng)["w"] for _ in range(t))
    assert float(np.std(total)) == pytest.approx(sigma * clip, rel=0.01)
    # two sites beyond the threshold: the sum is noisier, never less noisy
    more = total + sum(add_gaussian_noise(zero, std=per_site, rng=rng)["w"] for _ in range(2))
    assert float(np.std(more)) == pytest.approx(sigma * clip * math.sqrt((t + 2) / t), rel=0.01)
    # without secure aggregation every site adds the whole noise
    assert distributed_noise_std(noise_multiplier=sigma, clip=clip, min_sites=1) == sigma * clip
