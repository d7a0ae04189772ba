"""``medfed data quality``: the data-quality report across sites of a simulated federation.

The command only parses and shows; the report is made in :mod:`medfed.orchestration.quality`
from federated statistics (released, thresholded figures only).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich import box
from rich.table import Table

from medfed.cli.console import out, text
from medfed.cli.simulate import DATA_OPTIONS

__all__ = ["quality", "show_report"]


def show_report(report: object) -> None:
    """Rich tables: the flags, the federation, each shown site (with its shift)."""
    from medfed.orchestration.quality import QualityReport
    from medfed.reporting.quality import flag_cells, label_text, pct, shown

    assert isinstance(report, QualityReport)
    t = report.thresholds
    flags = Table(
        title=f"Flags (missingness > {pct(t.missing)}, SMD > {t.smd:g}, PSI > {t.psi:g})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for col in ("site", "feature", "check", "value", "threshold"):
        flags.add_column(col, justify="left" if col in ("site", "feature", "check") else "right")
    for flag in report.flags:
        flags.add_row(text(flag.site), text(flag.feature), *flag_cells(flag))
    if report.flags:
        out.print(flags)
    else:
        scope = " (the federation's checks only: no site's figures)" if report.secure else ""
        out.print(f"[green]No flags[/]{scope}.")
    rows = [("federation", report.federation), *((f"site {n}", r) for n, r in report.sites.items())]
    for title, row in rows:
        shift = title != "federation"
        table = Table(
            title=f"{text(title)} — {shown(row.records)} records; outcome: "
            f"{text(label_text(row.label))}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
        )
        qs = next(iter(row.features.values())).quantiles if row.features else {}
        cols = ["feature", "with a value", "missing", "mean", "sd", *(f"q{q}" for q in qs)]
        cols += ["SMD", "PSI"] if shift else []
        for col in cols:
            table.add_column(col, justify="left" if col == "feature" else "right")
        for f in row.features.values():
            cells = [shown(f.count), pct(f.missing_fraction), shown(f.mean), shown(f.sd)]
            cells += [shown(v) for v in f.quantiles.values()]
            cells += [shown(f.smd, 3), shown(f.psi, 3)] if shift else []
            table.add_row(text(f.feature), *cells)
        out.print(table)
    for site, reason in report.not_shown.items():
        out.print(f"[yellow]{text(site)} not shown:[/] {text(reason)}")
    for note in report.notes:
        out.print(f"[dim]{text(note)}[/]")


@click.command("quality")
@click.option("--data", "data_name", default="breast-cancer", show_default=True,
              help="A bundled data set's name or a data set file (.toml).")  # fmt: skip
@click.option("--sites", type=int, default=None, help="Number of sites (where the data allow).")
@DATA_OPTIONS
@click.option("--feature", "features", multiple=True, help="A feature (repeatable; none: all).")
@click.option("--min-count", type=int, default=10, show_default=True,
              help="Suppress every released count below this.")  # fmt: skip
@click.option("--max-smd", type=float, default=0.2, show_default=True,
              help="Flag a standardised mean difference above this.")  # fmt: skip
@click.option("--max-missing", type=float, default=0.2, show_default=True,
              help="Flag a feature missing in more than this fraction.")  # fmt: skip
@click.option("--max-psi", type=float, default=0.25, show_default=True,
              help="Flag a site's feature whose PSI is above this.")  # fmt: skip
@click.option("--secure/--no-secure", default=False,
              help="Secure aggregation: the federation's figures only, no site's.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of generated data.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the report as JSON here.")  # fmt: skip
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the report as Markdown here.")  # fmt: skip
def quality(
    data_name: str,
    sites: int | None,
    options: tuple[str, ...],
    features: tuple[str, ...],
    min_count: int,
    max_smd: float,
    max_missing: float,
    max_psi: float,
    secure: bool,
    seed: int,
    json_out: str | None,
    md_out: str | None,
) -> None:
    """Data quality across the sites of a simulated federation: per site and feature the
    missingness, ranges (quantiles), the outcome's prevalence and the shift from the
    federation (SMD, PSI), with flags. Only released figures (small counts suppressed).

    \b
    Example:
      medfed data quality --data synthetic-ehr --option covariate_shift=1 --json quality.json
    """
    from medfed.cli.simulate import parse_options
    from medfed.config import DataConfig
    from medfed.errors import ConfigError
    from medfed.orchestration.quality import QualityThresholds
    from medfed.orchestration.quality_simulation import simulate_quality
    from medfed.reporting.quality import render_quality_markdown

    if min(max_smd, max_missing, max_psi) < 0:
        raise ConfigError("--max-smd, --max-missing and --max-psi must be 0 or more")
    data = DataConfig(name=data_name, sites=sites, options=parse_options(options))
    report = simulate_quality(
        data, seed=seed, features=features, secure_aggregation=secure, min_count=min_count,
        thresholds=QualityThresholds(smd=max_smd, missing=max_missing, psi=max_psi),
    )  # fmt: skip
    show_report(report)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        out.print(f"written {text(json_out)}")
    if md_out is not None:
        Path(md_out).write_text(render_quality_markdown(report, heading="#"))
        out.print(f"written {text(md_out)}")
