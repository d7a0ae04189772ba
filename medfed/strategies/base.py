"""The strategy API: functions over an explicit, frozen, serialisable state.

A strategy never does I/O and never knows whether it runs in a simulation or a federation.
Everything it must remember between rounds (server optimiser moments, a global control
variate) is in a :class:`StrategyState`, which the round driver keeps, hands back each round
and checkpoints with the round, so a restarted coordinator resumes with identical state::

    state = strategy.init_state(params)                        # once, at round 1
    plans = strategy.configure_train(round=r, params=params, sites=available, rng=rng)
    sent = strategy.payload(params, state)   # what sites receive: the model (+ SCAFFOLD's c)
    agg = strategy.aggregator(round=r, params=params, state=state)
    for reply in replies_as_they_arrive:     # already validated by the driver
        agg.add(reply.site, reply.update)    # or, under secure aggregation, once:
    # agg.add_sum(SecureSum(mean, weight, sites))
    params, state = agg.finish()

A strategy declares what it aggregates (:attr:`Strategy.needs`): ``"sum"`` when a weighted
mean of the updates is all it needs, so that it works under secure aggregation, where the
coordinator never sees one site's update; ``"updates"`` when it needs each site's update (a
median, Krum), which a run refuses together with secure aggregation when it is validated.

``configure_evaluate`` / ``aggregate_evaluate`` are for federated evaluation.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from medfed.errors import SerializationError
from medfed.messages import RoundSettings
from medfed.records import Metrics, Params, Update
from medfed.serde import params_from_bytes, params_to_bytes

__all__ = [
    "Aggregate",
    "Aggregator",
    "Needs",
    "SecureSum",
    "SitePlan",
    "Strategy",
    "StrategyState",
    "sample_sites",
]

Needs = Literal["sum", "updates"]
StateValue = int | float | str
_STATE_KEY = "medfed.strategy_state"


@dataclass(frozen=True, slots=True)
class StrategyState:
    """A strategy's memory between rounds: named tensors and named numbers (or text).

    Serialised with :meth:`to_bytes` (safetensors; the numbers in its JSON metadata), never
    pickled. The empty state is that of a stateless strategy such as FedAvg.
    """

    tensors: Params = field(default_factory=Params)
    values: Mapping[str, StateValue] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return params_to_bytes(self.tensors, {_STATE_KEY: json.dumps(dict(self.values))})

    @staticmethod
    def from_bytes(data: bytes) -> StrategyState:
        tensors, meta = params_from_bytes(data)
        try:
            values = json.loads(meta[_STATE_KEY])
        except (KeyError, ValueError):
            raise SerializationError("this file holds no strategy state") from None
        if not isinstance(values, dict) or not all(
            isinstance(v, int | float | str) and not isinstance(v, bool) for v in values.values()
        ):
            raise SerializationError("a strategy state's values must be numbers or text")
        return StrategyState(tensors, values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StrategyState):
            return NotImplemented
        return self.tensors == other.tensors and dict(self.values) == dict(other.values)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class SitePlan:
    """One site's part in a round: who, and with what round settings."""

    site: str
    settings: RoundSettings = field(default_factory=RoundSettings)


@dataclass(frozen=True, slots=True)
class SecureSum:
    """All the coordinator learns in a secure round: the weighted mean of the surviving
    sites' updates, their total weight and who they were — never one site's update."""

    mean: Params
    weight: float
    sites: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A round's outcome: the next global params and the strategy's next state."""

    params: Params
    state: StrategyState


class Aggregator(ABC):
    """Combines one round's updates (or their secure sum) into the next params and state."""

    @abstractmethod
    def add(self, site: str, update: Update, *, steps: int | None = None) -> None:
        """One site's update (rounds without secure aggregation), and the optimiser steps it
        reported taking (None: not reported)."""

    def add_sum(self, total: SecureSum) -> None:
        """The round's secure sum, once, instead of individual updates."""
        raise TypeError(f"{type(self).__name__} needs individual updates, not a secure sum")

    @abstractmethod
    def finish(self) -> Aggregate:
        """Called once, after every accepted update (or the sum) was added."""


def sample_sites(
    sites: Sequence[str], *, fraction: float, min_sites: int, rng: np.random.Generator
) -> list[str]:
    """Pick :func:`expected_sites` sites at random, keeping their given order.

    >>> sample_sites(["a", "b", "c", "d"], fraction=0.5, min_sites=1, rng=np.random.default_rng(0))
    ['c', 'd']
    """
    n = len(sites)
    k = expected_sites(n, fraction=fraction, min_sites=min_sites)
    if k >= n:
        return list(sites)
    chosen = set(rng.choice(n, size=k, replace=False).tolist())
    return [s for i, s in enumerate(sites) if i in chosen]


def expected_sites(available: int, *, fraction: float, min_sites: int) -> int:
    """How many of ``available`` sites a round asks: ``max(min_sites, ceil(fraction × n))``,
    at most n. The one definition (the sampler and the privacy accountant both use it).

    >>> expected_sites(10, fraction=0.25, min_sites=2), expected_sites(3, fraction=1.0, min_sites=5)
    (3, 3)
    """
    return min(available, max(min_sites, math.ceil(fraction * available)))


class Strategy(ABC):
    """Base class: site sampling and example-weighted evaluation are shared by all strategies."""

    name: str = "strategy"
    needs: ClassVar[Needs] = "sum"
    # False when its sites send more than a model update (DP's clip and noise cover only that)
    dp_covered: ClassVar[bool] = True
    # each option a run file's [strategy] options (or --strategy-option) may set: what it is
    parameters: ClassVar[dict[str, str]] = {}

    def __init__(self, *, fraction: float = 1.0, min_sites: int = 1) -> None:
        if not 0 < fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")
        if min_sites < 1:
            raise ValueError("min_sites must be at least 1")
        self.fraction = fraction
        self.min_sites = min_sites

    def expected_sites(self, available: int) -> int:
        return expected_sites(available, fraction=self.fraction, min_sites=self.min_sites)

    def init_state(self, params: Params) -> StrategyState:
        """The state before round 1 (empty for a stateless strategy)."""
        return StrategyState()

    def configure_train(
        self, *, round: int, params: Params, sites: Sequence[str], rng: np.random.Generator
    ) -> list[SitePlan]:
        chosen = sample_sites(sites, fraction=self.fraction, min_sites=self.min_sites, rng=rng)
        settings = self.round_settings(round=round)
        return [SitePlan(site, settings) for site in chosen]

    def payload(self, params: Params, state: StrategyState) -> Params:
        """What the sites receive for training: the global params, and any tensors the
        strategy sends with them (named ``CONTROL_PREFIX + name``). Updates then have this
        layout, and :meth:`aggregator` gets them so."""
        return params

    def round_settings(self, *, round: int) -> RoundSettings:
        """The settings sent to every site this round (e.g. FedProx's proximal μ)."""
        return RoundSettings()

    @abstractmethod
    def aggregator(self, *, round: int, params: Params, state: StrategyState) -> Aggregator: ...

    def configure_evaluate(self, *, round: int, sites: Sequence[str]) -> list[SitePlan]:
        """Every available site evaluates the global model on its own held-out data."""
        return [SitePlan(site) for site in sites]

    def aggregate_evaluate(self, metrics: Sequence[Metrics]) -> Metrics:
        return Metrics.weighted_mean(metrics)
