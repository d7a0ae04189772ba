"""Small and skewed hospitals: a site with a few dozen records and one outcome class in its
training data. Every strategy, the local-only and pooled baselines stay well-defined there
(no NaN, no crash) and the report warns about that site."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfed.config import config_from_dict
from medfed.orchestration.simulation import simulate
from medfed.reporting.summary import summary_dict, summary_markdown
from medfed.strategies import STRATEGIES


def _consortium(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = ['task = "binary"', 'label = "y"']
    for name, n, one_class in (("big", 300, False), ("mid", 150, False), ("tiny", 30, True)):
        x = rng.standard_normal((n, 3))
        y = (x[:, 0] + 0.3 * rng.standard_normal(n) > 0).astype(int)
        if one_class:
            y[:] = 0
        pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y}).to_csv(
            folder / f"{name}.csv", index=False
        )
        lines += [f"[sites.{name}]", f'train = "{name}.csv"']
    (folder / "d.toml").write_text("\n".join(lines) + "\n")
    return folder / "d.toml"


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_and_the_baselines_stay_defined(strategy: str, tmp_path: Path) -> None:
    options = {"byzantine": 0} if strategy == "krum" else {}  # 3 sites: f = 1 needs 5
    config = config_from_dict(
        {
            "rounds": 2,
            "data": {"name": str(_consortium(tmp_path))},
            "strategy": {"name": strategy, "options": options},
            "evaluation": {"baselines": True, "quality": False},
        }
    )
    result = simulate(config)
    summary = summary_dict(result)
    assert _finite(summary), json.dumps(summary)[:2000]  # no NaN or infinity anywhere
    for values in result.params.values():
        assert np.isfinite(values).all()
    tiny = next(c for c in result.comparison if c.site == "tiny")
    assert tiny.local is not None and tiny.local.auroc is None  # one class: no AUROC there
    assert any("tiny: one outcome class in its training records" in w for w in result.warnings)
    assert any("tiny: 24 training records" in w for w in result.warnings), result.warnings
    assert "## Warnings" in summary_markdown(result)
