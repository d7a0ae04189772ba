"""``medfed strategy list``: the aggregation strategies and the options each takes."""

from __future__ import annotations

import click
from rich.table import Table

from medfed.cli.console import out, text

__all__ = ["strategy"]


@click.group()
def strategy() -> None:
    """Aggregation strategies (`--strategy NAME --strategy-option KEY=VALUE`)."""


@strategy.command("list")
def list_strategies() -> None:
    """Every strategy, what it aggregates and its options with their defaults.

    \b
    Example:
      medfed simulate --data lung --strategy fedprox --strategy-option mu=0.1
    """
    from medfed.strategies import STRATEGIES

    table = Table(title="Strategies (--strategy NAME)", title_justify="left")
    for col in ("name", "aggregates", "what it is", "options (--strategy-option KEY=VALUE)"):
        table.add_column(col)
    for name, cls in STRATEGIES.items():
        doc = ((cls.__doc__ or "").strip().splitlines() or [""])[0]
        needs = "a sum (secure aggregation works)" if cls.needs == "sum" else "each update"
        options = "\n".join(f"{k}: {v}" for k, v in cls.parameters.items()) or "—"
        table.add_row(text(name), needs, text(doc), text(options))
    out.print(table)
