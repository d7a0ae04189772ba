"""Adaptive clipping (Andrew et al. 2021): the noise split, and the clip finding its quantile."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest

from medfed.errors import ConfigError
from medfed.privacy.adaptive_clip import (
    AdaptiveClip,
    default_count_noise_std,
    update_noise_multiplier,
)


def test_the_split_keeps_the_configured_noise_multiplier() -> None:
    """Gaussian(σ_Δ) on the update composed with Gaussian(2σ_b) on the centred bits is,
    by dp_accounting, exactly as private as one Gaussian(σ)."""
    sigma, count_std = 1.1, 2.5
    sigma_update = update_noise_multiplier(noise_multiplier=sigma, count_noise_std=count_std)
    assert sigma_update == pytest.approx((sigma**-2 - (2 * count_std) ** -2) ** -0.5)
    assert sigma_update > sigma
    pair = dp_accounting.rdp.RdpAccountant()
    pair.compose(
        dp_accounting.ComposedDpEvent(
            [
                dp_accounting.GaussianDpEvent(sigma_update),
                dp_accounting.GaussianDpEvent(2 * count_std),
            ]
        ),
        50,
    )
    single = dp_accounting.rdp.RdpAccountant()
    single.compose(dp_accounting.GaussianDpEvent(sigma), 50)
    assert pair.get_epsilon(1e-5) == pytest.approx(single.get_epsilon(1e-5), rel=1e-9)


def test_too_little_count_noise_is_refused() -> None:
    with pytest.raises(ConfigError, match="clip_count_stddev"):
        update_noise_multiplier(noise_multiplier=2.0, count_noise_std=1.0)


def test_default_count_noise_follows_the_paper_with_a_floor() -> None:
    assert default_count_noise_std(expected_sites=200, noise_multiplier=1.0) == 10.0  # m/20
    assert default_count_noise_std(expected_sites=5, noise_multiplier=1.0) == 1.0  # floor σ
    # with the floor the update's noise grows by at most 15.5 %
    grown = update_noise_multiplier(noise_multiplier=1.0, count_noise_std=1.0)
    assert grown == pytest.approx(2 / np.sqrt(3))


def test_a_round_moves_the_clip_geometrically() -> None:
    ac = AdaptiveClip(clip=2.0, target_quantile=0.5, learning_rate=0.2)
    assert ac.update(bits_sum=10, n=10) == pytest.approx(2.0 * np.exp(-0.2 * 0.5))
    assert ac.update(bits_sum=0, n=10) == pytest.approx(2.0)  # and back up


@pytest.mark.parametrize("quantile", [0.5, 0.9])
def test_the_clip_finds_the_target_quantile_of_noisy_norms(quantile: float) -> None:
    """Update norms ~ 3·LogNormal(0, 0.5) from 100 sites a round, bits noised as in the paper
    (σ_b = m/20 on the sum of centred bits): from a clip 30× too small, the clip settles
    near the norms' quantile."""
    rng = np.random.default_rng(7)
    m, count_std = 100, 5.0
    ac = AdaptiveClip(clip=0.1, target_quantile=quantile, learning_rate=0.2)
    tail = []
    for round_ in range(400):
        norms = 3.0 * rng.lognormal(0.0, 0.5, size=m)
        centred = np.sum((norms <= ac.clip).astype(float) - 0.5) + rng.normal(0.0, count_std)
        ac.update(bits_sum=centred + m / 2, n=m)
        if round_ >= 300:
            tail.append(ac.clip)
    truth = 3.0 * np.exp(0.5 * {0.5: 0.0, 0.9: 1.2815515655446004}[quantile])
    assert float(np.mean(tail)) == pytest.approx(truth, rel=0.1)


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="quantile"):
        AdaptiveClip(clip=1.0, target_quantile=1.0)
    with pytest.raises(ConfigError, match="clip norm"):
        AdaptiveClip(clip=0.0)
