"""``medfed data``: what data sets are bundled."""

from __future__ import annotations

import click


@click.group()
def data() -> None:
    """Bundled data sets (nothing is downloaded)."""


@data.command("list")
def list_() -> None:
    """List the data sets that `--data` accepts."""
    from rich.table import Table

    from medfed.cli.console import out
    from medfed.data import available_datasets

    table = Table(title="Data sets (use with --data NAME)")
    for col in ("name", "task", "sites", "real", "description"):
        table.add_column(col)
    for info in available_datasets():
        table.add_row(
            info.name,
            str(info.kind),
            str(info.sites),
            "yes" if info.real else "synthetic",
            info.description,
        )
    out.print(table)
