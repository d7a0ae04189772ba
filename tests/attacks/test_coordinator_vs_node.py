"""A hostile or broken coordinator towards a node: the node stays safe and keeps serving.

What the coordinator sends (job ids, hashes, task ids, reasons) is another party's input: the
node validates it before it builds a path or a URL from it, prints it as text, gives up on a
reply the coordinator refuses for good instead of retrying it forever, and one state folder
serves one node only.
"""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from medfed.cli.main import _Group
from medfed.cli.node import node

# -- what the coordinator names is printed as text -------------------------------------------


@click.group(cls=_Group)
def _cli() -> None:
    """The real error handling of `medfed`, with only the node group registered."""


_cli.add_command(node)


def test_job_ids_in_the_privacy_budget_are_printed_as_text(tmp_path: Path) -> None:
    from medfed.privacy.budget import SiteBudget

    state = tmp_path / "state"
    state.mkdir()
    book = SiteBudget.in_state(state)
    book.set_budget("breast-cancer", epsilon=10.0, delta=1e-5)
    book.reserve("breast-cancer", job="[/oops]", noise_multiplier=4.0, sample_rate=1.0, rounds=2)
    shown = CliRunner().invoke(_cli, ["node", "budget", "show", "--state", str(state)])
    assert shown.exit_code == 0, shown.output
    assert "[/oops]" in shown.output
