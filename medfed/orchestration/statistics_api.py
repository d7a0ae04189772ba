"""``medfed.stats()``: a federated statistics query over a simulated federation, in Python.

The same query and release as ``medfed stats`` (:func:`~.statistics.simulate_statistics`):
each simulated site computes its counts and sums from its own share only, small counts are
suppressed (default: below 10) and, with ``epsilon``, each site adds DP noise.

>>> import medfed
>>> result = medfed.stats("breast-cancer", features=["mean radius"])  # doctest: +SKIP
>>> result.federation.features["mean radius"].count  # doctest: +SKIP
569
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medfed.config import DataConfig
from medfed.data.statistics import Statistic, StatsQuery, StatsResult
from medfed.orchestration.statistics import simulate_statistics

__all__ = ["stats"]


def stats(
    data: str = "breast-cancer",
    query: StatsQuery | None = None,
    *,
    features: Sequence[str] = (),
    statistics: Sequence[str | Statistic] = ("count", "mean", "variance"),
    bins: int = 10,
    quantiles: Sequence[float] = (0.25, 0.5, 0.75),
    min_count: int = 10,
    epsilon: float | None = None,
    delta: float = 1e-6,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    per_site: bool = True,
    secure_aggregation: bool = False,
    sites: int | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> StatsResult:
    """Federated statistics over the simulated sites of ``data`` (a bundled data set's name or
    a data set file); ``query`` replaces the query keywords when given. Raises ConfigError
    for a bad query, DataError for unknown features or data."""
    if query is None:
        query = StatsQuery(
            features=tuple(features),
            statistics=tuple(Statistic.parse(str(s)) for s in statistics),
            bins=bins,
            quantiles=tuple(float(q) for q in quantiles),
            min_count=min_count,
            epsilon=epsilon,
            delta=delta,
            ranges=dict(ranges or {}),
            per_site=per_site,
        )
    config = DataConfig(name=data, sites=sites, options=dict(options or {}))
    return simulate_statistics(config, query, seed=seed, secure_aggregation=secure_aggregation)
