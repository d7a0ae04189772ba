"""Find data files that installed packages ship, without importing those packages.

Importing scikit-learn or lifelines takes over a second; their bundled CSV files are read
directly instead. :func:`importlib.util.find_spec` locates a top-level package without
running its ``__init__``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["shipped_file"]


def shipped_file(package: str, *parts: str) -> Path | None:
    """The path of ``parts`` inside installed ``package``, or None if it is not there."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*parts)
        if path.is_file():
            return path
    return None
