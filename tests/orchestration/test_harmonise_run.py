"""``[data] harmonise`` in a run: the sites train on features standardised with the
federation's figures, missing values filled with its mean; refused where it cannot hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from medfed.cli.main import cli
from medfed.config import RunConfig, config_from_dict, run_problems
from medfed.errors import ConfigError
from medfed.orchestration.simulation import Simulation


def _hospitals(folder: Path, *, standardize: str = "none") -> Path:
    """Three hospitals measuring the same two labs, one in other units and with gaps."""
    rng = np.random.default_rng(3)
    lines = ['task = "binary"', 'label = "outcome"', f'standardize = "{standardize}"']
    for k, (offset, scale) in enumerate([(0.0, 1.0), (0.5, 1.0), (30.0, 10.0)]):
        n = 80
        z = rng.standard_normal((n, 2))
        y = (z[:, 0] + 0.5 * z[:, 1] + 0.3 * rng.standard_normal(n) > 0).astype(int)
        frame = pd.DataFrame(
            {"crp": offset + scale * z[:, 0], "lactate": 2 + z[:, 1], "outcome": y}
        )
        if k == 1:
            frame.loc[frame.index[:20], "lactate"] = np.nan  # a quarter missing at one site
        frame.to_csv(folder / f"h{k}.csv", index=False)
        lines += [f"[sites.h{k}]", f'train = "h{k}.csv"']
    path = folder / "consortium.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(data: Path | str, harmonise: str, **extra: object) -> RunConfig:
    raw: dict[str, object] = {
        "rounds": 2,
        "data": {"name": str(data), "harmonise": harmonise},
        "evaluation": {"every": 2},
    }
    raw.update(extra)
    return config_from_dict(raw)


def test_standardise_uses_the_federations_mean_and_sd_and_fills_gaps(tmp_path: Path) -> None:
    sim = Simulation(_config(_hospitals(tmp_path), "standardise"))
    raw = sim.dataset
    assert np.isnan(raw.site("h1").x_train).any()  # the loader kept the gaps for harmonising
    pooled = np.concatenate([s.x_train for s in raw.sites]).astype(np.float64)
    h = sim.harmonisation
    assert h is not None and h.method == "standardise"
    np.testing.assert_allclose(h.mean, np.nanmean(pooled, axis=0), rtol=1e-6)
    np.testing.assert_allclose(h.sd, np.nanstd(pooled, axis=0, ddof=1), rtol=1e-6)
    trained = [sim.factory.site_data(s.name) for s in raw.sites]
    x = np.concatenate([d.x_train for d in trained]).astype(np.float64)
    assert np.isfinite(x).all()
    gaps = np.isnan(raw.site("h1").x_train)
    np.testing.assert_allclose(trained[1].x_train[gaps], 0.0)  # the federation's mean
    observed = np.where(np.isnan(pooled), np.nan, x)
    np.testing.assert_allclose(np.nanmean(observed, axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.nanstd(observed, axis=0, ddof=1), 1.0, atol=1e-5)
    assert np.isfinite(sim.factory.pooled().x_train).all()  # the pooled baseline's too


def test_combat_removes_each_sites_location_and_the_run_records_it(tmp_path: Path) -> None:
    data = _hospitals(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        ["simulate", "--data", str(data), "--harmonise", "combat", "--rounds", "2",
         "--baselines", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["harmonisation"]["method"] == "combat"
    assert set(summary["harmonisation"]["features"]) == {"crp", "lactate"}
    assert "harmonisation: combat" in (out / "summary.md").read_text()
    sim = Simulation(_config(data, "combat"))
    for site in sim.dataset.site_names:  # the site in other units lands where the others are
        x = sim.factory.site_data(site).x_train
        assert np.all(np.abs(x.mean(axis=0)) < 0.1), site


def test_a_file_that_standardises_each_site_alone_is_refused(tmp_path: Path) -> None:
    data = _hospitals(tmp_path, standardize="site")
    with pytest.raises(ConfigError, match='standardize = "none"'):
        Simulation(_config(data, "standardise"))


def test_images_are_refused() -> None:
    with pytest.raises(ConfigError, match="harmonise is for tables"):
        Simulation(_config("synthetic-imaging", "standardise", rounds=1))


def test_dp_is_refused_with_the_reason() -> None:
    config = _config("breast-cancer", "standardise", privacy={"dp": "client"})
    assert any("not covered by the run's ε" in p for p in run_problems(config, "simulation"))
    assert any("not covered by the run's ε" in p for p in run_problems(config, "federation"))
    plain = _config("breast-cancer", "combat")
    assert run_problems(plain, "simulation") == run_problems(plain, "federation") == []
    with pytest.raises(ConfigError, match=r"data\.harmonise must be one of"):
        config_from_dict({"data": {"harmonise": "zscore"}})


def test_the_process_backend_trains_the_same_model(tmp_path: Path) -> None:
    data = _hospitals(tmp_path)
    one = Simulation(_config(data, "standardise")).run()
    two = Simulation(_config(data, "standardise", backend={"kind": "process"})).run()
    for name, value in one.params.items():
        np.testing.assert_array_equal(value, two.params[name])
