"""The strategy API: configure a round, then aggregate its replies.

A strategy never does I/O and never knows whether it runs in a simulation or a federation.
The round driver (:mod:`medfed.orchestration.driver`) calls, in each round::

    plan = strategy.configure_train(round=r, params=global_params, sites=available, rng=rng)
    agg = strategy.aggregator(round=r, params=global_params)
    for reply in replies_as_they_arrive:   # already validated by the driver
        agg.add(reply.site, reply.update)
    new_params = agg.finish()

and ``configure_evaluate`` / ``aggregate_evaluate`` for federated evaluation.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from medfed.records import ConfigValue, Metrics, Params, Update

__all__ = ["Aggregator", "SitePlan", "Strategy", "sample_sites"]


@dataclass(frozen=True, slots=True)
class SitePlan:
    """One site's part in a round: who, and with what strategy-specific configuration."""

    site: str
    config: Mapping[str, ConfigValue] = field(default_factory=dict)


class Aggregator(ABC):
    """Combines one round's updates, one at a time, into the next global params."""

    @abstractmethod
    def add(self, site: str, update: Update) -> None: ...

    @abstractmethod
    def finish(self) -> Params:
        """The next global params. Called once, after every accepted update was added."""


def sample_sites(
    sites: Sequence[str], *, fraction: float, min_sites: int, rng: np.random.Generator
) -> list[str]:
    """Pick ``max(min_sites, ceil(fraction × n))`` sites at random, keeping their given order.

    >>> sample_sites(["a", "b", "c", "d"], fraction=0.5, min_sites=1, rng=np.random.default_rng(0))
    ['c', 'd']
    """
    n = len(sites)
    k = min(n, max(min_sites, math.ceil(fraction * n)))
    if k >= n:
        return list(sites)
    chosen = set(rng.choice(n, size=k, replace=False).tolist())
    return [s for i, s in enumerate(sites) if i in chosen]


class Strategy(ABC):
    """Base class: site sampling and example-weighted evaluation are shared by all strategies."""

    name: str = "strategy"

    def __init__(self, *, fraction: float = 1.0, min_sites: int = 1) -> None:
        if not 0 < fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")
        if min_sites < 1:
            raise ValueError("min_sites must be at least 1")
        self.fraction = fraction
        self.min_sites = min_sites

    def configure_train(
        self, *, round: int, params: Params, sites: Sequence[str], rng: np.random.Generator
    ) -> list[SitePlan]:
        chosen = sample_sites(sites, fraction=self.fraction, min_sites=self.min_sites, rng=rng)
        config = self.train_config(round=round)
        return [SitePlan(site, config) for site in chosen]

    def train_config(self, *, round: int) -> Mapping[str, ConfigValue]:
        """Configuration sent to every site this round (e.g. a proximal term)."""
        return {}

    @abstractmethod
    def aggregator(self, *, round: int, params: Params) -> Aggregator: ...

    def configure_evaluate(self, *, round: int, sites: Sequence[str]) -> list[SitePlan]:
        """Every available site evaluates the global model on its own held-out data."""
        return [SitePlan(site) for site in sites]

    def aggregate_evaluate(self, metrics: Sequence[Metrics]) -> Metrics:
        return Metrics.weighted_mean(metrics)
