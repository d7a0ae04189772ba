"""Clip and noise as update-pipeline steps: order, what they record, where the noise comes from."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfed.messages import RoundSettings
from medfed.privacy.config import PrivacyConfig
from medfed.privacy.mechanisms import l2_norm
from medfed.privacy.steps import ClipStep, NoiseStep, client_dp_steps
from medfed.records import Instruction, Operation, Params, Update
from medfed.site.pipeline import run_pipeline


def instruction(seed: int = 123, clip_norm: float | None = None) -> Instruction:
    settings = RoundSettings(clip_norm=clip_norm)
    return Instruction(Operation.TRAIN, 1, Params(), seed=seed, settings=settings)


def update(norm: float, size: int = 1000) -> Update:
    v = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    v *= np.float32(norm / np.linalg.norm(v))
    return Update(Params({"w": v}), num_examples=10)


def test_clip_step_records_norm_bound_and_bit() -> None:
    step = ClipStep(1.0)
    out = step(update(3.0), instruction())
    assert l2_norm(out.delta) <= 1.0
    assert step.last_norm == pytest.approx(3.0, rel=1e-5)
    assert (step.last_clip, step.last_bit) == (1.0, 0)
    small = update(0.5)
    assert step(small, instruction()) is small  # nothing to clip: unchanged
    assert step.last_bit == 1


def test_noise_does_not_come_from_the_coordinators_seed() -> None:
    """Same instruction (same public seed) → different noise; the coordinator cannot replay it."""
    ins = instruction(seed=7)
    zero = Update(Params({"w": np.zeros(500, np.float32)}), 1)
    a = NoiseStep(1.0)(zero, ins).delta["w"]
    b = NoiseStep(1.0)(zero, ins).delta["w"]
    assert not np.array_equal(a, b)
    replay = np.random.default_rng(ins.seed).standard_normal(500).astype(np.float32)
    assert not np.allclose(a, replay)
    # an explicit generator (tests only) makes it reproducible
    c = NoiseStep(1.0, rng=np.random.default_rng(5))(zero, ins).delta["w"]
    d = NoiseStep(1.0, rng=np.random.default_rng(5))(zero, ins).delta["w"]
    assert np.array_equal(c, d)


def test_relative_noise_follows_the_rounds_clip() -> None:
    clip = ClipStep(1.0, adaptive=True)
    noise = NoiseStep.relative_to(clip, multiplier=0.5, rng=np.random.default_rng(0))
    run_pipeline(update(9.0, 50_000), instruction(clip_norm=4.0), [clip, noise])
    assert clip.last_clip == 4.0 and noise.last_std == 2.0
    run_pipeline(update(9.0), instruction(), [clip, noise])  # no key: the configured bound
    assert clip.last_clip == 1.0 and noise.last_std == 0.5


def test_relative_noise_refuses_to_run_without_its_clip_step() -> None:
    clip = ClipStep(1.0)
    noise = NoiseStep.relative_to(clip, multiplier=1.0)
    with pytest.raises(RuntimeError, match="after its ClipStep"):
        noise(update(1.0), instruction())


def test_a_non_adaptive_clip_ignores_the_coordinators_bound() -> None:
    clip = ClipStep(1.0)
    clip(update(5.0), instruction(clip_norm=100.0))
    assert clip.last_clip == 1.0


def test_client_steps_split_the_noise_under_secure_aggregation() -> None:
    cfg = PrivacyConfig(dp="client", clip_norm=0.5)
    dp = client_dp_steps(cfg, noise_multiplier=2.0, min_sites=4, rng=np.random.default_rng(1))
    out = run_pipeline(update(3.0, 200_000), instruction(), dp.steps)
    assert dp.noise.last_std == pytest.approx(2.0 * 0.5 / math.sqrt(4))
    # the clipped signal has norm 0.5 over 200 000 values; the rest is noise of that std
    assert float(np.std(out.delta["w"])) == pytest.approx(0.5, rel=0.01)
    plain = client_dp_steps(
        PrivacyConfig(dp="client", clip_norm=0.5, secure_aggregation=False),
        noise_multiplier=2.0,
        min_sites=4,
    )
    run_pipeline(update(3.0), instruction(), plain.steps)
    assert plain.noise.last_std == pytest.approx(1.0)


def test_adaptive_client_steps_raise_the_update_noise_and_noise_the_bit() -> None:
    cfg = PrivacyConfig(dp="client", adaptive_clip=True)
    dp = client_dp_steps(cfg, noise_multiplier=1.0, min_sites=1, expected_sites=5)
    run_pipeline(update(0.3), instruction(), dp.steps)
    assert dp.noise.last_std == pytest.approx(2 / math.sqrt(3))  # σ_b = max(5/20, σ) = 1
    assert dp.bit_noise_std == 1.0
    bits = [dp.noised_centered_bit() for _ in range(4000)]
    assert float(np.mean(bits)) == pytest.approx(0.5, abs=0.05)  # bit 1, centred: ½
    assert float(np.std(bits)) == pytest.approx(1.0, rel=0.05)
