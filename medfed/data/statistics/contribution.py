"""A site's answer to one exchange: additive counts and sums, optionally with DP noise.

Everything a site sends is a sum over its records, so the federation's figure is the sum of
the sites' (in the clear or under secure aggregation) and equals the pooled figure. Blocks:

==================  =========================================================================
``rows``            records
``present``         per feature, records with a value; ``missing``: without
``sum``/``sumsq``   per feature, Σx and Σx² over present values (stage "moments")
``sumsq_w``         per feature, Σ(x − the site's own mean)² (moments, if asked: ComBat)
``time_counts``     records with a follow-up time, and events (stage "moments", survival)
``time_sums``       Σt, Σt² of the follow-up times (stage "moments", survival)
``sumsq_c``         per feature, Σ(x − c)² about the query's centre c (stage "shapes")
``hist:F``          counts of feature F in the bins of the shared edges, with two open tails
``fine:F``          the same on the fine edges (for quantiles)
``km_events``       per time-grid point t_j, events with t in (t_{j−1}, t_j]; one more cell
``km_censored``     for times beyond the grid; the same for censored records
==================  =========================================================================

**DP.** With a noise multiplier σ each group g of cells (of L2 sensitivity Δ_g for adding or
removing one record: 1 for ``rows``, 1 for a feature's present/missing pair, M_f for its sum
with M_f the largest |value| of the feature's public range (values are clipped to it), …; see
:func:`sensitivity_groups`) gets Gaussian noise of std σ·√G·Δ_g, G the number of groups:
the vector scaled by 1/Δ_g per group has L2 sensitivity √G, so the release is a Gaussian
mechanism of multiplier σ, accounted by :mod:`medfed.privacy.accounting`. Counts are then
rounded to integers (post-processing).
The noise is drawn from the operating system's entropy, never from the round's public seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medfed.data.statistics.query import SiteQuery
from medfed.data.statistics.table import SiteTable

__all__ = ["REAL_BLOCKS", "Contribution", "contribution"]

FloatArray = npt.NDArray[np.float64]

# the blocks that hold real sums; every other block holds counts (integers)
REAL_BLOCKS = frozenset({"sum", "sumsq", "sumsq_c", "sumsq_w", "time_sums"})


@dataclass(frozen=True)
class Contribution:
    """Named float64 vectors, all additive across sites (the order is part of the layout)."""

    blocks: Mapping[str, FloatArray]

    def __iter__(self) -> Iterator[str]:
        return iter(self.blocks)

    def __getitem__(self, name: str) -> FloatArray:
        return self.blocks[name]

    def __contains__(self, name: object) -> bool:
        return name in self.blocks

    @property
    def layout(self) -> tuple[tuple[str, int], ...]:
        return tuple((k, int(v.size)) for k, v in self.blocks.items())

    def __add__(self, other: Contribution) -> Contribution:
        if self.layout != other.layout:
            raise ValueError("contributions of different layouts cannot be added")
        return Contribution({k: v + other.blocks[k] for k, v in self.blocks.items()})

    @staticmethod
    def total(items: list[Contribution]) -> Contribution:
        """The sum of several sites' contributions (math.fsum per value: order-independent)."""
        if not items:
            raise ValueError("no contributions to add")
        first = items[0]
        for c in items[1:]:
            if c.layout != first.layout:
                raise ValueError("contributions of different layouts cannot be added")
        out = {}
        for name, _value in first.blocks.items():
            stack = np.stack([c.blocks[name] for c in items])
            out[name] = np.array([math.fsum(col) for col in stack.T], np.float64)
        return Contribution(out)


def _bins(values: FloatArray, edges: tuple[float, ...]) -> FloatArray:
    """Counts in ``(-inf, e0), [e0, e1), …, [e_last, inf)`` of the present values."""
    v = values[~np.isnan(values)]
    index = np.searchsorted(np.asarray(edges, np.float64), v, side="right")
    return np.bincount(index, minlength=len(edges) + 1).astype(np.float64)


def _grid_counts(
    time: FloatArray, event: FloatArray, grid: tuple[float, ...]
) -> tuple[FloatArray, FloatArray]:
    """Events and censorings per grid point: a time t counts at the first t_j ≥ t."""
    ok = ~(np.isnan(time) | np.isnan(event))
    t, e = time[ok], event[ok] > 0
    index = np.searchsorted(np.asarray(grid, np.float64), t, side="left")
    size = len(grid) + 1
    events = np.bincount(index[e], minlength=size).astype(np.float64)
    censored = np.bincount(index[~e], minlength=size).astype(np.float64)
    return events, censored


def _clipped(x: FloatArray, query: SiteQuery) -> FloatArray:
    """Under DP every value is clipped to its feature's public range (NaN stays NaN)."""
    if query.noise_multiplier is None:
        return x
    lo = np.array([query.ranges[f][0] for f in query.features], np.float64)
    hi = np.array([query.ranges[f][1] for f in query.features], np.float64)
    return np.clip(x, lo, hi)


def contribution(
    table: SiteTable, query: SiteQuery, *, rng: np.random.Generator | None = None
) -> Contribution:
    """What this site sends for ``query``: exact sums, or noised ones under DP."""
    x = _clipped(table.columns(query.features), query)
    present = ~np.isnan(x)
    filled = np.where(present, x, 0.0)
    blocks: dict[str, FloatArray] = {
        "rows": np.array([table.rows], np.float64),
        "present": present.sum(axis=0).astype(np.float64),
        "missing": (~present).sum(axis=0).astype(np.float64),
    }
    survival = query.survival and table.time is not None and table.event is not None
    time = event = None
    if survival:
        assert table.time is not None and table.event is not None
        time, event = table.time, table.event
        if query.noise_multiplier is not None:
            time = np.clip(time, *query.ranges["time"])
    if query.stage == "moments":
        blocks["sum"] = filled.sum(axis=0)
        blocks["sumsq"] = (filled * filled).sum(axis=0)
        if query.within:
            count = np.maximum(blocks["present"], 1.0)
            d = np.where(present, x - blocks["sum"] / count, 0.0)
            blocks["sumsq_w"] = (d * d).sum(axis=0)
        if survival:
            assert time is not None and event is not None
            known = ~np.isnan(time)
            blocks["time_counts"] = np.array([known.sum(), (event[known] > 0).sum()], np.float64)
            t = time[known]
            blocks["time_sums"] = np.array([t.sum(), (t * t).sum()], np.float64)
    else:
        centre = np.array([query.centre.get(f, 0.0) for f in query.features], np.float64)
        d = np.where(present, x - centre, 0.0)
        blocks["sumsq_c"] = (d * d).sum(axis=0)
        for i, f in enumerate(query.features):
            if f in query.edges:
                blocks[f"hist:{f}"] = _bins(x[:, i], query.edges[f])
        for i, f in enumerate(query.features):
            if f in query.fine_edges:
                blocks[f"fine:{f}"] = _bins(x[:, i], query.fine_edges[f])
        if survival and query.time_grid:
            assert time is not None and event is not None
            blocks["km_events"], blocks["km_censored"] = _grid_counts(time, event, query.time_grid)
    out = Contribution(blocks)
    if query.noise_multiplier is not None:
        out = noised(out, query, rng=rng if rng is not None else np.random.default_rng())
    return out


Group = tuple[tuple[tuple[str, int | None], ...], float]
"""Cells (a block's value at an index, or a whole block: None) and their L2 sensitivity."""


def sensitivity_groups(query: SiteQuery, layout: Mapping[str, int]) -> list[Group]:
    """The groups of a release's cells and each group's L2 sensitivity when one record is
    added or removed, from the public ranges only. One record changes each group by at most
    its sensitivity: ``rows`` by 1; each feature's present-or-missing pair by 1, its sum by
    its range's largest magnitude M, its sum of squares by M² (about the centre: the
    farthest end's squared distance); each histogram by 1 (one cell); the survival counts
    by 1 (one cell); the follow-up counts by √2 (records and events), their sums by
    √(T² + T⁴)."""
    ranges = query.ranges
    groups: list[Group] = [((("rows", None),), 1.0)]
    for i, f in enumerate(query.features):
        lo, hi = ranges[f]
        big = max(abs(lo), abs(hi))
        groups.append(((("present", i), ("missing", i)), 1.0))
        if "sum" in layout:
            groups.append(((("sum", i),), big))
            groups.append(((("sumsq", i),), big * big))
        if "sumsq_w" in layout:  # one record moves the site's mean: at most (hi − lo)²
            groups.append(((("sumsq_w", i),), (hi - lo) ** 2))
        if "sumsq_c" in layout:
            c = query.centre.get(f, 0.0)
            groups.append(((("sumsq_c", i),), max((lo - c) ** 2, (hi - c) ** 2)))
        for kind in ("hist", "fine"):
            if f"{kind}:{f}" in layout:
                groups.append((((f"{kind}:{f}", None),), 1.0))
    if "time_counts" in layout:
        t = max(abs(ranges["time"][0]), abs(ranges["time"][1]))
        groups.append(((("time_counts", None),), math.sqrt(2.0)))
        groups.append(((("time_sums", None),), math.sqrt(t * t + t**4)))
    if "km_events" in layout:
        groups.append(((("km_events", None), ("km_censored", None)), 1.0))
    covered: dict[str, int] = {}
    for cells, _ in groups:
        for name, index in cells:
            covered[name] = covered.get(name, 0) + (layout[name] if index is None else 1)
    if covered != dict(layout):  # never release a cell whose sensitivity is not accounted
        raise ValueError(f"the sensitivity of the blocks {dict(layout)} is not all accounted")
    return groups


def noised(out: Contribution, query: SiteQuery, *, rng: np.random.Generator) -> Contribution:
    """``out`` with the Gaussian noise of the module docstring; counts rounded."""
    assert query.noise_multiplier is not None
    groups = sensitivity_groups(query, dict(out.layout))
    scale = query.noise_multiplier * math.sqrt(len(groups))
    blocks = {k: v.copy() for k, v in out.blocks.items()}
    for cells, delta in groups:
        for name, index in cells:
            where = slice(None) if index is None else slice(index, index + 1)
            blocks[name][where] += rng.normal(0.0, scale * delta, blocks[name][where].shape)
    for name in blocks:
        if name not in REAL_BLOCKS:
            blocks[name] = np.rint(blocks[name])
    return Contribution(blocks)
