"""Kaplan–Meier curves from per-site event and censoring counts on a shared time grid.

Each site counts, for each grid point t_j, its events and censorings with follow-up time in
(t_{j−1}, t_j] (a time is carried to the first grid point at or after it), plus one cell for
times beyond the grid. The federation's counts are the sums, and

    n_j = records with time ≥ t_j  = Σ_{i ≥ j} (d_i + c_i),   S(t_j) = Π_{i ≤ j} (1 − d_i / n_i)

is exactly the Kaplan–Meier estimate of the pooled records with their times carried to the
grid (lifelines' ``KaplanMeierFitter`` on those times gives the same numbers). On a grid of
every distinct time (days, say) it is the pooled estimate itself.

**Release.** A curve's steps reveal its counts (d_j = n_j (1 − S_j / S_{j−1})), so rather than
suppress cells (which would leave the curve with holes and its steps still recoverable from
the at-risk numbers), adjacent grid intervals are merged — global recoding — until, in every
released row (each site whose curve is released, and the federation), each merged interval's
events and censorings are each 0 or ≥ ``min_count``. Then no small count exists to hide, no
differencing between a site's curve and the federation's can reveal one (both use the same
merged intervals), and every at-risk number is 0 or ≥ ``min_count``. The price is a coarser
curve: the released points are the merged intervals' right ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["SurvivalCurve", "kaplan_meier", "merged_groups"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SurvivalCurve:
    """A released Kaplan–Meier curve: at each time, the at-risk count, the events and
    censorings of the interval ending there, and the survival probability after it."""

    times: tuple[float, ...]
    at_risk: tuple[int, ...]
    events: tuple[int, ...]
    censored: tuple[int, ...]
    survival: tuple[float, ...]

    def to_json(self) -> dict[str, list[float] | list[int]]:
        return {
            "times": list(self.times),
            "at_risk": list(self.at_risk),
            "events": list(self.events),
            "censored": list(self.censored),
            "survival": list(self.survival),
        }


def kaplan_meier(
    grid: Sequence[float], events: npt.ArrayLike, censored: npt.ArrayLike
) -> SurvivalCurve:
    """The curve of ``events``/``censored`` counts per grid point (one more cell: beyond)."""
    d = np.rint(np.maximum(np.asarray(events, np.float64), 0))
    c = np.rint(np.maximum(np.asarray(censored, np.float64), 0))
    if d.shape != (len(grid) + 1,) or c.shape != d.shape:
        raise ValueError(f"counts for {len(grid)} grid points have {len(grid) + 1} cells")
    exits = d + c
    at_risk = np.cumsum(exits[::-1])[::-1]  # n_j = Σ_{i ≥ j} exits
    survival, s = [], 1.0
    for j in range(len(grid)):
        if at_risk[j] > 0:
            s *= 1.0 - d[j] / at_risk[j]
        survival.append(float(s))
    k = len(grid)
    return SurvivalCurve(
        times=tuple(float(t) for t in grid),
        at_risk=tuple(int(n) for n in at_risk[:k]),
        events=tuple(int(n) for n in d[:k]),
        censored=tuple(int(n) for n in c[:k]),
        survival=tuple(survival),
    )


def _ok(value: float, min_count: int) -> bool:
    return value == 0 or value >= min_count


def merged_groups(
    rows: Mapping[str, tuple[FloatArray, FloatArray]], *, min_count: int, cells: int
) -> list[list[int]] | None:
    """Consecutive groups of the ``cells`` grid cells (the last is "beyond the grid") in which
    every row's events and censorings are each 0 or ≥ ``min_count``; None if even one group
    of every cell fails (the curve is then withheld)."""

    def fine(group: list[int]) -> bool:
        for d, c in rows.values():
            if not (_ok(float(np.rint(d[group].sum())), min_count)
                    and _ok(float(np.rint(c[group].sum())), min_count)):  # fmt: skip
                return False
        return True

    groups: list[list[int]] = []
    current: list[int] = []
    for j in range(cells - 1):  # the grid's cells; the beyond-grid cell after them
        current.append(j)
        if fine(current):
            groups.append(current)
            current = []
    if current:  # the rest cannot stand alone: merge it into the groups before it
        while groups and not fine(current):
            current = groups.pop() + current
        if not fine(current):
            return None
        groups.append(current)
    beyond = [cells - 1]
    if not fine(beyond):  # the last released point is given up for the beyond-grid cell
        while groups and not fine(beyond):
            beyond = groups.pop() + beyond
        if not fine(beyond):
            return None
    groups.append(beyond)
    return groups


def regrouped(
    grid: Sequence[float], counts: FloatArray, groups: list[list[int]]
) -> tuple[tuple[float, ...], FloatArray]:
    """The grid of the groups' right ends (the beyond-grid group has none) and the counts
    summed per group (with the beyond-grid cell last)."""
    k = len(grid)
    ends = [g[-1] for g in groups if g[-1] < k]
    summed = [counts[g].sum() for g in groups if g[-1] < k]
    beyond = [counts[g].sum() for g in groups if g[-1] >= k]
    return tuple(float(grid[j]) for j in ends), np.array(
        [*summed, beyond[0] if beyond else 0.0], np.float64
    )
