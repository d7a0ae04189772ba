"""``medfed node dataset``: the data steward registers the data sets this node serves.

The logic lives in :mod:`medfed.site.datasets`; this module parses options and prints.
"""

from __future__ import annotations

from pathlib import Path

import click

from medfed.cli.node import _KIT, _STATE, _state_dir, _who


@click.group()
def dataset() -> None:
    """Data sets this node serves by name (tables or images, checked against a data contract)."""


@dataset.command("add")
@click.argument("name")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--contract",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The federation's data contract for this table (TOML).",
)
@click.option(
    "--test-fraction",
    type=float,
    default=0.2,
    show_default=True,
    help="Share of patients held out for evaluation (a stratified split).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of that split.")
@click.option("--replace", is_flag=True, help="Register NAME again (a new file or contract).")
@click.option("--by", default=None, help="Who registers it [your login name].")
@_STATE
@_KIT
def add(
    name: str,
    path: Path,
    contract: Path | None,
    test_fraction: float,
    seed: int,
    replace: bool,
    by: str | None,
    state: Path | None,
    kit: Path | None,
) -> None:
    """Register the table (CSV, Parquet) or data set file PATH as NAME.

    An image data set file (images = "folder") names its contract itself; every image, mask
    and labels file must lie in its folder, and the node pins them as registered.

    \b
    Example:
      medfed node dataset add readmission /data/export/readmission.csv \\
          --contract readmission.contract.toml --kit kits/sites/hospital-a
      medfed node dataset add xray /data/xray/data.toml --kit kits/sites/hospital-a
    """
    from medfed.cli.console import out
    from medfed.site.datasets import DatasetRegistry

    registry = DatasetRegistry.in_state(_state_dir(state, kit, create=True))
    served = registry.add(
        name,
        path,
        contract=contract,
        test_fraction=test_fraction,
        seed=seed,
        by=_who(by),
        replace=replace,
    )
    under = served.entry.contract_title or "no contract"
    shape = served.spec.input_shape
    inputs = (
        f"{shape[0]} features"
        if len(shape) == 1
        else f"images of {'×'.join(map(str, shape[1:]))} with {shape[0]} channel(s)"
    )
    out.print(
        f"registered {name}: {served.data.num_train} training and {served.data.num_test} test "
        f"records, {inputs}, {under}; serve it with medfed node start --data {name}",
        markup=False,
    )


@dataset.command("list")
@_STATE
@_KIT
def list_(state: Path | None, kit: Path | None) -> None:
    """The data sets registered on this node."""
    import time

    from rich.table import Table

    from medfed.cli.console import out
    from medfed.site.datasets import DatasetRegistry

    entries = DatasetRegistry.in_state(_state_dir(state, kit)).list()
    if not entries:
        out.print("no data set registered; add one with medfed node dataset add NAME PATH")
        return
    table = Table("name", "file", "contract", "added by", "added")
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.added_at))
        table.add_row(e.name, e.path, e.contract_title or "—", e.added_by, when)
    out.print(table)


@dataset.command("check")
@click.argument("name")
@click.option(
    "--contract",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Check against this contract instead of the registered one.",
)
@_STATE
@_KIT
def check(name: str, contract: Path | None, state: Path | None, kit: Path | None) -> None:
    """Check NAME's tables or images against its data contract; every broken rule, with its
    rows (images: its first file names).

    The report stays on this machine; a job only hears whether the site passes.
    Exit status 1 when the data set fails the contract.
    """
    from medfed.cli.console import out
    from medfed.site.datasets import DatasetRegistry

    report = DatasetRegistry.in_state(_state_dir(state, kit)).check(name, contract)
    out.print(f"{name} {report}", markup=False)
    if not report.passed:
        raise SystemExit(1)


@dataset.command("remove")
@click.argument("name")
@_STATE
@_KIT
def remove(name: str, state: Path | None, kit: Path | None) -> None:
    """Stop serving NAME (its files are not touched)."""
    from medfed.cli.console import out
    from medfed.site.datasets import DatasetRegistry

    DatasetRegistry.in_state(_state_dir(state, kit)).remove(name)
    out.print(f"{name} is no longer registered on this node", markup=False)
