"""From the sites' summed contributions to what the researcher sees: figures, with every
small count suppressed.

Rows of the release are the federation and — when the coordinator saw each site's
contribution (no secure aggregation) and the query asks for it — each site. All rows are
protected together, because they are tied by sums (the sites add up to the federation):

* counts (records, present and missing values, histogram cells): primary and complementary
  suppression over every additive line at once (:mod:`medfed.data.statistics.suppression`);
* means and variances: released for a row only over ≥ ``min_count`` values; if some sites'
  are withheld, the withheld sites together hold 0 or ≥ ``min_count`` values, otherwise more
  are withheld (else the federation's figure minus the released sites' would give a small
  group's sum);
* quantiles: released over ≥ ``min_count`` values with ≥ ``min_count`` of them on each side;
  read from the fine histogram by linear interpolation within a bin, so each is within one
  fine bin of the pooled order statistic x_(⌈qn⌉) (numpy's "inverted_cdf" quantile); one in
  a tail bin (beyond mean ± 5 sd) is withheld;
* Kaplan–Meier curves: merged intervals (:mod:`medfed.data.statistics.survival`); a row whose
  count of records without a follow-up time is suppressed has no curve.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from medfed.data.statistics.contribution import Contribution
from medfed.data.statistics.query import SiteQuery, Statistic, StatsQuery
from medfed.data.statistics.suppression import Line, protect
from medfed.data.statistics.survival import (
    SurvivalCurve,
    kaplan_meier,
    merged_groups,
    regrouped,
)

__all__ = ["FEDERATION", "FeatureSummary", "Histogram", "RowSummary", "release"]

FEDERATION = "federation"
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Histogram:
    """Counts in ``(-inf, e0), [e0, e1), …, [e_last, inf)``; None: suppressed."""

    edges: tuple[float, ...]
    counts: tuple[int | None, ...]


@dataclass(frozen=True)
class FeatureSummary:
    """One feature in one row; None: not asked for, or withheld (see ``withheld``)."""

    feature: str
    count: int | None = None
    missing: int | None = None
    mean: float | None = None
    variance: float | None = None
    histogram: Histogram | None = None
    quantiles: Mapping[float, float | None] = field(default_factory=dict)
    withheld: tuple[str, ...] = ()

    @property
    def sd(self) -> float | None:
        return None if self.variance is None else math.sqrt(self.variance)

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "missing": self.missing,
            "mean": self.mean,
            "variance": self.variance,
            "sd": self.sd,
            "histogram": None
            if self.histogram is None
            else {"edges": list(self.histogram.edges), "counts": list(self.histogram.counts)},
            "quantiles": {str(q): v for q, v in self.quantiles.items()},
            "withheld": list(self.withheld),
        }


@dataclass(frozen=True)
class RowSummary:
    """The federation's or one site's released figures."""

    name: str
    records: int | None
    features: Mapping[str, FeatureSummary]
    survival: SurvivalCurve | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "features": {k: v.to_json() for k, v in self.features.items()},
            "survival": None if self.survival is None else self.survival.to_json(),
        }


class _Cells:
    """One flat vector of every released count of every row, and the lines tying them."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.lines: list[Line] = []

    def add(self, value: float) -> int:
        self.values.append(float(max(0.0, np.rint(value))))
        return len(self.values) - 1

    def tie(self, parts: Sequence[int], total: int) -> None:
        self.lines.append(Line(tuple(parts), total))


def _quantile(counts: FloatArray, edges: tuple[float, ...], q: float, k: int) -> float | None:
    c = np.maximum(np.rint(counts), 0)
    n = float(c.sum())
    if n < k or q * n < k or (1 - q) * n < k:
        return None
    target = q * n
    cum = np.cumsum(c)
    i = int(np.searchsorted(cum, target, side="left"))
    if i == 0 or i >= len(edges):  # in a tail cell: beyond the fine edges
        return None
    before = cum[i - 1]
    lo, hi = edges[i - 1], edges[i]
    return float(lo + (target - before) / c[i] * (hi - lo)) if c[i] > 0 else float(lo)


def release(
    query: StatsQuery,
    features: tuple[str, ...],
    rows: Sequence[str],
    moments: Sequence[Contribution],
    shapes: Sequence[Contribution] | None = None,
    shapes_query: SiteQuery | None = None,
) -> dict[str, RowSummary]:
    """Each row's released figures; ``rows`` ends with :data:`FEDERATION` (whose
    contributions are the sums of the others')."""
    if not rows or rows[-1] != FEDERATION:
        raise ValueError("the last row of a release is the federation's")
    k = query.min_count
    R, fed = len(rows), len(rows) - 1
    cells = _Cells()
    rec = [cells.add(moments[r]["rows"][0]) for r in range(R)]
    if R > 1:
        cells.tie(rec[:fed], rec[fed])
    present: dict[str, list[int]] = {}
    missing: dict[str, list[int]] = {}
    hist: dict[str, list[list[int]]] = {}
    fi = {f: i for i, f in enumerate(features)}
    edges = {} if shapes_query is None else dict(shapes_query.edges)
    for f in features:
        i = fi[f]
        present[f] = [cells.add(moments[r]["present"][i]) for r in range(R)]
        missing[f] = [cells.add(moments[r]["missing"][i]) for r in range(R)]
        for r in range(R):
            cells.tie((present[f][r], missing[f][r]), rec[r])
        if R > 1:
            cells.tie(present[f][:fed], present[f][fed])
            cells.tie(missing[f][:fed], missing[f][fed])
        if shapes is not None and query.wants(Statistic.HISTOGRAM) and f"hist:{f}" in shapes[0]:
            hist[f] = [[cells.add(v) for v in shapes[r][f"hist:{f}"]] for r in range(R)]
            for r in range(R):
                cells.tie(hist[f][r], present[f][r])
            if R > 1:
                for b in range(len(hist[f][0])):
                    cells.tie([hist[f][r][b] for r in range(fed)], hist[f][fed][b])
    survival = shapes is not None and "km_events" in shapes[0]
    timed: list[int] = []
    untimed: list[int] = []
    if survival:
        assert shapes is not None
        for r in range(R):
            n = float(shapes[r]["km_events"].sum() + shapes[r]["km_censored"].sum())
            timed.append(cells.add(n))
            untimed.append(cells.add(float(moments[r]["rows"][0]) - n))
            cells.tie((timed[r], untimed[r]), rec[r])
        if R > 1:
            cells.tie(timed[:fed], timed[fed])
            cells.tie(untimed[:fed], untimed[fed])
    values = np.asarray(cells.values)
    hidden = protect(values, cells.lines, min_count=k)

    def shown(index: int) -> int | None:
        return None if hidden[index] else int(values[index])

    summaries: list[dict[str, FeatureSummary]] = [{} for _ in range(R)]
    for f in features:
        i = fi[f]
        have = [float(values[present[f][r]]) for r in range(R)]
        held = [have[r] < k for r in range(R)]
        if R > 1 and not held[fed]:
            while 0 < sum(have[r] for r in range(fed) if held[r]) < k:
                open_ = [r for r in range(fed) if not held[r] and have[r] > 0]
                if not open_:
                    held[fed] = True
                    break
                held[min(open_, key=lambda r: (have[r], r))] = True
        for r in range(R):
            notes: list[str] = []
            mean = variance = None
            if held[r]:
                notes.append(f"moments withheld: fewer than {k} values here or complementary")
            else:
                total = float(moments[r]["sum"][i])
                mean = total / have[r]
                centre = None if shapes_query is None else shapes_query.centre.get(f)
                if shapes is not None and centre is not None:
                    ss = float(shapes[r]["sumsq_c"][i]) - have[r] * (mean - centre) ** 2
                else:
                    ss = float(moments[r]["sumsq"][i]) - total * total / have[r]
                variance = max(ss, 0.0) / (have[r] - 1) if have[r] > 1 else None
            histogram = None
            if f in hist:
                counts = tuple(shown(j) for j in hist[f][r])
                histogram = Histogram(tuple(edges[f]), counts)
            quantiles: dict[float, float | None] = {}
            if shapes is not None and query.wants(Statistic.QUANTILES):
                assert shapes_query is not None
                fine = shapes_query.fine_edges.get(f)
                for q in query.quantiles:
                    quantiles[q] = (
                        None
                        if fine is None or held[r]
                        else _quantile(shapes[r][f"fine:{f}"], fine, q, k)
                    )
                if any(v is None for v in quantiles.values()):
                    notes.append(
                        f"a quantile is withheld when fewer than {k} values lie on a side of "
                        "it, or it is beyond mean ± 5 sd"
                    )
            if shown(present[f][r]) is None or shown(missing[f][r]) is None:
                notes.append(f"a count is suppressed (below {k}, or complementary)")
            summaries[r][f] = FeatureSummary(
                feature=f,
                count=shown(present[f][r]),
                missing=shown(missing[f][r]),
                mean=mean if query.wants(Statistic.MEAN) else None,
                variance=variance if query.wants(Statistic.VARIANCE) else None,
                histogram=histogram,
                quantiles=quantiles,
                withheld=tuple(notes),
            )
    curves: list[SurvivalCurve | None] = [None] * R
    if survival:
        assert shapes is not None and shapes_query is not None
        grid = shapes_query.time_grid
        eligible = [r for r in range(R) if not hidden[timed[r]] and not hidden[untimed[r]]]
        km = {rows[r]: (shapes[r]["km_events"], shapes[r]["km_censored"]) for r in eligible}
        groups = merged_groups(km, min_count=k, cells=len(grid) + 1) if km else None
        if groups is not None:
            for r in eligible:
                times, d = regrouped(grid, shapes[r]["km_events"], groups)
                _, c = regrouped(grid, shapes[r]["km_censored"], groups)
                curves[r] = kaplan_meier(times, d, c) if times else None
    return {rows[r]: RowSummary(rows[r], shown(rec[r]), summaries[r], curves[r]) for r in range(R)}
