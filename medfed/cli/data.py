"""``medfed data``: what data sets are bundled, the options each accepts, and exporting one."""

from __future__ import annotations

import click

from medfed.cli.data_quality import quality
from medfed.cli.simulate import DATA_OPTIONS


@click.group()
def data() -> None:
    """Bundled data sets (nothing is downloaded)."""


data.add_command(quality)


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


@data.command("export")
@click.argument("name")
@click.option("--out", "out_dir", required=True, help="Folder to write (created).")
@click.option("--sites", type=int, default=None, help="Number of sites (where the data allow).")
@DATA_OPTIONS
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of generated data.")
def export(name: str, out_dir: str, sites: int | None, options: tuple[str, ...], seed: int) -> None:
    """Write a bundled data set as files per site (tables: CSV; 2D images: PNG; 3D volumes:
    NIfTI; with labels files or masks), with its data set file.

    \b
    Example:
      medfed data export breast-cancer --out my-data
      medfed simulate --data my-data/data.toml --rounds 10
    """
    from medfed.cli.console import out
    from medfed.cli.simulate import parse_options
    from medfed.data import load_dataset
    from medfed.data.export import export_dataset

    dataset = load_dataset(name, num_sites=sites, seed=seed, options=parse_options(options))
    path = export_dataset(dataset, out_dir)
    out.print(
        f"wrote {len(dataset.sites)} sites' train and test files and [cyan]{path}[/]; "
        f"simulate on them with: medfed simulate --data {path}"
    )
