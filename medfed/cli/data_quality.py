"""``medfed data quality``: the data-quality report across sites — of a simulated
federation, or (``--kit``) of the real one as a statistics job.

The command only parses and shows; the report is made in :mod:`medfed.orchestration.quality`
from federated statistics (released, thresholded figures only). At a federation the job's
query is :func:`~medfed.orchestration.quality.quality_query`'s, submitted like any statistics
job (:mod:`medfed.cli.stats_job`): each data steward approves exactly that query, and the
coordinator keeps only its released figures, from which the report is made here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.table import Table

from medfed.cli.console import out, text
from medfed.cli.simulate import DATA_OPTIONS
from medfed.cli.stats_job import federation_options

__all__ = ["quality", "show_report"]

SERVED_DATA_NOTE = (
    "the sites answered from their records as recorded (a registered table with its gaps and "
    "in its own units, not standardised; a bundled data set as its loader prepares it)"
)


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


def _spec(data: str | None, contract: Path | None, options: dict[str, Any]) -> Any:
    """The sites' data shape, from the contract or a bundled data set's public description."""
    from medfed.errors import ConfigError, DataError

    if contract is not None:
        from medfed.data.image_contract import read_any_contract

        return read_any_contract(contract).spec()
    if data is None:
        raise ConfigError(
            "say which data set the sites serve: --data NAME (and --contract FILE for a "
            "registered data set)"
        )
    from medfed.data import load_dataset

    try:
        return load_dataset(data, options=options).spec
    except DataError:
        raise ConfigError(
            f"{data!r} is not a bundled data set: give the data contract the sites' data set "
            "is under, --contract FILE"
        ) from None


def _federation_report(
    kit: Path,
    job_id: str | None,
    *,
    data: str | None,
    contract: Path | None,
    features: tuple[str, ...],
    min_count: int,
    secure: bool,
    min_sites: int,
    round_timeout: float,
    name: str | None,
    wait: bool,
    options: dict[str, Any],
    thresholds: Any,
    insecure: bool,
) -> Any:
    """The report of a quality job (submitted now, or ``job_id``); None before its result."""
    import dataclasses

    from medfed.cli import stats_job
    from medfed.data.statistics.table import feature_names
    from medfed.errors import ConfigError
    from medfed.orchestration.quality import quality_from_result, quality_query, quality_spec

    if job_id is not None:
        _, result = stats_job.fetch_job(kit, job_id, wait=wait, insecure=insecure)
        if result is None:
            return None
        spec, names = quality_spec(result.query)
    else:
        spec = _spec(data, contract, options)
        if len(spec.input_shape) != 1:
            raise ConfigError(
                "the data-quality report is for tables; this data set's records are images"
            )
        available = feature_names(spec)
        unknown = [f for f in features if f not in available]
        if unknown:
            raise ConfigError(
                f"no feature {', '.join(map(repr, unknown))} in the data set; its features: "
                + ", ".join(available)
            )
        names = tuple(features) or available
        query = quality_query(spec, names, min_count=min_count)
        _, result = stats_job.submit(
            kit, query, data=data, contract=contract, secure=secure, min_sites=min_sites,
            round_timeout=round_timeout, name=name or "quality", wait=wait, options=options,
            insecure=insecure, follow_up="medfed data quality",
        )  # fmt: skip
        if result is None:
            return None
    report = quality_from_result(result, spec, names, thresholds=thresholds)
    return dataclasses.replace(report, notes=(*report.notes, SERVED_DATA_NOTE))


@click.command("quality")
@click.option("--data", "data_name", default=None,
              help="A bundled data set's name or a data set file (.toml) [breast-cancer]; "
                   "with --kit: the data set the sites serve.")  # fmt: skip
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
@federation_options(
    job="the report of this quality job", name="quality", wait="the result and show the report"
)
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
    kit: Path | None,
    job_id: str | None,
    contract_path: Path | None,
    min_sites: int,
    round_timeout: float,
    name: str | None,
    wait: bool,
    insecure: bool,
) -> None:
    """Data quality across the sites of a simulated federation, or with --kit of the real one
    (a statistics job: each data steward approves the report's query first): per site and
    feature the missingness, ranges (quantiles), the outcome's prevalence and the shift from
    the federation (SMD, PSI), with flags. Only released figures (small counts suppressed).

    \b
    Examples:
      medfed data quality --data synthetic-ehr --option covariate_shift=1 --json quality.json
      medfed data quality --kit KIT --data bc --contract bc.contract.toml --wait
      medfed data quality --kit KIT --job job-1234abcd --markdown quality.md
    """
    from medfed.cli.simulate import parse_options
    from medfed.config import DataConfig
    from medfed.errors import ConfigError
    from medfed.orchestration.quality import QualityThresholds
    from medfed.orchestration.quality_simulation import simulate_quality
    from medfed.reporting.quality import render_quality_markdown

    if min(max_smd, max_missing, max_psi) < 0:
        raise ConfigError("--max-smd, --max-missing and --max-psi must be 0 or more")
    thresholds = QualityThresholds(smd=max_smd, missing=max_missing, psi=max_psi)
    if kit is None and (job_id is not None or contract_path is not None):
        raise ConfigError("--job and --contract ask a federation: give your researcher kit, --kit")
    if kit is not None:
        if sites is not None:
            raise ConfigError("--sites is for a simulation; a federation's sites are its nodes")
        report = _federation_report(
            kit, job_id, data=data_name, contract=contract_path, features=features,
            min_count=min_count, secure=secure, min_sites=min_sites, round_timeout=round_timeout,
            name=name, wait=wait, options=parse_options(options), thresholds=thresholds,
            insecure=insecure,
        )  # fmt: skip
        if report is None:
            return
    else:
        data = DataConfig(
            name=data_name or "breast-cancer", sites=sites, options=parse_options(options)
        )
        report = simulate_quality(
            data, seed=seed, features=features, secure_aggregation=secure, min_count=min_count,
            thresholds=thresholds,
        )  # fmt: skip
    show_report(report)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        out.print(f"written {text(json_out)}")
    if md_out is not None:
        Path(md_out).write_text(render_quality_markdown(report, heading="#"))
        out.print(f"written {text(md_out)}")
