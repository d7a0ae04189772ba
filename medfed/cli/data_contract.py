"""``medfed data contract``: draft a data contract from a data set file's tables."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("contract")
@click.argument("data_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the contract here [default: print it].",
)
@click.option("--name", default=None, help="The contract's name [the data set file's].")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def contract(data_file: Path, out_path: Path | None, name: str | None, force: bool) -> None:
    """Draft a data contract that DATA_FILE's tables pass, for the consortium to edit.

    Every column gets its type, categories and observed range; set the units and the
    clinically plausible ranges before the contract is versioned with the jobs.

    \b
    Example:
      medfed data contract my-data/data.toml --out my-data/readmission.contract.toml
      medfed node dataset add readmission my-data/a_train.csv \\
          --contract my-data/readmission.contract.toml --kit kits/sites/hospital-a
    """
    from medfed.cli.console import out
    from medfed.data.contract import read_contract
    from medfed.data.contract_draft import draft_contract
    from medfed.errors import UsageError
    from medfed.serde import atomic_write

    text = draft_contract(data_file, name=name)
    if out_path is None:
        click.echo(text, nl=False)
        return
    if out_path.exists() and not force:
        raise UsageError(f"{out_path} exists; choose another --out or add --force")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out_path, text)
    drafted = read_contract(out_path)  # what was written is a valid contract
    out.print(
        f"wrote [cyan]{out_path}[/] ({drafted.title}, {len(drafted.columns)} columns): set "
        "the units and plausible ranges, then add contract = "
        f'"{out_path.name}" to the data set file or register it at each node'
    )
