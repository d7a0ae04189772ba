"""The run report's figures: matplotlib (Agg) drawn into PNGs, returned as ``data:`` URIs.

A ``data:`` URI keeps the report one self-contained file that can be mailed or archived
with nothing beside it. matplotlib is imported here only, inside the functions, so that
``import medfed`` (and every command but ``medfed report``) never loads it. Figures are
built on a bare ``Figure`` with the Agg canvas: no pyplot, no global state, no display.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "comparison_figure",
    "curves_figure",
    "participation_figure",
    "reliability_figure",
]

Interval = tuple[float, float | None, float | None]
"""A mean and its 95 % interval (lower, upper; None with one run)."""


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _uri(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def curves_figure(
    panels: Sequence[tuple[str, Mapping[str, Sequence[tuple[int, float]]]]],
) -> str:
    """One panel per ``(y label, {site: [(round, value), ...]})``; the ``all`` line (the
    example-weighted mean over sites) drawn dashed in black."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(6.4 * max(1, len(panels)) * 0.8, 3.6)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (label, series) in zip(axes, panels, strict=False):
        for site, points in sorted(series.items(), key=lambda kv: (kv[0] == "all", kv[0])):
            if not points:
                continue
            xs, ys = zip(*sorted(points), strict=True)
            if site == "all":
                ax.plot(xs, ys, "k--", label="all sites (weighted)")
            else:
                ax.plot(xs, ys, marker="o", markersize=3, label=site)
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _uri(fig)


def comparison_figure(
    sites: Sequence[str],
    columns: Mapping[str, Sequence[Interval | None]],
    ylabel: str,
    *,
    unit_interval: bool = True,
) -> str:
    """Grouped bars per site, one bar per model (federated, personalised, local-only,
    pooled), with the 95 % interval as an error bar when there are several runs.

    ``unit_interval``: the metric lies in [0, 1] (accuracy, AUROC, C-index, Dice), so the
    axis stops there even when an interval of few runs reaches past it (the table says how
    far); an error in the target's unit starts at 0."""
    fig = _figure(max(6.0, 1.4 * len(sites) + 2), 3.6)
    ax = fig.subplots()
    width = 0.8 / max(1, len(columns))
    for k, (name, values) in enumerate(columns.items()):
        xs, ys, low, high = [], [], [], []
        for i, value in enumerate(values):
            if value is None:
                continue
            mean, lo, hi = value
            xs.append(i + (k - (len(columns) - 1) / 2) * width)
            ys.append(mean)
            low.append(0.0 if lo is None else mean - lo)
            high.append(0.0 if hi is None else hi - mean)
        ax.bar(xs, ys, width, label=name, yerr=[low, high], capsize=3)
    ax.set_xticks(range(len(sites)), list(sites), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if unit_interval:
        ax.set_ylim(0, 1.05)
    else:
        ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _uri(fig)


def reliability_figure(sites: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """A reliability diagram per site: observed frequency against mean predicted
    probability in each non-empty bin (marker area ∝ patients), beside the diagonal."""
    n = max(1, len(sites))
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig = _figure(2.6 * cols, 2.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, (site, bins) in zip(axes.flat, sites.items(), strict=False):
        full = [b for b in bins if b["count"]]
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
        if full:
            most = max(b["count"] for b in full)
            ax.plot([b["mean_predicted"] for b in full], [b["observed"] for b in full], linewidth=1)
            ax.scatter(
                [b["mean_predicted"] for b in full],
                [b["observed"] for b in full],
                s=[10 + 60 * b["count"] / most for b in full],
                zorder=3,
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(site, fontsize=8)
        ax.set_xlabel("mean predicted", fontsize=7)
        ax.set_ylabel("observed", fontsize=7)
        ax.tick_params(labelsize=6)
    return _uri(fig)


_COLOURS = {"trained": "#2e8b57", "failed": "#d62728", "evaluation failed": "#ff9f1c"}


def participation_figure(
    sites: Sequence[str], rounds: Sequence[int], cells: Mapping[tuple[str, int], str]
) -> str:
    """Sites × rounds: a green cell where the site's update counted, red where it failed,
    orange where only its evaluation failed, blank where it was not asked."""
    from matplotlib.patches import Patch

    fig = _figure(max(5.0, 0.25 * len(rounds) + 2.5), 0.35 * len(sites) + 1.4)
    ax = fig.subplots()
    index = {r: i for i, r in enumerate(rounds)}
    for y, site in enumerate(sites):
        for r in rounds:
            state = cells.get((site, r))
            if state is not None:
                ax.add_patch(_rectangle(index[r], y, _COLOURS[state]))
    ax.set_xlim(-0.5, len(rounds) - 0.5)
    ax.set_ylim(-0.5, len(sites) - 0.5)
    step = max(1, len(rounds) // 20)
    ax.set_xticks(range(0, len(rounds), step), [str(r) for r in rounds][::step], fontsize=7)
    ax.set_yticks(range(len(sites)), list(sites), fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("round")
    ax.legend(
        handles=[Patch(color=c, label=s) for s, c in _COLOURS.items()],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    return _uri(fig)


def _rectangle(x: int, y: int, colour: str) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.45, y - 0.4), 0.9, 0.8, color=colour)
