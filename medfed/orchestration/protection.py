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

from cryptography.hazmat.primitives.asymmetric import ed25519

from medfed.orchestration.secure_round import SecureAggregation
from medfed.privacy.config import PrivacyConfig
from medfed.privacy.server import ServerPrivacy
from medfed.privacy.steps import ClientDPSteps, client_dp_steps
from medfed.secagg import ed25519_verifier
from medfed.site.secure_aggregation import SecAggIdentity, SecureAggregationSite
from medfed.strategies.base import expected_sites

__all__ = ["SiteProtection", "protection_for"]


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


def protection_for(
    config: PrivacyConfig,
    *,
    sites: Sequence[str],
    rounds: int,
    fraction: float,
    min_sites: int,
) -> tuple[ServerPrivacy | None, SecureAggregation | None, SiteProtection | None]:
    """The coordinator's and the sites' parts of ``config`` (all None: no protection)."""
    if not config.enabled and not config.secure_aggregation:
        return None, None, None
    expected = float(expected_sites(len(sites), fraction=fraction, min_sites=min_sites))
    server = None
    if config.dp == "client":
        server = ServerPrivacy(
            config,
            rounds=rounds,
            sample_rate=1.0,
            expected_sites=expected,
            min_sites=min_sites,
        )
    site = SiteProtection(
        config=config,
        rounds=rounds,
        noise_multiplier=None if server is None else server.noise_multiplier,
        min_sites=min_sites,
        expected_sites=expected,
    )
    secure = None
    if config.secure_aggregation:
        site.keys = {s: ed25519.Ed25519PrivateKey.generate().private_bytes_raw() for s in sites}
        secure = SecureAggregation(
            bound=config.secagg_bound,
            threshold=config.secagg_threshold,
            verify_identity=ed25519_verifier(site.public_keys()),
        )
    return server, secure, site
