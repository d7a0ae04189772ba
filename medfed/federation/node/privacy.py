"""A node's protection of its updates in one job: client- or sample-level DP, secure aggregation.

For a job whose ``privacy.dp`` is ``"client"`` the node first reserves the job's planned
rounds on its data set's lifetime budget (:class:`~medfed.site.budget.SiteBudget`) and
refuses the job when they do not fit; then it charges each round *before* training, so that
nothing leaves a round the budget refused. Its clip and noise steps draw the noise from the
operating system's entropy, never from the instruction's seed.

For ``"sample"`` (DP-SGD, :mod:`medfed.site.dp_sgd`) the site app trains privately and the
node reserves and charges the same way, with one round being the round's optimizer steps
(each a Poisson-subsampled Gaussian mechanism); DP-SGD's sampling and noise also come from
the operating system's entropy.

With secure aggregation the node holds its update after training and answers the protocol's
stages; it signs its key advertisements with its kit's Ed25519 identity key, and trusts a
peer's key only from that peer's certificate, checked against its own copy of the federation
CA (the coordinator only relays certificates, it cannot substitute keys).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from medfed.config import TrainSettings
from medfed.errors import UsageError
from medfed.privacy.config import PrivacyConfig
from medfed.privacy.steps import ClientDPSteps, client_dp_steps
from medfed.records import Instruction
from medfed.secagg import AdvertiseRequest, ProtocolViolation, message_from_json
from medfed.site.budget import SiteBudget
from medfed.site.secure_aggregation import SecAggIdentity, SecureAggregationSite

__all__ = ["JobProtection", "RoundCost", "check_required", "job_privacy", "protect_job"]


def job_privacy(table: Mapping[str, Any] | None) -> PrivacyConfig:
    """A job's privacy table as a config; an empty table is no protection (as in JobConfig)."""
    return PrivacyConfig.from_mapping({"dp": "none", "secure_aggregation": False, **(table or {})})


@dataclass(frozen=True)
class RoundCost:
    """What one charged round cost: ε added to the data set, and ε spent on it in all."""

    round: int
    epsilon: float
    spent: float


@dataclass
class JobProtection:
    """One job's DP steps, budget and secure-aggregation state at this node."""

    job_id: str
    config: PrivacyConfig
    dataset: str = ""
    budget: SiteBudget | None = None
    dp: ClientDPSteps | None = None
    secure: SecureAggregationSite | None = None
    peers: dict[str, ed25519.Ed25519PublicKey] = field(default_factory=dict)
    last_cost: RoundCost | None = None
    sample_noise: float | None = None  # DP-SGD's σ at this site (dp = "sample")

    def charge(self, round: int) -> RoundCost | None:
        """Charge ``round`` on the data set's budget (BudgetExceeded: nothing may leave)."""
        if self.budget is None:
            return None
        before = self.budget.spent(self.dataset)
        spent = self.budget.charge(self.dataset, job=self.job_id, round=round)
        self.last_cost = RoundCost(round, max(0.0, spent - before), spent)
        return self.last_cost

    def before_secagg(
        self, instruction: Instruction, fetch: Callable[[list[str]], dict[str, Any]], **ca: Any
    ) -> None:
        """Before a key-advertisement request: check it binds this job, learn the peers' keys.

        ``fetch(sites)`` returns the coordinator's certificates (base64 DER) of ``sites``;
        ``ca`` are :func:`~medfed.federation.identity.certificates.peer_keys`'s ``ca_pem`` and
        ``consortium``.
        """
        from medfed.federation.identity.certificates import peer_keys

        if instruction.message is None or instruction.message.get("type") != "advertise_request":
            return
        request = message_from_json(dict(instruction.message))
        assert isinstance(request, AdvertiseRequest)
        if request.job != self.job_id:
            raise ProtocolViolation(
                f"the coordinator asks for secure aggregation of job {request.job!r} in a task "
                f"of job {self.job_id!r}"
            )
        missing = [s for s in request.sites if s not in self.peers]
        if missing:
            self.peers.update(peer_keys(fetch(missing), missing, **ca))

    def finish(self) -> None:
        """The job ended: release the rounds it planned but did not run."""
        if self.budget is not None:
            self.budget.finish(self.dataset, job=self.job_id)


def protect_job(
    job_id: str,
    announced: Mapping[str, Any],
    *,
    site: str,
    dataset: str,
    state_dir: Path,
    identity_key: ed25519.Ed25519PrivateKey | None,
    num_train: int = 0,
) -> JobProtection:
    """The protection ``announced`` (the job as the coordinator lists it) asks of this site.

    Reserves the job's rounds on the data set's budget first; raises
    :class:`~medfed.site.budget.BudgetExceeded` (or a ConfigError when no budget is set)
    when the node must refuse the job. A sample-level job (DP-SGD) reserves its optimizer
    steps: σ as DP-SGD resolves it at this site (``num_train`` training records, the job's
    batch size, epochs and rounds), Poisson sample rate and steps per round; the site app
    then trains with the same σ (:attr:`JobProtection.sample_noise`).
    """
    config = job_privacy(announced.get("privacy"))
    protection = JobProtection(job_id, config, dataset)
    rounds = int(announced.get("rounds") or 1)
    min_sites = int(announced.get("min_sites") or 1)
    if config.enabled and not dataset:
        raise UsageError("this node does not know the name of its data set, so it refuses DP")
    if config.dp == "client":
        sigma = config.resolve_noise(rounds=rounds, sample_rate=1.0)
        protection.budget = SiteBudget.in_state(state_dir)
        protection.budget.reserve(
            dataset, job=job_id, noise_multiplier=sigma, sample_rate=1.0, rounds=rounds
        )
        # expected_sites is needed only for adaptive clipping, which a job sets with
        # privacy.clip_count_stddev (JobConfig checks it)
        protection.dp = client_dp_steps(config, noise_multiplier=sigma, min_sites=min_sites)
    elif config.dp == "sample":
        from medfed.site.dp_sgd import (
            dp_sgd_noise_multiplier,
            dp_sgd_sample_rate,
            dp_sgd_steps_per_round,
        )

        if num_train < 1:
            raise UsageError("DP-SGD needs at least one training record at this site")
        settings = TrainSettings(**dict(announced.get("train") or {}))
        sigma = dp_sgd_noise_multiplier(
            config, settings=settings, num_examples=num_train, rounds=rounds
        )
        protection.budget = SiteBudget.in_state(state_dir)
        protection.budget.reserve(
            dataset,
            job=job_id,
            noise_multiplier=sigma,
            sample_rate=dp_sgd_sample_rate(num_examples=num_train, batch_size=settings.batch_size),
            rounds=rounds,
            steps_per_round=dp_sgd_steps_per_round(num_examples=num_train, settings=settings),
        )
        protection.sample_noise = sigma
    elif config.dp != "none":
        raise UsageError(f"this node does not run privacy.dp = {config.dp!r} jobs")
    if config.secure_aggregation:
        if identity_key is None:
            raise UsageError("secure aggregation needs this site's identity key (its kit)")
        protection.peers[site] = identity_key.public_key()
        identity = SecAggIdentity(site, identity_key, protection.peers)
        protection.secure = SecureAggregationSite(identity)
    return protection


def check_required(require: frozenset[str], privacy: PrivacyConfig) -> None:
    """Refuse a job that lacks a protection this site's steward requires."""
    missing = []
    if "dp" in require and not privacy.enabled:
        missing.append("differential privacy (--dp client or --dp sample)")
    if "secagg" in require and not privacy.secure_aggregation:
        missing.append("secure aggregation (--secagg)")
    if missing:
        raise UsageError(
            f"this site requires {' and '.join(missing)} of every job, and this job has none; "
            "the node refuses it (resubmit the job with that protection)"
        )
