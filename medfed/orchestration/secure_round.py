"""The coordinator's side of a secure round: drive the sites through SecAgg+, get the sum.

The round driver has the sites train first (each holds its protected update), then calls
:func:`secure_sum`, which sends one ``SECAGG`` instruction per site and stage through the
same backend as any other exchange (in-process, process pool or the network coordinator).
A site that fails or falls silent at any stage is a dropout; the protocol recovers up to the
threshold and otherwise fails the round closed (:class:`~medfed.secagg.SecAggAborted`, a
:class:`~medfed.errors.RoundFailed`), revealing nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from medfed.errors import ConfigError, MedfedError, RoundFailed
from medfed.messages import SecureSettings
from medfed.orchestration.backends.base import Backend, Request
from medfed.records import Instruction, Operation, Params, Reply, SiteFailure
from medfed.secagg import SecAggConfig, SecAggServer, Stage, Verifier, message_from_json
from medfed.site.secure_aggregation import MASKED_TENSOR, unflatten

__all__ = ["SecureAggregation", "SecureSum", "secure_sum"]

_EMPTY = Params()


@dataclass(frozen=True)
class SecureAggregation:
    """How the coordinator aggregates securely.

    ``bound`` is the largest magnitude of one value of an update: sites saturate larger
    values (and say how many in their metrics), so choose it above the updates' values or
    clip updates first (DP does). ``uniform_weights`` counts each site once (DP-FedAvg);
    otherwise each site's weight is its number of examples, at most ``max_weight``.
    ``threshold`` is the fraction of each site's share group needed to unmask.
    """

    bound: float = 1.0
    threshold: float = 0.5
    uniform_weights: bool = False
    max_weight: float = 65536.0
    modulus_bits: int = 32
    extra_values: int = 0
    job: str = "simulation"
    verify_identity: Verifier | None = field(default=None, compare=False, repr=False)

    def round_settings(self) -> SecureSettings:
        """What each site is told (RoundSettings.secure): its weights and the values' bound."""
        return SecureSettings(
            weights="uniform" if self.uniform_weights else "examples", bound=float(self.bound)
        )

    def config_for(self, *, num_sites: int, num_values: int) -> SecAggConfig:
        if num_sites < 2:
            raise RoundFailed(
                f"secure aggregation needs at least 2 sites in a round, {num_sites} trained; "
                "lower the dropout or add sites"
            )
        try:
            return SecAggConfig(
                num_sites=num_sites,
                vector_length=num_values + self.extra_values,
                threshold=self.threshold,
                clip=self.bound,
                max_weight=1.0 if self.uniform_weights else self.max_weight,
                modulus_bits=self.modulus_bits,
            )
        except ConfigError as exc:
            raise ConfigError(f"secure aggregation: {exc}") from None


@dataclass(frozen=True)
class SecureSum:
    """What the coordinator learns: the weighted mean of the survivors' updates, nothing else."""

    mean: Params
    total_weight: float
    extra_sum: npt.NDArray[np.float64]
    survivors: tuple[str, ...]
    failures: dict[str, SiteFailure]


def secure_sum(
    backend: Backend,
    *,
    settings: SecureAggregation,
    round: int,
    sites: Sequence[str],
    like: Params,
    timeout: float | None = None,
) -> SecureSum:
    """Run SecAgg+ among ``sites`` (which hold their updates); the mean shaped as ``like``."""
    config = settings.config_for(num_sites=len(sites), num_values=like.num_values)
    server = SecAggServer(
        config,
        job=settings.job,
        round=round,
        sites=sites,
        graph_seed=os.urandom(32),
        verify_identity=settings.verify_identity,
    )
    failures: dict[str, SiteFailure] = {}
    while server.stage not in (Stage.DONE, Stage.ABORTED):
        requests: list[Request] = [
            (site, Instruction(Operation.SECAGG, round, _EMPTY, seed=0, message=req.to_json()))
            for site, req in server.requests().items()
        ]
        for reply in backend.exchange(requests, timeout=timeout):
            problem = _receive(server, reply)
            if problem is not None:
                failures[reply.site] = problem
            del reply
        server.advance()  # drops the silent; raises SecAggAborted below the threshold
    weighted, total = server.decode()
    if not total > 0:
        raise RoundFailed(f"round {round}: the securely aggregated weight is {total}, not > 0")
    values = weighted / total
    mean, extra = unflatten(values[: like.num_values], like)[0], weighted[like.num_values :]
    return SecureSum(
        mean=mean,
        total_weight=total,
        extra_sum=extra,
        survivors=tuple(server.survivors),
        failures=failures,
    )


def _receive(server: SecAggServer, reply: Reply) -> SiteFailure | None:
    """Hand one reply to the protocol; a failure or a violation drops that site."""
    if reply.failure is not None:
        return reply.failure
    try:
        vector = None
        if reply.update is not None:
            vector = reply.update.delta.get(MASKED_TENSOR)
        message: Mapping[str, Any] = reply.message or {}
        server.receive(reply.site, message_from_json(dict(message), vector=vector))
    except (MedfedError, KeyError, TypeError, ValueError) as exc:
        return SiteFailure("ProtocolViolation", str(exc))
    return None
