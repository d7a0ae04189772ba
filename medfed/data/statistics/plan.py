"""The coordinator's plan of a query: the exchanges' site queries and the DP noise.

The second exchange's edges, grid and centre come from the first exchange's *released*
federation-wide means and standard deviations only (never from one site's figures), so
every site gets the same ones and they add nothing to what was released.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from medfed.data.statistics.query import SiteQuery, Statistic, StatsQuery
from medfed.errors import ConfigError

__all__ = [
    "Moments",
    "moments_query",
    "nice_edges",
    "noise_multiplier",
    "shapes_query",
    "spent_epsilon",
]


class Moments:
    """Released federation-wide count, mean and sd of one feature (None: withheld)."""

    def __init__(self, count: float | None, mean: float | None, sd: float | None) -> None:
        self.count, self.mean, self.sd = count, mean, sd


def noise_multiplier(query: StatsQuery) -> float | None:
    """σ of the Gaussian mechanism that spends the query's ε at δ over its exchanges."""
    if query.epsilon is None:
        return None
    from medfed.privacy.accounting import noise_for_epsilon

    return noise_for_epsilon(
        target_epsilon=query.epsilon, delta=query.delta, rounds=query.passes, sample_rate=1.0
    )


def spent_epsilon(sigma: float, *, exchanges: int, delta: float) -> float:
    """ε at δ of ``exchanges`` Gaussian releases of multiplier σ (the accountant's figure)."""
    from medfed.privacy.accounting import epsilon

    return epsilon(noise_multiplier=sigma, sample_rate=1.0, rounds=exchanges, delta=delta)


def _check_ranges(query: StatsQuery, features: tuple[str, ...]) -> None:
    if query.epsilon is None:
        return
    missing = [f for f in features if f not in query.ranges]
    if query.wants(Statistic.SURVIVAL) and "time" not in query.ranges:
        missing.append("time")
    if missing:
        raise ConfigError(
            "DP noise (--epsilon) needs a public range for each feature, to bound what one "
            f"record can change; give --range NAME=LOW:HIGH for {', '.join(missing)}"
        )


def moments_query(
    query: StatsQuery, features: tuple[str, ...], *, sigma: float | None
) -> SiteQuery:
    _check_ranges(query, features)
    return SiteQuery(
        stage="moments",
        features=features,
        split=query.split,
        ranges=dict(query.ranges),
        survival=query.wants(Statistic.SURVIVAL),
        noise_multiplier=sigma,
        epsilon=query.epsilon,
        delta=query.delta,
    )


def _round_sig(x: float, step: float) -> float:
    """``x`` rounded to a tenth of ``step``'s order of magnitude (nice histogram edges)."""
    if step <= 0 or not math.isfinite(step):
        return x
    digits = 1 - math.floor(math.log10(step))
    return float(round(x, digits))


def nice_edges(mean: float, sd: float, bins: int, *, width: float = 3.0) -> tuple[float, ...]:
    """``bins + 1`` edges over mean ± width·sd, rounded to readable numbers."""
    raw = np.linspace(mean - width * sd, mean + width * sd, bins + 1)
    step = 2 * width * sd / bins
    edges = sorted({_round_sig(float(e), step) for e in raw})
    return tuple(edges)


def shapes_query(
    query: StatsQuery,
    features: tuple[str, ...],
    moments: Mapping[str, Moments],
    *,
    time: Moments | None,
    sigma: float | None,
) -> SiteQuery:
    """The second exchange: edges and centres from the released moments."""
    centre: dict[str, float] = {}
    edges: dict[str, tuple[float, ...]] = {}
    fine: dict[str, tuple[float, ...]] = {}
    for f in features:
        m = moments.get(f)
        usable = m is not None and m.mean is not None and m.sd is not None and m.sd > 0
        if usable:
            assert m is not None and m.mean is not None and m.sd is not None
            centre[f] = m.mean
        if query.wants(Statistic.HISTOGRAM):
            if f in query.edges:
                edges[f] = tuple(query.edges[f])
            elif usable:
                assert m is not None and m.mean is not None and m.sd is not None
                edges[f] = nice_edges(m.mean, m.sd, query.bins)
        if query.wants(Statistic.QUANTILES) and usable:
            assert m is not None and m.mean is not None and m.sd is not None
            fine[f] = tuple(
                float(e)
                for e in np.linspace(m.mean - 5 * m.sd, m.mean + 5 * m.sd, query.fine_bins + 1)
            )
    grid: tuple[float, ...] = ()
    if query.wants(Statistic.SURVIVAL):
        if query.time_grid:
            grid = tuple(query.time_grid)
        elif time is not None and time.mean is not None and time.sd is not None:
            top = time.mean + 2 * time.sd
            step = top / (query.time_points - 1)
            grid = tuple(
                sorted({_round_sig(float(t), step) for t in np.linspace(0, top, query.time_points)})
            )
    return SiteQuery(
        stage="shapes",
        features=features,
        split=query.split,
        ranges=dict(query.ranges),
        centre=centre,
        edges=edges,
        fine_edges=fine,
        survival=bool(grid),
        time_grid=grid,
        noise_multiplier=sigma,
        epsilon=query.epsilon,
        delta=query.delta,
    )
