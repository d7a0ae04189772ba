"""Planning a run's privacy: the noise for a target ε, or the ε of a given noise.

What ``medfed privacy plan`` prints (client-level DP: the protected unit is a whole site).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from medfed.errors import ConfigError
from medfed.privacy.accounting import epsilon, noise_for_epsilon
from medfed.privacy.mechanisms import distributed_noise_std

__all__ = ["PrivacyPlan", "make_plan", "sample_rate_of", "secagg_threshold"]

MILESTONES = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class PrivacyPlan:
    """The noise of a run and the ε it spends, after a quarter, half, … of its rounds."""

    noise_multiplier: float
    epsilon: float
    delta: float
    rounds: int
    sample_rate: float
    clip: float
    min_sites: int | None
    accountant: str
    milestones: tuple[tuple[int, float], ...]

    @property
    def central_std(self) -> float:
        """``σ·C``: the noise std the sum of the clipped updates must carry."""
        return self.noise_multiplier * self.clip

    @property
    def site_std_without_secagg(self) -> float:
        """Each update is seen alone, so each site adds the whole ``σ·C``."""
        return distributed_noise_std(
            noise_multiplier=self.noise_multiplier, clip=self.clip, min_sites=1
        )

    @property
    def site_std_with_secagg(self) -> float | None:
        """``σ·C/√t`` with ``t`` the secure-aggregation threshold (None when unknown)."""
        if self.min_sites is None:
            return None
        return distributed_noise_std(
            noise_multiplier=self.noise_multiplier, clip=self.clip, min_sites=self.min_sites
        )


def sample_rate_of(
    *, sites: int | None, sites_per_round: int | None, sample_rate: float | None = None
) -> float:
    """``sample_rate``, or ``sites_per_round / sites``, checked; 1.0 when none is given."""
    if sample_rate is not None:
        if sites is not None or sites_per_round is not None:
            raise ConfigError("give --sample-rate or --sites with --sites-per-round, not both")
        return sample_rate
    if sites is None and sites_per_round is None:
        return 1.0
    if sites is None or sites_per_round is None:
        raise ConfigError("give --sites and --sites-per-round together, or --sample-rate")
    if sites < 1 or not 1 <= sites_per_round <= sites:
        raise ConfigError(
            f"sites per round must be between 1 and the number of sites ({sites}), "
            f"got {sites_per_round}"
        )
    return sites_per_round / sites


def secagg_threshold(*, min_sites: int | None, sites_per_round: int | None) -> int | None:
    """The sites whose noise is always in the sum: ``min_sites``, else all sites of a round."""
    if min_sites is None:
        return sites_per_round
    if sites_per_round is not None and min_sites > sites_per_round:
        raise ConfigError(
            f"--min-sites ({min_sites}) cannot exceed --sites-per-round ({sites_per_round})"
        )
    return min_sites


def make_plan(
    *,
    rounds: int,
    delta: float,
    sample_rate: float,
    clip: float = 1.0,
    target_epsilon: float | None = None,
    noise_multiplier: float | None = None,
    min_sites: int | None = None,
    accountant: str = "rdp",
) -> PrivacyPlan:
    """The plan for ``rounds`` rounds at ``sample_rate``: give a target ε or a noise multiplier."""
    if (target_epsilon is None) == (noise_multiplier is None):
        raise ConfigError("give either a target epsilon or a noise multiplier (exactly one)")
    if rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    if not (math.isfinite(clip) and clip > 0):
        raise ConfigError(f"the clip norm must be a positive number, got {clip}")
    if min_sites is not None and min_sites < 1:
        raise ConfigError(f"the secure-aggregation threshold must be at least 1, got {min_sites}")
    if noise_multiplier is None:
        assert target_epsilon is not None
        sigma = noise_for_epsilon(
            target_epsilon=target_epsilon,
            delta=delta,
            rounds=rounds,
            sample_rate=sample_rate,
            accountant=accountant,
        )
    else:
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise ConfigError(f"the noise multiplier must be positive, got {noise_multiplier}")
        sigma = noise_multiplier
    counts = sorted({max(1, math.ceil(rounds * p)) for p in MILESTONES})
    milestones = tuple(
        (
            r,
            epsilon(
                noise_multiplier=sigma,
                sample_rate=sample_rate,
                rounds=r,
                delta=delta,
                accountant=accountant,
            ),
        )
        for r in counts
    )
    return PrivacyPlan(
        noise_multiplier=sigma,
        epsilon=milestones[-1][1],
        delta=delta,
        rounds=rounds,
        sample_rate=sample_rate,
        clip=clip,
        min_sites=min_sites,
        accountant=accountant,
        milestones=milestones,
    )
