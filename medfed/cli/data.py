"""``medfed data``: what data sets are bundled, and the options each accepts."""

from __future__ import annotations

import click


@click.group()
def data() -> None:
    """Bundled data sets (nothing is downloaded)."""


@data.command("list")
@click.option("--options", "show_options", is_flag=True, help="Also list each data set's options.")
def list_(show_options: bool) -> None:
    """List the data sets that `--data` accepts."""
    from rich import box
    from rich.table import Table

    from medfed.cli.console import out
    from medfed.data import available_datasets

    table = Table(title="Data sets (use with --data NAME)", box=box.SIMPLE_HEAD)
    table.add_column("name", no_wrap=True)
    table.add_column("task")
    table.add_column("sites", justify="right")
    table.add_column("description")
    for info in available_datasets():
        sites = f"{info.sites}" if info.fixed_sites else f"{info.sites} (any)"
        kind = f"{info.kind}" + ("" if info.real else ", synthetic")
        table.add_row(info.name, kind, sites, info.description)
        if show_options:
            for opt in info.options:
                table.add_row("", "", "", f"[dim]--option {opt.name}={opt.default}: {opt.help}[/]")
    out.print(table)
    if not show_options:
        out.print("[dim]medfed data list --options shows the knobs each data set takes.[/]")
