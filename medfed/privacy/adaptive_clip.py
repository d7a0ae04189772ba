"""Adaptive clipping: the clip norm follows a quantile of the sites' update norms.

Andrew, Thakkar, McMahan, Ramaswamy, "Differentially Private Learning with Adaptive
Clipping", NeurIPS 2021. Each round every site reports one bit, ``b = 1`` when its update's
norm was within the clip ``C`` (:attr:`medfed.privacy.steps.ClipStep.last_bit`). The server
estimates the fraction of unclipped updates ``b̄`` from the noised sum of the bits and
moves ``C`` geometrically towards the target quantile ``γ``::

    C ← C · exp(−η · (b̄ − γ))

(too many updates inside the clip, ``b̄ > γ``: the clip shrinks; too few: it grows).

Privacy. The bits are a second Gaussian query. Sites contribute centred bits ``b − ½``, so
adding or removing one site moves their sum by ½; with noise ``N(0, σ_b²)`` on that sum the
bit query has noise multiplier ``2σ_b``. Composing it with the update's query of noise
multiplier ``σ_Δ`` gives a Gaussian mechanism of multiplier ``σ`` with
``σ⁻² = σ_Δ⁻² + (2σ_b)⁻²`` (Theorem 1 of the paper). To keep the configured ``σ`` — the
one the accountant is given — the updates get the larger multiplier

    σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−½),          which needs σ_b > σ/2.

The released sum is ``S = Σ(b_i − ½) + N(0, σ_b²)``; the server turns it into a bit sum with
the public normaliser ``n`` (the expected number of sites per round, the paper's ``m``):
``bits_sum = S + n/2`` and ``b̄ = bits_sum / n``, which is post-processing. With secure
aggregation each site adds ``N(0, σ_b²/t)`` to its centred bit, like the update's noise
(:func:`medfed.privacy.mechanisms.distributed_noise_std`).

The paper sets ``σ_b = m/20``, made for hundreds of clients; with a handful of hospitals that
leaves ``σ_b ≤ σ/2`` and no budget for the update, so :func:`default_count_noise_std`
takes at least ``σ`` (the update's noise then grows by at most 15.5 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from medfed.errors import ConfigError

__all__ = ["AdaptiveClip", "default_count_noise_std", "update_noise_multiplier"]


def update_noise_multiplier(*, noise_multiplier: float, count_noise_std: float) -> float:
    """``σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−½)``: the updates' noise multiplier that keeps the total ``σ``.

    ``count_noise_std`` is ``σ_b``, the std of the noise on the sum of the centred bits.
    """
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ConfigError(f"the noise multiplier must be positive, got {noise_multiplier}")
    if not (count_noise_std > noise_multiplier / 2):
        raise ConfigError(
            f"adaptive clipping with noise multiplier {noise_multiplier:g} needs the clipped-count "
            f"noise std above {noise_multiplier / 2:g}, got {count_noise_std:g}; raise "
            "privacy.clip_count_stddev or turn privacy.adaptive_clip off"
        )
    if math.isinf(count_noise_std):
        return noise_multiplier
    return float((noise_multiplier**-2 - (2 * count_noise_std) ** -2) ** -0.5)


def default_count_noise_std(*, expected_sites: float, noise_multiplier: float) -> float:
    """``max(m/20, σ)``: the paper's ``m/20``, at least ``σ`` so the update keeps its budget."""
    if expected_sites <= 0:
        raise ConfigError(f"the expected sites per round must be positive, got {expected_sites}")
    return max(expected_sites / 20, noise_multiplier)


@dataclass
class AdaptiveClip:
    """The server's clip norm, updated once per round from the sites' noised bits.

    >>> ac = AdaptiveClip(clip=1.0, target_quantile=0.5, learning_rate=0.2)
    >>> ac.update(bits_sum=10.0, n=10) < 1.0   # every update inside the clip: shrink
    True
    """

    clip: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"the initial clip norm must be positive, got {self.clip}")
        if not 0 < self.target_quantile < 1:
            raise ConfigError(f"the target quantile must be in (0, 1), got {self.target_quantile}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"the clip learning rate must be positive, got {self.learning_rate}")

    def update(self, *, bits_sum: float, n: float) -> float:
        """``C ← C·exp(−η(b̄ − γ))`` with ``b̄ = bits_sum / n``; returns the new clip.

        ``bits_sum`` is the noised sum of the sites' bits (see the module text for how the
        noise is added), ``n`` the public normaliser (the expected number of sites per round).
        ``b̄`` is not clamped to [0, 1]: the noise is unbiased, clamping would bias it.
        """
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        if not math.isfinite(bits_sum):
            raise ValueError(f"bits_sum must be finite, got {bits_sum}")
        fraction = bits_sum / n
        self.clip = self.clip * math.exp(-self.learning_rate * (fraction - self.target_quantile))
        return self.clip
