"""The docstring examples of the privacy modules run."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["medfed.privacy.accounting", "medfed.privacy.adaptive_clip"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_the_package_exports_lazily() -> None:
    import medfed.privacy as privacy

    for name in privacy.__all__:
        assert getattr(privacy, name) is not None
    with pytest.raises(AttributeError):
        _ = privacy.nothing_here  # type: ignore[attr-defined]
