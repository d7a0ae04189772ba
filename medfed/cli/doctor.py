"""``medfed doctor``: check, from a hospital's machine, that its kit can reach the federation.

The checks live in :mod:`medfed.federation.doctor`; this module only prints them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


def _marks() -> dict[str, str]:
    """✓ ! ✗ where the output can encode them, plain ASCII where it cannot."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "✓✗·".encode(encoding)
    except (LookupError, UnicodeEncodeError):
        return {"pass": "[green]ok[/]", "warn": "[yellow]!![/]", "fail": "[red]XX[/]", "skip": "--"}
    return {"pass": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]", "skip": "·"}


@click.command()
@click.option(
    "--kit",
    type=click.Path(path_type=Path),
    required=True,
    envvar="MEDFED_KIT",
    help="Startup kit folder from `medfed provision` [env MEDFED_KIT].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1, max=300),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long each network step may take.",
)
def doctor(kit: Path, timeout: float) -> None:
    """Check that this machine can take part: name resolution, TCP, TLS, clock and identity.

    Ends with one sentence: "all checks passed", or what is wrong and what to do next.
    Exits 0 when every check passes (warnings allowed), 1 when one fails.
    """
    from rich.markup import escape

    from medfed.cli.console import out
    from medfed.federation.doctor import CHECKS, iter_checks

    marks = _marks()
    width = max(len(name) for name in CHECKS)
    done: list[str] = []
    failed = None
    warnings = []
    for check in iter_checks(kit, timeout=timeout):
        done.append(check.name)
        out.print(
            f"{marks[check.status]} {check.name:<{width}}  {escape(check.detail)}", soft_wrap=True
        )
        if check.status == "warn":
            warnings.append(check)
            out.print(f"  {'':<{width}}  [yellow]→ {escape(check.fix)}[/]", soft_wrap=True)
        if not check.ok:
            failed = check
    if failed is not None:
        for name in CHECKS[len(done) :]:
            out.print(f"[dim]{marks['skip']} {name:<{width}}  not checked[/]", soft_wrap=True)
        out.print()
        out.print(f"[bold red]{escape(failed.sentence)}[/]", soft_wrap=True)
        click.get_current_context().exit(1)
    out.print()
    if warnings:
        count = f"{len(warnings)} warning" + ("s" if len(warnings) > 1 else "")
        out.print(f"[bold green]all checks passed[/], with {count} above.", soft_wrap=True)
    else:
        out.print("[bold green]all checks passed[/].", soft_wrap=True)
