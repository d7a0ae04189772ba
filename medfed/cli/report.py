"""``medfed report RUN [RUN ...]``: one self-contained HTML page about a run (or seeds of one)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["report", "write_run_report"]


@click.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN [RUN ...]")
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False),
    help="Where to write the page [RUN/report.html; for several runs ./report.html].",
)
def report(runs: tuple[str, ...], out: str | None) -> None:
    """Write an HTML report of a run folder: curves, the per-site comparison, the worst site,
    calibration, participation and failures, traffic, privacy spent.

    Several runs of one data set (different seeds) are shown as the mean and a 95 %
    confidence interval across runs, site by site.

    \b
    Examples:
      medfed report runs/demo
      medfed report runs/seed-1 runs/seed-2 runs/seed-3 --out seeds.html
    """
    from medfed.cli.console import out as console, text
    from medfed.reporting.html_report import write_report

    path = write_report(list(runs), out)
    console.print(f"report: [cyan]{text(path)}[/]", soft_wrap=True)


def write_run_report(folder: str | Path) -> None:
    """The run's report.html at the end of `medfed simulate` and `medfed demo`, its path
    printed on one line."""
    from medfed.cli.console import out, text
    from medfed.reporting.html_report import write_report

    path = write_report([folder])
    out.print(f"report: [cyan]{text(path)}[/]", soft_wrap=True)
