"""A run's update protection, set up once: DP at the sites and the coordinator, secure aggregation.

From the ``[privacy]`` section of a run this builds the three parts that must agree:

- :class:`~medfed.privacy.server.ServerPrivacy` — the coordinator's accountant and clip;
- :class:`~medfed.orchestration.secure_round.SecureAggregation` — how the coordinator
  aggregates securely;
- :class:`SiteProtection` — what each site needs (its clip and noise steps, its identity key
  for secure aggregation). Picklable, so process-pool workers build their own sites from it.

Sampling. Sites are drawn as a fixed number per round, not by Poisson sampling, so the
accountant is given a sampling rate of 1: no privacy amplification by sampling is claimed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ed25519

from medfed.orchestration.secure_round import SecureAggregation
from medfed.privacy.config import PrivacyConfig
from medfed.privacy.server import ServerPrivacy
from medfed.privacy.steps import ClientDPSteps, client_dp_steps
from medfed.secagg import ed25519_verifier
from medfed.site.secure_aggregation import SecAggIdentity, SecureAggregationSite
from medfed.strategies.base import expected_sites

if TYPE_CHECKING:
    from medfed.config import RunConfig
    from medfed.secagg import Verifier

__all__ = ["SiteProtection", "coordinator_protection", "protection_for"]


@dataclass
class SiteProtection:
    """What every simulated site needs to protect its update."""

    config: PrivacyConfig
    rounds: int
    noise_multiplier: float | None = None  # client-level DP; None: off
    min_sites: int = 1
    expected_sites: float = 1.0
    # the simulation's own identity keys for secure aggregation (raw Ed25519); empty: off
    keys: dict[str, bytes] = field(default_factory=dict, repr=False)

    def dp_steps(self) -> ClientDPSteps | None:
        if self.noise_multiplier is None:
            return None
        return client_dp_steps(
            self.config,
            noise_multiplier=self.noise_multiplier,
            min_sites=self.min_sites,
            expected_sites=self.expected_sites,
        )

    def public_keys(self) -> dict[str, ed25519.Ed25519PublicKey]:
        return {
            s: ed25519.Ed25519PrivateKey.from_private_bytes(k).public_key()
            for s, k in self.keys.items()
        }

    def secure_site(self, name: str) -> SecureAggregationSite | None:
        if not self.keys:
            return None
        key = ed25519.Ed25519PrivateKey.from_private_bytes(self.keys[name])
        return SecureAggregationSite(SecAggIdentity(name, key, self.public_keys()))


def coordinator_protection(
    config: RunConfig,
    *,
    num_sites: int,
    verify_identity: Verifier | None,
    job: str = "simulation",
) -> tuple[ServerPrivacy | None, SecureAggregation | None]:
    """The coordinator's part of a run's ``[privacy]``: its DP accountant and clip, and how
    it aggregates securely (``verify_identity`` checks each site's advertisement; ``job``
    is bound into every SecAgg message). The same for a simulation and a federation."""
    privacy = config.privacy
    strategy = config.strategy
    expected = float(
        expected_sites(num_sites, fraction=strategy.fraction, min_sites=strategy.min_sites)
    )
    server = None
    if privacy.dp == "client":
        server = ServerPrivacy(
            privacy,
            rounds=config.rounds,
            sample_rate=1.0,
            expected_sites=max(1.0, expected),
            min_sites=strategy.min_sites,
        )
    secure = None
    if privacy.secure_aggregation:
        secure = SecureAggregation(
            bound=privacy.secagg_bound,
            threshold=privacy.secagg_threshold,
            job=job,
            verify_identity=verify_identity,
        )
    return server, secure


def protection_for(
    config: RunConfig, *, sites: Sequence[str]
) -> tuple[ServerPrivacy | None, SecureAggregation | None, SiteProtection | None]:
    """A simulation's protection: the coordinator's part, and each site's (all None: none).

    The simulation plays every site, so it makes their identity keys for secure aggregation.
    """
    privacy = config.privacy
    if not privacy.enabled and not privacy.secure_aggregation:
        return None, None, None
    keys = {}
    if privacy.secure_aggregation:
        keys = {s: ed25519.Ed25519PrivateKey.generate().private_bytes_raw() for s in sites}
    site = SiteProtection(
        config=privacy,
        rounds=config.rounds,
        min_sites=config.strategy.min_sites,
        keys=keys,
    )
    server, secure = coordinator_protection(
        config,
        num_sites=len(sites),
        verify_identity=ed25519_verifier(site.public_keys()) if keys else None,
    )
    site.noise_multiplier = None if server is None else server.noise_multiplier
    site.expected_sites = float(
        expected_sites(
            len(sites), fraction=config.strategy.fraction, min_sites=config.strategy.min_sites
        )
    )
    return server, secure, site
