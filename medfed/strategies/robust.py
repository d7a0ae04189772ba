"""Robust aggregation for a broken or malicious site: each update seen, none trusted alone.

* ``median`` — the coordinate-wise median of the updates (Yin et al., ICML 2018);
* ``trimmed-mean`` — per coordinate, the mean after dropping the ``trim_fraction`` largest
  and smallest values (Yin et al. 2018);
* ``krum`` — Multi-Krum (Blanchard et al., NeurIPS 2017): the mean of the ``keep`` updates
  closest to their ``n − f − 2`` nearest neighbours, tolerating ``f = byzantine`` sites;
* ``norm-bounded`` — FedAvg with every update first scaled down to at most ``max_norm``, or,
  without one, to ``norm_factor`` × the round's median update norm (Sun et al., "Can You
  Really Backdoor Federated Learning?", 2019).

All four need each site's update (``needs = "updates"``), so a run refuses them together
with secure aggregation. The updates of a round are held in memory until it ends (the
median, Krum); each site's weight is its number of examples only in ``norm-bounded``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from medfed.math.aggregate import (
    coordinate_median,
    l2_norm,
    multi_krum,
    trimmed_mean,
    weighted_mean,
)
from medfed.records import Params, Update
from medfed.strategies.base import Aggregate, Aggregator, Needs, Strategy, StrategyState
from medfed.strategies.fedavg import apply_delta

__all__ = ["Krum", "Median", "NormBounded", "TrimmedMean"]


class _Held(Aggregator):
    """Holds the round's updates; ``combine`` turns them into one delta."""

    def __init__(self, params: Params, state: StrategyState, strategy: _Robust) -> None:
        self._params, self._state, self._strategy = params, state, strategy
        self._updates: list[Update] = []

    def add(self, site: str, update: Update, *, steps: int | None = None) -> None:
        self._updates.append(update)

    def finish(self) -> Aggregate:
        if not self._updates:
            return Aggregate(self._params, self._state)
        delta = self._strategy.combine(self._updates)
        return Aggregate(apply_delta(self._params, delta), self._state)


class _Robust(Strategy):
    needs: ClassVar[Needs] = "updates"

    def aggregator(self, *, round: int, params: Params, state: StrategyState) -> Aggregator:
        return _Held(params, state, self)

    def combine(self, updates: list[Update]) -> Params:
        raise NotImplementedError


class Median(_Robust):
    """The coordinate-wise median of the updates (Yin et al. 2018)."""

    name = "median"

    def combine(self, updates: list[Update]) -> Params:
        return coordinate_median([u.delta for u in updates])


class TrimmedMean(_Robust):
    """Per coordinate, the mean after dropping the largest and smallest values."""

    name = "trimmed-mean"
    parameters: ClassVar[dict[str, str]] = {
        "trim_fraction": "share dropped at each end, in [0, 0.5) [0.1]"
    }

    def __init__(
        self, *, fraction: float = 1.0, min_sites: int = 1, trim_fraction: float = 0.1
    ) -> None:
        super().__init__(fraction=fraction, min_sites=min_sites)
        if not (math.isfinite(trim_fraction) and 0 <= trim_fraction < 0.5):
            raise ValueError(f"trim_fraction = {trim_fraction} must be in [0, 0.5)")
        self.trim_fraction = float(trim_fraction)

    def combine(self, updates: list[Update]) -> Params:
        return trimmed_mean([u.delta for u in updates], trim_fraction=self.trim_fraction)


class Krum(_Robust):
    """Multi-Krum: the mean of the updates nearest their neighbours (Blanchard et al. 2017)."""

    name = "krum"
    parameters: ClassVar[dict[str, str]] = {
        "byzantine": "sites that may be malicious, f (needs more than 2f + 2 updates) [1]",
        "keep": "updates averaged, m (1: Krum) [n − f]",
    }

    def __init__(
        self, *, fraction: float = 1.0, min_sites: int = 1, byzantine: int = 1, keep: int = 0
    ) -> None:
        super().__init__(fraction=fraction, min_sites=min_sites)
        if isinstance(byzantine, bool) or not isinstance(byzantine, int) or byzantine < 0:
            raise ValueError(f"byzantine = {byzantine} must be a whole number >= 0")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise ValueError(f"keep = {keep} must be a whole number >= 1 (0: n − f)")
        self.byzantine, self.keep = byzantine, keep

    def combine(self, updates: list[Update]) -> Params:
        deltas = [u.delta for u in updates]
        keep = self.keep or len(deltas) - self.byzantine
        chosen = multi_krum(deltas, byzantine=self.byzantine, keep=min(keep, len(deltas)))
        mean = weighted_mean((deltas[i], 1.0) for i in chosen)
        assert mean is not None
        return mean


class NormBounded(_Robust):
    """FedAvg over updates first scaled down to a norm bound (Sun et al. 2019)."""

    name = "norm-bounded"
    parameters: ClassVar[dict[str, str]] = {
        "max_norm": "the bound on an update's L2 norm (0: norm_factor × the median) [0]",
        "norm_factor": "without max_norm: the bound as a multiple of the median norm [1.0]",
    }

    def __init__(
        self,
        *,
        fraction: float = 1.0,
        min_sites: int = 1,
        max_norm: float = 0.0,
        norm_factor: float = 1.0,
    ) -> None:
        super().__init__(fraction=fraction, min_sites=min_sites)
        if not (math.isfinite(max_norm) and max_norm >= 0):
            raise ValueError(f"max_norm = {max_norm} must be a number >= 0")
        if not (math.isfinite(norm_factor) and norm_factor > 0):
            raise ValueError(f"norm_factor = {norm_factor} must be a positive number")
        self.max_norm, self.norm_factor = float(max_norm), float(norm_factor)

    def combine(self, updates: list[Update]) -> Params:
        norms = [l2_norm(u.delta) for u in updates]
        bound = self.max_norm or self.norm_factor * float(np.median(norms))
        scaled = []
        for u, norm in zip(updates, norms, strict=True):
            factor = 1.0 if norm <= bound or norm == 0 else bound / norm
            delta = Params((k, np.multiply(v, factor).astype(v.dtype)) for k, v in u.delta.items())
            scaled.append((delta if factor != 1.0 else u.delta, float(u.num_examples)))
        mean = weighted_mean(scaled)
        if mean is None:  # no examples at all: every update counts once
            mean = weighted_mean((d, 1.0) for d, _ in scaled)
        assert mean is not None
        return mean
