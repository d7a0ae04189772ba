"""One query answered, whatever carries the exchanges: the two-exchange flow and its result.

:func:`answer` asks the sites through an ``exchange`` callable — the coordinator's round
driver over a backend (:mod:`medfed.orchestration.statistics`), or plain site tables in
memory (:func:`answer_tables`, what ``medfed node inspect`` and the tests use) — so the
flow, the planning and the release are the same code in every mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfed.data.statistics.contribution import Contribution, contribution
from medfed.data.statistics.plan import (
    Moments,
    moments_query,
    noise_multiplier,
    shapes_query,
    spent_epsilon,
)
from medfed.data.statistics.query import SiteQuery, Statistic, StatsQuery
from medfed.data.statistics.release import FEDERATION, RowSummary, release
from medfed.data.statistics.table import SiteTable
from medfed.errors import DataError

__all__ = ["Gathered", "StatsResult", "answer", "answer_tables"]


@dataclass(frozen=True)
class Gathered:
    """One exchange's outcome: the sum over ``sites``; each site's own when it was seen."""

    sites: tuple[str, ...]
    total: Contribution
    per_site: Mapping[str, Contribution] | None = None
    failures: Mapping[str, str] = field(default_factory=dict)


Exchange = Callable[[SiteQuery], Gathered]


@dataclass(frozen=True)
class StatsResult:
    """What the researcher gets: released rows (the federation first), and how it was made."""

    query: StatsQuery
    features: tuple[str, ...]
    sites: tuple[str, ...]
    rows: Mapping[str, RowSummary]
    exchanges: int
    secure: bool
    epsilon: float | None  # accounted at ``delta`` (per site, for its own records)
    delta: float | None
    failures: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def federation(self) -> RowSummary:
        return self.rows[FEDERATION]

    @property
    def per_site(self) -> dict[str, RowSummary]:
        return {k: v for k, v in self.rows.items() if k != FEDERATION}

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "sites": list(self.sites),
            "min_count": self.query.min_count,
            "secure_aggregation": self.secure,
            "exchanges": self.exchanges,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "federation": self.federation.to_json(),
            "per_site": {k: v.to_json() for k, v in self.per_site.items()},
            "failures": dict(self.failures),
            "notes": list(self.notes),
        }


def _moments(row: RowSummary, total: Contribution, query: StatsQuery) -> dict[str, Moments]:
    out = {}
    for name, f in row.features.items():
        sd = f.sd if f.variance is not None else None
        out[name] = Moments(f.count, f.mean, sd)
    return out


def _time_moments(total: Contribution, min_count: int) -> Moments | None:
    if "time_counts" not in total:
        return None
    n = float(np.rint(total["time_counts"][0]))
    if n < min_count or n < 2:
        return None
    s, ss = (float(v) for v in total["time_sums"])
    mean = s / n
    return Moments(n, mean, math.sqrt(max(ss - s * s / n, 0.0) / (n - 1)))


def answer(
    query: StatsQuery,
    features: tuple[str, ...],
    exchange: Exchange,
    *,
    secure: bool = False,
) -> StatsResult:
    """Ask the sites (one or two exchanges) and release the figures the rules allow."""
    sigma = noise_multiplier(query)
    first = exchange(moments_query(query, features, sigma=sigma))
    planning = StatsQuery(
        features=features,
        statistics=(Statistic.COUNT, Statistic.MEAN, Statistic.VARIANCE),
        min_count=query.min_count,
    )
    fed_only = release(planning, features, [FEDERATION], [first.total])[FEDERATION]
    second: Gathered | None = None
    plan2: SiteQuery | None = None
    if query.needs_shapes:
        plan2 = shapes_query(
            query,
            features,
            _moments(fed_only, first.total, query),
            time=_time_moments(first.total, query.min_count),
            sigma=sigma,
        )
        second = exchange(plan2)
    notes: list[str] = []
    failures = {**first.failures, **({} if second is None else second.failures)}
    sites = first.sites if second is None else tuple(s for s in first.sites if s in second.sites)
    if second is not None and set(second.sites) != set(first.sites):
        notes.append(
            "the two exchanges were answered by different sites; the federation's figures "
            f"of the second cover {', '.join(second.sites)}"
        )
    show_sites = query.per_site and not secure and first.per_site is not None
    if show_sites and second is not None and second.per_site is None:
        show_sites = False
    rows = [*(sites if show_sites else ()), FEDERATION]
    if show_sites:
        assert first.per_site is not None
        moments = [first.per_site[s] for s in sites]
        moments.append(Contribution.total(moments) if sites != first.sites else first.total)
        shapes = None
        if second is not None:
            assert second.per_site is not None
            shapes = [second.per_site[s] for s in sites]
            shapes.append(Contribution.total(shapes))
    else:
        moments = [first.total]
        shapes = None if second is None else [second.total]
    released = release(query, features, rows, moments, shapes, plan2)
    ordered = {FEDERATION: released[FEDERATION], **{s: released[s] for s in rows[:-1]}}
    exchanges = 1 if second is None else 2
    eps = None if sigma is None else spent_epsilon(sigma, exchanges=exchanges, delta=query.delta)
    if secure:
        notes.append("secure aggregation: the coordinator learnt only the sums over sites")
    if sigma is not None:
        notes.append(
            f"DP: each site added Gaussian noise (multiplier {sigma:.3g}); ε = {eps:.3g} at "
            f"δ = {query.delta:g} for each site's records, from the accountant"
        )
    return StatsResult(
        query=query,
        features=features,
        sites=sites,
        rows=ordered,
        exchanges=exchanges,
        secure=secure,
        epsilon=eps,
        delta=None if sigma is None else query.delta,
        failures=failures,
        notes=tuple(notes),
    )


def resolve_features(query: StatsQuery, available: tuple[str, ...]) -> tuple[str, ...]:
    """The query's features (all when it names none); an unknown one is a DataError."""
    if not query.features:
        return available
    unknown = [f for f in query.features if f not in available]
    if unknown:
        raise DataError(
            f"no feature {', '.join(map(repr, unknown))} in this data set; its features are "
            f"{', '.join(available)}"
        )
    return tuple(query.features)


def answer_tables(
    tables: Mapping[str, SiteTable],
    query: StatsQuery,
    *,
    rng: np.random.Generator | None = None,
) -> StatsResult:
    """The query over site tables in memory (each site's contribution computed as the site
    would; no secure aggregation)."""
    names = tuple(tables)
    features = resolve_features(query, next(iter(tables.values())).names)

    def exchange(q: SiteQuery) -> Gathered:
        per = {s: contribution(t, q, rng=rng) for s, t in tables.items()}
        return Gathered(names, Contribution.total(list(per.values())), per)

    return answer(query, features, exchange)
