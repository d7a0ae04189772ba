"""``medfed stats``: federated statistics, nothing trained — simulated, or a federation's job.

The command only parses and shows; the query runs in :mod:`medfed.orchestration.statistics`
(a simulation) or at the coordinator (a statistics job, :mod:`medfed.cli.stats_job`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from medfed.cli.console import out, text
from medfed.cli.simulate import DATA_OPTIONS, parse_options
from medfed.cli.stats_job import federation_options
from medfed.errors import ConfigError

__all__ = ["QUERY_OPTIONS", "query_from_options", "show_result", "stats"]


def _ranges(values: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    out_: dict[str, tuple[float, float]] = {}
    for item in values:
        name, _, span = item.partition("=")
        low, _, high = span.partition(":")
        try:
            out_[name.strip()] = (float(low), float(high))
        except ValueError:
            raise ConfigError(
                f"--range {item!r}: write NAME=LOW:HIGH, e.g. --range age=18:100"
            ) from None
    return out_


def _fmt(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "[dim]suppressed[/]"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def show_result(result: object) -> None:
    """Rich tables: one row per feature for the federation, then per site where released."""
    from medfed.data.statistics import StatsResult

    assert isinstance(result, StatsResult)
    q = result.query
    for row_name, row in result.rows.items():
        title = "federation" if row_name == "federation" else f"site {row_name}"
        table = Table(title=f"{text(title)} — {_fmt(row.records)} records", title_justify="left")
        from medfed.data.statistics import Statistic as S

        cols = ["feature"]
        cols += ["count", "missing"] if q.wants(S.COUNT) else []
        cols += ["mean"] if q.wants(S.MEAN) else []
        cols += ["sd"] if q.wants(S.VARIANCE) else []
        cols += [f"q{x:g}" for x in q.quantiles] if q.wants(S.QUANTILES) else []
        for col in cols:
            table.add_column(col, justify="left" if col == "feature" else "right")
        for name, f in row.features.items():
            values = {"count": f.count, "missing": f.missing, "mean": f.mean, "sd": f.sd}
            values.update({f"q{x:g}": f.quantiles.get(x) for x in q.quantiles})
            table.add_row(text(name), *(_fmt(values[c]) for c in cols[1:]))
        out.print(table)
        for name, f in row.features.items():
            if f.histogram is not None:
                h = f.histogram
                bounds = ["-inf", *(f"{e:g}" for e in h.edges), "inf"]
                cells = [
                    f"[{bounds[i]}, {bounds[i + 1]}): {_fmt(c)}" for i, c in enumerate(h.counts)
                ]
                out.print(f"  histogram {text(name)}: " + "  ".join(cells))
        if row.survival is not None:
            s = row.survival
            km = Table(title=f"Kaplan–Meier ({text(title)})", title_justify="left")
            for col in ("time", "at risk", "events", "censored", "survival"):
                km.add_column(col, justify="right")
            for i, t in enumerate(s.times):
                km.add_row(f"{t:g}", str(s.at_risk[i]), str(s.events[i]), str(s.censored[i]),
                           f"{s.survival[i]:.4f}")  # fmt: skip
            out.print(km)
    for site, reason in result.failures.items():
        out.print(f"[yellow]{text(site)} did not answer:[/] {text(reason)}")
    for note in result.notes:
        out.print(f"[dim]{text(note)}[/]")
    out.print(
        f"[dim]counts below {q.min_count} suppressed (with complementary suppression); "
        f"{result.exchanges} exchange(s)[/]"
    )


_STATISTICS = ["count", "mean", "variance", "histogram", "quantiles", "survival"]


def _query_options(f: Any) -> Any:
    """The options of a statistics query (``medfed stats`` and ``medfed node inspect``)."""
    options = [
        click.option("--feature", "features", multiple=True,
                     help="A feature (repeatable; none: all)."),
        click.option("--statistic", "statistics", multiple=True,
                     type=click.Choice(_STATISTICS),
                     help="A statistic (repeatable) [count, mean, variance]."),
        click.option("--bins", type=int, default=10, show_default=True, help="Histogram bins."),
        click.option("--quantile", "quantiles", multiple=True, type=float,
                     help="A quantile in (0, 1)."),
        click.option("--min-count", type=int, default=10, show_default=True,
                     help="Suppress every released count below this."),
        click.option("--epsilon", type=float, default=None,
                     help="DP: each site's ε (needs --range)."),
        click.option("--delta", type=float, default=1e-6, show_default=True, help="DP: δ."),
        click.option("--range", "ranges", multiple=True, metavar="NAME=LOW:HIGH",
                     help="A feature's public range (DP clips to it; 'time' for survival)."),
        click.option("--per-site/--no-per-site", default=True,
                     help="Also release each site's rows."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


QUERY_OPTIONS = _query_options


def query_from_options(
    *,
    features: tuple[str, ...],
    statistics: tuple[str, ...],
    bins: int,
    quantiles: tuple[float, ...],
    min_count: int,
    epsilon: float | None,
    delta: float,
    ranges: tuple[str, ...],
    per_site: bool,
) -> Any:
    """The :class:`~medfed.data.statistics.StatsQuery` the query options describe."""
    from medfed.data.statistics import Statistic, StatsQuery

    kwargs: dict[str, object] = {}
    if statistics:
        kwargs["statistics"] = tuple(Statistic.parse(s) for s in statistics)
    if quantiles:
        kwargs["quantiles"] = tuple(quantiles)
        if not statistics:
            kwargs["statistics"] = (*StatsQuery().statistics, Statistic.QUANTILES)
    return StatsQuery(
        features=tuple(features), bins=bins, min_count=min_count, epsilon=epsilon, delta=delta,
        ranges=_ranges(ranges), per_site=per_site, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


@click.command("stats")
@click.option("--data", "data_name", default=None,
              help="A bundled data set or a data set file (.toml) [breast-cancer].")  # fmt: skip
@click.option("--sites", type=int, default=None, help="Number of sites (where the data allow).")
@DATA_OPTIONS
@QUERY_OPTIONS
@click.option("--secure/--no-secure", default=False,
              help="Secure aggregation: the coordinator learns sums only.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the released figures as JSON here.")  # fmt: skip
@federation_options(
    job="the released result of this statistics job",
    name="statistics",
    wait="the result and show it",
)
def stats(
    data_name: str | None,
    sites: int | None,
    options: tuple[str, ...],
    secure: bool,
    seed: int,
    json_out: str | None,
    kit: Path | None,
    job_id: str | None,
    contract_path: Path | None,
    min_sites: int,
    round_timeout: float,
    name: str | None,
    wait: bool,
    insecure: bool,
    **query_options: Any,
) -> None:
    """Federated statistics: counts, means, variances, histograms, quantiles and Kaplan–Meier
    curves, with small counts suppressed. Over a simulated federation, or with --kit over the
    real one (each data steward approves the query first).

    \b
    Examples:
      medfed stats --data breast-cancer --feature "mean radius" --statistic histogram
      medfed stats --kit KIT --data bc --contract bc.contract.toml --secure --wait
      medfed stats --kit KIT --job job-1234abcd
    """
    from medfed.cli import stats_job

    if job_id is not None or kit is not None:
        if kit is None:
            raise ConfigError("--job reads a federation's job: give your researcher kit, --kit")
        if job_id is not None:
            result = stats_job.fetch_result(kit, job_id, wait=wait, insecure=insecure)
        else:
            query = query_from_options(**query_options)
            job_id, result = stats_job.submit(
                kit, query, data=data_name, contract=contract_path, secure=secure,
                min_sites=min_sites, round_timeout=round_timeout, name=name, wait=wait,
                options=parse_options(options), insecure=insecure,
            )  # fmt: skip
        if result is None:
            return
    else:
        from medfed.config import DataConfig
        from medfed.orchestration.statistics import simulate_statistics

        query = query_from_options(**query_options)
        data = DataConfig(
            name=data_name or "breast-cancer", sites=sites, options=parse_options(options)
        )
        result = simulate_statistics(data, query, seed=seed, secure_aggregation=secure)
    show_result(result)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(result.to_json(), indent=2) + "\n")
        out.print(f"written {text(json_out)}")
