"""The coordinator's side of client-level DP: the round's clip, accounting, adaptive clipping.

Sites clip their updates and add their share of the noise (:mod:`medfed.privacy.steps`); the
coordinator never adds noise of its own and never sees an un-noised update. What it does:
weight every site equally (each site's contribution to the sum is bounded by the clip),
send the round's clip norm when clipping is adaptive, update that clip from the sites'
noised bits, and account for the round with the maintained accountant, reporting ε at the
run's δ after every round.

Sites are drawn as a fixed number per round (``strategy.fraction`` of them, at least
``strategy.min_sites``), not as a Poisson sample, so no amplification by sampling is claimed:
every round is accounted as a Gaussian mechanism on all sites (sample rate
:data:`SITE_SAMPLE_RATE` = 1). :func:`client_accountant` is the one place that calibrates σ
and starts the accountant of a client-level run; the coordinator (:class:`ServerPrivacy`) and
``medfed privacy plan`` (:mod:`medfed.privacy.plan`) both get their σ and ε from it, so the
plan of a run is the run's own accounting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from medfed.errors import ConfigError
from medfed.privacy.accounting import PrivacyAccountant
from medfed.privacy.adaptive_clip import AdaptiveClip
from medfed.privacy.config import PrivacyConfig
from medfed.privacy.mechanisms import distributed_noise_std
from medfed.privacy.steps import ClientDPSteps, client_dp_steps

__all__ = ["SITE_SAMPLE_RATE", "ServerPrivacy", "client_accountant"]

SITE_SAMPLE_RATE = 1.0
"""The sample rate of sites a client-level run accounts: 1, no amplification by sampling.

Runs draw a fixed number of sites per round; a rate below 1 would be valid only if each site
took part independently with that probability (Poisson sampling), which no run does."""

_TAIL = 8.0  # a site's value bound for secure aggregation: clip + 8 noise stds (P ≈ 1e-15)


def client_accountant(config: PrivacyConfig, *, rounds: int) -> PrivacyAccountant:
    """The accountant of a client-level DP run of ``rounds`` rounds, before its first round.

    Its noise multiplier is ``config.noise_multiplier``, or the σ calibrated so that
    ``rounds`` rounds spend ``config.target_epsilon`` at ``config.delta``; each
    :meth:`~medfed.privacy.accounting.PrivacyAccountant.step` is one round at
    :data:`SITE_SAMPLE_RATE` (no amplification by sampling). The run's coordinator and
    ``medfed privacy plan`` both call this, so a plan's σ and ε are the run's.
    """
    if config.dp != "client":
        raise ConfigError(f"client-level accounting needs privacy.dp = 'client', got {config.dp!r}")
    if rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    sigma = config.resolve_noise(rounds=rounds, sample_rate=SITE_SAMPLE_RATE)
    return PrivacyAccountant(
        noise_multiplier=sigma,
        sample_rate=SITE_SAMPLE_RATE,
        delta=config.delta,
        accountant=config.accountant,
    )


class ServerPrivacy:
    """Client-level DP of one run, as the coordinator keeps it.

    ``sample_rate`` is kept for callers that pass it; it must be :data:`SITE_SAMPLE_RATE`
    (sites are drawn as a fixed number per round, so there is no sampling to amplify by).
    """

    def __init__(
        self,
        config: PrivacyConfig,
        *,
        rounds: int,
        expected_sites: float,
        min_sites: int,
        sample_rate: float = SITE_SAMPLE_RATE,
    ) -> None:
        if config.dp != "client":
            raise ValueError("ServerPrivacy is for client-level DP (privacy.dp = 'client')")
        if sample_rate != SITE_SAMPLE_RATE:
            raise ValueError(
                f"a client-level run is accounted at sample rate {SITE_SAMPLE_RATE:g} (sites are "
                f"drawn as a fixed number per round, no amplification by sampling), got "
                f"{sample_rate}; leave sample_rate out"
            )
        self.config = config
        self.sample_rate = SITE_SAMPLE_RATE
        self.expected_sites = expected_sites
        self.min_sites = min_sites
        self.accountant = client_accountant(config, rounds=rounds)
        self.noise_multiplier = self.accountant.noise_multiplier
        self.adaptive = (
            AdaptiveClip(
                clip=config.clip_norm,
                target_quantile=config.target_quantile,
                learning_rate=config.clip_learning_rate,
            )
            if config.adaptive_clip
            else None
        )

    @property
    def clip(self) -> float:
        return self.adaptive.clip if self.adaptive is not None else self.config.clip_norm

    @property
    def extra_values(self) -> int:
        """Values a site appends to its update: the clipped-count bit when clipping adapts."""
        return 1 if self.adaptive is not None else 0

    def site_steps(self) -> ClientDPSteps:
        """The clip and noise steps a site runs (each site builds its own, with OS entropy)."""
        return client_dp_steps(
            self.config,
            noise_multiplier=self.noise_multiplier,
            min_sites=self.min_sites,
            expected_sites=self.expected_sites,
        )

    def round_clip(self) -> float | None:
        """The clip a round's settings carry (``RoundSettings.clip_norm``): None unless adaptive."""
        return self.clip if self.adaptive is not None else None

    def state(self) -> dict[str, float]:
        """What must survive a restart besides the rounds accounted: the adaptive clip."""
        return {"clip_norm": self.adaptive.clip} if self.adaptive is not None else {}

    def restore(self, state: Mapping[str, float], *, rounds_done: int) -> None:
        """Resume after ``rounds_done`` rounds with the ``state`` checkpointed after the last.

        The accountant composes the rounds that ran again (same σ, same rate: the same ε).
        """
        if rounds_done > 0:
            self.accountant.step(rounds=rounds_done)
        clip = state.get("clip_norm")
        if self.adaptive is not None and clip is not None:
            if not (math.isfinite(clip) and clip > 0):
                raise ValueError(f"a checkpointed clip norm must be positive, got {clip}")
            self.adaptive.clip = float(clip)

    def value_bound(self) -> float:
        """The largest magnitude of one value a site sends through secure aggregation."""
        per_site = distributed_noise_std(
            noise_multiplier=self.noise_multiplier * 1.2,  # headroom for adaptive clipping
            clip=self.clip,
            min_sites=self.min_sites if self.config.secure_aggregation else 1,
        )
        return self.clip + _TAIL * per_site + 1.0  # + 1: the centred clipped-count bit

    def finish_round(self, *, centred_bits_sum: float | None) -> dict[str, float]:
        """Account for the round just aggregated; move the clip. Returns the round's figures."""
        used_clip = self.clip
        epsilon = self.accountant.step()
        bits = centred_bits_sum
        if self.adaptive is not None and bits is not None and math.isfinite(bits):
            n = self.expected_sites
            self.adaptive.update(bits_sum=bits + n / 2, n=n)
        return {
            "epsilon": epsilon,
            "delta": self.config.delta,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": used_clip,
        }
