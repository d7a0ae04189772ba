"""The examples users read are run: README code blocks and docstring examples."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

DOCTESTED = [
    "medfed",
    "medfed.records",
    "medfed.math.aggregate",
    "medfed.math.metrics",
    "medfed.strategies.base",
]


@pytest.mark.parametrize("module", DOCTESTED)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0, f"{module} has no examples to run"


def _python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_examples_run(tmp_path, monkeypatch) -> None:
    blocks = _python_blocks()
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        code = block.replace("rounds=10", "rounds=2")  # same code, shorter
        exec(compile(code, "README.md", "exec"), {})


def test_readme_task_example_is_a_loadable_task(tmp_path) -> None:
    from medfed.site.task_loading import load_task

    block = next(b for b in _python_blocks() if "my_task.py" in b)
    (tmp_path / "my_task.py").write_text(block)
    task = load_task(f"{tmp_path / 'my_task.py'}:task")
    assert task.name
