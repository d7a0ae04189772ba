"""Planning a run's privacy: the noise for a target ε, or the ε of a given noise.

What ``medfed privacy plan`` prints, for client-level DP (the protected unit is a whole site).

The plan is the run's own accounting: σ and every ε come from
:func:`medfed.privacy.server.client_accountant`, the function the coordinator's
:class:`~medfed.privacy.server.ServerPrivacy` starts its accountant with, stepped through the
rounds as a run steps it. So the plan assumes what a run does: sites are drawn as a fixed
number per round, and no amplification by sampling is claimed (every round is accounted at
sample rate 1, whatever the share of sites asked). The sites per round only set how many
sites share the noise under secure aggregation (the threshold ``t``, by default all sites of
a round: each adds ``σ·C/√t``) and how many sites a run must be configured to draw.

Sample-level DP (DP-SGD) is not planned here: its σ follows from each site's own records,
batch size and epochs, and each site calibrates it itself (:mod:`medfed.site.dp_sgd`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from medfed.errors import ConfigError
from medfed.privacy.config import ACCOUNTANTS, PrivacyConfig
from medfed.privacy.mechanisms import distributed_noise_std
from medfed.privacy.server import SITE_SAMPLE_RATE, client_accountant

__all__ = [
    "ASSUMPTION",
    "WEAK_EPSILON",
    "PrivacyPlan",
    "make_plan",
    "secagg_threshold",
    "sites_per_round_of",
]

MILESTONES = (0.25, 0.5, 0.75, 1.0)
WEAK_EPSILON = 10.0
"""A plan above this ε warns: the guarantee for a site is then weak."""
ASSUMPTION = (
    "no amplification by sampling: sites are drawn as a fixed number per round, "
    "so every round is accounted at sample rate q = 1, as in a run"
)


@dataclass(frozen=True)
class PrivacyPlan:
    """The noise of a run and the ε it spends, after a quarter, half, … of its rounds.

    ``sample_rate`` is always :data:`~medfed.privacy.server.SITE_SAMPLE_RATE` (1: no
    amplification by sampling); ``sites_per_round`` is informative (None when not given).
    """

    noise_multiplier: float
    epsilon: float
    delta: float
    rounds: int
    sample_rate: float
    clip: float
    min_sites: int | None
    accountant: str
    milestones: tuple[tuple[int, float], ...]
    sites_per_round: int | None = None

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


def sites_per_round_of(*, sites: int | None, sites_per_round: int | None) -> int | None:
    """The sites asked in each round: ``sites_per_round``, else all ``sites``, else None.

    Checked against ``sites`` when both are given. It sets no sampling rate: runs claim no
    amplification by sampling (see the module's docstring).
    """
    if sites is not None and sites < 1:
        raise ConfigError(f"--sites must be at least 1, got {sites}")
    if sites_per_round is None:
        return sites
    if sites_per_round < 1 or (sites is not None and sites_per_round > sites):
        bound = "" if sites is None else f" and the number of sites ({sites})"
        raise ConfigError(f"sites per round must be between 1{bound}, got {sites_per_round}")
    return sites_per_round


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
    clip: float = 1.0,
    target_epsilon: float | None = None,
    noise_multiplier: float | None = None,
    min_sites: int | None = None,
    sites_per_round: int | None = None,
    accountant: str = "rdp",
) -> PrivacyPlan:
    """The plan of a client-level run of ``rounds`` rounds: give a target ε or a noise multiplier.

    σ and ε are the run's (:func:`~medfed.privacy.server.client_accountant`): a run with
    ``privacy.noise_multiplier`` = the plan's σ (or with the same ``target_epsilon``) reports
    the plan's ε after each milestone round. ``min_sites`` is the secure-aggregation threshold
    (the run's ``strategy.min_sites``); ``sites_per_round`` is recorded but claims no
    amplification. Warns (:class:`UserWarning`) when the ε exceeds :data:`WEAK_EPSILON`;
    raises :class:`~medfed.errors.ConfigError` for impossible inputs or budgets.
    """
    if (target_epsilon is None) == (noise_multiplier is None):
        raise ConfigError("give either a target epsilon or a noise multiplier (exactly one)")
    if rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    if not 0 < delta < 1:
        raise ConfigError(
            f"delta must be in (0, 1), and well below 1/(number of sites), got {delta}"
        )
    if not (math.isfinite(clip) and clip > 0):
        raise ConfigError(f"the clip norm must be a positive number, got {clip}")
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"the accountant must be 'rdp' or 'pld', got {accountant!r}")
    if target_epsilon is not None and not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ConfigError(f"the target epsilon must be a positive number, got {target_epsilon}")
    if noise_multiplier is not None and not (
        math.isfinite(noise_multiplier) and noise_multiplier > 0
    ):
        raise ConfigError(f"the noise multiplier must be positive, got {noise_multiplier}")
    if min_sites is not None and min_sites < 1:
        raise ConfigError(f"the secure-aggregation threshold must be at least 1, got {min_sites}")
    if sites_per_round is not None and sites_per_round < 1:
        raise ConfigError(f"sites per round must be at least 1, got {sites_per_round}")
    config = PrivacyConfig(
        dp="client",
        clip_norm=clip,
        noise_multiplier=noise_multiplier,
        target_epsilon=target_epsilon,
        delta=delta,
        accountant=accountant,
        secure_aggregation=min_sites is not None,
    )
    run = client_accountant(config, rounds=rounds)
    counts = sorted({max(1, math.ceil(rounds * p)) for p in MILESTONES})
    milestones: list[tuple[int, float]] = []
    for r in counts:
        # the accountant merges these rounds into one record, exactly as r single steps would
        milestones.append((r, run.step(rounds=r - run.rounds)))
    final = milestones[-1][1]
    if final > WEAK_EPSILON:
        warnings.warn(
            f"ε = {final:.4g} after {rounds} rounds is a weak guarantee for a site (above "
            f"{WEAK_EPSILON:g}); raise the noise multiplier or plan fewer rounds",
            UserWarning,
            stacklevel=2,
        )
    return PrivacyPlan(
        noise_multiplier=run.noise_multiplier,
        epsilon=final,
        delta=delta,
        rounds=rounds,
        sample_rate=SITE_SAMPLE_RATE,
        clip=clip,
        min_sites=min_sites,
        accountant=accountant,
        milestones=tuple(milestones),
        sites_per_round=sites_per_round,
    )
