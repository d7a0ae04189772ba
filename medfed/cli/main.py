"""Entry point of the ``medfed`` command: the group, and one place that turns errors into
one-sentence messages and exit codes (never a traceback for a user mistake)."""

from __future__ import annotations

import sys
from typing import Any

import click

from medfed.errors import MedfedError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MedfedError as exc:
            from medfed.cli.console import error

            error(str(exc))
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(package_name="medfed")
def cli() -> None:
    """medfed — federated learning for hospitals: the model travels, patient records stay home.

    Start with `medfed demo`.
    """


def _register() -> None:
    from medfed.cli import (
        coordinator,
        data,
        data_contract,
        doctor,
        job,
        node,
        node_dataset,
        node_inspect,
        node_start,
        provision,
        report,
        simulate,
        stats,
        strategy,
    )
    from medfed.cli.audit import audit as audit_group
    from medfed.cli.privacy import privacy as privacy_group

    cli.add_command(simulate.demo)
    cli.add_command(simulate.simulate)
    cli.add_command(report.report)
    cli.add_command(stats.stats)
    cli.add_command(strategy.strategy)
    data.data.add_command(data_contract.contract)
    cli.add_command(data.data)
    cli.add_command(provision.provision)
    cli.add_command(coordinator.coordinator)
    cli.add_command(coordinator.admin)
    node.node.add_command(node_start.start)
    node.node.add_command(node_dataset.dataset)
    node.node.add_command(node_inspect.inspect)
    cli.add_command(node.node)
    cli.add_command(job.job)
    cli.add_command(doctor.doctor)
    cli.add_command(privacy_group)
    cli.add_command(audit_group)


_register()


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="medfed", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
