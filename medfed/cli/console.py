"""Shared terminal output: one console for results, one for messages and errors.

``error`` and ``warn`` print their message as text: square brackets in it (a path, a job
name, another party's reason) are never read as Rich markup. Text from a config, a file name
or another party that goes into a markup string elsewhere is passed through
:func:`rich.markup.escape` (``text`` here) first.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def text(value: object) -> str:
    """``value`` as a string that a markup-enabled print shows literally."""
    return escape(str(value))


def error(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)
